//! The SPDX 2.3 JSON document of an [`Inventory`], and the package rows read back from one
//! (for `kiln sbom --format table`, from an attestation or a fresh scan alike).

use serde_json::{Value, json};

use crate::{Error, Inventory, purl};

/// The predicate type of an SPDX document in an in-toto statement.
pub const PREDICATE_TYPE: &str = "https://spdx.dev/Document";

/// What the document is about.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// The image's name as given (`py-slim:latest`).
    pub name: &'a str,
    /// Its manifest digest.
    pub digest: &'a kiln_image::Digest,
    /// `Tool: kiln-<version>`.
    pub tool: &'a str,
    /// RFC 3339 time, seconds, `Z`.
    pub created: &'a str,
}

/// SPDXIDs allow letters, digits, `.` and `-`.
fn spdx_id(kind: &str, n: usize, name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{n}-{name}")
}

/// The document.
pub fn document(inventory: &Inventory, subject: &Subject<'_>) -> Value {
    let mut packages = vec![json!({
        "name": subject.name,
        "SPDXID": "SPDXRef-image",
        "versionInfo": subject.digest.as_str(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-image",
    })];
    let mut extracted: Vec<(String, String)> = Vec::new();
    let mut license_of = |l: Option<&crate::License>| match l {
        Some(l) => {
            for r in &l.refs {
                if !extracted.iter().any(|(id, _)| *id == r.0) {
                    extracted.push(r.clone());
                }
            }
            l.expression.clone()
        }
        None => "NOASSERTION".to_owned(),
    };
    let vendor = inventory
        .distro
        .as_ref()
        .map_or("debian", |d| d.id.as_str())
        .to_owned();
    let distro = inventory.distro.as_ref().map(crate::Distro::qualifier);
    let mut add = |id: String, package: Value| {
        relationships.push(json!({
            "spdxElementId": "SPDXRef-image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
        packages.push(package);
    };
    for (n, (p, license)) in inventory.debs.iter().enumerate() {
        let id = spdx_id("deb", n, &p.name);
        let package = json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license_of(license.as_ref()),
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("built package from: {} {}", p.source, p.source_version),
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl::deb(&vendor, &p.name, &p.version, &p.arch, distro.as_deref()),
            }],
        });
        add(id, package);
    }
    for (n, d) in inventory.python.iter().enumerate() {
        let id = spdx_id("pypi", n, &d.name);
        let package = json!({
            "name": d.name,
            "SPDXID": id,
            "versionInfo": d.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license_of(d.license.as_ref()),
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("installed at {}", d.location),
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl::pypi(&d.name, &d.version),
            }],
        });
        add(id, package);
    }
    let namespace_name: String = subject
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": subject.name,
        "documentNamespace": format!("https://kiln.invalid/spdx/{namespace_name}-{}", subject.digest.hex()),
        "creationInfo": {
            "created": subject.created,
            "creators": [subject.tool],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = extracted
            .into_iter()
            .map(|(id, text)| json!({"licenseId": id, "extractedText": text, "name": text.lines().next().unwrap_or_default()}))
            .collect();
    }
    doc
}

/// One package of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `deb`, `pypi` (the purl type).
    pub kind: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The declared license expression.
    pub license: String,
    /// The purl.
    pub purl: String,
}

/// The packages of a document that have a purl (the image itself has none).
pub fn rows(doc: &Value) -> Result<Vec<Row>, Error> {
    let packages = doc["packages"]
        .as_array()
        .ok_or_else(|| Error::BadDocument("the SPDX document has no packages array".into()))?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(packages
        .iter()
        .filter_map(|p| {
            let purl = p["externalRefs"]
                .as_array()?
                .iter()
                .find(|r| r["referenceType"] == "purl")?["referenceLocator"]
                .as_str()?
                .to_owned();
            let kind = purl
                .strip_prefix("pkg:")?
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            Some(Row {
                kind,
                name: text(&p["name"]),
                version: text(&p["versionInfo"]),
                license: text(&p["licenseDeclared"]),
                purl,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DebPackage, Distro, PyDist};

    #[test]
    fn document_lists_each_package_with_a_purl_and_declares_its_refs() {
        let inventory = Inventory {
            distro: Some(Distro {
                id: "debian".into(),
                version_id: Some("12".into()),
            }),
            debs: vec![(
                DebPackage {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u4".into(),
                    arch: "amd64".into(),
                    source: "glibc".into(),
                    source_version: "2.36-9+deb12u4".into(),
                    maintainer: None,
                },
                Some(crate::license::from_dep5(&[
                    "LGPL-2.1+".into(),
                    "public-domain".into(),
                ])),
            )],
            python: vec![PyDist {
                name: "six".into(),
                version: "1.16.0".into(),
                license: None,
                location: "/opt/venv/lib/python3.11/site-packages/six-1.16.0.dist-info".into(),
            }],
        };
        let digest = kiln_image::Digest::of(b"m");
        let doc = document(
            &inventory,
            &Subject {
                name: "py:1",
                digest: &digest,
                tool: "Tool: kiln-0.1.0",
                created: "2026-01-01T00:00:00Z",
            },
        );
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        let rows = rows(&doc).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].purl,
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            rows[0].license,
            "LGPL-2.1-or-later AND LicenseRef-public-domain"
        );
        assert_eq!(rows[1].purl, "pkg:pypi/six@1.16.0");
        assert_eq!(rows[1].license, "NOASSERTION");
        assert_eq!(
            doc["hasExtractedLicensingInfos"][0]["licenseId"],
            "LicenseRef-public-domain"
        );
        assert_eq!(doc["relationships"].as_array().unwrap().len(), 3);
    }
}
