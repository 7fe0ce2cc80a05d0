//! Compression of layer blobs (gzip in parallel, zstd) and transparent
//! decompression, hashing the compressed bytes as they stream.

use std::io::{self, Read, Write};

use gzp::ZWriter as _;
use gzp::deflate::Gzip;
use gzp::par::compress::ParCompressBuilder;

use kiln_image::{Digest, HashingWriter};

use crate::error::{Error, Result};

/// The digest and size of a compressed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// The digest of the compressed bytes (the blob digest of a manifest).
    pub digest: Digest,
    /// Size of the compressed bytes.
    pub size: u64,
}

/// The compression of a blob, as sniffed by [`detect_compression`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed (or an unknown format).
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

/// The first bytes of a bzip2 stream.
const BZIP2_MAGIC: &[u8] = b"BZh";
/// The first bytes of an xz stream.
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X'];

/// Whether a stream starting with `head` (its first 4 bytes, or all of a shorter one) is one
/// that [`decompress_auto`] decompresses.
pub(crate) fn is_compressed(head: &[u8]) -> bool {
    detect_compression(head) != Compression::None
        || head.starts_with(BZIP2_MAGIC)
        || head.starts_with(XZ_MAGIC)
}

/// Tells the compression of a blob from its first bytes.
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Sniffs gzip or zstd magic at the start of `reader` and returns a reader
/// of the decompressed stream (the stream itself when it isn't compressed).
///
/// ```
/// use std::io::Read;
/// let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
/// std::io::Write::write_all(&mut gz, b"hello").unwrap();
/// let blob = gz.finish().unwrap();
/// let mut out = String::new();
/// kiln_layer::decompress_auto(&blob[..]).unwrap().read_to_string(&mut out).unwrap();
/// assert_eq!(out, "hello");
/// ```
pub fn decompress_auto<'a, R: Read + 'a>(mut reader: R) -> Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::TarRead {
                    entry: None,
                    source: e,
                });
            }
        }
    }
    let whole = io::Cursor::new(head[..n].to_vec()).chain(reader);
    let buffered = io::BufReader::with_capacity(1 << 20, whole);
    // bzip2 and xz are not layer formats, but `ADD` extracts local archives in them too.
    if head[..n].starts_with(BZIP2_MAGIC) {
        return Ok(Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)));
    }
    if head[..n].starts_with(XZ_MAGIC) {
        return Ok(Box::new(xz2::bufread::XzDecoder::new_multi_decoder(
            buffered,
        )));
    }
    Ok(match detect_compression(&head[..n]) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(
            |e| Error::Compress {
                codec: "zstd",
                message: e.to_string(),
            },
        )?),
        Compression::None => Box::new(buffered),
    })
}

fn copy_into<R: Read, W: Write>(mut reader: R, writer: &mut W) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::TarRead {
                    entry: None,
                    source: e,
                });
            }
        };
        writer
            .write_all(&buf[..n])
            .map_err(|source| Error::Write { source })?;
    }
}

/// Compresses `reader` into `writer` with gzip on all cores (gzp, pure-Rust
/// deflate), hashing the compressed output as it streams. `level` is 0–9.
///
/// The output is one gzip member, compressed in blocks on all cores as
/// `pigz` does; any gzip reader decompresses it.
/// `writer` is only borrowed: flush and fsync it afterwards as needed.
///
/// ```
/// let mut out = Vec::new();
/// let c = kiln_layer::gzip_parallel(&b"layer bytes"[..], &mut out, 6).unwrap();
/// assert_eq!(c.size, out.len() as u64);
/// ```
pub fn gzip_parallel<R: Read, W: Write + Send>(
    reader: R,
    writer: W,
    level: u32,
) -> Result<Compressed> {
    let (_, digest, size) = gzip_into(reader, HashingWriter::new(writer), level)?.finish();
    Ok(Compressed { digest, size })
}

/// [`gzip_parallel`] without the hashing, for a writer that hashes itself (a blob of the
/// store): returns the writer.
pub(crate) fn gzip_into<R: Read, W: Write + Send>(reader: R, writer: W, level: u32) -> Result<W> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    std::thread::scope(|scope| -> Result<W> {
        let builder = ParCompressBuilder::<Gzip>::new()
            .compression_level(gzp::Compression::new(level.min(9)))
            .num_threads(threads)
            .map_err(|e| Error::Compress {
                codec: "gzip",
                message: e.to_string(),
            })?;
        let mut z = builder.from_borrowed_writer(writer, scope);
        let copied = copy_into(reader, &mut z);
        let finished = z.finish();
        copied?;
        finished.map_err(|e| Error::Compress {
            codec: "gzip",
            message: e.to_string(),
        })
    })
}

/// Compresses `reader` into `writer` with gzip on this thread alone (flate2): the fallback when
/// a parallel copy does not decompress to its input.
pub fn gzip_serial<R: Read, W: Write>(reader: R, writer: W, level: u32) -> Result<Compressed> {
    let (_, digest, size) = gzip_serial_into(reader, HashingWriter::new(writer), level)?.finish();
    Ok(Compressed { digest, size })
}

/// [`gzip_serial`] without the hashing, for a writer that hashes itself: returns the writer.
pub(crate) fn gzip_serial_into<R: Read, W: Write>(reader: R, writer: W, level: u32) -> Result<W> {
    let mut enc = flate2::write::GzEncoder::new(writer, flate2::Compression::new(level.min(9)));
    copy_into(reader, &mut enc)?;
    enc.finish().map_err(|source| Error::Write { source })
}

/// Compresses `reader` into `writer` with zstd at `level` (1–22; 3 is the
/// usual default), hashing the compressed output as it streams.
///
/// ```
/// let mut out = Vec::new();
/// let c = kiln_layer::zstd_compress(&b"layer bytes"[..], &mut out, 3).unwrap();
/// assert_eq!(c.size, out.len() as u64);
/// ```
pub fn zstd_compress<R: Read, W: Write>(reader: R, writer: W, level: i32) -> Result<Compressed> {
    let (_, digest, size) = zstd_into(reader, HashingWriter::new(writer), level)?.finish();
    Ok(Compressed { digest, size })
}

/// [`zstd_compress`] without the hashing, for a writer that hashes itself: returns the writer.
pub(crate) fn zstd_into<R: Read, W: Write>(reader: R, writer: W, level: i32) -> Result<W> {
    let zerr = |e: io::Error| Error::Compress {
        codec: "zstd",
        message: e.to_string(),
    };
    let mut enc = zstd::stream::write::Encoder::new(writer, level).map_err(zerr)?;
    copy_into(reader, &mut enc)?;
    enc.finish().map_err(|source| Error::Write { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..3_000_000u32)
            .map(|i| (i % 97 + i / 5000) as u8)
            .collect()
    }

    #[test]
    fn gzip_round_trips_and_digest_matches_output() {
        let data = sample();
        let mut out = Vec::new();
        let c = gzip_parallel(&data[..], &mut out, 6).unwrap();
        assert_eq!(c.size, out.len() as u64);
        assert_eq!(c.digest, Digest::of(&out));
        let mut back = Vec::new();
        decompress_auto(&out[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn gzip_output_is_one_member_that_gunzip_reads() {
        let data = sample();
        let mut out = Vec::new();
        gzip_parallel(&data[..], &mut out, 1).unwrap();
        // A single-member decoder stops at the end of the first member.
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), data.len());
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip must be installed for this test");
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || stdin.write_all(&out));
        let output = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(output.status.success());
        assert_eq!(output.stdout, data);
    }

    #[test]
    fn zstd_round_trips() {
        let data = sample();
        let mut out = Vec::new();
        let c = zstd_compress(&data[..], &mut out, 3).unwrap();
        assert_eq!(c.size, out.len() as u64);
        assert_eq!(detect_compression(&out), Compression::Zstd);
        let mut back = Vec::new();
        decompress_auto(&out[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn plain_and_tiny_streams_pass_through() {
        for data in [&b""[..], &b"a"[..], &b"\x1f"[..], &b"plain tar bytes"[..]] {
            let mut back = Vec::new();
            decompress_auto(data)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }
}
