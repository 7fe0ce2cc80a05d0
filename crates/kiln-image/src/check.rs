//! `kiln check`: every blob hashed against its name, every image and cache record checked for
//! the blobs it needs, and, on request, what is corrupt dropped with what depends on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::PathBuf;

use crate::store::parse_json;
use crate::{
    CacheRecord, Descriptor, Digest, Error, HashingReader, ImageConfig, MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE, Manifest, REF_NAME_ANNOTATION, Result, Store, chain_id,
};

/// Something `check` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A blob whose content does not hash to its name.
    CorruptBlob {
        /// The blob.
        digest: Digest,
        /// What is wrong: what it hashes to, and its size against its descriptors'.
        why: String,
        /// The images and cache records that use it.
        used_by: Vec<String>,
    },
    /// A blob that images or cache records need and the store does not have.
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// Who needs it.
        used_by: Vec<String>,
    },
    /// A file in the blob directory whose name is not a digest.
    StrayFile {
        /// Where.
        path: PathBuf,
    },
    /// An image or cache record that cannot be used, for a reason other than a bad blob: a
    /// document that does not parse, a size that disagrees with its descriptor, layers and
    /// diff ids that do not pair up.
    Broken {
        /// `image NAME` or `cache record KEY`.
        what: String,
        /// Why.
        why: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users = |f: &mut fmt::Formatter<'_>, used_by: &[String]| {
            if used_by.is_empty() {
                Ok(())
            } else {
                write!(f, " (used by {})", used_by.join(", "))
            }
        };
        match self {
            Problem::CorruptBlob {
                digest,
                why,
                used_by,
            } => {
                write!(f, "blob {digest} is corrupt: {why}")?;
                users(f, used_by)
            }
            Problem::MissingBlob { digest, used_by } => {
                write!(f, "blob {digest} is missing")?;
                users(f, used_by)
            }
            Problem::StrayFile { path } => write!(
                f,
                "{} is not a blob: its name is not a sha256 digest",
                path.display()
            ),
            Problem::Broken { what, why } => write!(f, "{what} is broken: {why}"),
        }
    }
}

/// What `check` saw, found and (with repair) removed.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Blobs hashed.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Tagged images checked.
    pub images: usize,
    /// Build-cache records checked.
    pub cache_records: usize,
    /// What is wrong.
    pub problems: Vec<Problem>,
    /// Blobs (and stray files) removed by the repair.
    pub removed_blobs: Vec<String>,
    /// Image names removed by the repair.
    pub removed_images: Vec<String>,
    /// Snapshots removed by the repair: those unpacked from a corrupt layer, and those above
    /// them.
    pub removed_snapshots: usize,
    /// Build-cache records removed by the repair.
    pub removed_cache_records: usize,
}

impl CheckReport {
    /// How many blobs are corrupt.
    pub fn corrupt_blobs(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| matches!(p, Problem::CorruptBlob { .. }))
            .count()
    }
}

/// Who uses the blobs, and what they need of them.
#[derive(Default)]
struct Users {
    /// Blob → the users' labels.
    of: BTreeMap<Digest, BTreeSet<String>>,
    /// Blob → the sizes descriptors give it.
    sizes: BTreeMap<Digest, BTreeSet<u64>>,
}

impl Users {
    fn add(&mut self, blob: &Descriptor, user: &str) {
        self.of
            .entry(blob.digest.clone())
            .or_default()
            .insert(user.to_owned());
        self.sizes
            .entry(blob.digest.clone())
            .or_default()
            .insert(blob.size);
    }
}

/// One image or cache record: the blobs it needs, and its layer stack when its config reads.
struct Dependent {
    label: String,
    blobs: Vec<Descriptor>,
    layers: Vec<Descriptor>,
    diff_ids: Option<Vec<Digest>>,
    broken: Option<String>,
    /// How to remove it: an index name, or a cache file.
    removal: Removal,
}

enum Removal {
    Tag(String),
    CacheFile(PathBuf),
}

impl Store {
    /// Hashes every blob and checks that every tagged image and every build-cache record has
    /// sound blobs of the sizes it says. With `repair`, removes corrupt blobs, the images and
    /// cache records that use them or miss blobs, and the snapshots unpacked from corrupt
    /// layers; blobs only those images used stay until `gc`.
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        let _lock = if repair {
            self.lock_exclusive()?
        } else {
            self.lock_shared()?
        };
        let mut report = CheckReport::default();

        // Every blob, hashed.
        let blob_dir = self.oci().join("blobs/sha256");
        let mut present: BTreeMap<Digest, (Digest, u64)> = BTreeMap::new();
        let mut stray = Vec::new();
        let mut entries: Vec<_> = fs::read_dir(&blob_dir)
            .map_err(Error::io("read directory", &blob_dir))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                stray.push(entry.path());
                continue;
            };
            let file = fs::File::open(entry.path()).map_err(Error::io("open", entry.path()))?;
            let mut hashing = HashingReader::new(std::io::BufReader::with_capacity(1 << 20, file));
            std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|source| {
                Error::ReadBlob {
                    digest: digest.clone(),
                    source,
                }
            })?;
            let (actual, size) = hashing.finish();
            report.blobs += 1;
            report.bytes += size;
            present.insert(digest, (actual, size));
        }
        let corrupt = |d: &Digest| present.get(d).is_some_and(|(actual, _)| actual != d);

        // What uses them.
        let mut dependents = Vec::new();
        for entry in self.index()?.manifests {
            report.images += 1;
            let name = entry
                .annotation(REF_NAME_ANNOTATION)
                .map(str::to_owned)
                .unwrap_or_else(|| entry.digest.to_string());
            // A multi-platform image: each platform's manifest depends on the index too.
            let mut manifests = vec![(name.clone(), vec![entry.clone()], entry.clone())];
            if crate::is_index(&entry.media_type)
                && present.contains_key(&entry.digest)
                && !corrupt(&entry.digest)
            {
                match self.read_json::<crate::Index>(&entry.digest, MAX_MANIFEST_SIZE, "index") {
                    Ok(index) => {
                        manifests = index
                            .manifests
                            .iter()
                            .map(|child| {
                                let platform = child.platform.as_ref().map(|p| p.to_string());
                                (
                                    format!("{name} ({})", platform.unwrap_or_default()),
                                    vec![entry.clone(), child.clone()],
                                    child.clone(),
                                )
                            })
                            .collect();
                    }
                    Err(e) => {
                        dependents.push(Dependent {
                            label: name.clone(),
                            blobs: vec![entry.clone()],
                            layers: Vec::new(),
                            diff_ids: None,
                            broken: Some(e.to_string()),
                            removal: Removal::Tag(name.clone()),
                        });
                        continue;
                    }
                }
            }
            for (label, blobs, manifest_entry) in manifests {
                let mut dependent = Dependent {
                    label,
                    blobs,
                    layers: Vec::new(),
                    diff_ids: None,
                    broken: None,
                    removal: Removal::Tag(name.clone()),
                };
                let digest = &manifest_entry.digest;
                if present.contains_key(digest) && !corrupt(digest) {
                    match self.read_json::<Manifest>(digest, MAX_MANIFEST_SIZE, "manifest") {
                        // An attestation's config is `{}` and its layers are JSON statements,
                        // not tars: its blobs are all there is to check.
                        Ok(manifest) if crate::attestation::is_attestation(&manifest_entry) => {
                            dependent.blobs.push(manifest.config.clone());
                            dependent.blobs.extend(manifest.layers.iter().cloned());
                        }
                        Ok(manifest) => {
                            dependent.blobs.push(manifest.config.clone());
                            dependent.blobs.extend(manifest.layers.iter().cloned());
                            dependent.layers = manifest.layers.clone();
                            let config = &manifest.config.digest;
                            if present.contains_key(config) && !corrupt(config) {
                                match self.read_json::<ImageConfig>(
                                    config,
                                    MAX_CONFIG_SIZE,
                                    "config",
                                ) {
                                    Ok(config) => {
                                        dependent.diff_ids = Some(config.rootfs.diff_ids);
                                    }
                                    Err(e) => dependent.broken = Some(e.to_string()),
                                }
                            }
                        }
                        Err(e) => dependent.broken = Some(e.to_string()),
                    }
                }
                dependents.push(dependent);
            }
        }
        let cache_dir = self.root().join("cache");
        let mut records: Vec<_> = fs::read_dir(&cache_dir)
            .map_err(Error::io("read directory", &cache_dir))?
            .flatten()
            .collect();
        records.sort_by_key(|e| e.file_name());
        for entry in records {
            report.cache_records += 1;
            let key = entry.file_name().to_string_lossy().into_owned();
            let mut dependent = Dependent {
                label: format!("cache record {}", &key[..key.len().min(12)]),
                blobs: Vec::new(),
                layers: Vec::new(),
                diff_ids: None,
                broken: None,
                removal: Removal::CacheFile(entry.path()),
            };
            let record = fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    parse_json::<CacheRecord>(&bytes, || key.clone()).map_err(|e| e.to_string())
                });
            match record {
                Ok(record) => {
                    let size = present.get(&record.config).map_or(0, |(_, size)| *size);
                    dependent.blobs.push(Descriptor::new(
                        crate::media_type::OCI_CONFIG,
                        record.config.clone(),
                        size,
                    ));
                    dependent.blobs.extend(record.layers.iter().cloned());
                    dependent.layers = record.layers.clone();
                    if present.contains_key(&record.config) && !corrupt(&record.config) {
                        dependent.diff_ids = self
                            .config(&record.config)
                            .ok()
                            .map(|config| config.rootfs.diff_ids);
                    }
                }
                Err(e) => dependent.broken = Some(format!("it does not parse: {e}")),
            }
            dependents.push(dependent);
        }

        let mut users = Users::default();
        for dependent in &mut dependents {
            for blob in &dependent.blobs {
                users.add(blob, &dependent.label);
                if let Some((actual, size)) = present.get(&blob.digest)
                    && actual == &blob.digest
                    && *size != blob.size
                    && matches!(dependent.removal, Removal::Tag(_))
                {
                    dependent.broken.get_or_insert(format!(
                        "it says blob {} has {} bytes; it has {size}",
                        blob.digest, blob.size
                    ));
                }
            }
            if let Some(diff_ids) = &dependent.diff_ids
                && diff_ids.len() != dependent.layers.len()
            {
                dependent.broken.get_or_insert(format!(
                    "it has {} layers and {} diff ids",
                    dependent.layers.len(),
                    diff_ids.len()
                ));
            }
        }

        // The problems, blob by blob, then the dependents broken for other reasons.
        for (digest, (actual, size)) in &present {
            if actual == digest {
                continue;
            }
            let mut why = format!("its content hashes to {actual}");
            for expected in users.sizes.get(digest).into_iter().flatten() {
                if size < expected {
                    why.push_str(&format!("; it has {size} of {expected} bytes"));
                } else if size > expected {
                    why.push_str(&format!("; it has {size} bytes, not {expected}"));
                }
            }
            report.problems.push(Problem::CorruptBlob {
                digest: digest.clone(),
                why,
                used_by: users
                    .of
                    .get(digest)
                    .map(|u| u.iter().cloned().collect())
                    .unwrap_or_default(),
            });
        }
        for (digest, used_by) in &users.of {
            if !present.contains_key(digest) {
                report.problems.push(Problem::MissingBlob {
                    digest: digest.clone(),
                    used_by: used_by.iter().cloned().collect(),
                });
            }
        }
        for path in &stray {
            report
                .problems
                .push(Problem::StrayFile { path: path.clone() });
        }
        for dependent in &dependents {
            if let Some(why) = &dependent.broken {
                let what = match dependent.removal {
                    Removal::Tag(_) => format!("image {}", dependent.label),
                    Removal::CacheFile(_) => dependent.label.clone(),
                };
                report.problems.push(Problem::Broken {
                    what,
                    why: why.clone(),
                });
            }
        }
        if !repair || report.problems.is_empty() {
            return Ok(report);
        }

        // The repair: dependents first, so that nothing ever names a blob that is gone.
        let bad_blob = |d: &Digest| corrupt(d) || !present.contains_key(d);
        let mut drop_tags = BTreeSet::new();
        let mut drop_chains = BTreeSet::new();
        for dependent in &dependents {
            let unusable =
                dependent.broken.is_some() || dependent.blobs.iter().any(|b| bad_blob(&b.digest));
            if let Some(diff_ids) = &dependent.diff_ids
                && let Some(first) = dependent.layers.iter().position(|l| corrupt(&l.digest))
            {
                // A snapshot holds one layer, but its chain id is only ever stacked on the
                // layers below: everything from the corrupt layer up goes.
                for n in first + 1..=diff_ids.len() {
                    if let Some(chain) = chain_id(&diff_ids[..n]) {
                        drop_chains.insert(chain);
                    }
                }
            }
            if !unusable {
                continue;
            }
            match &dependent.removal {
                Removal::Tag(name) => {
                    drop_tags.insert(name.clone());
                }
                Removal::CacheFile(path) => {
                    fs::remove_file(path).map_err(Error::io("remove", path))?;
                    report.removed_cache_records += 1;
                }
            }
        }
        if !drop_tags.is_empty() {
            self.edit_index(|index| {
                index.manifests.retain(|d| {
                    let name = d
                        .annotation(REF_NAME_ANNOTATION)
                        .map(str::to_owned)
                        .unwrap_or_else(|| d.digest.to_string());
                    !drop_tags.contains(&name)
                })
            })?;
            report.removed_images = drop_tags.into_iter().collect();
        }
        for chain in drop_chains {
            let dir = self.snapshot_dir(&chain);
            if dir.is_dir() {
                fs::remove_dir_all(&dir).map_err(Error::io("remove snapshot", &dir))?;
                report.removed_snapshots += 1;
            }
        }
        for (digest, (actual, _)) in &present {
            if actual != digest {
                let path = self.blob_path(digest);
                fs::remove_file(&path).map_err(Error::io("remove", &path))?;
                report.removed_blobs.push(digest.to_string());
            }
        }
        for path in stray {
            fs::remove_file(&path)
                .or_else(|_| fs::remove_dir_all(&path))
                .map_err(Error::io("remove", &path))?;
            report.removed_blobs.push(path.display().to_string());
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ImageConfig, media_type};

    fn image_with_layer(store: &Store, name: &str, layer: &[u8]) -> Digest {
        let digest = store.write_blob(layer).unwrap();
        let mut config = ImageConfig::scratch();
        config.rootfs.diff_ids.push(digest.clone());
        let image = store
            .put_image(
                &config,
                vec![Descriptor::new(
                    media_type::OCI_LAYER_TAR,
                    digest.clone(),
                    layer.len() as u64,
                )],
            )
            .unwrap();
        store.tag(name, &image.descriptor).unwrap();
        digest
    }

    #[test]
    fn a_sound_store_has_no_problems() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        image_with_layer(&store, "a", b"layer a");
        let report = store.check(false).unwrap();
        assert_eq!(report.problems, []);
        assert_eq!((report.blobs, report.images), (3, 1));
    }

    #[test]
    fn repair_drops_the_corrupt_blob_its_image_and_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bad = image_with_layer(&store, "bad", b"layer bad");
        image_with_layer(&store, "good", b"layer good");
        let chain = chain_id(std::slice::from_ref(&bad)).unwrap();
        fs::create_dir(store.snapshot_dir(&chain)).unwrap();
        fs::write(store.blob_path(&bad), b"layer BAD").unwrap();

        let report = store.check(false).unwrap();
        assert_eq!(report.corrupt_blobs(), 1);
        let line = report.problems[0].to_string();
        assert!(
            line.contains(bad.as_str()) && line.contains("bad:latest"),
            "{line}"
        );
        assert!(store.has_blob(&bad), "check alone changes nothing");

        let report = store.check(true).unwrap();
        assert_eq!(report.removed_blobs, [bad.to_string()]);
        assert_eq!(report.removed_images, ["bad:latest"]);
        assert_eq!(report.removed_snapshots, 1);
        assert!(!store.snapshot_dir(&chain).exists());
        assert_eq!(store.check(false).unwrap().problems, []);
        assert!(store.resolve("good").is_ok());
    }
}
