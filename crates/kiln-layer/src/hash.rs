//! Hash a byte stream while it flows through a reader or a writer.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// Formats a finished SHA-256 as an OCI digest string, `sha256:<hex>`.
pub fn digest_string(hash: &[u8]) -> String {
    format!("sha256:{}", hex::encode(hash))
}

/// A writer that hashes (SHA-256) and counts every byte written through it.
///
/// ```
/// use std::io::Write;
/// let mut w = kiln_layer::HashingWriter::new(Vec::new());
/// w.write_all(b"abc").unwrap();
/// let (out, digest, size) = w.finish();
/// assert_eq!(out, b"abc");
/// assert_eq!(size, 3);
/// assert_eq!(digest, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// ```
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, mutably. Bytes written through it are not hashed.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the inner writer, the digest (`sha256:<hex>`) and the byte count.
    ///
    /// It does not flush the inner writer.
    pub fn finish(self) -> (W, String, u64) {
        let digest = digest_string(&self.hasher.finalize());
        (self.inner, digest, self.size)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes (SHA-256) and counts every byte read through it.
///
/// ```
/// use std::io::Read;
/// let mut r = kiln_layer::HashingReader::new(&b"abc"[..]);
/// let mut s = String::new();
/// r.read_to_string(&mut s).unwrap();
/// let (_, digest, size) = r.finish();
/// assert_eq!(size, 3);
/// assert!(digest.starts_with("sha256:ba7816bf"));
/// ```
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Bytes read so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the inner reader, the digest (`sha256:<hex>`) of what was read and the byte count.
    pub fn finish(self) -> (R, String, u64) {
        let digest = digest_string(&self.hasher.finalize());
        (self.inner, digest, self.size)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_is_the_well_known_one() {
        let (_, d, n) = HashingWriter::new(io::sink()).finish();
        assert_eq!(n, 0);
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn reader_and_writer_agree() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = HashingWriter::new(Vec::new());
        for chunk in data.chunks(777) {
            w.write_all(chunk).unwrap();
        }
        let (_, dw, nw) = w.finish();
        let mut r = HashingReader::new(&data[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (_, dr, nr) = r.finish();
        assert_eq!((dw, nw), (dr, nr));
    }
}
