//! Debian packages: `/var/lib/dpkg/status`, and the licenses of machine-readable (DEP-5)
//! `/usr/share/doc/<package>/copyright` files.

use crate::control::paragraphs;
use crate::license::{self, License};

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebPackage {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Architecture` (`amd64`, `all`).
    pub arch: String,
    /// The source package (`Source`, else the package itself).
    pub source: String,
    /// The source version (`Source: name (version)`, else `Version`).
    pub source_version: String,
    /// `Maintainer`.
    pub maintainer: Option<String>,
}

/// The installed packages of a status file: those whose `Status` says `installed` (dpkg
/// also keeps removed packages with their config files, and half-installed ones).
pub fn parse_status(text: &str) -> Vec<DebPackage> {
    let mut out = Vec::new();
    for p in paragraphs(text, false) {
        let (Some(name), Some(version)) = (p.get("Package"), p.get("Version")) else {
            continue;
        };
        let installed = p
            .get("Status")
            .is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"));
        if !installed {
            continue;
        }
        let (source, source_version) = match p.get("Source") {
            Some(s) => match s.split_once('(') {
                Some((n, v)) => (
                    n.trim().to_owned(),
                    v.trim_end_matches(')').trim().to_owned(),
                ),
                None => (s.trim().to_owned(), version.to_owned()),
            },
            None => (name.to_owned(), version.to_owned()),
        };
        out.push(DebPackage {
            name: name.to_owned(),
            version: version.to_owned(),
            arch: p.get("Architecture").unwrap_or("all").to_owned(),
            source,
            source_version,
            maintainer: p.get("Maintainer").map(str::to_owned),
        });
    }
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    out
}

/// The license of a DEP-5 copyright file: every `License` of its `Files` paragraphs (and of
/// its header), joined with AND. `None` when the file is not machine-readable.
pub fn copyright_license(text: &str) -> Option<License> {
    let ps = paragraphs(text, false);
    let header = ps.first()?;
    let format = header.get("Format")?;
    if !(format.contains("copyright-format") || format.contains("dep5")) {
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        // A paragraph with License but no Files (after the header) holds a license's text.
        if i > 0 && p.get("Files").is_none() {
            continue;
        }
        if let Some(l) = p.get("License") {
            let synopsis = l.lines().next().unwrap_or_default().trim().to_owned();
            if !synopsis.is_empty() && !names.contains(&synopsis) {
                names.push(synopsis);
            }
        }
    }
    if names.is_empty() {
        return None;
    }
    Some(license::from_dep5(&names))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: old
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: python3.11
Status: install ok installed
Architecture: amd64
Source: python3.11 (3.11.2-6+deb12u1)
Version: 3.11.2-6+deb12u1
";

    #[test]
    fn status_keeps_installed_packages_with_their_source() {
        let ps = parse_status(STATUS);
        assert_eq!(ps.len(), 2, "{ps:?}");
        assert_eq!(ps[0].name, "libc6");
        assert_eq!(ps[0].version, "2.36-9+deb12u4");
        assert_eq!(ps[0].arch, "amd64");
        assert_eq!(
            (ps[0].source.as_str(), ps[0].source_version.as_str()),
            ("glibc", "2.36-9+deb12u4")
        );
        assert_eq!(ps[1].source_version, "3.11.2-6+deb12u1");
    }

    #[test]
    fn dep5_licenses_are_joined() {
        let text = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: x

Files: *
Copyright: 1999 A
License: GPL-2+

Files: lib/*
Copyright: 2000 B
License: BSD-3-clause or Expat

License: GPL-2+
 The text of the GPL.
";
        let l = copyright_license(text).unwrap();
        assert_eq!(l.expression, "GPL-2.0-or-later AND (BSD-3-Clause OR MIT)");
        assert!(
            copyright_license("This is free software, see /usr/share/common-licenses.").is_none()
        );
    }
}
