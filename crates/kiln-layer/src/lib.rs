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
//!   [`write_layer_from_dir`] does the same for a plain directory, and
//!   [`store_layer_from_upper`] writes the layer into the store as a blob.
//! - [`apply_stored_layer`] applies a layer of the store, checking its blob against its
//!   digest and its uncompressed stream against its diff id; [`DiffIdWriter`] computes the
//!   diff id of a blob while a pull or a load streams it into the store.
//! - [`open_in_root`] opens a path of a rootfs the way a chroot would resolve it.
//! - [`gzip_parallel`] and [`zstd_compress`] compress a layer and return the
//!   blob digest.
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
//! assert_eq!(layer.diff_id, kiln_image::Digest::of(&tar));
//! assert_eq!(layer.size, tar.len() as u64);
//!
//! // Apply it somewhere else.
//! let dst = tempfile::tempdir()?;
//! let apply = ApplyOptions { preserve_owner: false, ..Default::default() };
//! apply_layer(&tar[..], dst.path(), ApplyMode::Merged, apply)?;
//! assert_eq!(std::fs::read_to_string(dst.path().join("etc/motd"))?, "hi\n");
//! # Ok(()) }
//! ```
//!
//! ## Applying a layer safely
//!
//! Every path of the layer is resolved inside the target root: parents are
//! looked up with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` on a
//! dirfd of the root, and the last component is then created, replaced or
//! removed with `*at()` syscalls relative to that parent fd, which never
//! follow a symlink in the last component. Entry names are first cleaned
//! lexically (`..` is clamped at the root, as `filepath.Clean("/" + name)`
//! does), so `../x`, `/etc/x` and `a/../../x` all land on `x` inside the root.
//!
//! Symlinks met on the way are followed *inside* the root, as in a chroot: a
//! later entry `lib/x` under a symlink `lib -> /usr/lib` lands in
//! `ROOT/usr/lib/x`. When the link's target does not exist inside the root the
//! entry is refused (as docker's chrooted unpack does) rather than creating
//! directories through the link. Existing files are never opened for writing:
//! they are unlinked and created anew (`O_CREAT | O_EXCL | O_NOFOLLOW`), so
//! nothing is ever written through a symlink or into another hardlink.
//!
//! Whiteouts hide entries of lower layers only: a whiteout of a path that
//! this layer itself unpacked is ignored. Names `.wh..` and `.wh...` (whiteouts
//! of `.` and `..`) are refused. `trusted.overlay.*` and `user.overlay.*`
//! xattrs found in a layer are never applied, so a layer can't forge overlayfs
//! metadata.
//!
//! Apply into a staging directory and rename it into place: an error leaves
//! a partly applied tree behind.
//!
//! ## The layers this crate writes
//!
//! One walker serves both sources. It visits each directory's entries sorted
//! by their name bytes, depth first (a directory comes right before its
//! children, as `filepath.Walk` does), and writes:
//!
//! - paths relative to the walked dir, without a leading `/` or `./`;
//!   directories end with `/` (`etc/`, `etc/passwd`);
//! - numeric uid/gid only, no user or group names, no atime/ctime;
//! - mtimes clamped to `source_date_epoch` when it is set;
//! - a hardlink entry for the second and later paths of an inode (by
//!   `(dev, ino)`);
//! - xattrs as PAX `SCHILY.xattr.*` records, except `trusted.overlay.*`,
//!   `user.overlay.*` (overlayfs internals) and `security.selinux` (a host
//!   label, not image content);
//! - PAX `path`/`linkpath` records for names that don't fit a ustar header.
//!
//! For an upper dir, overlayfs whiteouts (a 0/0 char device, or a file with
//! the `overlay.whiteout` xattr) become `.wh.NAME` entries, and a directory
//! with `overlay.opaque=y` is followed by a `.wh..wh..opq` entry. An upper
//! dir that uses overlayfs `metacopy` or `redirect_dir` (whose data or names
//! live in the lower dirs) is refused with a hint: mount the overlay with
//! `metacopy=off,redirect_dir=off`. Sockets are left out.
//!
//! Only the upper dir is read, never the lower ones, and each file once: the
//! tar is hashed as it is written, so `diff_id` costs no second pass. Written
//! into the store, it is hashed once: the blob's digest is the diff id.
#![deny(missing_docs)]
// Only `isal` calls C by hand (ISA-L's stateless deflate); every other module is safe Rust.
#![deny(unsafe_code)]

mod apply;
mod compress;
mod diff;
mod diff_id;
mod error;
mod in_root;
#[allow(unsafe_code)]
mod isal;
mod stored;

pub use apply::{
    ApplyMode, ApplyOptions, ApplyStats, OVERLAY_OPAQUE_XATTR, USER_OVERLAY_OPAQUE_XATTR,
    WHITEOUT_OPAQUE, WHITEOUT_PREFIX, apply_layer,
};
pub use compress::{
    Compressed, Compression, decompress_auto, detect_compression, gzip_parallel, gzip_serial,
    zstd_compress,
};
pub use diff::{
    DiffOptions, LayerSummary, TreeState, store_layer_from_changes, store_layer_from_upper,
    write_layer_from_dir, write_layer_from_upper,
};
pub use diff_id::{DiffIdWriter, apply_stored_layer, diff_id_in_store, known_diff_id_in_store};
pub use error::{Error, Result};
pub use in_root::open_in_root;
pub use stored::{Tee, compressed_in_store, compressed_in_store_teed, known_compressed};
