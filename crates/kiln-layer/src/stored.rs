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
use crate::error::{Error, Result};

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Parallel {
    Yes,
    No,
}

/// Where the compressed bytes go besides the store (an upload, as they are made).
pub type Tee<'a> = &'a mut (dyn FnMut(&[u8]) + Send);

/// A blob writer that also hands each piece it writes to a [`Tee`].
struct Teed<'a, W> {
    inner: W,
    tee: Option<Tee<'a>>,
}

impl<W: std::io::Write> std::io::Write for Teed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(tee) = self.tee.as_mut() {
            tee(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses a stored plain layer into a new blob of the store; its digest and size.
fn compress_into_store(
    store: &Store,
    layer: &Descriptor,
    compression: Compression,
    level: Option<u32>,
    parallel: Parallel,
    tee: Option<Tee<'_>>,
) -> Result<(Digest, u64)> {
    // Checked as it is read: a corrupt layer must not come out as a sound compressed blob.
    let mut source = store.open_verified(&layer.digest, Some(layer.size))?;
    // The blob writer hashes the compressed bytes: the compressor need not.
    let writer = Teed {
        inner: store.blob_writer()?,
        tee,
    };
    let made = match (compression, parallel) {
        (Compression::Zstd, _) => {
            crate::compress::zstd_into(&mut source, writer, level.map_or(ZSTD_LEVEL, |l| l as i32))
        }
        (_, Parallel::Yes) => {
            crate::compress::gzip_into(&mut source, writer, level.unwrap_or(GZIP_LEVEL))
        }
        (_, Parallel::No) => {
            crate::compress::gzip_serial_into(&mut source, writer, level.unwrap_or(GZIP_LEVEL))
        }
    };
    source.finish()?;
    let (digest, size) = made?.inner.commit(None)?;
    Ok((digest, size))
}

/// Whether a compressed blob decompresses to the bytes of `diff_id`.
fn decompresses_to(
    store: &Store,
    (digest, size): &(Digest, u64),
    media_type: &str,
    diff_id: &Digest,
) -> Result<bool> {
    let blob = Descriptor::new(media_type, digest.clone(), *size);
    match crate::diff_id::read_stored_layer(store, &blob, |_| Ok(())) {
        Ok(((), actual)) => Ok(&actual == diff_id),
        // A stream that does not even decompress is the same fault.
        Err(Error::Compress { .. } | Error::TarRead { .. }) => Ok(false),
        Err(other) => Err(other),
    }
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
    let (desc, made, _) = compressed_in_store_teed(store, layer, compression, level, None)?;
    Ok((desc, made))
}

/// [`compressed_in_store`] that also hands the compressed bytes to `tee` as they are made, so
/// that a push can upload them while the rest is compressed. The last value tells whether
/// `tee` was given exactly the blob returned: it is not when the copy had to be made again
/// (the bytes it got are then to be thrown away), nor when no copy was made now.
pub fn compressed_in_store_teed(
    store: &Store,
    layer: &Descriptor,
    compression: Compression,
    level: Option<u32>,
    tee: Option<Tee<'_>>,
) -> Result<(Descriptor, bool, bool)> {
    let plain = matches!(
        layer.media_type.as_str(),
        media_type::OCI_LAYER_TAR | media_type::DOCKER_LAYER_TAR
    );
    if !plain || compression == Compression::None {
        return Ok((layer.clone(), false, false));
    }
    if let Some(known) = known_compressed(store, layer, compression) {
        return Ok((known, false, false));
    }
    let wanted = if compression == Compression::Zstd {
        media_type::OCI_LAYER_ZSTD
    } else {
        media_type::OCI_LAYER_GZIP
    };
    let record = record_path(store, &layer.digest, compression);
    // The copy must give back the layer: a compressor fault (a streaming parallel gzip once
    // produced a CRC error under load) would otherwise be pushed, and registries take any
    // bytes. The parallel gzip checks each member's CRC and size against its block as it
    // makes it and fails rather than write a member paired with the wrong block; a zstd copy
    // is read back whole. A copy that fails either check is made again on one thread and
    // read back.
    let teed = tee.is_some();
    let parallel = compress_into_store(store, layer, compression, level, Parallel::Yes, tee);
    let checked = match parallel {
        Ok(made) if compression == Compression::Gzip => Some(made),
        Ok(made) if decompresses_to(store, &made, wanted, &layer.digest)? => Some(made),
        Ok(_) | Err(Error::Compress { .. }) => None,
        Err(other) => return Err(other),
    };
    let (made, streamed) = match checked {
        Some(made) => (made, teed),
        None => {
            let made = compress_into_store(store, layer, compression, level, Parallel::No, None)?;
            if decompresses_to(store, &made, wanted, &layer.digest)? {
                (made, false)
            } else {
                return Err(Error::Compress {
                    codec: if compression == Compression::Zstd {
                        "zstd"
                    } else {
                        "gzip"
                    },
                    message: format!(
                        "the compressed copy of layer {} does not decompress to it",
                        layer.digest
                    ),
                });
            }
        }
    };
    let (digest, size) = made;
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
    Ok((Descriptor::new(wanted, digest, size), true, streamed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::gzip_serial(bytes, &mut out, 6).unwrap();
        out
    }

    #[test]
    fn a_copy_is_checked_against_the_layer_it_came_from() {
        let (_dir, store) = store();
        let layer = b"the layer's bytes".repeat(1000);
        let diff_id = Digest::of(&layer);
        let good = gzip(&layer);
        let good = (store.write_blob(&good).unwrap(), good.len() as u64);
        assert!(decompresses_to(&store, &good, media_type::OCI_LAYER_GZIP, &diff_id).unwrap());
        let other = gzip(b"other bytes");
        let other = (store.write_blob(&other).unwrap(), other.len() as u64);
        assert!(!decompresses_to(&store, &other, media_type::OCI_LAYER_GZIP, &diff_id).unwrap());
        // A stream cut short (as a faulty compressor may leave it) is no copy either.
        let mut cut = gzip(&layer);
        cut.truncate(cut.len() - 9);
        let cut = (store.write_blob(&cut).unwrap(), cut.len() as u64);
        assert!(!decompresses_to(&store, &cut, media_type::OCI_LAYER_GZIP, &diff_id).unwrap());
    }

    #[test]
    fn a_made_copy_decompresses_to_the_layer() {
        let (_dir, store) = store();
        let layer = b"tar bytes, more or less".repeat(50_000);
        let blob = store.write_blob(&layer).unwrap();
        let plain = Descriptor::new(media_type::OCI_LAYER_TAR, blob.clone(), layer.len() as u64);
        let (copy, made) = compressed_in_store(&store, &plain, Compression::Gzip, None).unwrap();
        assert!(made);
        let pair = (copy.digest.clone(), copy.size);
        assert!(decompresses_to(&store, &pair, media_type::OCI_LAYER_GZIP, &blob).unwrap());
    }
}
