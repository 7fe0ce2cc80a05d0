//! Digests, descriptors, image configs, manifests and the crash-safe local OCI store.
//!
//! The store is an OCI image layout (`oci/`) that skopeo and umoci read as it is, plus the
//! unpacked layer snapshots and build-cache records kiln needs to build quickly:
//!
//! ```no_run
//! use kiln_image::{ImageConfig, Store};
//!
//! let store = Store::open("/var/lib/kiln".as_ref())?;
//! let config = ImageConfig::scratch();
//! let image = store.put_image(&config, Vec::new())?;
//! store.tag("empty:latest", &image.descriptor)?;
//! assert_eq!(store.resolve("empty")?.manifest_digest(), &image.descriptor.digest);
//! # Ok::<(), kiln_image::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod archive;
pub mod attestation;
mod check;
mod config;
mod digest;
mod manifest;
mod reference;
mod store;

use std::path::PathBuf;

pub use config::{
    ContainerConfig, EmptyObject, Healthcheck, History, ImageConfig, RootFs, host_architecture,
};
pub use digest::{Digest, HashingReader, HashingWriter, Verifier, VerifyingReader, chain_id};
pub use manifest::{Compression, Descriptor, Index, Manifest, Platform, media_type};
pub use reference::{DEFAULT_DOMAIN, Reference};
pub use store::{
    BlobWriter, CacheRecord, CheckReport, GcReport, Image, Problem, REF_NAME_ANNOTATION,
    StagedBlob, Store, StoreLock, TaggedImage, create_private_dir, is_index, place_dir,
    write_atomic,
};

/// The most kiln reads of a manifest or an index: containerd's cap. A document is read into
/// memory whole, so a hostile registry or archive must not choose how big it is.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// The most kiln reads of an image config. Configs carry the history and the environment, so
/// they get more room than manifests; a config of a 127-layer image is some 40 kB.
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// Errors of the image model and the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system call failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Not a `sha256:<hex>` digest.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    BadDigest(String),
    /// An image reference that does not parse.
    #[error("invalid image reference {reference:?}: {why}")]
    BadReference {
        /// The text given.
        reference: String,
        /// What is wrong with it.
        why: String,
    },
    /// No image by that name or id.
    #[error("image {0:?} is not in the local store")]
    ImageNotFound(String),
    /// An image (or index) has no entry for the platform asked for.
    #[error("{name} has no image for {want} (it has: {})", have.join(", "))]
    NoPlatform {
        /// The image.
        name: String,
        /// The platform asked for.
        want: String,
        /// The platforms it has.
        have: Vec<String>,
    },
    /// A blob the store should have is missing.
    #[error("blob {0} is missing from the store")]
    BlobNotFound(Digest),
    /// A blob of the store whose content is not what its digest says.
    #[error(
        "blob {digest} in the store is corrupt: {why}; `kiln check --repair` removes it and what depends on it"
    )]
    Corrupt {
        /// The blob.
        digest: Digest,
        /// What is wrong with it.
        why: String,
    },
    /// Reading a blob failed (not a mismatch: the read itself).
    #[error("read blob {digest}")]
    ReadBlob {
        /// The blob.
        digest: Digest,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document bigger than kiln reads into memory.
    #[error(
        "{what} is {size} bytes, more than the {} MiB kiln reads for it (as containerd caps manifests at 4 MiB)",
        limit >> 20
    )]
    TooLarge {
        /// Which document.
        what: String,
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// Content did not hash to what was expected.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What the descriptor said.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A JSON document in the store or an archive is malformed.
    #[error("{what} is not valid JSON")]
    BadJson {
        /// Which document.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// An image archive that is not what it claims to be, or is damaged.
    #[error("not a valid image archive: {0}")]
    BadArchive(String),
    /// An id prefix matches more than one image.
    #[error("image id prefix {0:?} is ambiguous: give more digits")]
    Ambiguous(String),
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let io = IoError::at(op, path);
        move |source| Error::Io(io(source))
    }
}

/// A file-system call that failed: what was being done and on which path, with the OS error
/// as its source. The one I/O error shape of kiln's crates; each crate's error enum carries it
/// as an `Io` variant (`#[error(transparent)]`), so the message reads the same whichever
/// crate made the call.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}")]
pub struct IoError {
    /// What was being done (`read`, `create directory`, `openat2`).
    pub op: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// A `map_err` adapter: `.map_err(IoError::at("read", &path))`.
    pub fn at(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> IoError {
        let path = path.into();
        move |source| IoError { op, path, source }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
