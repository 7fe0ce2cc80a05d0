//! `type=inline`: the cache in the image's own config, as BuildKit's `moby.buildkit.cache.v0`
//! is, so that `--cache-from` of the pushed image itself finds its steps.
//!
//! An image holds only its own layers and its final config, so its inline cache holds the
//! steps whose results are the image's first layers: the steps of the final stage and of the
//! stages it is `FROM` (BuildKit's `mode=min`, the only mode inline has). A record names its
//! layers by count, since a push may compress them (their digests change; the image's do
//! not). The image has no blob of the config after each step, so those configs are carried
//! in the inline cache itself, checked against their digests when read.

use std::collections::BTreeMap;

use kiln_image::{CacheRecord, Descriptor, Digest, Store};
use serde::{Deserialize, Serialize};

use super::{CacheConfig, select};
use crate::Error;

/// The image config's key of kiln's inline cache (its format is kiln's own, so it is not
/// BuildKit's key).
pub const INLINE_CACHE_KEY: &str = "kiln.build-cache.v1";

/// The most kiln reads of an image config whose inline cache it imports.
pub(super) const MAX_IMAGE_CONFIG_SIZE: u64 = 64 << 20;

#[derive(Debug, Default, Serialize, Deserialize)]
struct InlineCache {
    /// Step key → its result.
    records: BTreeMap<Digest, InlineRecord>,
    /// The configs the records name, as the store holds them.
    configs: BTreeMap<Digest, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct InlineRecord {
    config: Digest,
    /// How many of the image's layers, bottom first.
    layers: usize,
}

/// The inline cache of an image whose layers are `layers`: the records of `keys` whose layers
/// are the image's first ones. The value for [`INLINE_CACHE_KEY`], and how many records.
pub fn build(
    store: &Store,
    keys: &[Digest],
    layers: &[Descriptor],
) -> Result<(serde_json::Value, usize), Error> {
    let mut cache = InlineCache::default();
    for (key, record) in select(store, keys) {
        let prefix = record.layers.len() <= layers.len()
            && record
                .layers
                .iter()
                .zip(layers)
                .all(|(a, b)| a.digest == b.digest);
        if !prefix {
            continue;
        }
        if !cache.configs.contains_key(&record.config) {
            let bytes = store.read_blob(&record.config)?;
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            cache.configs.insert(record.config.clone(), text);
        }
        cache.records.insert(
            key,
            InlineRecord {
                config: record.config,
                layers: record.layers.len(),
            },
        );
    }
    let count = cache.records.len();
    let value = serde_json::to_value(&cache).unwrap_or_default();
    Ok((value, count))
}

/// The inline cache of the image config `config` whose manifest lists `layers`: records with
/// those layers, and the configs they name. `name` says where it is, for errors.
pub(super) fn read(
    name: &str,
    config: &[u8],
    layers: &[Descriptor],
) -> Result<(CacheConfig, BTreeMap<Digest, Vec<u8>>), Error> {
    let bad = |why: String| Error::BadCache {
        reference: name.to_owned(),
        why,
    };
    let config: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| bad(format!("its image config: {e}")))?;
    let Some(value) = config.get(INLINE_CACHE_KEY) else {
        return Err(bad(
            "an image without an inline cache (build it with --cache-to type=inline)".into(),
        ));
    };
    let inline: InlineCache =
        serde_json::from_value(value.clone()).map_err(|e| bad(format!("its inline cache: {e}")))?;
    let mut configs = BTreeMap::new();
    for (digest, text) in inline.configs {
        if Digest::of(text.as_bytes()) != digest {
            return Err(bad(format!(
                "its inline cache's config {digest} does not match its digest"
            )));
        }
        configs.insert(digest, text.into_bytes());
    }
    let mut cache = CacheConfig::default();
    for (key, record) in inline.records {
        let (Some(own), Some(bytes)) = (layers.get(..record.layers), configs.get(&record.config))
        else {
            return Err(bad(format!(
                "its inline cache's record {key} names layers or a config the image lacks"
            )));
        };
        cache
            .config_sizes
            .insert(record.config.clone(), bytes.len() as u64);
        cache.records.insert(
            key,
            CacheRecord {
                config: record.config,
                layers: own.to_vec(),
            },
        );
    }
    Ok((cache, configs))
}
