//! The one reader of image archives' structure: a `docker save` tarball (`manifest.json`) or
//! an OCI archive (`index.json`), down to each image's config and layer members.
//!
//! How the members' bytes are reached is the caller's: `kiln load` stages every member of a
//! stream into the store first, `kiln analyze` reads an archive file in place. Both give this
//! reader their members through [`ArchiveMembers`], so both read archives the same way and
//! refuse the same damaged ones. JSON documents are read whole, so each is capped
//! ([`MAX_MANIFEST_SIZE`], [`MAX_CONFIG_SIZE`]), and nested indexes are followed only so deep.

use serde::{Deserialize, Serialize};

use crate::{
    Descriptor, Digest, Error, ImageConfig, Index, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, Manifest,
    REF_NAME_ANNOTATION, Reference, Result, media_type,
};

/// The deepest chain of nested indexes followed (a multi-platform index in an index is 2).
const MAX_INDEX_DEPTH: usize = 4;

/// One entry of a docker-archive's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerManifestEntry {
    /// The config's member name.
    pub config: String,
    /// The names the image is tagged with.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// The layers' member names, bottom first.
    pub layers: Vec<String>,
}

/// The files of an archive, by member name (as [`member_name`] writes it).
pub trait ArchiveMembers {
    /// The size of a member; `None` when the archive has no such member.
    fn size(&self, name: &str) -> Option<u64>;
    /// A member's content, refused ([`Error::TooLarge`]) when it is over `limit` bytes.
    fn read(&mut self, name: &str, limit: u64) -> Result<Vec<u8>>;
}

/// Which manifest of a multi-platform index to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformChoice {
    /// linux on this machine's architecture, or an error.
    Host,
    /// linux on this machine's architecture, else the first manifest (what is inside an
    /// image does not depend on where it is looked at).
    HostOrFirst,
}

/// One image of an archive, as its documents describe it. The members are not checked
/// against the config's diff ids: that needs their content.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// The image config.
    pub config: ImageConfig,
    /// The config's member.
    pub config_member: String,
    /// For an OCI archive, the manifest as it came, with its descriptor (a loaded image keeps
    /// its digest). A docker-archive has none.
    pub manifest: Option<(Descriptor, Manifest)>,
    /// The manifest's own member (OCI archives only).
    pub manifest_member: Option<String>,
    /// The layers' members, bottom first, as many as the config has diff ids.
    pub layers: Vec<String>,
    /// The names the archive gives the image: a docker-archive's `RepoTags` (each must parse),
    /// an OCI index entry's name annotation (kept only when it parses).
    pub names: Vec<String>,
}

/// A member name as written in a tar header, without a leading `./` or `/`.
pub fn member_name(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.trim_start_matches("./")
        .trim_start_matches('/')
        .to_owned()
}

/// The member that holds a blob in an OCI layout: `blobs/<algorithm>/<hex>`.
pub fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Reads the images an archive holds: every entry of a docker-archive's `manifest.json`, or
/// of an OCI archive's `index.json`.
pub fn read_images(
    members: &mut dyn ArchiveMembers,
    platform: PlatformChoice,
) -> Result<Vec<ArchiveImage>> {
    if members.size("manifest.json").is_some() {
        docker_images(members)
    } else if members.size("index.json").is_some() {
        oci_images(members, platform)
    } else {
        Err(bad(
            "neither manifest.json (docker-archive) nor index.json (OCI archive) is in it",
        ))
    }
}

fn bad(why: impl Into<String>) -> Error {
    Error::BadArchive(why.into())
}

fn member_json<T: serde::de::DeserializeOwned>(
    members: &mut dyn ArchiveMembers,
    name: &str,
    limit: u64,
) -> Result<T> {
    let Some(size) = members.size(name) else {
        return Err(bad(format!("it names {name:?}, which it does not contain")));
    };
    let bytes = read_capped(members, name, size, limit, || name.to_owned())?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("{name} is not valid: {e}")))
}

/// The member a descriptor points at, checked against the descriptor's size.
fn blob(members: &dyn ArchiveMembers, descriptor: &Descriptor) -> Result<String> {
    let name = blob_member(&descriptor.digest);
    match members.size(&name) {
        None => Err(bad(format!("it names {name:?}, which it does not contain"))),
        Some(size) if size != descriptor.size => Err(bad(format!(
            "blob {} has {size} bytes, but its descriptor says {} bytes",
            descriptor.digest, descriptor.size
        ))),
        Some(_) => Ok(name),
    }
}

fn blob_json<T: serde::de::DeserializeOwned>(
    members: &mut dyn ArchiveMembers,
    descriptor: &Descriptor,
    limit: u64,
    what: &str,
) -> Result<T> {
    let name = blob(members, descriptor)?;
    let bytes = read_capped(members, &name, descriptor.size, limit, || {
        format!("{what} {}", descriptor.digest)
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("{what} {} is not valid: {e}", descriptor.digest)))
}

/// Reads a member of `size` bytes, refusing it, by the name `what` gives, over `limit`.
fn read_capped(
    members: &mut dyn ArchiveMembers,
    name: &str,
    size: u64,
    limit: u64,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>> {
    if size > limit {
        return Err(Error::TooLarge {
            what: what(),
            size,
            limit,
        });
    }
    members.read(name, limit)
}

fn docker_images(members: &mut dyn ArchiveMembers) -> Result<Vec<ArchiveImage>> {
    let entries: Vec<DockerManifestEntry> =
        member_json(members, "manifest.json", MAX_MANIFEST_SIZE)?;
    if entries.is_empty() {
        return Err(bad("manifest.json lists no image"));
    }
    let mut images = Vec::with_capacity(entries.len());
    for entry in entries {
        let config_member = member_name(entry.config.as_bytes());
        let config: ImageConfig = member_json(members, &config_member, MAX_CONFIG_SIZE)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(bad(format!(
                "{config_member} lists {} layers but manifest.json lists {}",
                config.rootfs.diff_ids.len(),
                entry.layers.len()
            )));
        }
        let mut layers = Vec::with_capacity(entry.layers.len());
        for layer in &entry.layers {
            let name = member_name(layer.as_bytes());
            if members.size(&name).is_none() {
                return Err(bad(format!("it names {name:?}, which it does not contain")));
            }
            layers.push(name);
        }
        let names = entry.repo_tags.unwrap_or_default();
        for name in &names {
            name.parse::<Reference>()?;
        }
        images.push(ArchiveImage {
            config,
            config_member,
            manifest: None,
            manifest_member: None,
            layers,
            names,
        });
    }
    Ok(images)
}

fn oci_images(
    members: &mut dyn ArchiveMembers,
    platform: PlatformChoice,
) -> Result<Vec<ArchiveImage>> {
    let index: Index = member_json(members, "index.json", MAX_MANIFEST_SIZE)?;
    if index.manifests.is_empty() {
        return Err(bad("index.json lists no image"));
    }
    let mut images = Vec::with_capacity(index.manifests.len());
    for entry in &index.manifests {
        let descriptor = platform_manifest(members, entry, platform, 0)?;
        let manifest: Manifest = blob_json(members, &descriptor, MAX_MANIFEST_SIZE, "manifest")?;
        let config: ImageConfig = blob_json(members, &manifest.config, MAX_CONFIG_SIZE, "config")?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "config {} lists {} layers but manifest {} lists {}",
                manifest.config.digest,
                config.rootfs.diff_ids.len(),
                descriptor.digest,
                manifest.layers.len()
            )));
        }
        let layers = manifest
            .layers
            .iter()
            .map(|layer| blob(members, layer))
            .collect::<Result<Vec<_>>>()?;
        let names = entry
            .annotation("io.containerd.image.name")
            .or(entry.annotation(REF_NAME_ANNOTATION))
            .filter(|n| n.parse::<Reference>().is_ok())
            .map(|n| vec![n.to_owned()])
            .unwrap_or_default();
        images.push(ArchiveImage {
            config,
            config_member: blob_member(&manifest.config.digest),
            manifest_member: Some(blob_member(&descriptor.digest)),
            manifest: Some((descriptor, manifest)),
            layers,
            names,
        });
    }
    Ok(images)
}

/// An index entry may be a nested index (multi-platform): follows it down to a manifest.
fn platform_manifest(
    members: &mut dyn ArchiveMembers,
    descriptor: &Descriptor,
    platform: PlatformChoice,
    depth: usize,
) -> Result<Descriptor> {
    if descriptor.media_type != media_type::OCI_INDEX
        && descriptor.media_type != media_type::DOCKER_LIST
    {
        return Ok(descriptor.clone());
    }
    if depth == MAX_INDEX_DEPTH {
        return Err(bad(format!(
            "its indexes nest more than {MAX_INDEX_DEPTH} deep"
        )));
    }
    let nested: Index = blob_json(members, descriptor, MAX_MANIFEST_SIZE, "index")?;
    let host = crate::host_architecture();
    let for_host = nested.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.architecture == host && p.os == "linux")
    });
    let chosen = match (for_host, platform) {
        (Some(d), _) => d,
        (None, PlatformChoice::HostOrFirst) => nested
            .manifests
            .first()
            .ok_or_else(|| bad(format!("index {} lists no manifest", descriptor.digest)))?,
        (None, PlatformChoice::Host) => {
            return Err(bad(format!("its index has no manifest for linux/{host}")));
        }
    };
    platform_manifest(members, chosen, platform, depth + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Files(HashMap<String, Vec<u8>>);

    impl ArchiveMembers for Files {
        fn size(&self, name: &str) -> Option<u64> {
            self.0.get(name).map(|b| b.len() as u64)
        }
        fn read(&mut self, name: &str, limit: u64) -> Result<Vec<u8>> {
            let bytes = self.0[name].clone();
            if bytes.len() as u64 > limit {
                return Err(Error::TooLarge {
                    what: name.to_owned(),
                    size: bytes.len() as u64,
                    limit,
                });
            }
            Ok(bytes)
        }
    }

    fn config_with_layers(n: usize) -> Vec<u8> {
        let mut config = ImageConfig::scratch();
        for i in 0..n {
            config
                .rootfs
                .diff_ids
                .push(Digest::of(format!("layer {i}").as_bytes()));
        }
        serde_json::to_vec(&config).unwrap()
    }

    fn add_blob(files: &mut Files, media_type: &str, bytes: Vec<u8>) -> Descriptor {
        let d = Descriptor::new(media_type, Digest::of(&bytes), bytes.len() as u64);
        files.0.insert(blob_member(&d.digest), bytes);
        d
    }

    #[test]
    fn docker_archives_name_their_members() {
        let mut files = Files(HashMap::new());
        files.0.insert("c.json".into(), config_with_layers(2));
        files.0.insert("a/layer.tar".into(), b"a".to_vec());
        files.0.insert("b/layer.tar".into(), b"b".to_vec());
        files.0.insert(
            "manifest.json".into(),
            br#"[{"Config":"./c.json","RepoTags":["x:1"],"Layers":["a/layer.tar","/b/layer.tar"]}]"#
                .to_vec(),
        );
        let images = read_images(&mut files, PlatformChoice::Host).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].config_member, "c.json");
        assert_eq!(images[0].layers, ["a/layer.tar", "b/layer.tar"]);
        assert_eq!(images[0].names, ["x:1"]);
        assert!(images[0].manifest.is_none());

        files.0.remove("b/layer.tar");
        let err = read_images(&mut files, PlatformChoice::Host).unwrap_err();
        assert!(err.to_string().contains("b/layer.tar"), "{err}");
    }

    #[test]
    fn oci_archives_follow_the_index_to_the_host_platform() {
        let mut files = Files(HashMap::new());
        let layer = add_blob(&mut files, media_type::OCI_LAYER_TAR, b"layer".to_vec());
        let config = add_blob(&mut files, media_type::OCI_CONFIG, config_with_layers(1));
        let manifest = Manifest::oci(config, vec![layer.clone()]);
        let manifest = add_blob(&mut files, media_type::OCI_MANIFEST, manifest.to_bytes());
        let mut other = manifest.clone();
        other.platform = Some(crate::Platform {
            architecture: "not-this-one".into(),
            os: "linux".into(),
            variant: None,
            extra: Default::default(),
        });
        let mut ours = manifest.clone();
        ours.platform = Some(crate::Platform {
            architecture: crate::host_architecture().into(),
            ..other.platform.clone().unwrap()
        });
        let nested = Index {
            manifests: vec![other.clone(), ours],
            ..Index::default()
        };
        let nested = add_blob(&mut files, media_type::OCI_INDEX, nested.to_bytes());
        let index = Index {
            manifests: vec![nested],
            ..Index::default()
        };
        files.0.insert("index.json".into(), index.to_bytes());
        let images = read_images(&mut files, PlatformChoice::Host).unwrap();
        assert_eq!(images[0].layers, [blob_member(&layer.digest)]);
        assert_eq!(
            images[0].manifest.as_ref().unwrap().0.digest,
            manifest.digest
        );

        // Only another platform: an error for Host, that one for HostOrFirst.
        let nested = Index {
            manifests: vec![other],
            ..Index::default()
        };
        let nested = add_blob(&mut files, media_type::OCI_INDEX, nested.to_bytes());
        let index = Index {
            manifests: vec![nested],
            ..Index::default()
        };
        files.0.insert("index.json".into(), index.to_bytes());
        let err = read_images(&mut files, PlatformChoice::Host).unwrap_err();
        assert!(err.to_string().contains("no manifest for linux/"), "{err}");
        let images = read_images(&mut files, PlatformChoice::HostOrFirst).unwrap();
        assert_eq!(images[0].layers, [blob_member(&layer.digest)]);
    }

    #[test]
    fn a_blob_of_another_size_than_its_descriptor_is_refused() {
        let mut files = Files(HashMap::new());
        let layer = add_blob(&mut files, media_type::OCI_LAYER_TAR, b"layer".to_vec());
        let config = add_blob(&mut files, media_type::OCI_CONFIG, config_with_layers(1));
        let mut short = layer.clone();
        short.size -= 1;
        let manifest = add_blob(
            &mut files,
            media_type::OCI_MANIFEST,
            Manifest::oci(config, vec![short]).to_bytes(),
        );
        let index = Index {
            manifests: vec![manifest],
            ..Index::default()
        };
        files.0.insert("index.json".into(), index.to_bytes());
        let err = read_images(&mut files, PlatformChoice::Host).unwrap_err();
        assert!(
            err.to_string().contains("but its descriptor says 4 bytes"),
            "{err}"
        );
    }
}
