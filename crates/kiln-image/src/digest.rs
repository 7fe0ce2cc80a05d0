//! Content digests (`sha256:<hex>`), the currency of the whole store.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// Builds a digest from a finished hasher.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// The hex part, used as a file name under `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The full `sha256:<hex>` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex characters, as docker shows image ids.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::BadDigest(text.to_owned()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::BadDigest(text.to_owned()));
        }
        Ok(Digest(text.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Returns the inner writer, the digest and the size.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// Returns the digest and size of everything read.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Checks content against the digest (and size) a descriptor promised, as it streams by.
///
/// When the size is known, the check runs as the last promised byte arrives, so a consumer
/// is refused the end of corrupt content rather than told about it afterwards; a stream that
/// goes past the size fails at once. [`VerifyingReader`] wraps it for `Read`; an async
/// stream (a push) calls [`Verifier::update`] on each chunk itself.
#[derive(Clone)]
pub struct Verifier {
    expected: Digest,
    size: Option<u64>,
    hasher: Sha256,
    seen: u64,
    checked: bool,
}

impl Verifier {
    /// Expects content hashing to `expected`, of `size` bytes when known.
    pub fn new(expected: Digest, size: Option<u64>) -> Verifier {
        Verifier {
            expected,
            size,
            hasher: Sha256::new(),
            seen: 0,
            checked: false,
        }
    }

    /// Bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Takes in the next bytes; fails as soon as the content can no longer be what was
    /// promised.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.hasher.update(bytes);
        self.seen += bytes.len() as u64;
        match self.size {
            Some(size) if self.seen > size => Err(self.corrupt(format!(
                "it has more than the {size} bytes its descriptor says"
            ))),
            Some(size) if self.seen == size && !bytes.is_empty() => self.check_digest(),
            _ => Ok(()),
        }
    }

    /// The end of the stream: checks what is left to check.
    pub fn finish(&mut self) -> Result<(), Error> {
        match self.size {
            Some(size) if self.seen < size => {
                Err(self.corrupt(format!("it has {} of {size} bytes", self.seen)))
            }
            _ if self.checked => Ok(()),
            _ => self.check_digest(),
        }
    }

    fn check_digest(&mut self) -> Result<(), Error> {
        let actual = Digest::from_hasher(self.hasher.clone());
        if actual != self.expected {
            return Err(self.corrupt(format!("its content hashes to {actual}")));
        }
        self.checked = true;
        Ok(())
    }

    fn corrupt(&self, why: String) -> Error {
        Error::Corrupt {
            digest: self.expected.clone(),
            why,
        }
    }
}

/// A reader of content whose digest is known: it hashes what passes through and, instead of
/// the end of the stream, returns an error (wrapping [`Error::Corrupt`]) when the content is
/// not what was promised.
///
/// A consumer may stop early (a tar reader stops at its end marker) or fail on corrupt bytes
/// before the end: [`VerifyingReader::finish`] reads the rest and names the corruption, which
/// is the error to report first.
///
/// ```
/// use std::io::Read;
/// use kiln_image::{Digest, VerifyingReader};
///
/// let mut ok = VerifyingReader::new(&b"abc"[..], Digest::of(b"abc"), Some(3));
/// ok.read_to_end(&mut Vec::new()).unwrap();
/// assert!(ok.finish().is_ok());
/// let mut bad = VerifyingReader::new(&b"abd"[..], Digest::of(b"abc"), Some(3));
/// assert!(bad.read_to_end(&mut Vec::new()).is_err());
/// assert!(bad.finish().unwrap_err().to_string().contains("is corrupt"));
/// ```
pub struct VerifyingReader<R> {
    inner: R,
    verifier: Verifier,
    failed: Option<Error>,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, which should hold `size` bytes (when known) hashing to `expected`.
    pub fn new(inner: R, expected: Digest, size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            verifier: Verifier::new(expected, size),
            failed: None,
        }
    }

    /// Reads whatever the consumer left and checks the whole; returns the size.
    pub fn finish(mut self) -> Result<u64, Error> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match self.inner.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.verifier.update(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::ReadBlob {
                        digest: self.verifier.expected.clone(),
                        source,
                    });
                }
            }
        }
        self.verifier.finish()?;
        Ok(self.verifier.seen)
    }

    fn fail(&mut self, error: Error) -> io::Error {
        let io = io::Error::new(io::ErrorKind::InvalidData, error.to_string());
        self.failed = Some(error);
        io
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(error) = &self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                error.to_string(),
            ));
        }
        let n = self.inner.read(buf)?;
        let checked = if n == 0 {
            self.verifier.finish()
        } else {
            self.verifier.update(&buf[..n])
        };
        match checked {
            Ok(()) => Ok(n),
            Err(error) => Err(self.fail(error)),
        }
    }
}

/// The OCI chain id of a stack of layers, bottom first.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut chain = diff_ids.first()?.clone();
    for diff_id in &diff_ids[1..] {
        chain = Digest::of(format!("{chain} {diff_id}").as_bytes());
    }
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.as_str().parse::<Digest>().ok(), Some(d));
        for bad in ["sha256:../../etc", "md5:abc"] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert!(matches!(&err, Error::BadDigest(d) if d == bad), "{err:?}");
        }
    }

    fn read_all(reader: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn a_verifying_reader_passes_sound_content_and_names_corrupt_content() {
        let content = vec![7u8; 100_000];
        let digest = Digest::of(&content);
        let mut sound = VerifyingReader::new(&content[..], digest.clone(), Some(100_000));
        assert_eq!(read_all(&mut sound).unwrap(), content);
        assert_eq!(sound.finish().unwrap(), 100_000);

        let mut flipped = content.clone();
        flipped[50_000] ^= 1;
        let mut reader = VerifyingReader::new(&flipped[..], digest.clone(), Some(100_000));
        assert!(read_all(&mut reader).is_err());
        let err = reader.finish().unwrap_err().to_string();
        assert!(
            err.contains(digest.as_str()) && err.contains("hashes to"),
            "{err}"
        );

        let mut reader = VerifyingReader::new(&content[..60_000], digest.clone(), Some(100_000));
        assert!(read_all(&mut reader).is_err());
        let err = reader.finish().unwrap_err().to_string();
        assert!(err.contains("it has 60000 of 100000 bytes"), "{err}");

        let mut longer = content.clone();
        longer.push(0);
        let mut reader = VerifyingReader::new(&longer[..], digest.clone(), Some(100_000));
        assert!(read_all(&mut reader).is_err());

        // Without a size, the digest is checked at the end of the stream.
        let mut reader = VerifyingReader::new(&flipped[..], digest, None);
        assert!(read_all(&mut reader).is_err());
    }

    #[test]
    fn the_last_bytes_of_corrupt_content_are_withheld() {
        let content = b"0123456789".to_vec();
        let mut verifier = Verifier::new(Digest::of(b"0123456780"), Some(10));
        assert!(verifier.update(&content[..5]).is_ok());
        assert!(verifier.update(&content[5..]).is_err());
    }

    #[test]
    fn a_consumer_that_stops_early_still_gets_the_check() {
        let content = b"head and a corrupt tail".to_vec();
        let mut reader =
            VerifyingReader::new(&content[..], Digest::of(b"head and the real tail"), None);
        let mut head = [0u8; 4];
        reader.read_exact(&mut head).unwrap();
        assert!(reader.finish().is_err());
    }

    #[test]
    fn the_hashing_reader_and_writer_agree_with_digest_of() {
        let (_, empty, n) = HashingWriter::new(io::sink()).finish();
        assert_eq!((empty, n), (Digest::of(b""), 0));
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = HashingWriter::new(Vec::new());
        for chunk in data.chunks(777) {
            writer.write_all(chunk).unwrap();
        }
        let (out, written, size) = writer.finish();
        assert_eq!(out, data);
        assert_eq!((&written, size), (&Digest::of(&data), 100_000));
        let mut reader = HashingReader::new(&data[..]);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        assert_eq!(reader.finish(), (written, size));
    }

    #[test]
    fn chain_id_follows_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        assert_eq!(
            chain_id(&[a.clone(), b.clone()]),
            Some(Digest::of(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(chain_id(&[]), None);
    }
}
