//! The error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while applying, diffing or compressing a layer.
///
/// Every variant that touches the file system names the path and the syscall
/// (or library call) that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image store failed (reading a blob, writing a compressed copy).
    #[error(transparent)]
    Store(#[from] kiln_image::Error),
    /// A syscall failed on a path (the op is the syscall, e.g. `openat2` or `mknodat`; the path
    /// is the host path when known).
    #[error(transparent)]
    Io(#[from] kiln_image::IoError),
    /// The layer tar stream could not be read or is malformed.
    #[error("reading the layer tar stream{}: {source}", entry_suffix(entry))]
    TarRead {
        /// The entry being read, when known.
        entry: Option<String>,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A tar entry is not acceptable (bad name, hardlink to a directory, ...).
    #[error("layer entry {entry:?}: {reason}")]
    BadEntry {
        /// The entry name as it appears in the tar stream.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the produced layer (or compressed blob) failed.
    #[error("writing the layer output: {source}")]
    Write {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file changed while it was being committed into a layer.
    #[error("{} changed while it was being read ({detail}); is something still writing to it?", path.display())]
    Changed {
        /// The host path of the file.
        path: PathBuf,
        /// What changed.
        detail: String,
    },
    /// The input uses a feature this crate can't represent faithfully.
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The host path of the offending entry.
        path: PathBuf,
        /// What is unsupported, and what to do about it.
        reason: String,
    },
    /// A layer whose uncompressed stream is not what its image's config says.
    #[error("layer {layer} unpacks to {actual}, but the config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        layer: kiln_image::Digest,
        /// The digest of its uncompressed stream.
        actual: kiln_image::Digest,
        /// The diff id the config gives it.
        expected: kiln_image::Digest,
    },
    /// The compressor failed.
    #[error("{codec} compression failed: {message}")]
    Compress {
        /// `gzip` or `zstd`.
        codec: &'static str,
        /// The compressor's message.
        message: String,
    },
}

fn entry_suffix(entry: &Option<String>) -> String {
    match entry {
        Some(e) => format!(" at entry {e:?}"),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn sys(
        syscall: &'static str,
        path: impl Into<PathBuf>,
        err: impl Into<io::Error>,
    ) -> Self {
        Error::Io(kiln_image::IoError::at(syscall, path)(err.into()))
    }

    /// The OS errno of a [`Error::Io`], if this is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.source.raw_os_error(),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
