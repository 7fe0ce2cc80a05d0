//! The build cache outside the store: `--cache-to`/`--cache-from` of `type=registry,ref=R`,
//! `type=local` (an OCI layout directory, [`local`]) and `type=inline` (in the image config,
//! [`inline`]).
//!
//! The registry and the local backends store the same artifact: one OCI artifact manifest. Its config blob
//! (`application/vnd.kiln.build-cache.v1+json`) maps step keys to [`CacheRecord`]s; its
//! layers are every blob those records name: the image configs after each step and the
//! layers, pushed as the store holds them so that an importing store rebuilds byte-identical
//! images. An importer reads the map once and fetches a record's blobs only when a step's
//! key hits it.
//!
//! # Several writers of one ref (a farm of runners)
//!
//! A registry has no compare-and-swap on tags, so a writer that read-modify-writes the ref
//! alone can drop the records of another that wrote in between. Each export is therefore also
//! an entry of its own: the same manifest under the tag `<tag>-kc-<hex of its config
//! digest>`, content-addressed, never overwritten with other content. Importers read the ref
//! and every entry tag of its repository, merging the records (the same key means the same
//! inputs, so any record of it will do). The ref itself gets a read-merge-write, the union of
//! what it held and the new records, for readers that look at the ref alone; under
//! concurrency it may lag behind the entries, never contradict them. Nothing is corrupted at
//! any point: blobs are pushed before the manifest naming them, and a manifest PUT replaces a
//! tag at once. Entry tags are not pruned: each distinct export adds one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln_image::{CacheRecord, Descriptor, Digest, Manifest, Reference, Store, media_type};
use serde::{Deserialize, Serialize};

use crate::pull::Wanted;
use crate::{Error, Registry, Reporter};

pub mod inline;
pub mod local;

/// The media type of the cache's config blob, and the artifact type of its manifest.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.build-cache.v1+json";

/// The most kiln reads of a cache's config blob, which is read into memory whole. Its records
/// take some 300 bytes a step: this is room for some 200 000 steps.
const MAX_CACHE_CONFIG_SIZE: u64 = 64 << 20;

/// The config blob of a cache artifact.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheConfig {
    /// Step key → what the step produced.
    records: BTreeMap<Digest, CacheRecord>,
    /// Sizes of the records' image configs (descriptors need them).
    #[serde(default)]
    config_sizes: BTreeMap<Digest, u64>,
}

/// The records of `keys` that the store still has complete, in the order of `keys`, each
/// once: what every backend exports.
fn select(store: &Store, keys: &[Digest]) -> Vec<(Digest, CacheRecord)> {
    let mut seen = BTreeSet::new();
    keys.iter()
        .filter(|key| seen.insert((*key).clone()))
        .filter_map(|key| Some((key.clone(), store.cache_get(key)?)))
        .collect()
}

/// One cache artifact, as the registry and the local backends store it: the config and the
/// blobs its manifest lists.
#[derive(Debug, Default)]
struct Artifact {
    config: CacheConfig,
    blobs: Vec<Descriptor>,
}

impl Artifact {
    /// The artifact of the records of `keys` (see [`select`]).
    fn of(store: &Store, keys: &[Digest]) -> Result<Artifact, Error> {
        let mut artifact = Artifact::default();
        let mut seen = BTreeSet::new();
        for (key, record) in select(store, keys) {
            let path = store.blob_path(&record.config);
            let config_size = std::fs::metadata(&path)
                .map_err(Error::io("stat", &path))?
                .len();
            artifact
                .config
                .config_sizes
                .insert(record.config.clone(), config_size);
            if seen.insert(record.config.clone()) {
                artifact.blobs.push(Descriptor::new(
                    media_type::OCI_CONFIG,
                    record.config.clone(),
                    config_size,
                ));
            }
            for layer in &record.layers {
                if seen.insert(layer.digest.clone()) {
                    artifact.blobs.push(Descriptor::new(
                        &layer.media_type,
                        layer.digest.clone(),
                        layer.size,
                    ));
                }
            }
            artifact.config.records.insert(key, record);
        }
        Ok(artifact)
    }

    /// Adds the records of `held` (what a backend had before this export) that this one lacks:
    /// the same key means the same inputs, so either record of it will do.
    fn merge(&mut self, held: Artifact) {
        for (key, record) in held.config.records {
            self.config.records.entry(key).or_insert(record);
        }
        for (digest, size) in held.config.config_sizes {
            self.config.config_sizes.entry(digest).or_insert(size);
        }
        let mut seen: BTreeSet<Digest> = self.blobs.iter().map(|d| d.digest.clone()).collect();
        for blob in held.blobs {
            if seen.insert(blob.digest.clone()) {
                self.blobs.push(blob);
            }
        }
    }

    /// The config blob's bytes and descriptor, and the manifest naming it and the blobs.
    fn manifest(&self) -> (Vec<u8>, Descriptor, Manifest) {
        let bytes = serde_json::to_vec(&self.config).unwrap_or_default();
        let config = Descriptor::new(
            CACHE_CONFIG_MEDIA_TYPE,
            Digest::of(&bytes),
            bytes.len() as u64,
        );
        let mut manifest = Manifest::oci(config.clone(), self.blobs.clone());
        manifest.extra.insert(
            "artifactType".into(),
            serde_json::Value::String(CACHE_CONFIG_MEDIA_TYPE.into()),
        );
        (bytes, config, manifest)
    }

    /// Checks that `manifest` is a kiln cache's before its config is read; `name` says where
    /// it is, for the error.
    fn check_manifest(name: &str, manifest: &Manifest) -> Result<(), Error> {
        if manifest.config.media_type != CACHE_CONFIG_MEDIA_TYPE {
            return Err(Error::BadCache {
                reference: name.to_owned(),
                why: format!(
                    "its config is {}, not {CACHE_CONFIG_MEDIA_TYPE}",
                    manifest.config.media_type
                ),
            });
        }
        if manifest.config.size > MAX_CACHE_CONFIG_SIZE {
            return Err(kiln_image::Error::TooLarge {
                what: format!("cache config {}", manifest.config.digest),
                size: manifest.config.size,
                limit: MAX_CACHE_CONFIG_SIZE,
            }
            .into());
        }
        Ok(())
    }

    /// The artifact of a checked manifest and its config's bytes.
    fn parse(name: &str, manifest: Manifest, config: &[u8]) -> Result<Artifact, Error> {
        let config = serde_json::from_slice(config).map_err(|e| Error::BadCache {
            reference: name.to_owned(),
            why: e.to_string(),
        })?;
        Ok(Artifact {
            config,
            blobs: manifest.layers,
        })
    }
}

/// Where a cache read for `--cache-from` fetches the blobs of its records.
#[derive(Debug)]
enum Source {
    Registry { reference: Reference, host: String },
    Local(PathBuf),
}

/// A cache read for `--cache-from`: its records, and where to fetch their blobs.
#[derive(Debug)]
pub struct RemoteCache {
    source: Source,
    records: BTreeMap<Digest, CacheRecord>,
    config_sizes: BTreeMap<Digest, u64>,
    /// Configs the cache carries itself (an inline cache's), checked against their digests.
    embedded: BTreeMap<Digest, Vec<u8>>,
}

impl RemoteCache {
    fn new(source: Source) -> RemoteCache {
        RemoteCache {
            source,
            records: BTreeMap::new(),
            config_sizes: BTreeMap::new(),
            embedded: BTreeMap::new(),
        }
    }

    fn add(&mut self, config: CacheConfig) {
        for (key, record) in config.records {
            self.records.entry(key).or_insert(record);
        }
        self.config_sizes.extend(config.config_sizes);
    }

    /// How many step records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether it has a record for this step key.
    pub fn contains(&self, key: &Digest) -> bool {
        self.records.contains_key(key)
    }
}

/// What a registry ref held for `--cache-from`.
enum Held {
    Cache(Artifact),
    /// An image with an inline cache: its records and configs.
    Inline(CacheConfig, BTreeMap<Digest, Vec<u8>>),
}

impl Registry {
    /// Pushes the records of these step keys (those the store still has complete) and their
    /// blobs to `target`, merged with what the ref held. Returns the number of records
    /// exported.
    pub fn export_cache(
        &self,
        store: &Store,
        target: &Reference,
        keys: &[Digest],
        reporter: &dyn Reporter,
    ) -> Result<usize, Error> {
        let mut artifact = Artifact::of(store, keys)?;
        let exported = artifact.config.records.len();
        self.block_on(async {
            let endpoint = self.endpoint(&target.domain, false, false).await?;
            let (bytes, config_desc, manifest) = artifact.manifest();
            store.write_blob(&bytes)?;
            let entry = entry_tag(target, &config_desc.digest);
            let mut all = vec![config_desc];
            all.extend(artifact.blobs.iter().cloned());
            self.push_blobs(store, &endpoint, &target.path, &all, reporter)
                .await?;
            self.put_manifest(
                &endpoint,
                &entry,
                manifest.to_bytes(),
                media_type::OCI_MANIFEST,
                reporter,
            )
            .await?;
            // The ref: what it held, and ours. Its blobs are in the repository already.
            match self
                .read_cache_at(store, &endpoint, target, false, reporter)
                .await?
            {
                Some(Held::Cache(held)) => artifact.merge(held),
                Some(Held::Inline(..)) | None => {}
            }
            let (bytes, merged_desc, manifest) = artifact.manifest();
            store.write_blob(&bytes)?;
            self.push_blobs(
                store,
                &endpoint,
                &target.path,
                std::slice::from_ref(&merged_desc),
                reporter,
            )
            .await?;
            self.put_manifest(
                &endpoint,
                target,
                manifest.to_bytes(),
                media_type::OCI_MANIFEST,
                reporter,
            )
            .await?;
            Ok(exported)
        })
    }

    /// What `source` holds, None if nothing. An image with an inline cache is read only when
    /// `inline` (an import); anything else is an error.
    async fn read_cache_at(
        &self,
        store: &Store,
        endpoint: &std::sync::Arc<crate::client::Endpoint>,
        source: &Reference,
        inline: bool,
        reporter: &dyn Reporter,
    ) -> Result<Option<Held>, Error> {
        let name = source.to_string();
        let got = self
            .get_manifest(
                endpoint,
                &source.path,
                source.tag_or_latest(),
                source.digest.as_ref(),
                reporter,
            )
            .await;
        let bytes = match got {
            Ok((bytes, _)) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |why: String| Error::BadCache {
            reference: name.clone(),
            why,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if inline && value.get("manifests").is_some() {
            // An image index (several platforms, or attestations): each image's inline cache.
            let index: kiln_image::Index =
                serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            let mut all = CacheConfig::default();
            let mut configs = BTreeMap::new();
            let mut failed = None;
            let images = index
                .manifests
                .iter()
                .filter(|d| d.platform.as_ref().is_some_and(|p| p.os != "unknown"));
            for entry in images {
                let (bytes, _) = self
                    .get_manifest(endpoint, &source.path, None, Some(&entry.digest), reporter)
                    .await?;
                let manifest: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                match self
                    .read_inline(store, endpoint, source, &manifest, reporter)
                    .await
                {
                    Ok((records, embedded)) => {
                        all.records.extend(records.records);
                        all.config_sizes.extend(records.config_sizes);
                        configs.extend(embedded);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            return match failed {
                Some(e) if all.records.is_empty() => Err(e),
                _ => Ok(Some(Held::Inline(all, configs))),
            };
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let image_config = [media_type::OCI_CONFIG, media_type::DOCKER_CONFIG]
            .contains(&manifest.config.media_type.as_str());
        if inline && image_config {
            let (records, configs) = self
                .read_inline(store, endpoint, source, &manifest, reporter)
                .await?;
            return Ok(Some(Held::Inline(records, configs)));
        }
        Artifact::check_manifest(&name, &manifest)?;
        let config = self
            .store_config(store, endpoint, source, &manifest, reporter)
            .await?;
        Ok(Some(Held::Cache(Artifact::parse(
            &name, manifest, &config,
        )?)))
    }

    /// The config blob of `manifest`, fetched into the store from `source`'s repository if
    /// the store lacks it.
    async fn store_config(
        &self,
        store: &Store,
        endpoint: &std::sync::Arc<crate::client::Endpoint>,
        source: &Reference,
        manifest: &Manifest,
        reporter: &dyn Reporter,
    ) -> Result<Vec<u8>, Error> {
        self.fetch_blobs(
            store,
            endpoint,
            &source.path,
            &[Wanted::blob(&manifest.config)],
            reporter,
        )
        .await?;
        Ok(store.read_blob(&manifest.config.digest)?)
    }

    /// The inline cache of the image whose manifest is `manifest`, in `source`'s repository.
    async fn read_inline(
        &self,
        store: &Store,
        endpoint: &std::sync::Arc<crate::client::Endpoint>,
        source: &Reference,
        manifest: &Manifest,
        reporter: &dyn Reporter,
    ) -> Result<(CacheConfig, BTreeMap<Digest, Vec<u8>>), Error> {
        let name = source.to_string();
        if manifest.config.size > inline::MAX_IMAGE_CONFIG_SIZE {
            return Err(Error::BadCache {
                reference: name,
                why: format!(
                    "its config is {} bytes, more than kiln reads",
                    manifest.config.size
                ),
            });
        }
        let config = self
            .store_config(store, endpoint, source, manifest, reporter)
            .await?;
        inline::read(&name, &config, &manifest.layers)
    }

    /// The entry tags of `source`'s cache in its repository (see the module docs).
    async fn entry_tags(
        &self,
        endpoint: &crate::client::Endpoint,
        source: &Reference,
    ) -> Result<Vec<String>, Error> {
        let Some(tag) = source.tag_or_latest().filter(|_| source.digest.is_none()) else {
            return Ok(Vec::new());
        };
        let prefix = format!("{}{ENTRY_INFIX}", entry_base(tag));
        let r = endpoint.reference(&source.path, Some(tag), None);
        let listed = endpoint
            .client
            .list_tags(&r, &endpoint.auth, None, None)
            .await;
        let tags = match listed {
            Ok(response) => response.tags,
            Err(e) => {
                return Err(Error::registry(
                    &endpoint.host,
                    format!("GET tags of {}", source.path),
                    e,
                ));
            }
        };
        Ok(tags
            .into_iter()
            .filter(|t| t.starts_with(&prefix))
            .collect())
    }

    /// Reads the cache at `source` (the ref and its entries, see the module docs; or the
    /// inline cache of the image at `source`): its records, not yet their blobs. A cache that
    /// does not exist yet is empty.
    pub fn import_cache(
        &self,
        store: &Store,
        source: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<RemoteCache, Error> {
        self.block_on(async {
            let endpoint = self.endpoint(&source.domain, false, false).await?;
            let mut cache = RemoteCache::new(Source::Registry {
                reference: source.clone(),
                host: endpoint.host.clone(),
            });
            let main = self
                .read_cache_at(store, &endpoint, source, true, reporter)
                .await?;
            let entries = match &main {
                // An image has no entry tags.
                Some(Held::Inline(..)) => Vec::new(),
                _ => match self.entry_tags(&endpoint, source).await {
                    Ok(tags) => tags,
                    // No ref and no tag list: no repository, so no cache yet.
                    Err(_) if main.is_none() => Vec::new(),
                    Err(e) => return Err(e),
                },
            };
            match main {
                Some(Held::Cache(artifact)) => cache.add(artifact.config),
                Some(Held::Inline(config, configs)) => {
                    cache.add(config);
                    cache.embedded = configs;
                }
                None => {}
            }
            for tag in entries {
                let one = Reference {
                    tag: Some(tag),
                    digest: None,
                    ..source.clone()
                };
                if let Some(Held::Cache(artifact)) = self
                    .read_cache_at(store, &endpoint, &one, false, reporter)
                    .await?
                {
                    cache.add(artifact.config);
                }
            }
            Ok(cache)
        })
    }

    /// The record of a step key from a cache read for `--cache-from`: its blobs are fetched
    /// into the store and the record is put in the local cache, so the step is a plain cache
    /// hit from then on.
    pub fn fetch_cached(
        &self,
        store: &Store,
        cache: &RemoteCache,
        key: &Digest,
        reporter: &dyn Reporter,
    ) -> Result<Option<CacheRecord>, Error> {
        let Some(record) = cache.records.get(key) else {
            return Ok(None);
        };
        let mut blobs = Vec::new();
        match cache.embedded.get(&record.config) {
            Some(bytes) => {
                store.write_blob(bytes)?;
            }
            None => {
                let size = cache.config_sizes.get(&record.config).copied().unwrap_or(0);
                blobs.push(Descriptor::new(
                    media_type::OCI_CONFIG,
                    record.config.clone(),
                    size,
                ));
            }
        }
        blobs.extend(record.layers.iter().cloned());
        blobs.retain(|b| !store.has_blob(&b.digest));
        match &cache.source {
            Source::Local(dir) => local::copy_blobs(store, dir, &blobs)?,
            Source::Registry { reference, host } => self.block_on(async {
                let endpoint = self.endpoint(host, false, false).await?;
                // The layers' diff ids are checked when a build unpacks them.
                let blobs: Vec<Wanted> = blobs.iter().map(Wanted::blob).collect();
                self.fetch_blobs(store, &endpoint, &reference.path, &blobs, reporter)
                    .await?;
                Ok::<(), Error>(())
            })?,
        }
        store.cache_put(key, record)?;
        Ok(store.cache_get(key))
    }
}

/// Between a cache ref's tag and the hex digest of an entry's config.
const ENTRY_INFIX: &str = "-kc-";

/// The part of a tag an entry tag starts with: short enough that the whole stays within a
/// tag's 128 characters.
fn entry_base(tag: &str) -> &str {
    let end = tag
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|end| *end <= 96)
        .last()
        .unwrap_or(0);
    &tag[..end]
}

/// The content-addressed entry of one export to `target`.
fn entry_tag(target: &Reference, config: &Digest) -> Reference {
    let tag = target.tag_or_latest().unwrap_or("latest");
    let hex = config.hex();
    Reference {
        tag: Some(format!(
            "{}{ENTRY_INFIX}{}",
            entry_base(tag),
            &hex[..hex.len().min(24)]
        )),
        digest: None,
        ..target.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_tags_are_valid_tags_named_by_their_content() {
        let target: Reference = "127.0.0.1:5000/cache/app:main".parse().unwrap();
        let digest = Digest::of(b"records");
        let entry = entry_tag(&target, &digest);
        let tag = entry.tag.clone().unwrap_or_default();
        assert!(tag.starts_with("main-kc-"), "{tag}");
        assert!(digest.hex().starts_with(&tag["main-kc-".len()..]), "{tag}");
        assert_eq!((entry.domain, entry.path), (target.domain, target.path));
        let long = "t".repeat(128);
        assert!(entry_base(&long).len() + ENTRY_INFIX.len() + 24 <= 128);
    }
}
