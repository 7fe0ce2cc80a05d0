//! Compressed copies of the store's layers, made when an export needs them and kept.
//!
//! kiln stores the layers it builds uncompressed: committing is then a single pass with no
//! compression. `save --compress` and `push` need gzip or zstd; the first one to ask makes the
//! compressed blob (in parallel, for gzip) and records `diff id → compressed blob`, so the
//! next export compresses nothing.

use std::path::PathBuf;

use kiln_image::{Descriptor, Digest, Store, media_type};
use serde::{Deserialize, Serialize};

use crate::Compression;
use crate::error::Result;

/// gzip level of exported layers: docker's default.
const GZIP_LEVEL: u32 = 6;
/// zstd level of exported layers: zstd's default.
const ZSTD_LEVEL: i32 = 3;

#[derive(Serialize, Deserialize)]
struct Record {
    digest: Digest,
    size: u64,
}

fn record_path(store: &Store, diff_id: &Digest, compression: Compression) -> PathBuf {
    let algo = if compression == Compression::Zstd {
        "zstd"
    } else {
        "gzip"
    };
    store
        .root()
        .join("compressed")
        .join(algo)
        .join(diff_id.hex())
}

/// The compressed copy of a plain layer that the store already holds, if any (of whatever
/// level it was made at).
pub fn known_compressed(
    store: &Store,
    layer: &Descriptor,
    compression: Compression,
) -> Option<Descriptor> {
    let wanted = match compression {
        Compression::Gzip => media_type::OCI_LAYER_GZIP,
        Compression::Zstd => media_type::OCI_LAYER_ZSTD,
        Compression::None => return None,
    };
    let bytes = std::fs::read(record_path(store, &layer.digest, compression)).ok()?;
    let known = serde_json::from_slice::<Record>(&bytes).ok()?;
    store
        .has_blob(&known.digest)
        .then(|| Descriptor::new(wanted, known.digest, known.size))
}

/// `layer` as a blob of the store with `compression`: itself if it already is compressed, the
/// copy made earlier, or a copy made now at `level` (gzip 1-9, zstd 1-22; `None` for the
/// usual default). Returns the blob's descriptor and whether it was made now.
pub fn compressed_in_store(
    store: &Store,
    layer: &Descriptor,
    compression: Compression,
    level: Option<u32>,
) -> Result<(Descriptor, bool)> {
    let plain = matches!(
        layer.media_type.as_str(),
        media_type::OCI_LAYER_TAR | media_type::DOCKER_LAYER_TAR
    );
    if !plain || compression == Compression::None {
        return Ok((layer.clone(), false));
    }
    if let Some(known) = known_compressed(store, layer, compression) {
        return Ok((known, false));
    }
    let wanted = if compression == Compression::Zstd {
        media_type::OCI_LAYER_ZSTD
    } else {
        media_type::OCI_LAYER_GZIP
    };
    let record = record_path(store, &layer.digest, compression);
    // Checked as it is read: a corrupt layer must not come out as a sound compressed blob.
    let mut source = store.open_verified(&layer.digest, Some(layer.size))?;
    // The blob writer hashes the compressed bytes: the compressor need not.
    let writer = store.blob_writer()?;
    let made = match compression {
        Compression::Zstd => {
            crate::compress::zstd_into(&mut source, writer, level.map_or(ZSTD_LEVEL, |l| l as i32))
        }
        _ => crate::compress::gzip_into(&mut source, writer, level.unwrap_or(GZIP_LEVEL)),
    };
    source.finish()?;
    let (digest, size) = made?.commit(None)?;
    if let Some(dir) = record.parent() {
        kiln_image::create_private_dir(dir)?;
    }
    store.record_diff_id(&digest, &layer.digest)?;
    let bytes = serde_json::to_vec(&Record {
        digest: digest.clone(),
        size,
    })
    .unwrap_or_default();
    kiln_image::write_atomic(&store.root().join("tmp"), &record, &bytes)?;
    Ok((Descriptor::new(wanted, digest, size), true))
}
