//! Whiteouts, opaque dirs and replacement rules of `apply_layer`.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use kiln_layer::{ApplyMode, apply_layer};

use crate::common::{RawTar, opts, require_root, xattrs};

fn lower(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("d/sub")).unwrap();
    std::fs::write(root.join("d/old"), "old").unwrap();
    std::fs::write(root.join("d/sub/oldfile"), "old").unwrap();
    std::fs::create_dir_all(root.join("gone/deep")).unwrap();
    std::fs::write(root.join("gone/deep/f"), "f").unwrap();
    std::fs::write(root.join("file"), "f").unwrap();
    std::fs::write(root.join("keep"), "k").unwrap();
}

#[test]
fn merged_whiteout_deletes_files_and_dirs_recursively() {
    let tmp = tempfile::tempdir().unwrap();
    lower(tmp.path());
    let mut t = RawTar::new();
    t.file(".wh.gone", b"")
        .file("d/.wh.old", b"")
        .file(".wh.file", b"")
        .file(".wh.missing", b"");
    let stats = apply_layer(&t.finish()[..], tmp.path(), ApplyMode::Merged, opts()).unwrap();
    assert_eq!(stats.whiteouts, 4);
    assert!(!tmp.path().join("gone").exists());
    assert!(!tmp.path().join("d/old").exists());
    assert!(!tmp.path().join("file").exists());
    assert!(tmp.path().join("keep").exists());
    assert!(tmp.path().join("d/sub/oldfile").exists());
}

#[test]
fn merged_opaque_keeps_only_this_layers_entries_before_and_after_the_marker() {
    let tmp = tempfile::tempdir().unwrap();
    lower(tmp.path());
    let mut t = RawTar::new();
    t.dir("d/")
        .dir("d/sub/")
        .file("d/sub/new", b"new")
        .file("d/.wh..wh..opq", b"")
        .file("d/after", b"after")
        .file("d/implicit/x", b"x");
    let stats = apply_layer(&t.finish()[..], tmp.path(), ApplyMode::Merged, opts()).unwrap();
    assert_eq!(stats.opaque_dirs, 1);
    let d = tmp.path().join("d");
    assert!(!d.join("old").exists(), "lower entry must go");
    assert!(
        !d.join("sub/oldfile").exists(),
        "lower entry inside a kept dir must go"
    );
    assert_eq!(std::fs::read(d.join("sub/new")).unwrap(), b"new");
    assert_eq!(std::fs::read(d.join("after")).unwrap(), b"after");
    assert_eq!(std::fs::read(d.join("implicit/x")).unwrap(), b"x");
    assert!(tmp.path().join("keep").exists());
}

#[test]
fn merged_whiteout_spares_this_layers_own_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = RawTar::new();
    t.file("a", b"a").file(".wh.a", b"");
    apply_layer(&t.finish()[..], tmp.path(), ApplyMode::Merged, opts()).unwrap();
    assert!(tmp.path().join("a").exists());
}

#[test]
fn overlay_mode_writes_char_device_whiteouts_and_opaque_xattrs() {
    require_root("mknod of 0/0 whiteouts and trusted.overlay.opaque");
    let tmp = tempfile::tempdir().unwrap();
    let mut t = RawTar::new();
    t.dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"n")
        .file(".wh.gone", b"")
        .file("e/.wh.x", b"");
    let stats = apply_layer(&t.finish()[..], tmp.path(), ApplyMode::Overlay, opts()).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (2, 1));
    for wh in ["gone", "e/x"] {
        let md = std::fs::symlink_metadata(tmp.path().join(wh)).unwrap();
        assert!(md.file_type().is_char_device(), "{wh}");
        assert_eq!(md.rdev(), 0, "{wh}");
    }
    assert_eq!(
        xattrs(&tmp.path().join("d"))
            .get(&b"trusted.overlay.opaque"[..])
            .map(|v| &v[..]),
        Some(&b"y"[..])
    );
    assert!(!tmp.path().join(".wh.gone").exists());
    assert!(!tmp.path().join("d/.wh..wh..opq").exists());
}

#[test]
fn replacement_follows_tar_semantics() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    std::fs::create_dir_all(r.join("dir_over_dir")).unwrap();
    std::fs::write(r.join("dir_over_dir/child"), "c").unwrap();
    std::fs::write(r.join("dir_over_file"), "f").unwrap();
    std::fs::create_dir_all(r.join("file_over_dir/x")).unwrap();
    std::os::unix::fs::symlink("target", r.join("file_over_link")).unwrap();
    std::fs::write(r.join("link_over_file"), "f").unwrap();
    let mut t = RawTar::new();
    t.dir("dir_over_dir/")
        .dir("dir_over_file/")
        .file("file_over_dir", b"now a file")
        .file("file_over_link", b"now a file")
        .symlink("link_over_file", "somewhere")
        .file("twice", b"first")
        .file("twice", b"second");
    apply_layer(&t.finish()[..], r, ApplyMode::Merged, opts()).unwrap();
    assert_eq!(
        std::fs::read(r.join("dir_over_dir/child")).unwrap(),
        b"c",
        "dir over dir merges"
    );
    assert!(r.join("dir_over_file").is_dir());
    assert_eq!(
        std::fs::read(r.join("file_over_dir")).unwrap(),
        b"now a file"
    );
    assert!(
        std::fs::symlink_metadata(r.join("file_over_link"))
            .unwrap()
            .is_file()
    );
    assert!(!r.join("target").exists());
    assert_eq!(
        std::fs::read_link(r.join("link_over_file"))
            .unwrap()
            .to_str(),
        Some("somewhere")
    );
    assert_eq!(std::fs::read(r.join("twice")).unwrap(), b"second");
}

#[test]
fn modes_and_dir_mtimes_are_applied_after_children() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_mtime(1_000_000);
    h.set_size(0);
    b.append_data(&mut h.clone(), "d/", &[][..]).unwrap();
    let mut f = tar::Header::new_ustar();
    f.set_mode(0o4711);
    f.set_mtime(2_000_000);
    f.set_size(1);
    b.append_data(&mut f, "d/f", &b"x"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    apply_layer(&tar[..], tmp.path(), ApplyMode::Merged, opts()).unwrap();
    let d = std::fs::metadata(tmp.path().join("d")).unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o750);
    assert_eq!(d.mtime(), 1_000_000);
    let f = std::fs::metadata(tmp.path().join("d/f")).unwrap();
    assert_eq!(f.permissions().mode() & 0o7777, 0o4711);
    assert_eq!(f.mtime(), 2_000_000);
}

#[test]
fn errors_name_the_path_and_the_syscall() {
    let err = apply_layer(
        &[][..],
        std::path::Path::new("/nonexistent/kiln-root"),
        ApplyMode::Merged,
        opts(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/kiln-root") && msg.contains("open"),
        "{msg}"
    );

    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("dir")).unwrap();
    let mut t = RawTar::new();
    t.hardlink("hl", "dir");
    let msg = apply_layer(&t.finish()[..], tmp.path(), ApplyMode::Merged, opts())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("is a directory") && msg.contains("hl"),
        "{msg}"
    );
}

#[test]
fn truncated_tar_is_an_error_not_a_panic() {
    let mut t = RawTar::new();
    t.file("big", &[7u8; 5000]);
    let tar = t.finish();
    let tmp = tempfile::tempdir().unwrap();
    let err = apply_layer(&tar[..1500], tmp.path(), ApplyMode::Merged, opts()).unwrap_err();
    assert!(matches!(err, kiln_layer::Error::TarRead { .. }), "{err}");
}

#[test]
fn devices_are_skipped_with_a_warning_when_mknod_is_not_permitted() {
    require_root("dropping CAP_MKNOD from a thread");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind) in [
        ("null", tar::EntryType::Char),
        ("loop0", tar::EntryType::Block),
        ("fifo", tar::EntryType::Fifo),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o666);
        h.set_size(0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, name, &[][..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    // Capabilities are per thread: drop CAP_MKNOD in a thread of our own.
    let stats = std::thread::spawn(move || {
        let mut caps = rustix::thread::capabilities(None).unwrap();
        caps.effective.remove(rustix::thread::CapabilitySet::MKNOD);
        caps.permitted.remove(rustix::thread::CapabilitySet::MKNOD);
        rustix::thread::set_capabilities(None, caps).unwrap();
        apply_layer(&tar[..], &root, ApplyMode::Merged, opts()).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!((stats.skipped_devices, stats.specials), (2, 1), "{stats:?}");
    assert_eq!(stats.warnings.len(), 2, "{:?}", stats.warnings);
    assert!(stats.warnings[0].contains("null") && stats.warnings[0].contains("mknodat"));
    assert!(tmp.path().join("fifo").exists());
    assert!(!tmp.path().join("null").exists());
}

#[test]
fn overlay_mode_with_user_xattrs_marks_opaque_dirs_for_userxattr_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = RawTar::new();
    t.dir("d/").file("d/.wh..wh..opq", b"");
    let opts = kiln_layer::ApplyOptions {
        user_xattrs: true,
        ..opts()
    };
    apply_layer(&t.finish()[..], tmp.path(), ApplyMode::Overlay, opts).unwrap();
    let x = xattrs(&tmp.path().join("d"));
    assert_eq!(
        x.get(&b"user.overlay.opaque"[..]).map(|v| &v[..]),
        Some(&b"y"[..])
    );
    assert!(!x.contains_key(&b"trusted.overlay.opaque"[..]));
}

#[test]
fn overlay_private_xattrs_from_a_layer_are_refused() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
        ("SCHILY.xattr.user.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.user.kept", &b"1"[..]),
    ])
    .unwrap();
    b.append_data(&mut h, "d/", &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    for mode in crate::common::MODES {
        let tmp = tempfile::tempdir().unwrap();
        let stats = apply_layer(&tar[..], tmp.path(), mode, opts()).unwrap();
        assert_eq!(stats.skipped_xattrs, 2, "{mode:?}: {stats:?}");
        let x = xattrs(&tmp.path().join("d"));
        assert_eq!(
            x.keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>(),
            ["user.kept"]
        );
    }
}
