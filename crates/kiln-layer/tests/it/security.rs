//! Hostile layers must never create, change or read anything outside the root.

use std::os::unix::fs::MetadataExt;

use kiln_layer::{ApplyMode, apply_layer};

use crate::common::{Fixture, MODES, RawTar, opts};

/// Applies `tar` in every mode to a fresh fixture, checks that nothing
/// outside the root changed, then runs `inside` on the fixture and result.
fn check(
    tar: &[u8],
    inside: impl Fn(&Fixture, ApplyMode, &kiln_layer::Result<kiln_layer::ApplyStats>),
) {
    for mode in MODES {
        let fx = Fixture::new();
        let before = fx.outside();
        let r = apply_layer(tar, &fx.root, mode, opts());
        let after = fx.outside();
        assert_eq!(
            before, after,
            "{mode:?}: something outside the root changed (apply result: {r:?})"
        );
        inside(&fx, mode, &r);
        // No inode inside the root may be shared with one outside it.
        let outside_inodes: Vec<(u64, u64)> = walk_inodes(&fx.host);
        for (dev, ino) in walk_inodes(&fx.root) {
            assert!(
                !outside_inodes.contains(&(dev, ino)),
                "{mode:?}: an inode of the host is linked into the root"
            );
        }
    }
}

fn walk_inodes(dir: &std::path::Path) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            out.extend(walk_inodes(&p));
        } else {
            out.push((md.dev(), md.ino()));
        }
    }
    out
}

fn host_str(fx: &Fixture) -> String {
    fx.host.to_str().unwrap().to_string()
}

#[test]
fn dotdot_traversal_is_clamped_at_the_root() {
    let mut t = RawTar::new();
    t.file("../escape.txt", b"x")
        .file("../host/secret", b"overwritten")
        .file("a/../../../sibling", b"y")
        .dir("../../newdir/")
        .file("./../../../../../../../../../tmp/../escape2", b"z");
    let tar = t.finish();
    check(&tar, |fx, _, r| {
        r.as_ref().unwrap();
        assert_eq!(std::fs::read(fx.root.join("escape.txt")).unwrap(), b"x");
        assert_eq!(
            std::fs::read(fx.root.join("host/secret")).unwrap(),
            b"overwritten"
        );
        assert_eq!(std::fs::read(fx.root.join("sibling")).unwrap(), b"y");
        assert!(fx.root.join("newdir").is_dir());
        assert_eq!(std::fs::read(fx.root.join("escape2")).unwrap(), b"z");
        assert!(!fx.outer.join("escape.txt").exists());
    });
}

#[test]
fn absolute_paths_land_inside_the_root() {
    let fx0 = Fixture::new();
    // Absolute names pointing right at the fixture's own host dir.
    let host = host_str(&fx0);
    let mut t = RawTar::new();
    t.file("/abs.txt", b"a")
        .file(&format!("{host}/pwned"), b"p")
        .file(&format!("{host}/secret"), b"s");
    let tar = t.finish();
    for mode in MODES {
        let before = fx0.outside();
        let root = fx0.outer.join(format!("root-{mode:?}"));
        std::fs::create_dir(&root).unwrap();
        apply_layer(&tar[..], &root, mode, crate::common::opts()).unwrap();
        let after = fx0.outside();
        // The new root dir itself is outside `fx0.root`: compare the rest.
        let strip = |m: std::collections::BTreeMap<Vec<u8>, crate::common::Node>| {
            m.into_iter()
                .filter(|(k, _)| !k.starts_with(b"root-"))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(before), strip(after), "{mode:?}: host changed");
        assert!(!fx0.host.join("pwned").exists());
        assert_eq!(
            std::fs::read(fx0.host.join("secret")).unwrap(),
            b"host secret\n"
        );
        let inner = root.join(fx0.host.strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(inner.join("pwned")).unwrap(), b"p");
        assert_eq!(std::fs::read(root.join("abs.txt")).unwrap(), b"a");
    }
    let _ = &fx0.tmp;
}

/// Applies `tar` in every mode to fresh roots next to `fx`'s host dir, and
/// checks that the host (and the rest of the outer dir) is untouched.
fn check_against(
    fx: &Fixture,
    tar: &[u8],
    inside: impl Fn(&std::path::Path, ApplyMode, &kiln_layer::Result<kiln_layer::ApplyStats>),
) {
    for mode in MODES {
        let before = fx.outside();
        let root = fx.outer.join(format!("root-{}", rand_suffix()));
        std::fs::create_dir(&root).unwrap();
        let r = apply_layer(tar, &root, mode, crate::common::opts());
        let strip = |m: std::collections::BTreeMap<Vec<u8>, crate::common::Node>| {
            m.into_iter()
                .filter(|(k, _)| !k.starts_with(b"root-"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(before),
            strip(fx.outside()),
            "{mode:?}: host changed ({r:?})"
        );
        let secret = std::fs::metadata(fx.host.join("secret")).unwrap();
        assert_eq!(secret.nlink(), 1, "{mode:?}: the host file got a new link");
        inside(&root, mode, &r);
    }
}

#[test]
fn absolute_symlink_escape_then_write_through_it_stays_inside() {
    let fx = Fixture::new();
    let host = host_str(&fx);
    // The link's target does not exist inside the root: writing through it is refused.
    let mut t = RawTar::new();
    t.symlink("evil", &host).file("evil/pwned", b"p");
    check_against(&fx, &t.finish(), |_, mode, r| {
        let err = r.as_ref().expect_err("must refuse");
        assert!(err.to_string().contains("evil"), "{mode:?}: {err}");
    });
    // The same path exists inside the root: the write lands there.
    let mut t = RawTar::new();
    t.dir(&format!("{host}/dir/"))
        .symlink("evil", &host)
        .file("evil/pwned", b"p")
        .dir("evil/newdir/")
        .file("evil/dir/file", b"clobber")
        .symlink("evilfile", &format!("{host}/secret"))
        .file("evilfile", b"replaced the link, not the target");
    check_against(&fx, &t.finish(), |root, mode, r| {
        assert!(r.is_ok(), "{mode:?}: {r:?}");
        let inner = root.join(fx.host.strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(inner.join("pwned")).unwrap(), b"p");
        assert!(inner.join("newdir").is_dir());
        assert_eq!(std::fs::read(inner.join("dir/file")).unwrap(), b"clobber");
        assert!(
            std::fs::symlink_metadata(root.join("evilfile"))
                .unwrap()
                .is_file()
        );
        assert_eq!(
            std::fs::read(root.join("evilfile")).unwrap(),
            b"replaced the link, not the target"
        );
    });
}

#[test]
fn relative_symlink_escape_then_write_through_it_stays_inside() {
    let fx = Fixture::new();
    let mut t = RawTar::new();
    t.symlink("up", "../host").file("up/pwned", b"p");
    check_against(&fx, &t.finish(), |_, mode, r| {
        let err = r.as_ref().map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains("parent up is a dangling symlink; refusing to create through it"),
            "{mode:?}: the link's target is missing inside the root: {err}"
        );
    });
    let mut t = RawTar::new();
    t.dir("host/dir/")
        .symlink("up", "../host")
        .file("up/pwned", b"p")
        .symlink("deep/up2", "../../../../../../host/dir")
        .file("deep/up2/file", b"clobber")
        .symlink("s", "../../sibling")
        .file("s", b"replaced");
    check_against(&fx, &t.finish(), |root, mode, r| {
        assert!(r.is_ok(), "{mode:?}: {r:?}");
        // `../host` from the root resolves to `/host` inside the root.
        assert_eq!(std::fs::read(root.join("host/pwned")).unwrap(), b"p");
        assert_eq!(
            std::fs::read(root.join("host/dir/file")).unwrap(),
            b"clobber"
        );
        assert!(
            std::fs::symlink_metadata(root.join("up"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(root.join("s")).unwrap(), b"replaced");
    });
    // And the generic check on a fresh fixture, where `../host` from the
    // root's parent *would* be the real host dir.
    let mut t = RawTar::new();
    t.symlink("up", "../host")
        .file("up/secret", b"clobber")
        .symlink("s", "../sibling")
        .file("s/x", b"x");
    check(&t.finish(), |_, _, _| {});
}

#[test]
fn hardlink_to_an_outside_file_is_never_created() {
    let fx0 = Fixture::new();
    let host = host_str(&fx0);
    let cases: Vec<Vec<u8>> = vec![
        {
            let mut t = RawTar::new();
            t.hardlink("hl", "../host/secret");
            t.finish()
        },
        {
            let mut t = RawTar::new();
            t.hardlink("hl", &format!("{host}/secret"));
            t.finish()
        },
        {
            let mut t = RawTar::new();
            t.symlink("s", &host).hardlink("hl", "s/secret");
            t.finish()
        },
        {
            let mut t = RawTar::new();
            t.symlink("s", "../../../host").hardlink("hl", "s/secret");
            t.finish()
        },
        {
            // A symlink to the outside file, hardlinked: the link itself is
            // linked, never its target.
            let mut t = RawTar::new();
            t.symlink("s", &format!("{host}/secret"))
                .hardlink("hl", "s")
                .file("hl2", b"x");
            t.finish()
        },
    ];
    for tar in &cases {
        check(tar, |fx, mode, r| {
            if r.is_ok() {
                let md = std::fs::symlink_metadata(fx.root.join("hl")).unwrap();
                assert!(
                    md.file_type().is_symlink(),
                    "{mode:?}: only the symlink case may succeed"
                );
            }
        });
        check_against(&fx0, tar, |root, mode, r| {
            if r.is_ok() {
                let md = std::fs::symlink_metadata(root.join("hl")).unwrap();
                assert!(
                    md.file_type().is_symlink(),
                    "{mode:?}: only the symlink case may succeed"
                );
            }
        });
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

#[test]
fn hardlink_error_names_the_entry() {
    let mut t = RawTar::new();
    t.hardlink("hl", "../host/secret");
    let fx = Fixture::new();
    let err = apply_layer(&t.finish()[..], &fx.root, ApplyMode::Merged, opts()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("hl") && msg.contains("host/secret"), "{msg}");
}

#[test]
fn symlinked_parent_dir_from_a_lower_layer_stays_inside() {
    for mode in MODES {
        let fx = Fixture::new();
        // A "lower layer" left these links in the root, and a dir named like
        // the host path inside it.
        std::os::unix::fs::symlink(&fx.host, fx.root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../host", fx.root.join("rel")).unwrap();
        std::os::unix::fs::symlink(&fx.host, fx.root.join("dangling")).unwrap();
        let inner = fx.root.join(fx.host.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::create_dir_all(fx.root.join("host/dir/sub")).unwrap();
        let before = fx.outside();
        let mut t = RawTar::new();
        t.file("lib/pwned", b"p")
            .file("lib/secret", b"clobber")
            .dir("lib/dir/")
            .file("rel/dir/sub/deep", b"clobber")
            .hardlink("lib/hl", "lib/secret");
        let r = apply_layer(&t.finish()[..], &fx.root, mode, opts());
        assert_eq!(before, fx.outside(), "{mode:?}: host changed ({r:?})");
        r.unwrap();
        assert_eq!(std::fs::read(inner.join("pwned")).unwrap(), b"p");
        assert_eq!(std::fs::read(inner.join("hl")).unwrap(), b"clobber");
        assert_eq!(
            std::fs::read(fx.root.join("host/dir/sub/deep")).unwrap(),
            b"clobber"
        );
        // Removing the in-root dir turns `dangling` into a link to nowhere (inside).
        std::fs::remove_dir_all(fx.root.join("tmp")).ok();
        let mut t = RawTar::new();
        t.file("dangling/x", b"x");
        let r = apply_layer(&t.finish()[..], &fx.root, mode, opts());
        assert_eq!(before, fx.outside(), "{mode:?}: host changed ({r:?})");
    }
}

#[test]
fn symlink_swapped_under_a_later_entry_stays_inside() {
    let fx = Fixture::new();
    let host = host_str(&fx);
    let mut t = RawTar::new();
    t.dir(&format!("{host}/dir/"))
        .dir("d/")
        .file("d/a", b"a")
        // `d` becomes a symlink to the host path, then later entries go through it.
        .symlink("d", &host)
        .file("d/b", b"b")
        .file("d/secret", b"clobber")
        .dir("d/sub/")
        .hardlink("d/hl", "d/b")
        .file("d/.wh.secret", b"")
        .file("d/dir/.wh..wh..opq", b"")
        .file("d/.wh.dir", b"");
    let tar = t.finish();
    check_against(&fx, &tar, |root, mode, r| {
        assert!(r.is_ok(), "{mode:?}: {r:?}");
        assert!(
            std::fs::symlink_metadata(root.join("d"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let inner = root.join(fx.host.strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(inner.join("b")).unwrap(), b"b");
        assert_eq!(std::fs::read(inner.join("hl")).unwrap(), b"b");
    });
    // A swap to a relative link out of the root, on a fresh fixture.
    let mut t = RawTar::new();
    t.dir("host/")
        .dir("d/")
        .symlink("d", "../../host")
        .file("d/secret", b"clobber")
        .file("d/.wh.dir", b"")
        .file("d/.wh..wh..opq", b"");
    check(&t.finish(), |fx, mode, r| {
        assert!(r.is_ok(), "{mode:?}: {r:?}");
        assert_eq!(
            std::fs::read(fx.root.join("host/secret")).unwrap(),
            b"clobber"
        );
    });
}

#[test]
fn whiteouts_of_dotdot_never_reach_outside() {
    let fx0 = Fixture::new();
    let host = host_str(&fx0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("../.wh.host", {
            let mut t = RawTar::new();
            t.file("../.wh.host", b"").file("../.wh.sibling", b"");
            t.finish()
        }),
        ("sub/.wh..", {
            let mut t = RawTar::new();
            t.dir("sub/").file("sub/.wh..", b"");
            t.finish()
        }),
        (".wh...", {
            let mut t = RawTar::new();
            t.file(".wh...", b"");
            t.finish()
        }),
        ("../.wh..wh..opq", {
            let mut t = RawTar::new();
            t.file("../.wh..wh..opq", b"")
                .file("../../.wh..wh..opq", b"");
            t.finish()
        }),
        ("abs whiteout", {
            let mut t = RawTar::new();
            t.file(&format!("{host}/.wh.secret"), b"")
                .file(&format!("{host}/.wh..wh..opq"), b"");
            t.finish()
        }),
        ("whiteout via symlink", {
            let mut t = RawTar::new();
            t.symlink("w", &host)
                .file("w/.wh.secret", b"")
                .file("w/dir/.wh..wh..opq", b"");
            t.finish()
        }),
        ("whiteout via relative symlink", {
            let mut t = RawTar::new();
            t.symlink("w", "../host")
                .file("w/.wh.secret", b"")
                .file("w/.wh..wh..opq", b"");
            t.finish()
        }),
    ];
    for (what, tar) in &cases {
        let refused = what.starts_with("sub/") || what.starts_with(".wh.");
        check(tar, |_, mode, r| {
            if refused {
                let err = r.as_ref().expect_err("a whiteout of `..` must be refused");
                assert!(
                    err.to_string().contains("whiteout"),
                    "{mode:?} {what}: {err}"
                );
            }
        });
        check_against(&fx0, tar, |_, _, _| {});
    }
}

#[test]
fn dangling_symlink_parent_is_refused() {
    let mut t = RawTar::new();
    t.symlink("x", "/nonexistent-kiln-dir").file("x/f", b"f");
    let tar = t.finish();
    check(&tar, |_, mode, r| {
        let err = r
            .as_ref()
            .expect_err("creating through a dangling symlink must fail");
        assert!(err.to_string().contains("dangling"), "{mode:?}: {err}");
    });
    assert!(!std::path::Path::new("/nonexistent-kiln-dir").exists());
}

#[test]
fn corrupted_hostile_layers_never_panic_or_escape() {
    let fx = Fixture::new();
    let host = host_str(&fx);
    let mut t = RawTar::new();
    t.dir("d/")
        .file("d/a", b"aaaa")
        .symlink("d", &host)
        .file("d/b", b"bbbb")
        .hardlink("hl", "../host/secret")
        .symlink("up", "../host")
        .file("up/x", b"x")
        .file("../.wh.host", b"")
        .file("d/.wh..wh..opq", b"");
    let base = t.finish();
    // A small deterministic PRNG (xorshift), so failures reproduce.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let before = fx.outside();
    for i in 0..300 {
        let mut tar = base.clone();
        for _ in 0..(1 + next() % 8) {
            let pos = (next() % tar.len() as u64) as usize;
            tar[pos] = match next() % 4 {
                0 => b'/',
                1 => b'.',
                2 => 0,
                _ => next() as u8,
            };
        }
        let root = fx.outer.join(format!("root-fuzz-{i}"));
        std::fs::create_dir(&root).unwrap();
        for mode in MODES {
            let _ = apply_layer(&tar[..], &root, mode, opts());
        }
        let now: Vec<_> = fx
            .outside()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(b"root-fuzz-"))
            .collect();
        let was: Vec<_> = before
            .clone()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(b"root-fuzz-"))
            .collect();
        assert_eq!(
            was, now,
            "iteration {i}: something outside the root changed"
        );
    }
}
