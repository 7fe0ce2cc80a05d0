//! The kernel calls of the setup sequence, behind a trait (youki's `Syscall`).
//!
//! The mount plan of [`mounts`](crate::mounts) and the pivot of [`rootfs`](crate::rootfs) call
//! the kernel only through [`Syscall`], passed in explicitly. [`LinuxSyscall`] is the real
//! thing; the unit tests pass a recorder and check the sequence without root. The code that
//! runs after `fork` ([`process`](crate::process)) calls the kernel directly: it must not
//! allocate or dispatch through anything that might.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{FileType, Mode};

use crate::SandboxError;
use crate::overlay::Overlay;

/// What is at a path (no symlink following).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink.
    Symlink,
    /// Anything else (device, fifo, socket).
    Other,
}

/// The kernel calls the setup sequence makes. Paths are as the calling thread sees them.
pub trait Syscall {
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `umount2(2)`.
    fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()>;
    /// `move_mount(2)` of a detached tree (from `open_tree(OPEN_TREE_CLONE)`) onto `target`.
    fn attach_tree(&self, tree: RawFd, target: &Path) -> io::Result<()>;
    /// `pivot_root(2)`.
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// `chdir(2)`.
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// `mkdir(2)` (the caller's umask applies).
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// `mknod(2)`.
    fn mknod(&self, path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()>;
    /// `symlink(2)`.
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()>;
    /// Create an empty regular file (`O_CREAT|O_EXCL`).
    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// `lstat(2)`, reduced to the kind; `None` when nothing is there.
    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>>;
    /// `unlink(2)`.
    fn unlink(&self, path: &Path) -> io::Result<()>;
    /// `rmdir(2)`.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Mounts an overlay on `target` ([`Overlay::mount`]).
    fn mount_overlay(&self, overlay: &Overlay<'_>, target: &Path) -> Result<(), SandboxError>;
}

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxSyscall;

pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(crate) fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(cstr).transpose()?;
        let target = cpath(target)?;
        let fstype = fstype.map(cstr).transpose()?;
        let data = data.map(cstr).transpose()?;
        let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
        check(unsafe {
            libc::mount(
                p(&source),
                target.as_ptr(),
                p(&fstype),
                flags,
                p(&data).cast(),
            )
        })
    }

    fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let flags = rustix::mount::UnmountFlags::from_bits_retain(flags as u32);
        Ok(rustix::mount::unmount(target, flags)?)
    }

    fn attach_tree(&self, tree: RawFd, target: &Path) -> io::Result<()> {
        let target = cpath(target)?;
        const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
        // SAFETY: move_mount with an fd, an empty NUL-terminated string and a NUL-terminated
        // target; no memory is written by the kernel.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        Ok(rustix::process::pivot_root(new_root, put_old)?)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        Ok(rustix::process::chdir(path)?)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdir(path, Mode::from_raw_mode(mode))?)
    }

    fn mknod(&self, path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
        let (kind, mode) = (FileType::from_raw_mode(mode), Mode::from_raw_mode(mode));
        Ok(rustix::fs::mknodat(rustix::fs::CWD, path, kind, mode, dev)?)
    }

    fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map(drop)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                let t = m.file_type();
                Ok(Some(if t.is_dir() {
                    FileKind::Dir
                } else if t.is_file() {
                    FileKind::File
                } else if t.is_symlink() {
                    FileKind::Symlink
                } else {
                    FileKind::Other
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn unlink(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn mount_overlay(&self, overlay: &Overlay<'_>, target: &Path) -> Result<(), SandboxError> {
        overlay.mount(target)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A recorder for unit tests.
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    /// Records every call as a line and keeps a fake file tree for `kind`.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub calls: RefCell<Vec<String>>,
        pub tree: RefCell<BTreeMap<PathBuf, FileKind>>,
    }

    impl Recorder {
        pub(crate) fn with(paths: &[(&str, FileKind)]) -> Self {
            let r = Recorder::default();
            for (p, k) in paths {
                r.tree.borrow_mut().insert(PathBuf::from(p), *k);
            }
            r
        }
        fn log(&self, s: String) {
            self.calls.borrow_mut().push(s);
        }
        pub(crate) fn lines(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Syscall for Recorder {
        fn mount(
            &self,
            source: Option<&str>,
            target: &Path,
            fstype: Option<&str>,
            flags: libc::c_ulong,
            data: Option<&str>,
        ) -> io::Result<()> {
            self.log(format!(
                "mount {} {} {} {:#x} {}",
                source.unwrap_or("-"),
                target.display(),
                fstype.unwrap_or("-"),
                flags,
                data.unwrap_or("-")
            ));
            Ok(())
        }
        fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
            self.log(format!("umount {} {flags}", target.display()));
            Ok(())
        }
        fn attach_tree(&self, tree: RawFd, target: &Path) -> io::Result<()> {
            self.log(format!("attach {tree} {}", target.display()));
            Ok(())
        }
        fn pivot_root(&self, a: &Path, b: &Path) -> io::Result<()> {
            self.log(format!("pivot_root {} {}", a.display(), b.display()));
            Ok(())
        }
        fn chdir(&self, path: &Path) -> io::Result<()> {
            self.log(format!("chdir {}", path.display()));
            Ok(())
        }
        fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
            if self.tree.borrow().contains_key(path) {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            self.log(format!("mkdir {} {mode:o}", path.display()));
            self.tree
                .borrow_mut()
                .insert(path.to_path_buf(), FileKind::Dir);
            Ok(())
        }
        fn mknod(&self, path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
            self.log(format!(
                "mknod {} {mode:o} {}:{}",
                path.display(),
                libc::major(dev),
                libc::minor(dev)
            ));
            Ok(())
        }
        fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
            self.log(format!("symlink {target} {}", link.display()));
            Ok(())
        }
        fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
            if self.tree.borrow().contains_key(path) {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            self.log(format!("create {} {mode:o}", path.display()));
            self.tree
                .borrow_mut()
                .insert(path.to_path_buf(), FileKind::File);
            Ok(())
        }
        fn kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
            Ok(self.tree.borrow().get(path).copied())
        }
        fn unlink(&self, path: &Path) -> io::Result<()> {
            self.log(format!("unlink {}", path.display()));
            Ok(())
        }
        fn rmdir(&self, path: &Path) -> io::Result<()> {
            self.log(format!("rmdir {}", path.display()));
            Ok(())
        }
        fn mount_overlay(&self, overlay: &Overlay<'_>, target: &Path) -> Result<(), SandboxError> {
            let mut options: Vec<String> = overlay
                .lowers
                .iter()
                .map(|l| format!("lowerdir+={}", l.display()))
                .collect();
            if let Some((upper, work)) = overlay.upper {
                options.push(format!("upperdir={}", upper.display()));
                options.push(format!("workdir={}", work.display()));
            }
            options.extend(crate::overlay::OPTIONS.map(|(k, v)| format!("{k}={v}")));
            self.log(format!(
                "overlay {} {}",
                target.display(),
                options.join(",")
            ));
            Ok(())
        }
    }
}
