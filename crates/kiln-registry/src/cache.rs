//! The build cache in a registry: `--cache-to type=registry,ref=R` and `--cache-from …`.
//!
//! The cache is one OCI artifact manifest. Its config blob
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

use std::collections::BTreeMap;

use kiln_image::{CacheRecord, Descriptor, Digest, Manifest, Reference, Store, media_type};
use serde::{Deserialize, Serialize};

use crate::pull::Wanted;
use crate::{Error, Registry, Reporter};

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

/// A cache read from a registry: its records, and where to fetch their blobs.
#[derive(Debug)]
pub struct RemoteCache {
    reference: Reference,
    host: String,
    records: BTreeMap<Digest, CacheRecord>,
    config_sizes: BTreeMap<Digest, u64>,
}

impl RemoteCache {
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

impl Registry {
    /// Pushes the records of these step keys (those the store still has complete) and their
    /// blobs to `target`. Returns the number of records exported.
    pub fn export_cache(
        &self,
        store: &Store,
        target: &Reference,
        keys: &[Digest],
        reporter: &dyn Reporter,
    ) -> Result<usize, Error> {
        let mut config = CacheConfig::default();
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for key in keys {
            let Some(record) = store.cache_get(key) else {
                continue;
            };
            let config_size = std::fs::metadata(store.blob_path(&record.config))
                .map_err(Error::io("stat", store.blob_path(&record.config)))?
                .len();
            config
                .config_sizes
                .insert(record.config.clone(), config_size);
            if seen.insert(record.config.clone()) {
                blobs.push(Descriptor::new(
                    media_type::OCI_CONFIG,
                    record.config.clone(),
                    config_size,
                ));
            }
            for layer in &record.layers {
                if seen.insert(layer.digest.clone()) {
                    blobs.push(Descriptor::new(
                        &layer.media_type,
                        layer.digest.clone(),
                        layer.size,
                    ));
                }
            }
            config.records.insert(key.clone(), record);
        }
        let exported = config.records.len();
        let config_desc = cache_config_blob(store, &config)?;
        let entry = entry_tag(target, &config_desc.digest);
        self.block_on(async {
            let endpoint = self.endpoint(&target.domain, false, false).await?;
            let mut all = vec![config_desc.clone()];
            all.extend(blobs.iter().cloned());
            self.push_blobs(store, &endpoint, &target.path, &all, reporter)
                .await?;
            let manifest = cache_manifest(config_desc, blobs.clone());
            self.put_manifest(
                &endpoint,
                &entry,
                manifest.to_bytes(),
                media_type::OCI_MANIFEST,
                reporter,
            )
            .await?;
            // The ref: what it held, and ours. Its blobs are in the repository already.
            let mut merged = config;
            let mut layers = blobs;
            if let Some((held, held_manifest)) = self
                .read_cache_at(store, &endpoint, target, reporter)
                .await?
            {
                for (key, record) in held.records {
                    merged.records.entry(key).or_insert(record);
                }
                for (digest, size) in held.config_sizes {
                    merged.config_sizes.entry(digest).or_insert(size);
                }
                let mut seen: std::collections::BTreeSet<Digest> =
                    layers.iter().map(|d| d.digest.clone()).collect();
                for layer in held_manifest.layers {
                    if seen.insert(layer.digest.clone()) {
                        layers.push(layer);
                    }
                }
            }
            let merged_desc = cache_config_blob(store, &merged)?;
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
                cache_manifest(merged_desc, layers).to_bytes(),
                media_type::OCI_MANIFEST,
                reporter,
            )
            .await?;
            Ok(exported)
        })
    }

    /// The cache manifest and config at `source`, None if there is none.
    async fn read_cache_at(
        &self,
        store: &Store,
        endpoint: &std::sync::Arc<crate::client::Endpoint>,
        source: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<Option<(CacheConfig, Manifest)>, Error> {
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
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if manifest.config.media_type != CACHE_CONFIG_MEDIA_TYPE {
            return Err(bad(format!(
                "its config is {}, not {CACHE_CONFIG_MEDIA_TYPE}",
                manifest.config.media_type
            )));
        }
        if manifest.config.size > MAX_CACHE_CONFIG_SIZE {
            return Err(kiln_image::Error::TooLarge {
                what: format!("cache config {}", manifest.config.digest),
                size: manifest.config.size,
                limit: MAX_CACHE_CONFIG_SIZE,
            }
            .into());
        }
        self.fetch_blobs(
            store,
            endpoint,
            &source.path,
            &[Wanted::blob(&manifest.config)],
            reporter,
        )
        .await?;
        let config: CacheConfig =
            serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
                .map_err(|e| bad(e.to_string()))?;
        Ok(Some((config, manifest)))
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

    /// Reads the cache at `source` (the ref and its entries, see the module docs): its
    /// records, not yet their blobs. A cache that does not exist yet is empty.
    pub fn import_cache(
        &self,
        store: &Store,
        source: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<RemoteCache, Error> {
        self.block_on(async {
            let endpoint = self.endpoint(&source.domain, false, false).await?;
            let mut cache = RemoteCache {
                reference: source.clone(),
                host: endpoint.host.clone(),
                records: BTreeMap::new(),
                config_sizes: BTreeMap::new(),
            };
            let main = self
                .read_cache_at(store, &endpoint, source, reporter)
                .await?;
            let entries = match self.entry_tags(&endpoint, source).await {
                Ok(tags) => tags,
                // No ref and no tag list: no repository, so no cache yet.
                Err(_) if main.is_none() => Vec::new(),
                Err(e) => return Err(e),
            };
            let mut add = |config: CacheConfig| {
                for (key, record) in config.records {
                    cache.records.entry(key).or_insert(record);
                }
                cache.config_sizes.extend(config.config_sizes);
            };
            if let Some((config, _)) = main {
                add(config);
            }
            let mut sources = Vec::new();
            for tag in entries {
                sources.push(Reference {
                    tag: Some(tag),
                    digest: None,
                    ..source.clone()
                });
            }
            for one in &sources {
                if let Some((config, _)) =
                    self.read_cache_at(store, &endpoint, one, reporter).await?
                {
                    add(config);
                }
            }
            Ok(cache)
        })
    }

    /// The record of a step key from a remote cache: its blobs are fetched into the store and
    /// the record is put in the local cache, so the step is a plain cache hit from then on.
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
        self.block_on(async {
            let endpoint = self.endpoint(&cache.host, false, false).await?;
            let config_size = cache.config_sizes.get(&record.config).copied().unwrap_or(0);
            let mut blobs = vec![Descriptor::new(
                media_type::OCI_CONFIG,
                record.config.clone(),
                config_size,
            )];
            blobs.extend(record.layers.iter().cloned());
            // The layers' diff ids are checked when a build unpacks them.
            let blobs: Vec<Wanted> = blobs.iter().map(Wanted::blob).collect();
            self.fetch_blobs(store, &endpoint, &cache.reference.path, &blobs, reporter)
                .await?;
            Ok::<(), Error>(())
        })?;
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

/// Writes the config blob of a cache into the store; its descriptor.
fn cache_config_blob(store: &Store, config: &CacheConfig) -> Result<Descriptor, Error> {
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    let digest = store.write_blob(&bytes)?;
    Ok(Descriptor::new(
        CACHE_CONFIG_MEDIA_TYPE,
        digest,
        bytes.len() as u64,
    ))
}

fn cache_manifest(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
    let mut manifest = Manifest::oci(config, layers);
    manifest.extra.insert(
        "artifactType".into(),
        serde_json::Value::String(CACHE_CONFIG_MEDIA_TYPE.into()),
    );
    manifest
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
