//! Where an image's bytes go: the size of each layer's content, and the bytes that later
//! layers overwrite or delete, measured as [dive](https://github.com/wagoodman/dive) measures
//! them (efficiency score, wasted bytes, user-wasted share).
//!
//! [`Analyzer`] takes the layers bottom first, each as a tar stream (compressed or not), reads
//! each one once, headers only, and never writes anything to disk. [`Analyzer::finish`] gives
//! the [`Analysis`]. The model is described in the `efficiency` module: a path that appears
//! in more than one layer, or that a later layer deletes, is an [`Inefficiency`]; its bytes
//! count as dive counts them.
//!
//! [`source`] opens the layers of an image in a kiln store, of a `docker save` archive or of
//! an OCI archive (read in place: the archive is scanned once for member offsets, then each
//! layer member is streamed).
//!
//! ```
//! use kiln_analyze::{Analyzer, LayerInfo};
//!
//! fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
//!     let mut b = tar::Builder::new(Vec::new());
//!     for (name, data) in files {
//!         let mut h = tar::Header::new_gnu();
//!         h.set_size(data.len() as u64);
//!         h.set_mode(0o644);
//!         b.append_data(&mut h, name, *data).unwrap();
//!     }
//!     b.into_inner().unwrap()
//! }
//! let mut a = Analyzer::new();
//! a.add_layer(LayerInfo::default(), &layer(&[("big", &[0; 1000]), ("keep", &[0; 24])])[..])?;
//! a.add_layer(LayerInfo::default(), &layer(&[("big", &[1; 1000])])[..])?;
//! let analysis = a.finish();
//! assert_eq!(analysis.total_size, 2024);
//! assert_eq!(analysis.wasted_bytes, 2000);          // dive: both copies of `big`
//! assert_eq!(analysis.reclaimable_bytes, 1000);     // what a rebuild could save
//! assert_eq!(analysis.efficiency, 1024.0 / 2024.0);
//! assert_eq!(analysis.inefficiencies[0].path, "/big");
//! # Ok::<(), kiln_analyze::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod efficiency;
pub mod source;

use std::io::{BufReader, Read, Seek, SeekFrom};

pub use efficiency::Entry;
use efficiency::Model;

/// Errors while reading layers or archives.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer's tar stream could not be read.
    #[error("read layer {layer}")]
    Layer {
        /// The layer's digest or name.
        layer: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A layer's compression could not be detected or decoded.
    #[error("decompress layer {layer}")]
    Decompress {
        /// The layer's digest or name.
        layer: String,
        /// What failed.
        #[source]
        source: kiln_layer::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] kiln_image::Error),
    /// A file could not be read.
    #[error(transparent)]
    Io(#[from] kiln_image::IoError),
    /// An archive that is neither a docker-archive nor an OCI archive, or is damaged.
    #[error("{path}: {why}")]
    BadArchive {
        /// The archive.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// What is known about a layer besides its content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerInfo {
    /// The blob digest (or the archive member name).
    pub digest: String,
    /// Size of the blob as stored (compressed), if known.
    pub blob_size: Option<u64>,
    /// The history step that made it (`created_by`).
    pub created_by: Option<String>,
}

/// One layer of the analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStats {
    /// Position, 0 = bottom.
    pub index: usize,
    /// What was given in [`LayerInfo`].
    pub info: LayerInfo,
    /// Content size: the sum of the tar entries' sizes (dive's and docker history's layer
    /// size; directories, links and whiteouts count 0).
    pub size: u64,
    /// Number of tar entries.
    pub entries: u64,
    /// Bytes of this layer that later layers overwrite or delete: still stored, never seen.
    pub hidden: u64,
}

/// A path that is stored more than once (or stored and then deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct Inefficiency {
    /// Absolute path in the image.
    pub path: String,
    /// Sum of the sizes of every copy (dive's "total space").
    pub cumulative_size: u64,
    /// `cumulative_size` minus the smallest copy: what a rebuild could save.
    pub reclaimable: u64,
    /// The layers holding a copy or the deletion, bottom first, with the size each adds.
    pub layers: Vec<(usize, u64)>,
}

/// The result.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The layers, bottom first.
    pub layers: Vec<LayerStats>,
    /// Sum of the layers' content sizes.
    pub total_size: u64,
    /// Sum of the content sizes of all layers but the first (dive's "user" size: what was
    /// built on top of the base layer).
    pub user_size: u64,
    /// dive's efficiency score, 0…1 (1 = nothing stored twice).
    pub efficiency: f64,
    /// dive's wasted bytes: the cumulative size of every inefficiency.
    pub wasted_bytes: u64,
    /// Σ (cumulative − smallest copy) over the inefficiencies.
    pub reclaimable_bytes: u64,
    /// dive's "user wasted percent", as a fraction: `wasted_bytes / user_size` (0 when both
    /// are 0, infinite when only `user_size` is).
    pub user_wasted_ratio: f64,
    /// The inefficiencies, largest cumulative size first (ties by path).
    pub inefficiencies: Vec<Inefficiency>,
}

/// Feeds layers through dive's model, one streamed pass each.
#[derive(Debug, Default)]
pub struct Analyzer {
    model: Model,
    layers: Vec<LayerStats>,
}

fn layer_error(info: &LayerInfo, source: std::io::Error) -> Error {
    Error::Layer {
        layer: info.digest.clone(),
        source,
    }
}

/// The entries of one layer (headers only) and the sum of their sizes.
fn collect<R: Read>(entries: tar::Entries<'_, R>) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut out = Vec::new();
    let mut size = 0u64;
    for entry in entries {
        let entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        let entry_size = if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            entry.size()
        } else {
            0
        };
        size += entry_size;
        out.push(Entry {
            path,
            size: entry_size,
            is_dir: kind.is_dir(),
        });
    }
    Ok((out, size))
}

/// A buffered reader whose relative seeks stay inside the buffer when they can: the tar
/// reader seeks over every file's content, and most files are smaller than the buffer.
struct Skipping<R> {
    inner: BufReader<R>,
    pos: u64,
}

impl<R: Read> Read for Skipping<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Skipping<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match pos {
            SeekFrom::Current(n) => {
                self.inner.seek_relative(n)?;
                self.pos = self.pos.checked_add_signed(n).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start")
                })?;
            }
            other => self.pos = self.inner.seek(other)?,
        }
        Ok(self.pos)
    }
}

/// Normalizes a tar member name as dive does (`path.Clean`, no leading `/` or `./`).
fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl Analyzer {
    /// An empty analyzer.
    pub fn new() -> Analyzer {
        Analyzer::default()
    }

    /// Reads one layer (the next one up): a tar stream, gzip- or zstd-compressed or plain.
    pub fn add_layer<R: Read>(&mut self, info: LayerInfo, reader: R) -> Result<(), Error> {
        let stream = kiln_layer::decompress_auto(reader).map_err(|e| Error::Decompress {
            layer: info.digest.clone(),
            source: e,
        })?;
        let mut archive = tar::Archive::new(stream);
        let entries = archive.entries().map_err(|e| layer_error(&info, e))?;
        let (entries, size) = collect(entries).map_err(|e| layer_error(&info, e))?;
        self.push(info, entries, size);
        Ok(())
    }

    /// Like [`Analyzer::add_layer`], for a reader that can seek (a blob file, an archive
    /// member): an uncompressed layer is then read header by header, seeking over the file
    /// contents instead of reading them. A compressed one is streamed.
    pub fn add_layer_seekable<R: Read + Seek>(
        &mut self,
        info: LayerInfo,
        mut reader: R,
    ) -> Result<(), Error> {
        let mut head = [0u8; 8];
        let mut n = 0;
        while n < head.len() {
            match reader.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(layer_error(&info, e)),
            }
        }
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| layer_error(&info, e))?;
        if kiln_layer::detect_compression(&head[..n]) != kiln_layer::Compression::None {
            return self.add_layer(info, BufReader::with_capacity(1 << 20, reader));
        }
        let mut archive = tar::Archive::new(Skipping {
            inner: BufReader::with_capacity(256 << 10, reader),
            pos: 0,
        });
        let entries = archive
            .entries_with_seek()
            .map_err(|e| layer_error(&info, e))?;
        let (entries, size) = collect(entries).map_err(|e| layer_error(&info, e))?;
        self.push(info, entries, size);
        Ok(())
    }

    fn push(&mut self, info: LayerInfo, entries: Vec<Entry>, size: u64) {
        let count = entries.len() as u64;
        self.model.add_layer(entries);
        self.layers.push(LayerStats {
            index: self.layers.len(),
            info,
            size,
            entries: count,
            hidden: 0,
        });
    }

    /// The analysis of the layers added so far.
    pub fn finish(self) -> Analysis {
        let Analyzer { model, mut layers } = self;
        for (layer, hidden) in layers.iter_mut().zip(&model.hidden) {
            layer.hidden = *hidden;
        }
        let total_size: u64 = layers.iter().map(|l| l.size).sum();
        let user_size: u64 = layers.iter().skip(1).map(|l| l.size).sum();
        let mut minimum = 0u64;
        let mut discovered = 0u64;
        let mut inefficiencies = Vec::new();
        for (path, record) in model.records {
            minimum += record.minimum;
            discovered += record.cumulative;
            if record.nodes.len() >= 2 {
                inefficiencies.push(Inefficiency {
                    path,
                    cumulative_size: record.cumulative,
                    reclaimable: record.cumulative - record.minimum,
                    layers: record.nodes,
                });
            }
        }
        inefficiencies.sort_by(|a, b| {
            b.cumulative_size
                .cmp(&a.cumulative_size)
                .then_with(|| a.path.cmp(&b.path))
        });
        let wasted_bytes: u64 = inefficiencies.iter().map(|i| i.cumulative_size).sum();
        let reclaimable_bytes: u64 = inefficiencies.iter().map(|i| i.reclaimable).sum();
        let efficiency = if discovered == 0 {
            1.0
        } else {
            minimum as f64 / discovered as f64
        };
        let user_wasted_ratio = match (wasted_bytes, user_size) {
            (0, 0) => 0.0,
            (_, 0) => f64::INFINITY,
            (w, u) => w as f64 / u as f64,
        };
        Analysis {
            layers,
            total_size,
            user_size,
            efficiency,
            wasted_bytes,
            reclaimable_bytes,
            user_wasted_ratio,
            inefficiencies,
        }
    }
}

impl Analysis {
    /// The analysis as JSON (dive's `--json` field names where dive has one).
    pub fn to_json(&self, top: usize) -> serde_json::Value {
        use serde_json::json;
        let finite = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
        json!({
            "image": {
                "sizeBytes": self.total_size,
                "userSizeBytes": self.user_size,
                "efficiencyScore": finite(self.efficiency),
                "inefficientBytes": self.wasted_bytes,
                "reclaimableBytes": self.reclaimable_bytes,
                "userWastedPercent": finite(self.user_wasted_ratio),
                "fileReference": self.inefficiencies.iter().take(top).map(|i| json!({
                    "path": i.path,
                    "count": i.layers.len(),
                    "sizeBytes": i.cumulative_size,
                    "reclaimableBytes": i.reclaimable,
                    "layers": i.layers.iter().map(|(l, _)| l).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            },
            "layer": self.layers.iter().map(|l| json!({
                "index": l.index,
                "digestId": l.info.digest,
                "sizeBytes": l.size,
                "blobSizeBytes": l.info.blob_size,
                "entries": l.entries,
                "hiddenBytes": l.hidden,
                "command": l.info.created_by,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_like_path_clean() {
        assert_eq!(clean("./etc//passwd"), "etc/passwd");
        assert_eq!(clean("/usr/lib/"), "usr/lib");
        assert_eq!(clean("./"), "");
        assert_eq!(clean("a/../b"), "b");
    }

    fn layer(files: &[(&str, usize)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, len) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(*len as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &vec![7u8; *len][..])
                .expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn seeking_and_streaming_read_the_same_entries() {
        let layers = [
            layer(&[("a/x", 10), ("a/big", 700_000), ("b", 0), ("c", 513)]),
            layer(&[("a/big", 5), ("a/.wh.x", 0)]),
        ];
        let mut streamed = Analyzer::new();
        let mut seeked = Analyzer::new();
        for l in &layers {
            streamed
                .add_layer(LayerInfo::default(), &l[..])
                .expect("stream");
            seeked
                .add_layer_seekable(LayerInfo::default(), std::io::Cursor::new(l.clone()))
                .expect("seek");
        }
        let (a, b) = (streamed.finish(), seeked.finish());
        assert_eq!(a, b);
        assert_eq!(a.total_size, 700_528);
        assert_eq!(a.wasted_bytes, 700_015);
    }

    #[test]
    fn compressed_layers_are_streamed_even_when_seekable() {
        use std::io::Write as _;
        let plain = layer(&[("etc/big", 4096), ("etc/small", 3)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let mut a = Analyzer::new();
        a.add_layer_seekable(LayerInfo::default(), std::io::Cursor::new(gz))
            .expect("gzip layer");
        a.add_layer_seekable(LayerInfo::default(), std::io::Cursor::new(plain))
            .expect("plain layer");
        let a = a.finish();
        assert_eq!(a.layers[0].size, 4099);
        assert_eq!(a.wasted_bytes, 8198);
        assert_eq!(a.layers[0].hidden, 4099);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut a = Analyzer::new();
        let junk = vec![0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8];
        let err = a.add_layer(LayerInfo::default(), &junk[..]).unwrap_err();
        assert!(
            matches!(&err, Error::Layer { source, .. } if source.to_string() == "invalid gzip header"),
            "{err:?}"
        );
        let mut header = vec![b'x'; 512];
        header[148..156].copy_from_slice(b"garbage!");
        let err = a.add_layer(LayerInfo::default(), &header[..]).unwrap_err();
        assert!(
            matches!(&err, Error::Layer { source, .. }
                if source.to_string().starts_with("numeric field was not a number: garbage!")),
            "{err:?}"
        );
    }

    #[test]
    fn empty_image_is_fully_efficient() {
        let a = Analyzer::new().finish();
        assert_eq!(a.efficiency, 1.0);
        assert_eq!(a.user_wasted_ratio, 0.0);
    }
}
