//! Python distributions: the core metadata of every `*.dist-info/METADATA` and
//! `*.egg-info/PKG-INFO` (or single-file `*.egg-info`) in the image.

use crate::control::paragraphs;
use crate::license::{self, License};

/// One installed distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyDist {
    /// `Name` as the metadata spells it (`MarkupSafe`).
    pub name: String,
    /// `Version`.
    pub version: String,
    /// The license, when the metadata gives one.
    pub license: Option<License>,
    /// Where its metadata sits in the image (`/opt/venv/lib/…/six-1.16.0.dist-info`).
    pub location: String,
}

/// Reads one METADATA / PKG-INFO text; `None` without a name and a version.
pub fn parse_metadata(text: &str, location: &str) -> Option<PyDist> {
    let header = paragraphs(text, true).into_iter().next()?;
    let name = header.get("Name")?.trim();
    let version = header.get("Version")?.trim();
    if name.is_empty() || version.is_empty() {
        return None;
    }
    let classifiers: Vec<&str> = header.all("Classifier").collect();
    Some(PyDist {
        name: name.to_owned(),
        version: version.to_owned(),
        license: license::from_python(
            header.get("License-Expression"),
            header.get("License"),
            &classifiers,
        ),
        location: location.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_header_only() {
        let text = "Metadata-Version: 2.1\nName: MarkupSafe\nVersion: 2.1.5\nSummary: Safely add untrusted strings\nLicense: BSD-3-Clause\nClassifier: License :: OSI Approved :: BSD License\n\nName: not-this\nVersion: 9\n";
        let d = parse_metadata(text, "/x/MarkupSafe-2.1.5.dist-info").unwrap();
        assert_eq!(
            (d.name.as_str(), d.version.as_str()),
            ("MarkupSafe", "2.1.5")
        );
        assert_eq!(d.license.unwrap().expression, "BSD-3-Clause");
        assert!(parse_metadata("Name: x\n", "/y").is_none());
    }
}
