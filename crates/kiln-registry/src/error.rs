//! The errors of talking to registries.

use std::path::PathBuf;

use kiln_image::Digest;
use oci_client::errors::OciDistributionError;

/// What went wrong, naming the registry, reference or blob it went wrong on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local store refused or failed.
    #[error(transparent)]
    Store(#[from] kiln_image::Error),
    /// Compressing a layer failed.
    #[error(transparent)]
    Layer(#[from] kiln_layer::Error),
    /// A registry request failed.
    #[error("{what} at {host}")]
    Registry {
        /// The registry host.
        host: String,
        /// What was being done.
        what: String,
        /// The protocol error.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// An HTTP request kiln makes itself (probe, login) failed.
    #[error("{what} at {host}")]
    Http {
        /// The registry host.
        host: String,
        /// What was being done.
        what: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered 401/403.
    #[error("{host} refused the credentials for {what} (HTTP {status}); check `kiln login {host}`")]
    Unauthorized {
        /// The registry host.
        host: String,
        /// What was being done.
        what: String,
        /// The status code.
        status: u16,
    },
    /// No endpoint had the manifest.
    #[error("{reference}: manifest not found (tried {})", tried.join(", "))]
    NotFound {
        /// The reference.
        reference: String,
        /// The endpoints tried, in order.
        tried: Vec<String>,
    },
    /// Content that does not hash to its descriptor's digest; nothing of it was stored.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; nothing was stored")]
    DigestMismatch {
        /// Which blob or manifest.
        what: String,
        /// What the descriptor said.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A layer whose uncompressed stream is not what its config says; nothing was stored.
    #[error(
        "layer {layer} unpacks to {actual}, but the config says {expected}; the image lies about its layers, and nothing was stored"
    )]
    DiffIdMismatch {
        /// The layer blob.
        layer: Digest,
        /// The digest of its uncompressed stream.
        actual: Digest,
        /// The diff id its config gives it.
        expected: Digest,
    },
    /// A blob whose size differs from its descriptor's.
    #[error("size mismatch for blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Descriptor size.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// A transfer ended early.
    #[error("blob {digest}: the body ended after {got} of {expected} bytes")]
    Truncated {
        /// The blob.
        digest: Digest,
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// Reading a blob's body failed.
    #[error("download of blob {digest} broke off")]
    BlobStream {
        /// The blob.
        digest: Digest,
        /// The transport error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest or blob of a media type kiln does not handle.
    #[error(
        "{reference}: unsupported media type {media_type:?} (kiln handles OCI and Docker schema 2 manifests and indexes)"
    )]
    UnknownMediaType {
        /// The reference.
        reference: String,
        /// The media type.
        media_type: String,
    },
    /// A manifest that does not parse.
    #[error("{reference}: invalid manifest: {why}")]
    BadManifest {
        /// The reference.
        reference: String,
        /// What is wrong.
        why: String,
    },
    /// An index without an entry for the wanted platform.
    #[error("{reference}: no image for platform {platform} (the index has: {})", if available.is_empty() { "nothing".to_owned() } else { available.join(", ") })]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// The platform wanted.
        platform: String,
        /// What the index offers.
        available: Vec<String>,
    },
    /// A platform string that does not parse.
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    BadPlatform(String),
    /// A registry that is reachable neither by https nor (where allowed) by http.
    #[error("cannot reach {host}: {why}")]
    Unreachable {
        /// The registry host.
        host: String,
        /// What failed.
        why: String,
    },
    /// Bad registry configuration.
    #[error("registry configuration: {0}")]
    Config(String),
    /// Reading or writing credentials failed.
    #[error("credentials for {host}: {why}")]
    Credentials {
        /// The registry host.
        host: String,
        /// What failed.
        why: String,
    },
    /// A file-system call failed.
    #[error(transparent)]
    Io(#[from] kiln_image::IoError),
    /// The async runtime could not start.
    #[error("start the transfer runtime")]
    Runtime(#[source] std::io::Error),
    /// A cache artifact that is not what kiln writes.
    #[error("{reference}: not a kiln build cache: {why}")]
    BadCache {
        /// The reference.
        reference: String,
        /// What is wrong.
        why: String,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let io = kiln_image::IoError::at(op, path);
        move |source| Error::Io(io(source))
    }

    /// Wraps an oci-client error, turning 401/403 into [`Error::Unauthorized`].
    pub(crate) fn registry(host: &str, what: impl Into<String>, e: OciDistributionError) -> Error {
        let what = what.into();
        let status = match &e {
            OciDistributionError::UnauthorizedError { .. } => Some(401),
            OciDistributionError::AuthenticationFailure(_) => Some(401),
            OciDistributionError::ServerError { code, .. } if *code == 401 || *code == 403 => {
                Some(*code)
            }
            OciDistributionError::RequestError(r) => r
                .status()
                .map(|s| s.as_u16())
                .filter(|s| *s == 401 || *s == 403),
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    format!("{:?}", e.code).contains("Unauthorized")
                        || format!("{:?}", e.code).contains("Denied")
                }) =>
            {
                Some(401)
            }
            _ => None,
        };
        match status {
            Some(status) => Error::Unauthorized {
                host: host.to_owned(),
                what,
                status,
            },
            None => Error::Registry {
                host: host.to_owned(),
                what,
                source: Box::new(e),
            },
        }
    }

    /// Whether trying again may help: connection trouble, 5xx, a body cut short.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Truncated { .. } => true,
            Error::BlobStream { source, .. } => transient_io(source),
            Error::Http { source, .. } => transient_reqwest(source),
            Error::Registry { source, .. } => transient_oci(source),
            _ => false,
        }
    }

    /// Whether the endpoint simply does not have the content (a mirror miss).
    pub(crate) fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Registry { source, .. } => match source.as_ref() {
                OciDistributionError::ImageManifestNotFoundError(_) => true,
                OciDistributionError::ServerError { code, .. } => *code == 404,
                OciDistributionError::RegistryError { envelope, .. } => envelope
                    .errors
                    .iter()
                    .any(|e| format!("{:?}", e.code).contains("Unknown")),
                OciDistributionError::RequestError(r) => {
                    r.status().is_some_and(|s| s.as_u16() == 404)
                }
                _ => false,
            },
            _ => false,
        }
    }
}

fn transient_reqwest(e: &reqwest::Error) -> bool {
    if let Some(status) = e.status() {
        return status.is_server_error() || status.as_u16() == 429;
    }
    e.is_connect() || e.is_timeout() || e.is_body() || e.is_request() || e.is_decode()
}

fn transient_oci(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => transient_reqwest(r),
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::IoError(io) => transient_io(io),
        _ => false,
    }
}

/// An I/O error from a body stream is transient when it wraps a transport error (a reset or
/// a cut connection), not when it wraps a digest verification failure.
pub(crate) fn transient_io(io: &std::io::Error) -> bool {
    match io.get_ref() {
        Some(inner) => inner
            .downcast_ref::<reqwest::Error>()
            .is_some_and(transient_reqwest),
        None => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::TimedOut
        ),
    }
}
