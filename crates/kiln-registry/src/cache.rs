//! The build cache in a registry: `--cache-to type=registry,ref=R` and `--cache-from …`.
//!
//! The cache is one OCI artifact manifest. Its config blob
//! (`application/vnd.kiln.build-cache.v1+json`) maps step keys to [`CacheRecord`]s; its
//! layers are every blob those records name: the image configs after each step and the
//! layers, pushed as the store holds them so that an importing store rebuilds byte-identical
//! images. An importer reads the map once and fetches a record's blobs only when a step's
//! key hits it.

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
        let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
        let config_digest = store.write_blob(&config_bytes)?;
        let config_desc = Descriptor::new(
            CACHE_CONFIG_MEDIA_TYPE,
            config_digest,
            config_bytes.len() as u64,
        );
        self.block_on(async {
            let endpoint = self.endpoint(&target.domain, false, false).await?;
            let mut all = vec![config_desc.clone()];
            all.extend(blobs.iter().cloned());
            self.push_blobs(store, &endpoint, &target.path, &all, reporter)
                .await?;
            let mut manifest = Manifest::oci(config_desc, blobs);
            manifest.extra.insert(
                "artifactType".into(),
                serde_json::Value::String(CACHE_CONFIG_MEDIA_TYPE.into()),
            );
            self.put_manifest(
                &endpoint,
                target,
                manifest.to_bytes(),
                media_type::OCI_MANIFEST,
                reporter,
            )
            .await?;
            Ok(config.records.len())
        })
    }

    /// Reads the cache at `source`: its records, not yet their blobs. A cache that does not
    /// exist yet is empty.
    pub fn import_cache(
        &self,
        store: &Store,
        source: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<RemoteCache, Error> {
        let name = source.to_string();
        self.block_on(async {
            let endpoint = self.endpoint(&source.domain, false, false).await?;
            let got = self
                .get_manifest(
                    &endpoint,
                    &source.path,
                    source.tag_or_latest(),
                    source.digest.as_ref(),
                    reporter,
                )
                .await;
            let bytes = match got {
                Ok((bytes, _)) => bytes,
                Err(e) if e.is_not_found() => {
                    return Ok(RemoteCache {
                        reference: source.clone(),
                        host: endpoint.host.clone(),
                        records: BTreeMap::new(),
                        config_sizes: BTreeMap::new(),
                    });
                }
                Err(e) => return Err(e),
            };
            let bad = |why: String| Error::BadCache {
                reference: name.clone(),
                why,
            };
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
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
                &endpoint,
                &source.path,
                &[Wanted::blob(&manifest.config)],
                reporter,
            )
            .await?;
            let config: CacheConfig =
                serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
                    .map_err(|e| bad(e.to_string()))?;
            Ok(RemoteCache {
                reference: source.clone(),
                host: endpoint.host.clone(),
                records: config.records,
                config_sizes: config.config_sizes,
            })
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
