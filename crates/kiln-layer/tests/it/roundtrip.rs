//! diff a tree → apply it → the same tree; GNU tar agrees; determinism.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kiln_layer::{ApplyMode, ApplyOptions, DiffOptions, apply_layer, write_layer_from_dir};
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

use crate::common::{require_root, snapshot, tar_names};

/// `cap_net_raw+ep` as a v2 `security.capability` value.
pub const CAP_NET_RAW: [u8; 20] = [
    0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn set_mtime(p: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 123,
    };
    rustix::fs::utimensat(
        CWD,
        p,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A tree with every kind of entry a layer can hold. `reverse` creates the
/// entries in another order (other inode numbers, other readdir order).
pub fn build_tree(r: &Path, reverse: bool) {
    let long_dir = "l".repeat(120);
    let very_long = format!("{}/{}", "x".repeat(200), "y".repeat(150));
    type Step = Box<dyn Fn(&Path)>;
    let mut steps: Vec<Step> = vec![
        Box::new(|r| std::fs::create_dir_all(r.join("etc")).unwrap()),
        Box::new(|r| std::fs::create_dir_all(r.join("bin")).unwrap()),
        Box::new(|r| std::fs::create_dir_all(r.join("sub")).unwrap()),
        Box::new(|r| std::fs::create_dir_all(r.join("tmp")).unwrap()),
        Box::new(|r| std::fs::create_dir_all(r.join("secret")).unwrap()),
        Box::new(move |r| std::fs::create_dir_all(r.join(&long_dir)).unwrap()),
        Box::new(move |r| std::fs::create_dir_all(r.join(&very_long)).unwrap()),
        Box::new(|r| std::fs::create_dir_all(r.join(OsStr::from_bytes(b"caf\xe9"))).unwrap()),
    ];
    if reverse {
        steps.reverse();
    }
    for s in &steps {
        s(r);
    }
    let long_file = r.join("l".repeat(120)).join("f".repeat(60));
    let very_long_file = r
        .join("x".repeat(200))
        .join("y".repeat(150))
        .join("z".repeat(90));
    let big: Vec<u8> = (0..(3 << 20) + 123u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut files: Vec<(std::path::PathBuf, Vec<u8>, u32)> = vec![
        (
            r.join("etc/passwd"),
            b"root:x:0:0::/root:/bin/sh\n".to_vec(),
            0o644,
        ),
        (r.join("bin/su"), b"#!/bin/sh\n".to_vec(), 0o4755),
        (r.join("bin/ping"), b"ping".to_vec(), 0o755),
        (r.join("empty"), Vec::new(), 0o600),
        (r.join("big"), big, 0o644),
        (r.join("owned"), b"owned".to_vec(), 0o640),
        (long_file, b"long".to_vec(), 0o644),
        (very_long_file, b"very long".to_vec(), 0o644),
        (
            r.join(OsStr::from_bytes(b"caf\xe9/\xff\xfe")),
            b"bytes".to_vec(),
            0o644,
        ),
        (r.join("h1"), b"hardlinked".to_vec(), 0o644),
    ];
    if reverse {
        files.reverse();
    }
    for (p, data, mode) in &files {
        std::fs::write(p, data).unwrap();
        rustix::fs::chmod(p, Mode::from_raw_mode(*mode)).unwrap();
    }
    std::fs::hard_link(r.join("h1"), r.join("h2")).unwrap();
    std::fs::hard_link(r.join("h1"), r.join("sub/h3")).unwrap();
    std::fs::hard_link(r.join("etc/passwd"), r.join("passwd-link")).unwrap();
    std::os::unix::fs::symlink("etc/passwd", r.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", r.join("abs")).unwrap();
    std::os::unix::fs::symlink("nowhere", r.join("dangling")).unwrap();
    std::os::unix::fs::symlink("t".repeat(150), r.join("longlink")).unwrap();
    rustix::fs::mknodat(
        CWD,
        r.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        r.join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        r.join("loop9"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o660),
        rustix::fs::makedev(7, 9),
    )
    .unwrap();
    std::os::unix::fs::lchown(r.join("owned"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(r.join("rel"), Some(42), Some(43)).unwrap();
    std::os::unix::fs::lchown(r.join("secret"), Some(1000), Some(1000)).unwrap();
    rustix::fs::lsetxattr(
        r.join("bin/ping"),
        "security.capability",
        &CAP_NET_RAW,
        XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::lsetxattr(
        r.join("etc/passwd"),
        "user.kiln",
        b"yes",
        XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::lsetxattr(
        r.join("etc"),
        "trusted.kiln",
        b"\x00binary\xff",
        XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::chmod(r.join("tmp"), Mode::from_raw_mode(0o1777)).unwrap();
    rustix::fs::chmod(r.join("secret"), Mode::from_raw_mode(0o700)).unwrap();
    // mtimes: everything but dirs, then dirs (deepest first).
    let all = snapshot(r, None, false);
    for (i, (rel, node)) in all.iter().enumerate() {
        if node.kind != 'd' {
            set_mtime(&r.join(OsStr::from_bytes(rel)), 1_500_000_000 + i as i64);
        }
    }
    for (i, (rel, node)) in all.iter().enumerate().rev() {
        if node.kind == 'd' {
            set_mtime(&r.join(OsStr::from_bytes(rel)), 1_400_000_000 + i as i64);
        }
    }
}

#[test]
fn diff_then_apply_gives_the_same_tree() {
    require_root("chown, mknod and security.capability");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    build_tree(&src, false);

    let mut tar = Vec::new();
    let summary = write_layer_from_dir(&src, &mut tar, DiffOptions::default()).unwrap();
    assert_eq!(summary.size, tar.len() as u64);
    assert_eq!(summary.diff_id, kiln_image::Digest::of(&tar));

    let names = tar_names(&tar);
    assert_eq!(
        names[0], "abs",
        "entries are sorted by name bytes: {names:?}"
    );
    for n in &names {
        assert!(!n.starts_with('/') && !n.starts_with("./"), "{n}");
    }
    assert!(names.contains(&"etc/".to_string()) && names.contains(&"etc/passwd".to_string()));

    let stats = apply_layer(&tar[..], &dst, ApplyMode::Merged, ApplyOptions::default()).unwrap();
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    assert_eq!(stats.hardlinks, 3);
    let want = snapshot(&src, None, true);
    let got = snapshot(&dst, None, true);
    for (k, v) in &want {
        assert_eq!(Some(v), got.get(k), "{}", String::from_utf8_lossy(k));
    }
    assert_eq!(want, got);
    assert_eq!(
        got[&b"bin/ping"[..]]
            .xattrs
            .get(&b"security.capability"[..])
            .map(|v| &v[..]),
        Some(&CAP_NET_RAW[..])
    );
}

#[test]
fn gnu_tar_reads_our_layers_the_same() {
    require_root("chown and mknod");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    build_tree(&src, false);
    let layer = tmp.path().join("layer.tar");
    let file = std::fs::File::create(&layer).unwrap();
    write_layer_from_dir(&src, file, DiffOptions::default()).unwrap();
    let out = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&layer)
        .arg("-C")
        .arg(&dst)
        .output()
        .expect("GNU tar must be installed for this test");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = snapshot(&src, None, false);
    let mut got = snapshot(&dst, None, false);
    // GNU tar does not restore xattrs of symlinks; compare those without them.
    for m in [&mut want, &mut got] {
        for n in m.values_mut() {
            if n.kind == 'l' {
                n.xattrs.clear();
            }
        }
    }
    assert_eq!(want, got);
}

#[test]
fn diffs_are_byte_identical_under_source_date_epoch() {
    require_root("chown, mknod and security.capability");
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    build_tree(&a, false);
    build_tree(&b, true);
    // `b` is newer than the epoch everywhere; `a` keeps the older mtimes
    // of build_tree only where they are below the epoch.
    let epoch = 1_000_000_000;
    let all = snapshot(&b, None, false);
    for rel in all.keys() {
        set_mtime(&b.join(OsStr::from_bytes(rel)), 1_900_000_000);
    }
    let opts = DiffOptions {
        source_date_epoch: Some(epoch),
    };
    let mut ta = Vec::new();
    let mut tb = Vec::new();
    let sa = write_layer_from_dir(&a, &mut ta, opts).unwrap();
    let sb = write_layer_from_dir(&b, &mut tb, opts).unwrap();
    assert_eq!(sa, sb);
    assert!(ta == tb, "layers differ");
    let mut again = Vec::new();
    assert_eq!(write_layer_from_dir(&a, &mut again, opts).unwrap(), sa);
    let mut ar = tar::Archive::new(&ta[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().mtime().unwrap() <= epoch as u64);
        assert!(e.header().username_bytes().is_none_or(|u| u.is_empty()));
    }
    // Without the clamp the mtimes show.
    let mut tc = Vec::new();
    write_layer_from_dir(&b, &mut tc, DiffOptions::default()).unwrap();
    assert!(tc != ta);
}

/// The diff id the tree of [`pinned_tree`] has always had, clamped to 1e9. Layers are in
/// stores, registries and build caches under their diff ids: the same files must give the
/// same bytes from one kiln to the next.
const PINNED_DIFF_ID: &str =
    "sha256:3cd3306611524f0101bfd634c832ae41d6e334ae3bf43f69fbf6efda2d0e7b38";

/// [`build_tree`] with every mode set rather than left to the umask: the same bytes on any
/// machine, as root.
fn pinned_tree(r: &Path) {
    build_tree(r, false);
    for (rel, node) in snapshot(r, None, false) {
        let mode = match (node.kind, rel.as_slice()) {
            (_, b"tmp") => 0o1777,
            (_, b"secret") => 0o700,
            ('d', _) => 0o755,
            (_, b"fifo") => 0o644,
            (_, b"null") => 0o666,
            (_, b"loop9") => 0o660,
            _ => continue,
        };
        rustix::fs::chmod(r.join(OsStr::from_bytes(&rel)), Mode::from_raw_mode(mode)).unwrap();
    }
}

#[test]
fn the_same_tree_gives_the_same_layer_bytes_as_ever() {
    require_root("chown, mknod and security.capability");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    pinned_tree(&src);
    let opts = DiffOptions {
        source_date_epoch: Some(1_000_000_000),
    };
    let mut tar = Vec::new();
    let summary = write_layer_from_dir(&src, &mut tar, opts).unwrap();
    assert_eq!(summary.diff_id.as_str(), PINNED_DIFF_ID);
}

#[test]
fn a_layer_written_into_the_store_is_hashed_once_and_named_by_its_diff_id() {
    require_root("chown, mknod and security.capability");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    pinned_tree(&src);
    let store = kiln_image::Store::open(&tmp.path().join("store")).unwrap();
    let opts = DiffOptions {
        source_date_epoch: Some(1_000_000_000),
    };
    // Nothing in this tree is an overlayfs mark: as an upper dir it gives the same bytes.
    let layer = kiln_layer::store_layer_from_upper(&store, &src, opts).unwrap();
    assert_eq!(layer.diff_id.as_str(), PINNED_DIFF_ID);
    let mut tar = Vec::new();
    write_layer_from_dir(&src, &mut tar, opts).unwrap();
    assert_eq!(layer.size, tar.len() as u64);
    assert_eq!(std::fs::read(store.blob_path(&layer.diff_id)).unwrap(), tar);
    assert_eq!(
        store.verify_blob(&layer.diff_id, Some(layer.size)).unwrap(),
        layer.size
    );
}
