//! Diff ids checked: a layer's diff id is the digest of its uncompressed stream, and the
//! config's `rootfs.diff_ids` are what snapshots are keyed by (their chain ids). A layer that
//! unpacks to something else than its config says would be unpacked into another image's
//! snapshot, so kiln computes the diff id itself whenever it unpacks one, and when `load` takes
//! one in; only a diff id kiln computed is recorded.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use kiln_image::{Descriptor, Digest, HashingReader, HashingWriter, Store};

use crate::compress::is_compressed;
use crate::error::{Error, Result};
use crate::{ApplyMode, ApplyOptions, ApplyStats, apply_layer, decompress_auto};

/// Bytes that tell a compressed stream from a plain one.
const MAGIC: usize = 4;

/// Computes a layer's diff id from its blob's bytes while they are written elsewhere (into
/// the store, by a pull or a load). A compressed blob is decompressed on a thread of its own by
/// [`decompress_auto`], the code that unpacks it later, and the output hashed; an uncompressed
/// blob is its own diff id and costs nothing.
///
/// ```
/// use std::io::Write;
/// use kiln_image::Digest;
///
/// let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
/// gz.write_all(b"a layer").unwrap();
/// let blob = gz.finish().unwrap();
/// let mut writer = kiln_layer::DiffIdWriter::new();
/// writer.write_all(&blob).unwrap();
/// assert_eq!(writer.finish(&Digest::of(&blob)).unwrap(), Digest::of(b"a layer"));
/// ```
pub struct DiffIdWriter {
    state: State,
}

enum State {
    /// The first bytes, until there are enough to tell.
    Sniffing(Vec<u8>),
    Plain,
    Decoding {
        chunks: Option<SyncSender<Vec<u8>>>,
        decoder: Option<JoinHandle<Result<Digest>>>,
    },
}

impl Default for DiffIdWriter {
    fn default() -> Self {
        DiffIdWriter::new()
    }
}

impl DiffIdWriter {
    /// A writer that has seen nothing yet.
    pub fn new() -> DiffIdWriter {
        DiffIdWriter {
            state: State::Sniffing(Vec::with_capacity(MAGIC)),
        }
    }

    fn start(&mut self, head: Vec<u8>) {
        if !is_compressed(&head) {
            self.state = State::Plain;
            return;
        }
        // Bounded: a decoder slower than the network holds the writer back rather than
        // buffering the blob in memory.
        let (chunks, received) = sync_channel::<Vec<u8>>(32);
        let decoder = std::thread::spawn(move || -> Result<Digest> {
            let mut plain = decompress_auto(ChunkReader {
                chunks: received,
                current: io::Cursor::new(Vec::new()),
            })?;
            // Inflating and hashing take about as long as each other: the output is hashed on
            // a thread of its own, a few blocks behind, rather than after each block here.
            let (blocks, to_hash) = sync_channel::<Vec<u8>>(4);
            let hasher = std::thread::spawn(move || {
                let mut hashing = HashingWriter::new(io::sink());
                for block in to_hash {
                    let _ = hashing.write_all(&block);
                }
                hashing.finish().1
            });
            let inflated = (|| loop {
                let mut block = vec![0u8; 1 << 20];
                let n = match plain.read(&mut block) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(Error::TarRead {
                            entry: None,
                            source,
                        });
                    }
                };
                block.truncate(n);
                if blocks.send(block).is_err() {
                    return Ok(());
                }
            })();
            drop(blocks);
            let digest = hasher.join().map_err(|_| Error::Compress {
                codec: "layer",
                message: "the hashing thread stopped".into(),
            })?;
            inflated.map(|()| digest)
        });
        // A decoder that stopped early (bad data) says why at `finish`.
        let _ = chunks.send(head);
        self.state = State::Decoding {
            chunks: Some(chunks),
            decoder: Some(decoder),
        };
    }

    /// The diff id of everything written; `blob` is its digest (the blob's own, which is the
    /// diff id of an uncompressed layer).
    pub fn finish(mut self, blob: &Digest) -> Result<Digest> {
        if let State::Sniffing(head) = &mut self.state {
            let head = std::mem::take(head);
            self.start(head);
        }
        match &mut self.state {
            State::Decoding { chunks, decoder } => {
                drop(chunks.take());
                match decoder.take().map(JoinHandle::join) {
                    Some(Ok(result)) => result,
                    _ => Err(Error::Compress {
                        codec: "layer",
                        message: "the decompressing thread stopped".into(),
                    }),
                }
            }
            _ => Ok(blob.clone()),
        }
    }
}

impl Write for DiffIdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        if let State::Sniffing(head) = &mut self.state {
            let take = (MAGIC - head.len()).min(rest.len());
            head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if head.len() == MAGIC {
                let head = std::mem::take(head);
                self.start(head);
            }
        }
        if let State::Decoding {
            chunks: Some(chunks),
            ..
        } = &self.state
            && !rest.is_empty()
        {
            let _ = chunks.send(rest.to_vec());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The chunks a [`DiffIdWriter`] was given, as a stream; it ends when the writer finishes.
struct ChunkReader {
    chunks: Receiver<Vec<u8>>,
    current: io::Cursor<Vec<u8>>,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.chunks.recv() {
                Ok(chunk) => self.current = io::Cursor::new(chunk),
                Err(_) => return Ok(0),
            }
        }
    }
}

/// Streams a stored layer blob through `consume`: the blob checked against its descriptor,
/// its uncompressed stream hashed. Returns what `consume` returned and the diff id.
pub(crate) fn read_stored_layer<T>(
    store: &Store,
    layer: &Descriptor,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, Digest)> {
    let mut blob = store.open_verified(&layer.digest, Some(layer.size))?;
    if !is_compressed(&stored_head(store, layer)?) {
        // Its own digest is its diff id, and the blob is hashed already: once is enough.
        let consumed = consume(&mut blob);
        blob.finish()?;
        return Ok((consumed?, layer.digest.clone()));
    }
    let consumed = (|| {
        let mut plain = HashingReader::new(decompress_auto(&mut blob)?);
        let out = consume(&mut plain)?;
        // A tar reader stops at the end marker; the padding after it is part of the diff id.
        io::copy(&mut plain, &mut io::sink()).map_err(|source| Error::TarRead {
            entry: None,
            source,
        })?;
        Ok((out, plain.finish().0))
    })();
    // Corrupt bytes make the decompressor or the tar reader fail first: the corruption is
    // the error to report.
    blob.finish()?;
    consumed
}

/// Applies a layer of the store into `root` (see [`apply_layer`]), checking the blob against
/// its descriptor as it streams and its uncompressed stream against `diff_id`. This is how a
/// snapshot is made: from a layer whose diff id kiln has computed itself. On an error the
/// tree under `root` is partly written: apply into staging.
pub fn apply_stored_layer(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    root: &std::path::Path,
    mode: ApplyMode,
    opts: ApplyOptions,
) -> Result<ApplyStats> {
    let (stats, actual) =
        read_stored_layer(store, layer, |plain| apply_layer(plain, root, mode, opts))?;
    if actual != *diff_id {
        return Err(Error::DiffIdMismatch {
            layer: layer.digest.clone(),
            actual,
            expected: diff_id.clone(),
        });
    }
    // Computed here: the next pull that finds this blob compares it for free.
    store.record_diff_id(&layer.digest, &actual)?;
    Ok(stats)
}

/// The diff id of a layer blob the store holds: its own digest when it is not compressed,
/// what kiln recorded when it last computed it, or computed now (and recorded).
pub fn diff_id_in_store(store: &Store, layer: &Descriptor) -> Result<Digest> {
    if let Some(known) = known_diff_id_in_store(store, layer)? {
        return Ok(known);
    }
    let ((), diff_id) = read_stored_layer(store, layer, |_| Ok(()))?;
    store.record_diff_id(&layer.digest, &diff_id)?;
    Ok(diff_id)
}

/// The diff id of a layer blob the store holds when it costs nothing to know: its own digest
/// when it is not compressed, or what kiln recorded when it last computed it.
pub fn known_diff_id_in_store(store: &Store, layer: &Descriptor) -> Result<Option<Digest>> {
    if let Some(known) = store.known_diff_id(&layer.digest) {
        return Ok(Some(known));
    }
    if !is_compressed(&stored_head(store, layer)?) {
        return Ok(Some(layer.digest.clone()));
    }
    Ok(None)
}

/// The first bytes of a stored blob, which tell its compression.
fn stored_head(store: &Store, layer: &Descriptor) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(MAGIC);
    store
        .open_blob(&layer.digest)?
        .take(MAGIC as u64)
        .read_to_end(&mut head)
        .map_err(|source| Error::TarRead {
            entry: None,
            source,
        })?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn layer(store: &Store, bytes: &[u8]) -> Descriptor {
        let digest = store.write_blob(bytes).unwrap();
        Descriptor::new(
            kiln_image::media_type::OCI_LAYER_TAR,
            digest,
            bytes.len() as u64,
        )
    }

    fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, content).unwrap();
        tar.into_inner().unwrap()
    }

    #[test]
    fn the_writer_hashes_plain_and_compressed_streams_written_in_any_pieces() {
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (blob, pieces) in [
            (plain.clone(), 1),
            (gzip(&plain), 1),
            (gzip(&plain), 3),
            (zstd::encode_all(&plain[..], 3).unwrap(), 1000),
        ] {
            let mut writer = DiffIdWriter::new();
            for piece in blob.chunks(pieces) {
                writer.write_all(piece).unwrap();
            }
            assert_eq!(
                writer.finish(&Digest::of(&blob)).unwrap(),
                Digest::of(&plain)
            );
        }
        for tiny in [&b""[..], b"a", b"\x1f"] {
            let mut writer = DiffIdWriter::new();
            writer.write_all(tiny).unwrap();
            assert_eq!(writer.finish(&Digest::of(tiny)).unwrap(), Digest::of(tiny));
        }
    }

    #[test]
    fn a_broken_compressed_stream_is_an_error() {
        let mut blob = gzip(&vec![1u8; 100_000]);
        let mid = blob.len() / 2;
        blob[mid] ^= 0xff;
        let mut writer = DiffIdWriter::new();
        writer.write_all(&blob).unwrap();
        assert!(writer.finish(&Digest::of(&blob)).is_err());
    }

    #[test]
    fn a_stored_layer_applies_only_under_its_own_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let tar = tar_of("file", b"content");
        let gz = layer(&store, &gzip(&tar));
        let opts = || ApplyOptions {
            preserve_owner: false,
            ..Default::default()
        };
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let other = Digest::of(b"someone else's layer");
        let err = apply_stored_layer(&store, &gz, &other, &root, ApplyMode::Merged, opts())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unpacks to") && err.contains(other.as_str()),
            "{err}"
        );
        apply_stored_layer(
            &store,
            &gz,
            &Digest::of(&tar),
            &root,
            ApplyMode::Merged,
            opts(),
        )
        .unwrap();
        assert_eq!(std::fs::read(root.join("file")).unwrap(), b"content");
        assert_eq!(diff_id_in_store(&store, &gz).unwrap(), Digest::of(&tar));
        assert_eq!(store.known_diff_id(&gz.digest), Some(Digest::of(&tar)));
    }

    #[test]
    fn a_corrupt_stored_layer_is_named_even_when_the_tar_reader_fails_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let tar = tar_of("file", b"content");
        let plain = layer(&store, &tar);
        let mut bytes = tar.clone();
        bytes[0] ^= 0xff; // the first header's name: its checksum fails
        std::fs::write(store.blob_path(&plain.digest), &bytes).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let err = apply_stored_layer(
            &store,
            &plain,
            &plain.digest,
            &root,
            ApplyMode::Merged,
            ApplyOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(plain.digest.as_str()) && err.contains("corrupt"),
            "{err}"
        );
    }
}
