//! OCI layers for kiln: apply a layer into a rootfs safely, turn an overlayfs
//! upper dir (or any dir) into a layer, and compress layer blobs.
//!
//! The main entry points:
//!
//! - [`apply_layer`] reads an uncompressed layer tar and writes it into a
//!   directory, either as a merged rootfs ([`ApplyMode::Merged`], whiteouts
//!   delete) or as one overlayfs lower dir ([`ApplyMode::Overlay`], whiteouts
//!   become 0/0 char devices and opaque xattrs). Every path is resolved
//!   inside the root with `openat2(RESOLVE_IN_ROOT)`, so a hostile layer
//!   can't touch anything outside it. [`decompress_auto`] unwraps gzip/zstd.
//! - [`write_layer_from_upper`] walks an overlayfs upper dir in a stable order
//!   and writes the layer tar (OCI whiteouts, hardlinks, xattrs, clamped
//!   mtimes) while hashing it, returning the `diff_id`.
//!   [`write_layer_from_dir`] does the same for a plain directory.
//! - [`gzip_parallel`] and [`zstd_compress`] compress a layer and return the
//!   blob digest; [`HashingWriter`]/[`HashingReader`] hash any stream.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_layer::{apply_layer, write_layer_from_dir, ApplyMode, ApplyOptions, DiffOptions};
//!
//! // A tree to commit.
//! let src = tempfile::tempdir()?;
//! std::fs::create_dir(src.path().join("etc"))?;
//! std::fs::write(src.path().join("etc/motd"), "hi\n")?;
//!
//! // Commit it into a layer tar, deterministically.
//! let mut tar = Vec::new();
//! let opts = DiffOptions { source_date_epoch: Some(0) };
//! let layer = write_layer_from_dir(src.path(), &mut tar, opts)?;
//! assert!(layer.diff_id.starts_with("sha256:"));
//! assert_eq!(layer.size, tar.len() as u64);
//!
//! // Apply it somewhere else.
//! let dst = tempfile::tempdir()?;
//! let apply = ApplyOptions { preserve_owner: false, ..Default::default() };
//! apply_layer(&tar[..], dst.path(), ApplyMode::Merged, apply)?;
//! assert_eq!(std::fs::read_to_string(dst.path().join("etc/motd"))?, "hi\n");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod apply;
mod compress;
mod diff;
mod error;
mod hash;

pub use apply::{
    ApplyMode, ApplyOptions, ApplyStats, OVERLAY_OPAQUE_XATTR, USER_OVERLAY_OPAQUE_XATTR,
    WHITEOUT_OPAQUE, WHITEOUT_PREFIX, apply_layer,
};
pub use compress::{
    Compressed, Compression, decompress_auto, detect_compression, gzip_parallel, zstd_compress,
};
pub use diff::{DiffOptions, LayerSummary, write_layer_from_dir, write_layer_from_upper};
pub use error::{Error, Result};
pub use hash::{HashingReader, HashingWriter, digest_string};
