//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_layer::{ApplyMode, ApplyOptions};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Fails the calling test when not root, saying why.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "this test needs root ({what}); run the suite as root, e.g. `sudo -E cargo test -p kiln-layer`"
    );
}

pub fn opts() -> ApplyOptions {
    ApplyOptions {
        // Without root: no chown, and user.overlay.* instead of trusted.overlay.*.
        preserve_owner: is_root(),
        user_xattrs: !is_root(),
    }
}

pub const MODES: [ApplyMode; 2] = [ApplyMode::Merged, ApplyMode::Overlay];

/// A target root inside a bigger temp dir that also holds a "host" dir
/// with sentinel files.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub outer: PathBuf,
    pub root: PathBuf,
    pub host: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let outer = tmp.path().to_path_buf();
        let root = outer.join("root");
        let host = outer.join("host");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir_all(host.join("dir/sub")).unwrap();
        std::fs::write(host.join("secret"), "host secret\n").unwrap();
        std::fs::write(host.join("dir/file"), "host file\n").unwrap();
        std::fs::write(host.join("dir/sub/deep"), "deep\n").unwrap();
        std::fs::write(outer.join("sibling"), "sibling of root\n").unwrap();
        Fixture {
            tmp,
            outer,
            root,
            host,
        }
    }

    /// Everything in the outer dir except the root, with metadata and content.
    pub fn outside(&self) -> BTreeMap<Vec<u8>, Node> {
        snapshot(&self.outer, Some(&self.root), true)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Option<i64>,
    pub content: Option<Vec<u8>>,
    pub link: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The first path (in walk order) with the same inode, for hardlinks.
    pub same_inode_as: Option<Vec<u8>>,
}

/// Snapshots the tree under `root` (not `root` itself), skipping `skip`.
pub fn snapshot(root: &Path, skip: Option<&Path>, with_mtime: bool) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    walk(root, root, skip, with_mtime, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    skip: Option<&Path>,
    with_mtime: bool,
    out: &mut BTreeMap<Vec<u8>, Node>,
    inodes: &mut BTreeMap<(u64, u64), Vec<u8>>,
) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        if Some(path.as_path()) == skip {
            continue;
        }
        let md = std::fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let same_inode_as = if kind != 'd' && md.nlink() > 1 {
            let first = inodes
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone());
            Some(first.clone())
        } else {
            None
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: with_mtime.then(|| md.mtime()),
                content: (kind == 'f').then(|| std::fs::read(&path).unwrap()),
                link: (kind == 'l').then(|| {
                    std::fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                rdev: md.rdev(),
                xattrs: xattrs(&path),
                same_inode_as,
            },
        );
        if kind == 'd' {
            walk(root, &path, skip, with_mtime, out, inodes);
        }
    }
}

pub fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(path, &mut list[..]) {
        Ok(n) => n,
        Err(_) => return out,
    };
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name == b"security.selinux" {
            continue;
        }
        let mut val = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut val[..]) {
            out.insert(name.to_vec(), val[..len].to_vec());
        }
    }
    out
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// A tar builder that writes raw headers, so names the `tar` crate refuses
/// (`..`, absolute) can be used.
pub struct RawTar {
    b: tar::Builder<Vec<u8>>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &[u8], kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        assert!(name.len() <= 100, "raw test names must fit the header");
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let mut h = Self::header(
            name.as_bytes(),
            tar::EntryType::Regular,
            0o644,
            data.len() as u64,
        );
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        let mut h = Self::header(name.as_bytes(), tar::EntryType::Directory, 0o755, 0);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(name.as_bytes(), kind, 0o777, 0);
        assert!(target.len() <= 100);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, name, target)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, name, target)
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// The names of the entries of a tar, in order.
pub fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}
