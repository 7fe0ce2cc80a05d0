//! The root filesystem: the overlay (with its init layer), the bind of a plain dir, and the
//! `pivot_root` into it.
//!
//! # Mountpoints never reach the upper dir
//!
//! `/proc`, `/dev`, `/sys`, `/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname` and the targets
//! of extra mounts must exist before something is mounted on them. Creating them through the
//! overlay would write them (and copies of their parent dirs) into the upper dir, and so into
//! the layer. Instead, like docker's "init layer", the sandbox stacks one more, top-most lower
//! dir: a private tmpfs (under a staging dir next to the work dir, mounted only in the run's
//! mount namespace) that holds exactly the missing mountpoints. Parent dirs that exist in the
//! lowers are recreated there with the same mode, owner and times, so the merged view and any
//! copy-up look as before. The upper dir only ever gets what the process writes.
//!
//! A target whose parent is not a plain directory in the lowers (a symlink such as
//! `/var/run -> /run`) cannot be prepared that way; it is created in the merged rootfs after
//! the pivot and removed again after the run (see [`mounts`](crate::mounts)).
//! Removal of a file that only the upper dir has leaves no whiteout; a parent dir copied up on
//! the way may stay (as BuildKit leaves cache-mount targets).

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::SandboxError;
use crate::overlay::Overlay;
use crate::syscall::{FileKind, Syscall};

/// Mode, owner and times of a directory of the lowers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
}

/// One name in one lower dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerEntry {
    /// Not there.
    Missing,
    /// A 0/0 character device: deleted in this layer, hides the layers below.
    Whiteout,
    /// A directory; `opaque` hides the same dir in the layers below.
    Dir { meta: Meta, opaque: bool },
    /// Anything else.
    Other(FileKind),
}

/// Read access to the lower dirs (top-most first).
pub(crate) trait Layers {
    /// How many lowers.
    fn count(&self) -> usize;
    /// What `rel` is in lower `k`. Only called when every parent of `rel` is a directory in
    /// that lower.
    fn entry(&self, k: usize, rel: &Path) -> io::Result<LayerEntry>;
}

/// The lowers on the host.
pub(crate) struct HostLayers<'a>(pub &'a [PathBuf]);

impl Layers for HostLayers<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn entry(&self, k: usize, rel: &Path) -> io::Result<LayerEntry> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let path = self.0[k].join(rel);
        let m = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LayerEntry::Missing),
            Err(e) => return Err(e),
        };
        let t = m.file_type();
        if t.is_char_device() && m.rdev() == 0 {
            return Ok(LayerEntry::Whiteout);
        }
        if t.is_dir() {
            let mut buf = [0u8; 8];
            let opaque = matches!(
                rustix::fs::lgetxattr(&path, "trusted.overlay.opaque", &mut buf),
                Ok(1) if buf[0] == b'y'
            );
            let meta = Meta {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                atime: (m.atime(), m.atime_nsec()),
                mtime: (m.mtime(), m.mtime_nsec()),
            };
            return Ok(LayerEntry::Dir { meta, opaque });
        }
        Ok(LayerEntry::Other(if t.is_file() {
            FileKind::File
        } else if t.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        }))
    }
}

/// A mountpoint the run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Absolute container path.
    pub path: String,
    /// Directory or file.
    pub kind: FileKind,
    /// Put an empty file on top even when the lowers have something else there (the resolver
    /// files: a symlink `/etc/resolv.conf -> ../run/...` must not redirect the bind).
    pub shadow: bool,
}

/// One entry of the init layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitEntry {
    /// Relative path.
    pub rel: PathBuf,
    /// Directory or file.
    pub kind: FileKind,
    /// Copied from the lowers (directories that exist there), else root-owned 0755/0644.
    pub meta: Option<Meta>,
}

/// The init layer, and the targets it cannot provide.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct InitPlan {
    pub entries: Vec<InitEntry>,
    pub fallback: Vec<Target>,
}

enum Merged {
    Absent,
    Dir(Meta),
    NonDir(FileKind),
}

fn rel_components(path: &str) -> Option<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut cur = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                cur.push(n);
                out.push(cur.clone());
            }
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Plan the init layer for `targets` from the merged view of the lowers (whiteouts and opaque
/// dirs respected).
pub(crate) fn plan_init(layers: &dyn Layers, targets: &[Target]) -> io::Result<InitPlan> {
    let mut plan = InitPlan::default();
    'targets: for t in targets {
        let Some(prefixes) = rel_components(&t.path) else {
            plan.fallback.push(t.clone());
            continue;
        };
        if prefixes.is_empty() {
            continue;
        }
        let mut active: Vec<usize> = (0..layers.count()).collect();
        let mut parents: Vec<(PathBuf, Option<Meta>)> = Vec::new();
        for (i, rel) in prefixes.iter().enumerate() {
            let mut merged = Merged::Absent;
            let mut next = Vec::new();
            for &k in &active {
                match layers.entry(k, rel)? {
                    LayerEntry::Missing => continue,
                    LayerEntry::Whiteout => break,
                    LayerEntry::Dir { meta, opaque } => {
                        if next.is_empty() {
                            merged = Merged::Dir(meta);
                        }
                        next.push(k);
                        if opaque {
                            break;
                        }
                    }
                    LayerEntry::Other(kind) => {
                        if next.is_empty() {
                            merged = Merged::NonDir(kind);
                        }
                        break;
                    }
                }
            }
            let leaf = i + 1 == prefixes.len();
            if !leaf {
                match merged {
                    Merged::Dir(meta) => parents.push((rel.clone(), Some(meta))),
                    Merged::Absent => parents.push((rel.clone(), None)),
                    Merged::NonDir(_) => {
                        plan.fallback.push(t.clone());
                        continue 'targets;
                    }
                }
                active = next;
                continue;
            }
            let create = match (merged, t.kind) {
                (Merged::Absent, _) => true,
                (Merged::NonDir(FileKind::File), FileKind::File) => false,
                (_, FileKind::File) if t.shadow => true,
                _ => false,
            };
            if create {
                for (rel, meta) in parents.drain(..) {
                    if !plan.entries.iter().any(|e| e.rel == rel) {
                        plan.entries.push(InitEntry {
                            rel,
                            kind: FileKind::Dir,
                            meta,
                        });
                    }
                }
                if !plan.entries.iter().any(|e| e.rel == *rel) {
                    plan.entries.push(InitEntry {
                        rel: rel.clone(),
                        kind: t.kind,
                        meta: None,
                    });
                }
            }
        }
    }
    Ok(plan)
}

/// Write the init layer under `dir` (a fresh tmpfs). The thread's umask must be 0.
pub(crate) fn write_init(dir: &Path, plan: &InitPlan) -> Result<(), SandboxError> {
    for e in &plan.entries {
        let p = dir.join(&e.rel);
        let shown = p.display().to_string();
        match e.kind {
            FileKind::Dir => {
                let mode = e.meta.map_or(0o755, |m| m.mode);
                rustix::fs::mkdir(&p, rustix::fs::Mode::from_raw_mode(mode))
                    .map_err(|err| SandboxError::sys("mkdir", &shown, err))?;
            }
            _ => {
                rustix::fs::open(
                    &p,
                    rustix::fs::OFlags::CREATE
                        | rustix::fs::OFlags::EXCL
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::from_raw_mode(0o644),
                )
                .map_err(|err| SandboxError::sys("create", &shown, err))?;
            }
        }
        if let Some(m) = e.meta {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &p,
                Some(rustix::fs::Uid::from_raw(m.uid)),
                Some(rustix::fs::Gid::from_raw(m.gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|err| SandboxError::sys("chown", &shown, err))?;
            // chown clears set-id bits; put the mode back.
            rustix::fs::chmod(&p, rustix::fs::Mode::from_raw_mode(m.mode))
                .map_err(|err| SandboxError::sys("chmod", &shown, err))?;
        }
    }
    // Times last: creating children changes the parents' mtime.
    for e in plan.entries.iter().rev() {
        if let Some(m) = e.meta {
            let ts = |(s, ns): (i64, i64)| rustix::fs::Timespec {
                tv_sec: s,
                tv_nsec: ns as _,
            };
            let times = rustix::fs::Timestamps {
                last_access: ts(m.atime),
                last_modification: ts(m.mtime),
            };
            let p = dir.join(&e.rel);
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &p,
                &times,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|err| SandboxError::sys("utimensat", p.display().to_string(), err))?;
        }
    }
    Ok(())
}

/// Mounts the step's overlay on `target`: `init` on top of `lowers`, with the step's upper dir.
pub(crate) fn mount_overlay(
    sys: &dyn Syscall,
    target: &Path,
    init: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<(), SandboxError> {
    let stack: Vec<PathBuf> = std::iter::once(init.to_path_buf())
        .chain(lowers.iter().cloned())
        .collect();
    let overlay = Overlay {
        lowers: &stack,
        upper: Some((upper, work)),
    };
    sys.mount_overlay(&overlay, target)
}

/// Make `root` the root of the mount namespace and drop the old root entirely.
pub(crate) fn pivot(sys: &dyn Syscall, root: &Path) -> Result<(), SandboxError> {
    let shown = root.display().to_string();
    sys.chdir(root)
        .map_err(|e| SandboxError::sys("chdir", &shown, e))?;
    // pivot_root(".", "."): the old root ends up stacked on top of the new one...
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(|e| SandboxError::sys("pivot_root", &shown, e))?;
    // ...and is detached from the namespace with all host mounts under it.
    sys.umount(Path::new("."), libc::MNT_DETACH)
        .map_err(|e| SandboxError::sys("umount2 old root of", &shown, e))?;
    sys.chdir(Path::new("/"))
        .map_err(|e| SandboxError::sys("chdir", "/", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::testing::Recorder;
    use std::collections::HashMap;

    struct Fake(Vec<HashMap<&'static str, LayerEntry>>);

    impl Layers for Fake {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn entry(&self, k: usize, rel: &Path) -> io::Result<LayerEntry> {
            Ok(rel
                .to_str()
                .and_then(|r| self.0[k].get(r))
                .copied()
                .unwrap_or(LayerEntry::Missing))
        }
    }

    fn dir(mode: u32, uid: u32) -> LayerEntry {
        LayerEntry::Dir {
            meta: meta(mode, uid),
            opaque: false,
        }
    }
    fn meta(mode: u32, uid: u32) -> Meta {
        Meta {
            mode,
            uid,
            gid: uid,
            atime: (1, 0),
            mtime: (2, 0),
        }
    }
    fn target(path: &str, kind: FileKind, shadow: bool) -> Target {
        Target {
            path: path.into(),
            kind,
            shadow,
        }
    }

    #[test]
    fn missing_resolver_file_goes_into_init_with_copied_parent() {
        let layers = Fake(vec![HashMap::from([
            ("etc", dir(0o750, 7)),
            ("proc", dir(0o555, 0)),
        ])]);
        let plan = plan_init(
            &layers,
            &[
                target("/proc", FileKind::Dir, false),
                target("/etc/hosts", FileKind::File, true),
            ],
        )
        .unwrap();
        assert_eq!(
            plan.entries,
            vec![
                InitEntry {
                    rel: "etc".into(),
                    kind: FileKind::Dir,
                    meta: Some(meta(0o750, 7))
                },
                InitEntry {
                    rel: "etc/hosts".into(),
                    kind: FileKind::File,
                    meta: None
                },
            ]
        );
        assert!(plan.fallback.is_empty());
    }

    #[test]
    fn resolver_symlink_is_shadowed_but_regular_file_is_used() {
        let layers = Fake(vec![HashMap::from([
            ("etc", dir(0o755, 0)),
            ("etc/resolv.conf", LayerEntry::Other(FileKind::Symlink)),
            ("etc/hosts", LayerEntry::Other(FileKind::File)),
        ])]);
        let plan = plan_init(
            &layers,
            &[
                target("/etc/resolv.conf", FileKind::File, true),
                target("/etc/hosts", FileKind::File, true),
            ],
        )
        .unwrap();
        let rels: Vec<_> = plan.entries.iter().map(|e| e.rel.clone()).collect();
        assert_eq!(
            rels,
            vec![PathBuf::from("etc"), PathBuf::from("etc/resolv.conf")]
        );
    }

    #[test]
    fn whiteout_in_upper_lower_hides_dir_below() {
        // Lower 0 deleted /etc; lower 1 has it: the merged view has no /etc.
        let layers = Fake(vec![
            HashMap::from([("etc", LayerEntry::Whiteout)]),
            HashMap::from([
                ("etc", dir(0o700, 3)),
                ("etc/hosts", LayerEntry::Other(FileKind::File)),
            ]),
        ]);
        let plan = plan_init(&layers, &[target("/etc/hosts", FileKind::File, true)]).unwrap();
        assert_eq!(
            plan.entries[0],
            InitEntry {
                rel: "etc".into(),
                kind: FileKind::Dir,
                meta: None
            }
        );
        assert_eq!(plan.entries[1].rel, PathBuf::from("etc/hosts"));
    }

    #[test]
    fn opaque_dir_stops_the_merge() {
        let layers = Fake(vec![
            HashMap::from([(
                "var",
                LayerEntry::Dir {
                    meta: meta(0o755, 0),
                    opaque: true,
                },
            )]),
            HashMap::from([("var", dir(0o755, 0)), ("var/cache", dir(0o700, 0))]),
        ]);
        let plan = plan_init(&layers, &[target("/var/cache", FileKind::Dir, false)]).unwrap();
        assert_eq!(plan.entries.len(), 2, "{plan:?}");
        let layers = Fake(vec![HashMap::from([
            ("var", dir(0o755, 0)),
            ("var/cache", dir(0o700, 0)),
        ])]);
        assert!(
            plan_init(&layers, &[target("/var/cache", FileKind::Dir, false)])
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[test]
    fn symlinked_parent_falls_back() {
        let layers = Fake(vec![HashMap::from([
            ("var", dir(0o755, 0)),
            ("var/run", LayerEntry::Other(FileKind::Symlink)),
        ])]);
        let t = target("/var/run/secrets/x", FileKind::File, false);
        let plan = plan_init(&layers, std::slice::from_ref(&t)).unwrap();
        assert!(plan.entries.is_empty());
        assert_eq!(plan.fallback, vec![t]);
    }

    #[test]
    fn the_init_layer_tops_the_lowers_with_the_fixed_options() {
        let sys = Recorder::default();
        let lowers: Vec<PathBuf> = vec!["/store/snapshots/b,c".into(), "/store/snapshots/a".into()];
        mount_overlay(
            &sys,
            Path::new("/s/root"),
            Path::new("/s/init"),
            &lowers,
            Path::new("/u"),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(
            sys.lines(),
            vec![
                "overlay /s/root lowerdir+=/s/init,lowerdir+=/store/snapshots/b,c,\
                 lowerdir+=/store/snapshots/a,upperdir=/u,workdir=/w,\
                 redirect_dir=off,metacopy=off,index=off",
            ]
        );
    }

    #[test]
    fn pivot_detaches_the_old_root() {
        let sys = Recorder::default();
        pivot(&sys, Path::new("/stage/root")).unwrap();
        assert_eq!(
            sys.lines(),
            vec![
                "chdir /stage/root".to_string(),
                "pivot_root . .".to_string(),
                format!("umount . {}", libc::MNT_DETACH),
                "chdir /".to_string(),
            ]
        );
    }
}
