//! OCI distribution client: pull and push with mirrors, auth, retries and digest checks.
//!
//! [`Registry`] is the entry point. It wraps `oci-client` (rustls) for the protocol — the
//! bearer-token and basic auth flows, manifest GET/PUT, blob HEAD, ranged blob GETs, streamed
//! monolithic uploads and cross-repository mounts — and adds what kiln needs around it:
//!
//! - mirrors tried in order for pulls, with a short connect timeout so a dead mirror costs
//!   little ([`RegistryConfig`]);
//! - `http://` only for hosts configured `insecure`, mirrors given as `http://…`, and
//!   `localhost`/`127.0.0.1`;
//! - credentials from `~/.docker/config.json` (`auths`, `credHelpers`, `credsStore`) through
//!   `docker_credential`, and [`auth::login`]/[`auth::logout`];
//! - blobs streamed to the store's staging, hashed on the way, and committed only when every
//!   blob of the image has been verified; a transfer cut short resumes with a `Range` request;
//! - retries with exponential backoff on transient errors (connection reset, 5xx, truncated
//!   bodies);
//! - push that skips blobs the registry has, mounts them across repositories when kiln knows
//!   where they came from, and gzips uncompressed layers once (the compressed blob and the
//!   diff id → blob mapping stay in the store, so a second push compresses nothing);
//! - a build cache exported as an OCI artifact ([`cache`]);
//! - plain downloads (`ADD <url>`) with the same TLS and proxy settings
//!   ([`Registry::fetch_url`]).
//!
//! The library never prints: progress goes to a [`Reporter`].
//!
//! ```no_run
//! use kiln_registry::{Registry, RegistryConfig, Silent};
//! use kiln_image::Store;
//!
//! let store = Store::open("/var/lib/kiln".as_ref())?;
//! let registry = Registry::new(RegistryConfig::default())?;
//! let pulled = registry.pull(&store, &"127.0.0.1:5000/library/busybox:latest".parse()?, None, &Silent)?;
//! println!("{} served by {}", pulled.image.id(), pulled.served_by);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod cache;
mod client;
mod config;
mod error;
mod fetch;
mod pull;
mod push;

pub use client::Registry;
pub use config::{HostConfig, PushConfig, RegistryConfig, parse_platform};
pub use error::Error;
pub use fetch::Download;
pub use pull::Pulled;
pub use push::Pushed;

use kiln_image::Digest;

/// How one blob was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobAction {
    /// Already in the local store (pull) or in the registry (push): nothing moved.
    Exists,
    /// Downloaded into the store.
    Downloaded,
    /// Uploaded to the registry.
    Uploaded,
    /// Mounted from another repository of the same registry.
    Mounted,
}

impl BlobAction {
    /// A word for progress lines.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobAction::Exists => "exists",
            BlobAction::Downloaded => "downloaded",
            BlobAction::Uploaded => "pushed",
            BlobAction::Mounted => "mounted",
        }
    }
}

/// What a transfer reports as it goes. Only the binary draws these.
#[derive(Debug)]
pub enum Event<'a> {
    /// A blob transfer starts.
    BlobStart {
        /// The blob.
        digest: &'a Digest,
        /// Its size.
        size: u64,
    },
    /// Bytes of a blob moved so far (for progress bars).
    BlobProgress {
        /// The blob.
        digest: &'a Digest,
        /// Bytes so far.
        bytes: u64,
    },
    /// A blob is done.
    BlobDone {
        /// The blob.
        digest: &'a Digest,
        /// Bytes that went over the wire for it.
        bytes: u64,
        /// What happened.
        action: BlobAction,
    },
    /// An uncompressed layer was gzipped for a push.
    Compressed {
        /// The layer's diff id.
        diff_id: &'a Digest,
        /// The compressed blob.
        digest: &'a Digest,
        /// Its size.
        size: u64,
    },
    /// A transient error; the operation is tried again after a pause.
    Retry {
        /// What was being done.
        what: &'a str,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// The error.
        error: String,
    },
    /// A mirror could not serve; the next one (or the origin) is tried.
    MirrorSkipped {
        /// The mirror.
        mirror: &'a str,
        /// Why.
        why: String,
    },
    /// Which endpoint served a manifest.
    Served {
        /// `host` of the mirror or origin.
        host: &'a str,
        /// The reference.
        reference: &'a str,
        /// Whether it is a mirror.
        mirror: bool,
    },
}

/// Receives [`Event`]s, from several transfer tasks at once.
pub trait Reporter: Send + Sync {
    /// Called for each event.
    fn report(&self, event: Event<'_>);
}

/// Drops every event.
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event<'_>) {}
}
