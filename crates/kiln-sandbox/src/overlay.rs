//! The one way kiln mounts an overlay: a step's rootfs in the sandbox and the merged view
//! that COPY, ADD and WORKDIR write into (`kiln-build`'s snapshots) are both made here, with
//! the same options, because both upper dirs become layers.
//!
//! The mount is made with the new mount API (`fsopen`, one `fsconfig` per layer, `fsmount`,
//! `move_mount`), never through `mount(2)`'s one-page option string: `lowerdir+` takes one
//! layer per call, so the stack is not limited by the option size, and no layer path needs
//! escaping. Nothing depends on the current directory, which the caller's other threads share.
//! `lowerdir+` needs Linux 6.8.
//!
//! # Options
//!
//! [`OPTIONS`] keep the upper dir a plain tree that the layer diff reads as it is: no `redirect_dir` (a renamed directory would be an xattr pointing into a lower, not its
//! content), no `metacopy` (a chmod would copy up the metadata only, leaving the data in a
//! lower) and no `index` (hard links copied up would be tied to an index dir outside the
//! upper). Whatever the kernel's build-time defaults, the layers come out the same.
//! In a user namespace (rootless kiln, see [`userns`](crate::userns)) `userxattr` is added:
//! overlayfs then keeps its xattrs in `user.overlay.*`, the only ones an unprivileged mount
//! may write, and the layer diff reads both forms.
//!
//! Every overlay is `nodev`: device nodes of an image or made by a step never open.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

use crate::SandboxError;

/// The options of every overlay kiln mounts (see the module docs for why).
pub const OPTIONS: [(&str, &str); 3] = [
    ("redirect_dir", "off"),
    ("metacopy", "off"),
    ("index", "off"),
];

/// The most bytes `fsconfig(2)` takes in one string value (it copies 256, NUL included).
const FSCONFIG_STRING_MAX: usize = 255;

/// An overlay to mount.
#[derive(Debug, Clone, Copy)]
pub struct Overlay<'a> {
    /// The lower dirs, top-most first: at least one, or two without an upper.
    pub lowers: &'a [PathBuf],
    /// The upper and work dirs. Without them the mount is read-only.
    pub upper: Option<(&'a Path, &'a Path)>,
}

impl Overlay<'_> {
    /// Mounts the overlay on `target`.
    pub fn mount(&self, target: &Path) -> Result<(), SandboxError> {
        let shown = || target.display().to_string();
        // The kernel's own rule, said here because its EINVAL would not say it.
        let least = if self.upper.is_some() { 1 } else { 2 };
        if self.lowers.len() < least {
            return Err(SandboxError::Spec(format!(
                "the overlay on {} has {} lower dirs; overlayfs needs {least} {}",
                shown(),
                self.lowers.len(),
                if self.upper.is_some() {
                    "with an upper dir"
                } else {
                    "without an upper dir"
                }
            )));
        }
        let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(|e| SandboxError::sys("fsopen overlay for", shown(), e))?;
        for lower in self.lowers {
            set_path(&fs, "lowerdir+", "fsconfig lowerdir+", lower)?;
        }
        if let Some((upper, work)) = self.upper {
            set_path(&fs, "upperdir", "fsconfig upperdir", upper)?;
            set_path(&fs, "workdir", "fsconfig workdir", work)?;
        }
        let rootless = crate::userns::current().is_some();
        for (key, value) in OPTIONS {
            // `off` may still follow redirects (a kernel built with redirect_always_follow),
            // which `userxattr` refuses; no kiln layer has a redirect to follow anyway.
            let value = match key {
                "redirect_dir" if rootless => "nofollow",
                _ => value,
            };
            rustix::mount::fsconfig_set_string(&fs, key, value)
                .map_err(|e| SandboxError::sys("fsconfig overlay option", key, e))?;
        }
        if rootless {
            rustix::mount::fsconfig_set_flag(&fs, "userxattr").map_err(|e| {
                SandboxError::Spec(format!(
                    "overlayfs refuses its userxattr option ({}): a rootless kiln needs \
                     overlayfs in a user namespace (Linux 5.11 and later); build as root",
                    std::io::Error::from(e)
                ))
            })?;
        }
        // overlayfs says why it refuses in the kernel log (dmesg), not in the error.
        rustix::mount::fsconfig_create(&fs).map_err(|e| {
            if rootless && e == rustix::io::Errno::PERM {
                SandboxError::Spec(format!(
                    "the kernel refuses an overlay mount in kiln's user namespace (EPERM on \
                     {}): rootless builds need unprivileged overlayfs (Linux 5.11 and later, \
                     not disabled by the distribution); build as root",
                    shown()
                ))
            } else {
                SandboxError::sys("create overlay (dmesg says why) for", shown(), e)
            }
        })?;
        let mut attrs = MountAttrFlags::MOUNT_ATTR_NODEV;
        if self.upper.is_none() {
            attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
        }
        let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| SandboxError::sys("fsmount overlay for", shown(), e))?;
        rustix::mount::move_mount(
            &mnt,
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| SandboxError::sys("move_mount overlay to", shown(), e))
    }
}

/// Sets a layer option. A path longer than `fsconfig` takes, or one with a `\` (which
/// overlayfs reads as an escape in `upperdir` and `workdir`), is passed as this thread's magic
/// link to an `O_PATH` fd of it, which the kernel follows to the same directory.
fn set_path(fs: &OwnedFd, key: &str, call: &'static str, path: &Path) -> Result<(), SandboxError> {
    let sys = |call, e| SandboxError::sys(call, path.display().to_string(), e);
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() <= FSCONFIG_STRING_MAX && !bytes.contains(&b'\\') {
        return rustix::mount::fsconfig_set_string(fs, key, path).map_err(|e| sys(call, e));
    }
    let dir = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys("open overlay layer", e))?;
    // thread-self, not self: the sandbox's setup thread may have a file table of its own.
    let link = format!("/proc/thread-self/fd/{}", dir.as_raw_fd());
    rustix::mount::fsconfig_set_string(fs, key, &link).map_err(|e| sys(call, e))
}
