//! What an image holds, read from its layers without running anything: the Debian packages
//! of `/var/lib/dpkg/status` (licenses from machine-readable copyright files) and the Python
//! distributions of every `*.dist-info` and `*.egg-info`, as an SPDX 2.3 JSON document with a
//! purl for each package. Also the SLSA v1 provenance of a build, and the in-toto statements
//! that carry both as BuildKit attaches them (the storage itself is `kiln_image::attestation`).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod control;
pub mod dpkg;
pub mod fs;
pub mod license;
pub mod provenance;
pub mod purl;
pub mod python;
pub mod spdx;

use kiln_image::{Image, Store};

pub use dpkg::DebPackage;
pub use license::License;
pub use python::PyDist;

/// The in-toto statement type BuildKit writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// Errors while reading an image's layers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer's tar stream could not be read.
    #[error("read layer {layer}")]
    Layer {
        /// The layer's digest.
        layer: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A layer's compression could not be decoded.
    #[error("decompress layer {layer}")]
    Decompress {
        /// The layer's digest.
        layer: String,
        /// What failed.
        #[source]
        source: kiln_layer::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] kiln_image::Error),
    /// An SBOM document that is not what kiln writes.
    #[error("{0}")]
    BadDocument(String),
}

/// The distribution, from os-release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    /// `ID` (`debian`).
    pub id: String,
    /// `VERSION_ID` (`12`), if any (testing and sid have none).
    pub version_id: Option<String>,
}

impl Distro {
    /// purl's `distro` qualifier: `debian-12`.
    pub fn qualifier(&self) -> String {
        match &self.version_id {
            Some(v) => format!("{}-{v}", self.id),
            None => self.id.clone(),
        }
    }
}

/// Everything the scan found.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// From os-release.
    pub distro: Option<Distro>,
    /// Installed Debian packages with their license where the copyright file gives one.
    pub debs: Vec<(DebPackage, Option<License>)>,
    /// Python distributions, by location.
    pub python: Vec<PyDist>,
}

fn os_release(text: &str) -> Option<Distro> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_owned())
            .filter(|v| !v.is_empty())
    };
    Some(Distro {
        id: value("ID")?,
        version_id: value("VERSION_ID"),
    })
}

impl Inventory {
    /// The inventory of a merged file system's files.
    pub fn of_files(files: &fs::Files) -> Inventory {
        let distro = files
            .get("etc/os-release")
            .or_else(|| files.get("usr/lib/os-release"))
            .and_then(|b| os_release(&String::from_utf8_lossy(b)));
        let debs = files
            .get("var/lib/dpkg/status")
            .map(|b| dpkg::parse_status(&String::from_utf8_lossy(b)))
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let license = files
                    .get(&format!("usr/share/doc/{}/copyright", p.name))
                    .and_then(|b| dpkg::copyright_license(&String::from_utf8_lossy(b)));
                (p, license)
            })
            .collect();
        let mut python: Vec<PyDist> = files
            .iter()
            .filter(|(path, _)| !path.starts_with("usr/share/doc/") && fs::wanted(path))
            .filter_map(|(path, bytes)| {
                let location = match path.rsplit_once('/') {
                    Some((dir, "METADATA" | "PKG-INFO")) => dir,
                    _ => path,
                };
                python::parse_metadata(&String::from_utf8_lossy(bytes), &format!("/{location}"))
            })
            .collect();
        python.sort_by(|a, b| (&a.name, &a.location).cmp(&(&b.name, &b.location)));
        Inventory {
            distro,
            debs,
            python,
        }
    }

    /// Reads an image of the store.
    pub fn of_image(store: &Store, image: &Image) -> Result<Inventory, Error> {
        let files = fs::Files::of_layers(store, &image.manifest.layers)?;
        Ok(Inventory::of_files(&files))
    }
}

/// An in-toto v1 statement about one image manifest.
pub fn statement(
    subject_name: &str,
    subject: &kiln_image::Digest,
    predicate_type: &str,
    predicate: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": subject.hex()}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_gives_the_purl_distro() {
        let d = os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n",
        )
        .unwrap();
        assert_eq!(d.qualifier(), "debian-12");
    }
}
