//! Descriptors, manifests and indexes (OCI and Docker schema 2 share one shape).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Digest;

/// Media types kiln reads and writes.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Uncompressed OCI layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Gzip OCI layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// Zstd OCI layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer.
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
}

/// The compression a layer blob carries, read from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Guesses from a layer media type.
    pub fn of_media_type(media_type: &str) -> Compression {
        if media_type.ends_with("gzip") {
            Compression::Gzip
        } else if media_type.ends_with("zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// For index entries: the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations (the store's tags live here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Fields kiln does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Descriptor {
    /// A descriptor with no platform or annotations.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            platform: None,
            annotations: None,
            extra: Map::new(),
        }
    }

    /// The value of one annotation.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// A platform in an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Fields kiln does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Platform {
    /// `linux/<arch>` of this machine.
    pub fn host() -> Platform {
        Platform::new("linux", crate::host_architecture(), None)
    }

    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            variant: variant.map(str::to_owned),
            extra: Map::new(),
        }
    }

    /// Whether an image of `self` serves a request for `want`: same OS and architecture, and
    /// the same variant when `want` names one.
    pub fn matches(&self, want: &Platform) -> bool {
        self.os == want.os
            && self.architecture == want.architecture
            && (want.variant.is_none() || self.normal_variant() == want.normal_variant())
    }

    /// The variant as containerd's matcher reads it: an `arm` image that names none is v7.
    fn normal_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm", None) => Some("v7"),
            (_, variant) => variant,
        }
    }
}

/// An architecture and variant as containerd's `platforms.Normalize` (which BuildKit applies
/// to `--platform`) spells them: `aarch64` is `arm64` (whose `v8` is no variant), `x86_64` is
/// `amd64`, `armhf` is `arm/v7`, and a bare `arm` is `arm/v7`.
fn normalize_arch<'a>(arch: &'a str, variant: Option<&'a str>) -> (&'a str, Option<String>) {
    let owned = |v: Option<&str>| v.map(str::to_owned);
    match arch {
        "i386" => ("386", owned(variant)),
        "x86_64" | "x86-64" | "amd64" => ("amd64", owned(variant.filter(|v| *v != "v1"))),
        "aarch64" | "arm64" => (
            "arm64",
            owned(variant.filter(|v| !matches!(*v, "8" | "v8"))),
        ),
        "armhf" => ("arm", Some("v7".to_owned())),
        "armel" => ("arm", Some("v6".to_owned())),
        "arm" => match variant {
            None | Some("7") => ("arm", Some("v7".to_owned())),
            Some(v @ ("5" | "6" | "8")) => ("arm", Some(format!("v{v}"))),
            Some(v) => ("arm", Some(v.to_owned())),
        },
        other => (other, owned(variant)),
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{}/{v}", self.os, self.architecture),
            None => write!(f, "{}/{}", self.os, self.architecture),
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    /// `os/arch[/variant]`, for the OSes and architectures kiln can build for.
    fn from_str(text: &str) -> std::result::Result<Platform, String> {
        const ARCHES: [&str; 9] = [
            "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64",
        ];
        let parts: Vec<&str> = text.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] if !variant.is_empty() => (*os, *arch, Some(*variant)),
            _ => return Err(format!("{text:?} is not os/arch[/variant]")),
        };
        if os.contains('(') {
            return Err(format!(
                "{text:?}: an OS version (os(version)/arch) is not supported by kiln"
            ));
        }
        let (arch, variant) = normalize_arch(arch, variant);
        if os != "linux" {
            // A stage for another OS builds when it runs nothing (FROM scratch, COPY), as
            // BuildKit's; the build refuses a RUN for it.
            let component = |c: &str| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            };
            if !(component(os) && component(arch)) {
                return Err(format!(
                    "{text:?}: a platform component must match ^[A-Za-z0-9_-]+$"
                ));
            }
            return Ok(Platform::new(os, arch, variant.as_deref()));
        }
        if !ARCHES.contains(&arch) {
            return Err(format!(
                "{text:?}: unknown architecture {arch:?} (known: {})",
                ARCHES.join(", ")
            ));
        }
        Ok(Platform::new(os, arch, variant.as_deref()))
    }
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// OCI or Docker manifest media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Fields kiln does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Manifest {
    /// An OCI manifest over a config and layers.
    pub fn oci(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            config,
            layers,
            annotations: None,
            extra: Map::new(),
        }
    }

    /// Serializes the manifest as it is stored and hashed.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// An image index (`index.json` of a layout, or a multi-platform list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Index media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Fields kiln does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            annotations: None,
            extra: Map::new(),
        }
    }
}

impl Index {
    /// Serializes the index as it is stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_normalize_as_containerd_does() {
        let parse = |s: &str| s.parse::<Platform>().unwrap().to_string();
        assert_eq!(parse("linux/arm"), "linux/arm/v7");
        assert_eq!(parse("linux/armhf"), "linux/arm/v7");
        assert_eq!(parse("linux/arm/6"), "linux/arm/v6");
        assert_eq!(parse("linux/aarch64"), "linux/arm64");
        assert_eq!(parse("linux/arm64/v8"), "linux/arm64");
        assert_eq!(parse("linux/x86_64"), "linux/amd64");
        assert_eq!(parse("linux/amd64/v2"), "linux/amd64/v2");
        // An arm image that names no variant serves a request for v7.
        let bare = Platform::new("linux", "arm", None);
        assert!(bare.matches(&"linux/arm".parse().unwrap()));
        assert!(!bare.matches(&"linux/arm/v6".parse().unwrap()));
    }
}
