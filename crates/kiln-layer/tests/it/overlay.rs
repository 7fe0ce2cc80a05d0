//! Real overlayfs mounts: upper dir → layer → apply in both modes → the
//! same merged view.

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_layer::{
    ApplyMode, ApplyOptions, DiffOptions, apply_layer, write_layer_from_dir, write_layer_from_upper,
};
use rustix::fs::XattrFlags;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::common::{require_root, snapshot, tar_names, xattrs};
use crate::roundtrip::CAP_NET_RAW;

/// An overlay mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn overlay(target: &Path, lowers: &[&Path], upper: Option<(&Path, &Path)>) -> Mount {
        let lower = lowers
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let mut data = format!("lowerdir={lower}");
        if let Some((upper, work)) = upper {
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        let data = CString::new(data).unwrap();
        rustix::mount::mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .unwrap_or_else(|e| panic!("mounting overlayfs on {} failed: {e}", target.display()));
        Mount(target.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, UnmountFlags::DETACH);
    }
}

fn dirs(tmp: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = tmp.join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        })
        .collect()
}

fn populate_lower(l: &Path) {
    std::fs::create_dir_all(l.join("a")).unwrap();
    std::fs::create_dir_all(l.join("b/sub")).unwrap();
    std::fs::create_dir_all(l.join("d/deeper")).unwrap();
    std::fs::write(l.join("a/keep"), "keep").unwrap();
    std::fs::write(l.join("a/gone"), "gone").unwrap();
    std::fs::write(l.join("b/old1"), "old1").unwrap();
    std::fs::write(l.join("b/sub/old2"), "old2").unwrap();
    std::fs::write(l.join("c"), "c").unwrap();
    std::fs::write(l.join("d/deeper/x"), "x").unwrap();
    std::fs::write(l.join("f"), "f").unwrap();
}

/// Changes made through the merged view of an overlay.
fn change(m: &Path) {
    std::fs::remove_file(m.join("a/gone")).unwrap();
    std::fs::write(m.join("a/new"), "new").unwrap();
    std::fs::remove_dir_all(m.join("b")).unwrap();
    std::fs::create_dir(m.join("b")).unwrap();
    std::fs::write(m.join("b/new"), "fresh").unwrap();
    std::fs::remove_file(m.join("c")).unwrap();
    std::fs::remove_dir_all(m.join("d")).unwrap();
    std::fs::write(m.join("e"), "e").unwrap();
    std::fs::hard_link(m.join("e"), m.join("e2")).unwrap();
    rustix::fs::chmod(m.join("a/keep"), rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    rustix::fs::lsetxattr(
        m.join("f"),
        "security.capability",
        &CAP_NET_RAW,
        XattrFlags::empty(),
    )
    .unwrap();
}

#[test]
fn upper_dir_to_layer_and_back_in_both_modes() {
    require_root("overlayfs mounts, whiteout devices and trusted.overlay xattrs");
    let tmp = tempfile::tempdir().unwrap();
    let [l, u, w, m, o, merged2, m2] =
        dirs(tmp.path(), &["l", "u", "w", "m", "o", "merged2", "m2"])
            .try_into()
            .unwrap();
    populate_lower(&l);
    let expected = {
        let _mnt = Mount::overlay(&m, &[&l], Some((&u, &w)));
        change(&m);
        snapshot(&m, None, false)
    };

    // The upper dir holds overlay whiteouts and an opaque dir.
    let gone = std::fs::symlink_metadata(u.join("a/gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
    assert_eq!(
        xattrs(&u.join("b"))
            .get(&b"trusted.overlay.opaque"[..])
            .map(|v| &v[..]),
        Some(&b"y"[..])
    );

    let opts = DiffOptions {
        source_date_epoch: Some(0),
    };
    let mut layer = Vec::new();
    write_layer_from_upper(&u, &mut layer, opts).unwrap();
    let names = tar_names(&layer);
    for want in [
        ".wh.c",
        ".wh.d",
        "a/",
        "a/.wh.gone",
        "a/keep",
        "a/new",
        "b/",
        "b/.wh..wh..opq",
        "b/new",
        "e",
        "e2",
        "f",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("b/") < pos("b/.wh..wh..opq") && pos("b/.wh..wh..opq") < pos("b/new"));
    let mut ar = tar::Archive::new(&layer[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if name == "e2" {
            assert_eq!(e.header().entry_type(), tar::EntryType::Link);
            assert_eq!(e.link_name_bytes().as_deref(), Some(&b"e"[..]));
        }
        if let Some(pax) = e.pax_extensions().unwrap() {
            for x in pax {
                let key = x.unwrap().key().unwrap().to_string();
                assert!(
                    !key.contains("overlay"),
                    "{name}: {key} leaked into the layer"
                );
            }
        }
    }

    // Merged mode on top of the lower layer gives the merged view.
    let mut lower_layer = Vec::new();
    write_layer_from_dir(&l, &mut lower_layer, DiffOptions::default()).unwrap();
    apply_layer(
        &lower_layer[..],
        &merged2,
        ApplyMode::Merged,
        ApplyOptions::default(),
    )
    .unwrap();
    apply_layer(
        &layer[..],
        &merged2,
        ApplyMode::Merged,
        ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(snapshot(&merged2, None, false), expected);

    // Overlay mode gives a lower dir that overlayfs merges into the same view.
    apply_layer(&layer[..], &o, ApplyMode::Overlay, ApplyOptions::default()).unwrap();
    {
        let _mnt = Mount::overlay(&m2, &[&o, &l], None);
        assert_eq!(snapshot(&m2, None, false), expected);
    }

    // And that lower dir diffs back to the very same layer bytes.
    let mut again = Vec::new();
    write_layer_from_upper(&o, &mut again, opts).unwrap();
    assert!(again == layer, "{:?}\n!=\n{:?}", tar_names(&again), names);
}

#[test]
fn plain_dir_diff_keeps_char_devices_and_drops_overlay_xattrs() {
    require_root("mknod and trusted.* xattrs");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("wh"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    std::fs::create_dir(d.join("dir")).unwrap();
    rustix::fs::lsetxattr(
        d.join("dir"),
        "trusted.overlay.opaque",
        b"y",
        XattrFlags::empty(),
    )
    .unwrap();
    // An xattr whiteout (what overlayfs uses where mknod is not allowed), hardlinked.
    std::fs::write(d.join("xw"), "").unwrap();
    rustix::fs::lsetxattr(
        d.join("xw"),
        "trusted.overlay.whiteout",
        b"",
        XattrFlags::empty(),
    )
    .unwrap();
    std::fs::hard_link(d.join("xw"), d.join("xw2")).unwrap();
    let mut plain = Vec::new();
    write_layer_from_dir(d, &mut plain, DiffOptions::default()).unwrap();
    assert_eq!(tar_names(&plain), ["dir/", "wh", "xw", "xw2"]);
    let mut upper = Vec::new();
    write_layer_from_upper(d, &mut upper, DiffOptions::default()).unwrap();
    assert_eq!(
        tar_names(&upper),
        ["dir/", "dir/.wh..wh..opq", ".wh.wh", ".wh.xw", ".wh.xw2"]
    );
}

#[test]
fn metacopy_and_redirect_uppers_are_refused_with_a_hint() {
    require_root("trusted.* xattrs");
    for (what, is_dir) in [
        ("trusted.overlay.metacopy", false),
        ("trusted.overlay.redirect", true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x");
        if is_dir {
            std::fs::create_dir(&p).unwrap();
        } else {
            std::fs::write(&p, "").unwrap();
        }
        rustix::fs::lsetxattr(&p, what, b"", XattrFlags::empty()).unwrap();
        let err = write_layer_from_upper(tmp.path(), std::io::sink(), DiffOptions::default())
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("metacopy=off") && msg.contains(&*p.to_string_lossy()),
            "{msg}"
        );
        // A plain dir is committed as it is.
        write_layer_from_dir(tmp.path(), std::io::sink(), DiffOptions::default()).unwrap();
    }
}
