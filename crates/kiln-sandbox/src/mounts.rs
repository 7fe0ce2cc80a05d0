//! The mounts inside the container, after `pivot_root`: `/dev` (tmpfs with device nodes, a
//! private `devpts`, `shm`, `mqueue`), `/sys` read-only, the host's resolver files, and the
//! caller's extra mounts. `/proc` is mounted by the container's pid 1 (it must be a member of
//! the new pid namespace), see [`process`](crate::process).
//!
//! Mountpoints that are missing from the rootfs are created here ("fallback" targets: the
//! overlay init layer of [`rootfs`](crate::rootfs) already provides the usual ones), recorded,
//! and removed again by `cleanup` after the run.

use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use crate::SandboxError;
use crate::syscall::{FileKind, Syscall};

/// A mount made after the pivot, from a prepared source.
#[derive(Debug)]
pub(crate) enum Planned {
    /// Attach a detached tree (a host bind, already made read-only if asked).
    Tree {
        /// Container path.
        target: String,
        /// `open_tree(OPEN_TREE_CLONE)` fd.
        fd: RawFd,
        /// Whether the source is a directory (else the mountpoint is a file).
        dir: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Container path.
        target: String,
        /// Size in bytes.
        size: Option<u64>,
    },
}

impl Planned {
    pub(crate) fn target(&self) -> &str {
        match self {
            Planned::Tree { target, .. } | Planned::Tmpfs { target, .. } => target,
        }
    }
    pub(crate) fn is_dir(&self) -> bool {
        match self {
            Planned::Tree { dir, .. } => *dir,
            Planned::Tmpfs { .. } => true,
        }
    }
}

/// Something the sandbox had to create in the rootfs; removed after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Created {
    pub path: PathBuf,
    pub kind: FileKind,
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// `mkdir -p` of `path`'s parents and creation of `path` itself as `kind`, inside the current
/// root. Only what did not exist is recorded in `created`. Symlinks on the way are followed
/// by the kernel, inside the new root.
pub(crate) fn ensure_mountpoint(
    sys: &dyn Syscall,
    path: &Path,
    kind: FileKind,
    created: &mut Vec<Created>,
) -> Result<(), SandboxError> {
    let mut prefix = PathBuf::from("/");
    let comps: Vec<_> = path.components().skip(1).collect();
    for (i, c) in comps.iter().enumerate() {
        prefix.push(c);
        let leaf = i + 1 == comps.len();
        let want = if leaf { kind } else { FileKind::Dir };
        let r = match want {
            FileKind::File => sys.create_file(&prefix, 0o644),
            _ => sys.mkdir(&prefix, 0o755),
        };
        match r {
            Ok(()) => created.push(Created {
                path: prefix.clone(),
                kind: want,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                let call = if want == FileKind::File {
                    "create mountpoint"
                } else {
                    "mkdir"
                };
                return Err(SandboxError::sys(call, path_str(&prefix), e));
            }
        }
    }
    Ok(())
}

/// The device nodes a container gets: docker's defaults, bound from the host's `/dev`.
pub(crate) const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What BuildKit's insecure mode adds, where the host has them (`security.insecure`).
pub(crate) const INSECURE_DEVICES: &[&str] = &[
    "kmsg",
    "cuse",
    "fuse",
    "kvm",
    "net/tun",
    "loop-control",
    "loop0",
    "loop1",
    "loop2",
    "loop3",
    "loop4",
    "loop5",
    "loop6",
    "loop7",
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
];

/// `/dev`: a `nodev` tmpfs with the host's nodes of [`DEVICES`] bound in (`devices`: a name
/// and a detached mount of that node), a `devpts` of its own, `shm` and `mqueue`. Only those
/// binds can be opened as devices; a node made with mknod anywhere else is inert.
/// `/dev/shm` holds `shm_size` bytes. The calling thread's umask must be 0.
pub(crate) fn mount_dev(
    sys: &dyn Syscall,
    devices: &[(&str, RawFd)],
    shm_size: u64,
) -> Result<(), SandboxError> {
    let dev = Path::new("/dev");
    sys.mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| SandboxError::sys("mount tmpfs on", "/dev", e))?;
    for (name, tree) in devices {
        let p = dev.join(name);
        if let Some((sub, _)) = name.split_once('/') {
            let d = dev.join(sub);
            match sys.mkdir(&d, 0o755) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(SandboxError::sys("mkdir", path_str(&d), e));
                }
                _ => {}
            }
        }
        sys.create_file(&p, 0o666)
            .map_err(|e| SandboxError::sys("create device mountpoint", path_str(&p), e))?;
        sys.attach_tree(*tree, &p)
            .map_err(|e| SandboxError::sys("move_mount device on", path_str(&p), e))?;
    }
    for (target, link) in DEV_LINKS {
        sys.symlink(target, Path::new(link))
            .map_err(|e| SandboxError::sys("symlink", *link, e))?;
    }
    let shm_options = format!("mode=1777,size={shm_size}");
    let sub: &[(&str, u32, &str, libc::c_ulong, &str)] = &[
        (
            "/dev/pts",
            0o755,
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        (
            "/dev/shm",
            0o1777,
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            &shm_options,
        ),
        (
            "/dev/mqueue",
            0o755,
            "mqueue",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
        ),
    ];
    for (path, mode, fstype, flags, data) in sub {
        let p = Path::new(path);
        sys.mkdir(p, *mode)
            .map_err(|e| SandboxError::sys("mkdir", *path, e))?;
        let data = if data.is_empty() { None } else { Some(*data) };
        sys.mount(Some(fstype), p, Some(fstype), *flags, data)
            .map_err(|e| SandboxError::Syscall {
                syscall: "mount on",
                path: format!("{path} ({fstype})"),
                source: e,
            })?;
    }
    Ok(())
}

/// `/sys`, read-only.
pub(crate) fn mount_sys(sys: &dyn Syscall, writable: bool) -> Result<(), SandboxError> {
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if !writable {
        flags |= libc::MS_RDONLY;
    }
    sys.mount(Some("sysfs"), Path::new("/sys"), Some("sysfs"), flags, None)
        .map_err(|e| SandboxError::sys("mount sysfs on", "/sys", e))
}

/// Puts every mount after the mounts whose targets hold its target, keeping the caller's
/// order otherwise (the last of two mounts on one target stays on top). Mounted in the given
/// order, `/foo/bar/baz` would land in the rootfs and then be hidden by `/foo/bar`, or find
/// no mountpoint; runc and BuildKit sort their mounts by target for the same reason.
pub(crate) fn sort_outer_first(planned: &mut [Planned]) {
    planned.sort_by_key(|p| Path::new(p.target()).components().count());
}

/// The mount that holds `planned[i]`'s target, among the ones mounted before it: the
/// mountpoint must be made in it, after it is mounted, not in the rootfs.
pub(crate) fn outer_of(planned: &[Planned], i: usize) -> Option<&Planned> {
    let inner = Path::new(planned[i].target());
    planned[..i].iter().rev().find(|o| {
        let outer = Path::new(o.target());
        inner.starts_with(outer) && inner.components().count() > outer.components().count()
    })
}

/// The resolver files and the caller's mounts, in order (see [`sort_outer_first`]). The
/// mountpoint of a target inside an earlier mount is made in that mount, in the container's
/// root (a link on the way resolves inside it); it belongs to that mount's source (a cache
/// keeps it, as under BuildKit), so it is not recorded for removal from the rootfs.
pub(crate) fn mount_planned(sys: &dyn Syscall, planned: &[Planned]) -> Result<(), SandboxError> {
    for (i, m) in planned.iter().enumerate() {
        if let Some(outer) = outer_of(planned, i) {
            let kind = if m.is_dir() {
                FileKind::Dir
            } else {
                FileKind::File
            };
            ensure_mountpoint(sys, Path::new(m.target()), kind, &mut Vec::new()).map_err(|e| {
                match e {
                    SandboxError::Syscall { source, .. } => SandboxError::NestedMountpoint {
                        target: m.target().to_string(),
                        outer: outer.target().to_string(),
                        source,
                    },
                    other => other,
                }
            })?;
        }
        match m {
            Planned::Tree { target, fd, .. } => sys
                .attach_tree(*fd, Path::new(target))
                .map_err(|e| SandboxError::sys("move_mount bind on", target.clone(), e))?,
            Planned::Tmpfs { target, size } => {
                let data = size.map(|s| format!("size={s}"));
                sys.mount(
                    Some("tmpfs"),
                    Path::new(target),
                    Some("tmpfs"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_deref(),
                )
                .map_err(|e| SandboxError::sys("mount tmpfs on", target.clone(), e))?
            }
        }
    }
    Ok(())
}

/// After the run: when mountpoints had to be created, unmount everything (lazily) and remove
/// them again, newest first, so the rootfs keeps no trace of them. A directory that the
/// process filled is kept (`ENOTEMPTY`): it is the process's content.
pub(crate) fn cleanup(
    sys: &dyn Syscall,
    planned: &[Planned],
    created: &[Created],
) -> io::Result<()> {
    if created.is_empty() {
        return Ok(());
    }
    for m in planned.iter().rev() {
        let _ = sys.umount(Path::new(m.target()), libc::MNT_DETACH);
    }
    for p in ["/sys", "/dev", "/proc"] {
        let _ = sys.umount(Path::new(p), libc::MNT_DETACH);
    }
    let mut first_err = None;
    for c in created.iter().rev() {
        let r = match c.kind {
            FileKind::Dir => sys.rmdir(&c.path),
            _ => sys.unlink(&c.path),
        };
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
            Err(e) if first_err.is_none() => first_err = Some(e),
            _ => {}
        }
    }
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::testing::Recorder;

    #[test]
    fn existing_mountpoints_are_not_recorded() {
        let sys = Recorder::default();
        let mut created = Vec::new();
        ensure_mountpoint(&sys, Path::new("/etc/hosts"), FileKind::File, &mut created).unwrap();
        assert_eq!(
            created,
            vec![
                Created {
                    path: "/etc".into(),
                    kind: FileKind::Dir
                },
                Created {
                    path: "/etc/hosts".into(),
                    kind: FileKind::File
                },
            ]
        );
        assert_eq!(sys.lines(), vec!["mkdir /etc 755", "create /etc/hosts 644"]);
        // The second time everything exists: nothing is created or recorded.
        let mut again = Vec::new();
        ensure_mountpoint(&sys, Path::new("/etc/hosts"), FileKind::File, &mut again).unwrap();
        assert!(again.is_empty());
        assert_eq!(sys.lines().len(), 2);
    }

    #[test]
    fn only_the_missing_part_of_a_path_is_created() {
        let sys = Recorder::with(&[("/var", FileKind::Dir)]);
        let mut created = Vec::new();
        ensure_mountpoint(
            &sys,
            Path::new("/var/cache/apt"),
            FileKind::Dir,
            &mut created,
        )
        .unwrap();
        let paths: Vec<_> = created
            .iter()
            .map(|c| c.path.display().to_string())
            .collect();
        assert_eq!(paths, vec!["/var/cache", "/var/cache/apt"]);
    }

    #[test]
    fn dev_has_nodes_links_pts_shm() {
        let sys = Recorder::default();
        mount_dev(&sys, &[("null", 7), ("tty", 8)], 64 << 20).unwrap();
        let lines = sys.lines();
        let nodev = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME;
        assert!(
            lines[0].starts_with(&format!("mount tmpfs /dev tmpfs {nodev:#x}")),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"attach 7 /dev/null".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"attach 8 /dev/tty".to_string()),
            "{lines:?}"
        );
        assert!(!lines.iter().any(|l| l.starts_with("mknod")), "{lines:?}");
        assert!(
            lines.contains(&"symlink pts/ptmx /dev/ptmx".to_string()),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.starts_with("mount devpts /dev/pts devpts") && l.contains("newinstance")));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("mount tmpfs /dev/shm tmpfs"))
        );
    }

    #[test]
    fn sys_is_read_only() {
        let sys = Recorder::default();
        mount_sys(&sys, false).unwrap();
        let line = &sys.lines()[0];
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
        assert_eq!(line, &format!("mount sysfs /sys sysfs {flags:#x} -"));
    }

    #[test]
    fn cleanup_unmounts_then_removes_newest_first() {
        let sys = Recorder::default();
        let planned = vec![
            Planned::Tree {
                target: "/etc/hosts".into(),
                fd: 7,
                dir: false,
            },
            Planned::Tmpfs {
                target: "/cache".into(),
                size: Some(1024),
            },
        ];
        let created = vec![
            Created {
                path: "/etc".into(),
                kind: FileKind::Dir,
            },
            Created {
                path: "/etc/hosts".into(),
                kind: FileKind::File,
            },
        ];
        cleanup(&sys, &planned, &created).unwrap();
        let detach = libc::MNT_DETACH;
        assert_eq!(
            sys.lines(),
            vec![
                format!("umount /cache {detach}"),
                format!("umount /etc/hosts {detach}"),
                format!("umount /sys {detach}"),
                format!("umount /dev {detach}"),
                format!("umount /proc {detach}"),
                "unlink /etc/hosts".to_string(),
                "rmdir /etc".to_string(),
            ]
        );
    }

    #[test]
    fn nothing_created_nothing_cleaned() {
        let sys = Recorder::default();
        cleanup(
            &sys,
            &[Planned::Tmpfs {
                target: "/x".into(),
                size: None,
            }],
            &[],
        )
        .unwrap();
        assert!(sys.lines().is_empty());
    }

    #[test]
    fn inner_targets_mount_after_outer_ones_with_their_mountpoint_made_inside() {
        let tree = |target: &str, fd| Planned::Tree {
            target: target.into(),
            fd,
            dir: true,
        };
        let mut planned = vec![
            tree("/foo/bar/baz", 1),
            tree("/foo/bar/", 2),
            tree("/other", 3),
            tree("/other", 4),
        ];
        sort_outer_first(&mut planned);
        let order: Vec<_> = planned.iter().map(Planned::target).collect();
        assert_eq!(order, vec!["/other", "/other", "/foo/bar/", "/foo/bar/baz"]);
        assert_eq!(
            outer_of(&planned, 3).map(Planned::target),
            Some("/foo/bar/")
        );
        assert!(
            outer_of(&planned, 2).is_none(),
            "one target is not inside itself"
        );
        assert!(outer_of(&[tree("/foo/b", 1), tree("/foo/bar", 2)], 1).is_none());

        let sys = Recorder::with(&[("/foo", FileKind::Dir), ("/foo/bar", FileKind::Dir)]);
        mount_planned(&sys, &planned).unwrap();
        assert_eq!(
            sys.lines(),
            vec![
                "attach 3 /other",
                "attach 4 /other",
                "attach 2 /foo/bar/",
                "mkdir /foo/bar/baz 755",
                "attach 1 /foo/bar/baz",
            ]
        );
    }

    #[test]
    fn planned_tmpfs_carries_size() {
        let sys = Recorder::default();
        mount_planned(
            &sys,
            &[Planned::Tmpfs {
                target: "/t".into(),
                size: Some(4096),
            }],
        )
        .unwrap();
        assert!(sys.lines()[0].ends_with("size=4096"), "{:?}", sys.lines());
    }
}
