//! Package URLs (<https://github.com/package-url/purl-spec>): `pkg:deb/debian/NAME@VERSION?…`
//! and `pkg:pypi/NAME@VERSION`.

/// Percent-encodes all but the characters the purl spec leaves as they are.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Debian package's purl; `distro` is `debian-12` (os-release's ID-VERSION_ID).
/// Qualifiers are sorted by key, as the spec's canonical form has them.
pub fn deb(vendor: &str, name: &str, version: &str, arch: &str, distro: Option<&str>) -> String {
    let mut purl = format!(
        "pkg:deb/{}/{}@{}?arch={}",
        encode(&vendor.to_ascii_lowercase()),
        encode(name),
        encode(version),
        encode(arch)
    );
    if let Some(d) = distro {
        purl.push_str(&format!("&distro={}", encode(d)));
    }
    purl
}

/// A Python distribution's purl: the spec lower-cases PyPI names and writes `_` as `-`.
pub fn pypi(name: &str, version: &str) -> String {
    let name = name.to_ascii_lowercase().replace('_', "-");
    format!("pkg:pypi/{}@{}", encode(&name), encode(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_versions_and_qualifiers_are_encoded() {
        assert_eq!(
            deb(
                "debian",
                "libc6",
                "2.36-9+deb12u4",
                "amd64",
                Some("debian-12")
            ),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            deb("Debian", "tzdata", "1:2024a-0+deb12u1", "all", None),
            "pkg:deb/debian/tzdata@1%3A2024a-0%2Bdeb12u1?arch=all"
        );
    }

    #[test]
    fn pypi_names_are_normalised() {
        assert_eq!(pypi("MarkupSafe", "2.1.5"), "pkg:pypi/markupsafe@2.1.5");
        assert_eq!(
            pypi("typing_extensions", "4.12.2"),
            "pkg:pypi/typing-extensions@4.12.2"
        );
        assert_eq!(
            pypi("zope.interface", "1.0+local"),
            "pkg:pypi/zope.interface@1.0%2Blocal"
        );
    }
}
