//! Hostile tarballs through `kiln import` and `kiln load`: whatever a layer holds, unpacking it
//! (which happens when a build or a run first uses the image) never touches the host.

use std::path::{Path, PathBuf};

use crate::util::*;

/// A tar entry written with raw header bytes, so that names the `tar` crate would refuse
/// (`../x`, `/x`) can be made.
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut header = tar::Header::new_old();
    {
        let bytes = header.as_old_mut();
        bytes.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

/// The busybox rootfs plus hostile entries aimed at `target` (a path outside the store).
fn hostile_tar(case: &str, target: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    // A working base first, so the image can run.
    let base = std::fs::read(busybox_tar()).unwrap();
    let mut archive = tar::Archive::new(&base[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let path = entry.path().unwrap().into_owned();
        if header.entry_type() == tar::EntryType::Symlink {
            let link = entry.link_name().unwrap().unwrap().into_owned();
            builder.append_link(&mut header, &path, &link).unwrap();
        } else {
            builder.append_data(&mut header, &path, &mut entry).unwrap();
        }
    }
    let t = target.to_str().unwrap().trim_start_matches('/');
    let dir = target.parent().unwrap().to_str().unwrap();
    match case {
        "traversal" => raw_entry(
            &mut builder,
            &format!("../../../../../../../../{t}"),
            tar::EntryType::Regular,
            None,
            b"pwned",
        ),
        "absolute" => raw_entry(
            &mut builder,
            &format!("/{t}"),
            tar::EntryType::Regular,
            None,
            b"pwned",
        ),
        "symlink-escape" => {
            raw_entry(
                &mut builder,
                "escape",
                tar::EntryType::Symlink,
                Some(&format!("/{t}")),
                b"",
            );
            raw_entry(
                &mut builder,
                "escape",
                tar::EntryType::Regular,
                None,
                b"pwned",
            );
        }
        "symlink-relative-escape" => {
            raw_entry(
                &mut builder,
                "up",
                tar::EntryType::Symlink,
                Some("../../../../../../../../"),
                b"",
            );
            raw_entry(
                &mut builder,
                &format!("up/{t}"),
                tar::EntryType::Regular,
                None,
                b"pwned",
            );
        }
        "hardlink-escape" => raw_entry(
            &mut builder,
            "stolen",
            tar::EntryType::Link,
            Some(&format!("/{t}")),
            b"",
        ),
        "symlinked-parent" => {
            raw_entry(
                &mut builder,
                "parent",
                tar::EntryType::Symlink,
                Some(dir),
                b"",
            );
            let name = target.file_name().unwrap().to_str().unwrap();
            raw_entry(
                &mut builder,
                &format!("parent/{name}"),
                tar::EntryType::Regular,
                None,
                b"pwned",
            );
        }
        other => panic!("unknown case {other}"),
    }
    builder.into_inner().unwrap()
}

const CASES: [&str; 6] = [
    "traversal",
    "absolute",
    "symlink-escape",
    "symlink-relative-escape",
    "hardlink-escape",
    "symlinked-parent",
];

fn sentinel(env: &Env) -> PathBuf {
    let host = env.path("host");
    std::fs::create_dir_all(&host).unwrap();
    let file = host.join("sentinel");
    std::fs::write(&file, "untouched").unwrap();
    file
}

/// Makes the store unpack the image: a build step over it, then a run.
fn use_image(env: &Env, name: &str) {
    let ctx = env.path(&format!("ctx-{}", name.replace([':', '/'], "-")));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {name}\nRUN cat /stolen /escape 2>/dev/null; echo done > /done\n"),
    )
    .unwrap();
    let out = env
        .kiln()
        .args([
            "build",
            "-t",
            &format!("{name}-used"),
            ctx.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    // Refusing the layer is as good as containing it; what matters is the host.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_host_untouched(file: &Path, case: &str) {
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        "untouched",
        "{case}: the sentinel was changed"
    );
    let dir = file.parent().unwrap();
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "{case}: something was created next to the sentinel: {names:?}"
    );
}

#[test]
fn hostile_import_leaves_the_host_untouched() {
    let env = Env::new();
    let file = sentinel(&env);
    for case in CASES {
        let tar = env.path(&format!("{case}.tar"));
        std::fs::write(&tar, hostile_tar(case, &file)).unwrap();
        let name = format!("hostile-{case}");
        let out = env
            .kiln()
            .args(["import", tar.to_str().unwrap(), &name])
            .output()
            .unwrap();
        if out.status.success() {
            use_image(&env, &name);
        }
        assert_host_untouched(&file, case);
    }
    assert!(
        env.ok(&["images"]).contains("hostile-"),
        "the store still works"
    );
}

#[test]
fn hostile_load_leaves_the_host_untouched() {
    use sha2::Digest;
    let env = Env::new();
    let file = sentinel(&env);
    for case in CASES {
        let layer = hostile_tar(case, &file);
        let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&layer)));
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Cmd": ["/bin/sh"] },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        });
        let config = serde_json::to_vec(&config).unwrap();
        let name = format!("hostile-load-{case}:1");
        let manifest = serde_json::json!([{ "Config": "config.json", "RepoTags": [name], "Layers": ["layer/layer.tar"] }]);
        let mut archive = tar::Builder::new(Vec::new());
        for (path, bytes) in [
            ("config.json", config.clone()),
            ("layer/layer.tar", layer),
            ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            archive.append_data(&mut header, path, &bytes[..]).unwrap();
        }
        let path = env.path(&format!("{case}-archive.tar"));
        std::fs::write(&path, archive.into_inner().unwrap()).unwrap();
        let out = env
            .kiln()
            .args(["load", "-i", path.to_str().unwrap()])
            .output()
            .unwrap();
        if out.status.success() {
            use_image(&env, &name);
        }
        assert_host_untouched(&file, case);
    }
}
