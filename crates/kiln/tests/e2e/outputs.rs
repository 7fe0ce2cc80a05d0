//! What `kiln build` hands to CI scripts, as `docker buildx build` does: `--iidfile`, `-q`,
//! exit codes, `--metadata-file`, the `-o/--output` exporters, `--load`, and contexts from
//! stdin. Each result is read by the tool that consumes it: docker, skopeo, umoci, GNU tar,
//! docker-registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{
    Env, ExportEntry, assert_clean_failure, assert_success, docker, docker_export, kiln_to_docker,
    require, run,
};

/// `kiln --root STORE` without `--progress plain` (which `-q` refuses, as buildx refuses
/// `--progress=plain` with `--quiet`).
fn bare_kiln(env: &Env) -> Command {
    let bin = std::env::var_os("KILN_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kiln")));
    let mut cmd = Command::new(bin);
    cmd.arg("--root").arg(env.root());
    cmd.env_remove("SOURCE_DATE_EPOCH");
    cmd.stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The image id that `kiln inspect` gives for a name.
fn inspect_id(env: &Env, name: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
    json[0]["Id"].as_str().unwrap().to_owned()
}

const SMALL: &str = "FROM busybox\nRUN echo built > /built\n";

#[test]
fn iidfile_and_quiet_give_the_image_id_as_docker_does() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("small", SMALL, &[]);
    let iidfile = env.path("iid");
    let out = bare_kiln(&env)
        .args(["build", "-q", "--iidfile"])
        .arg(&iidfile)
        .args(["-t", "small", &ctx])
        .output()
        .unwrap();
    assert_success(&out, "kiln build -q --iidfile");
    let id = inspect_id(&env, "small");
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    // docker writes the id alone, without a newline; -q prints it with one, and nothing else.
    assert_eq!(std::fs::read_to_string(&iidfile).unwrap(), id);
    assert_eq!(text(&out.stdout), format!("{id}\n"));
    assert_eq!(text(&out.stderr), "", "-q: nothing on stderr");

    // docker's own build writes the same shapes: judge the format by docker's.
    kiln_to_docker(&env, "busybox");
    let theirs = env.path("docker-iid");
    let said = run(docker()
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-q", "--iidfile"])
        .arg(&theirs)
        .args(["-t", "kiln-outputs/small-docker", &ctx]));
    let docker_id = std::fs::read_to_string(&theirs).unwrap();
    assert!(docker_id.starts_with("sha256:") && !docker_id.ends_with('\n'));
    assert_eq!(said, format!("{docker_id}\n"));
    // The id kiln wrote is the one docker knows the image by once it is loaded.
    kiln_to_docker(&env, "small");
    let known = run(docker().args(["image", "inspect", "--format", "{{.Id}}", &id]));
    assert_eq!(known.trim(), id);
    run(docker().args(["rmi", "-f", "kiln-outputs/small-docker", "small", "busybox"]));
}

#[test]
fn a_failed_build_exits_1_and_leaves_no_iidfile() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("fails", "FROM busybox\nRUN exit 3\n", &[]);
    let iidfile = env.path("iid");
    // A stale id from an earlier build must not survive a failed one (buildx removes it).
    std::fs::write(&iidfile, "sha256:stale").unwrap();
    let out = bare_kiln(&env)
        .args(["build", "-q", "--iidfile"])
        .arg(&iidfile)
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = assert_clean_failure(&out, "kiln build -q of RUN exit 3");
    assert!(stderr.contains("exit code 3"), "{stderr}");
    assert_eq!(text(&out.stdout), "", "-q: no id when the build fails");
    assert!(!iidfile.exists(), "the stale iidfile is still there");

    let ok = env.context("ok", SMALL, &[]);
    let out = bare_kiln(&env).args(["build", "-q", &ok]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));

    // buildx: `--progress=plain and quiet cannot be used together`.
    let out = bare_kiln(&env)
        .args(["--progress", "plain", "build", "-q", &ok])
        .output()
        .unwrap();
    let stderr = assert_clean_failure(&out, "kiln --progress plain build -q");
    assert!(
        stderr.contains("-q/--quiet") && stderr.contains("--progress plain"),
        "{stderr}"
    );
}

/// The example of `--metadata-file` in docker/buildx's docs/reference/buildx_build.md.
const BUILDX_METADATA_EXAMPLE: &str = r#"{
  "buildx.build.provenance": {},
  "buildx.build.ref": "mybuilder/mybuilder0/0fjb6ubs52xx3vygf6fgdl611",
  "buildx.build.warnings": {},
  "containerimage.config.digest": "sha256:2937f66a9722f7f4a2df583de2f8cb97fc9196059a410e7f00072fc918930e66",
  "containerimage.descriptor": {
    "annotations": {
      "config.digest": "sha256:2937f66a9722f7f4a2df583de2f8cb97fc9196059a410e7f00072fc918930e66",
      "org.opencontainers.image.created": "2022-02-08T21:28:03Z"
    },
    "digest": "sha256:19ffeab6f8bc9293ac2c3fdf94ebe28396254c993aea0b5a542cfb02e0883fa3",
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "size": 506
  },
  "containerimage.digest": "sha256:19ffeab6f8bc9293ac2c3fdf94ebe28396254c993aea0b5a542cfb02e0883fa3"
}"#;

/// Every key of `example` is in `ours`, with a value of the same JSON type, down the objects.
/// buildx's own `buildx.build.*` keys describe a buildx builder and are left out.
fn same_keys(example: &serde_json::Value, ours: &serde_json::Value, path: &str) {
    use serde_json::Value;
    let Value::Object(example) = example else {
        return;
    };
    for (key, value) in example {
        if key.starts_with("buildx.") {
            continue;
        }
        let here = format!("{path}{key}");
        let Some(mine) = ours.get(key) else {
            panic!("--metadata-file has no {here}: {ours:#}");
        };
        let kind = |v: &Value| std::mem::discriminant(v);
        assert_eq!(kind(value), kind(mine), "{here}: {value} against {mine}");
        same_keys(value, mine, &format!("{here}."));
    }
}

fn skopeo() -> Command {
    let mut cmd = Command::new(require("skopeo"));
    cmd.stdin(Stdio::null());
    cmd
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[test]
fn metadata_file_has_buildx_keys_for_the_image_skopeo_reads() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("meta", SMALL, &[]);
    let file = env.path("metadata.json");
    env.build(&[
        "-t",
        "kiln-meta/app:1",
        "-t",
        "kiln-meta/app",
        "--metadata-file",
        file.to_str().unwrap(),
        &ctx,
    ]);
    let ours: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let example: serde_json::Value = serde_json::from_str(BUILDX_METADATA_EXAMPLE).unwrap();
    same_keys(&example, &ours, "");
    assert_eq!(ours["image.name"], "kiln-meta/app:1,kiln-meta/app");

    // The values are those of the image as skopeo reads it from the store's OCI layout.
    let layout = format!("oci:{}:kiln-meta/app:1", env.root().join("oci").display());
    let raw = skopeo()
        .args(["inspect", "--raw", &layout])
        .output()
        .unwrap();
    assert_success(&raw, "skopeo inspect --raw");
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let descriptor = &ours["containerimage.descriptor"];
    assert_eq!(ours["containerimage.digest"], sha256_of(&raw.stdout));
    assert_eq!(descriptor["digest"], ours["containerimage.digest"]);
    assert_eq!(descriptor["size"], raw.stdout.len());
    assert_eq!(descriptor["mediaType"], manifest["mediaType"]);
    let config: serde_json::Value =
        serde_json::from_str(&run(skopeo().args(["inspect", "--config", &layout]))).unwrap();
    assert_eq!(
        ours["containerimage.config.digest"],
        manifest["config"]["digest"]
    );
    assert_eq!(
        ours["containerimage.config.digest"],
        inspect_id(&env, "kiln-meta/app:1")
    );
    assert_eq!(
        descriptor["annotations"]["config.digest"],
        ours["containerimage.config.digest"]
    );
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.created"],
        config["created"]
    );
    assert_eq!(
        descriptor["platform"]["architecture"],
        config["architecture"]
    );
}

/// A directory tree entry by entry, in the shape of `docker_export`'s listing (the root itself
/// left out; content hashed for files, empty for the rest).
fn tree(root: &Path) -> Vec<ExportEntry> {
    use sha2::Digest as _;
    use std::os::unix::fs::MetadataExt as _;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<ExportEntry>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                '?'
            };
            let content = if ft.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            out.push(ExportEntry {
                path: path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid().into(),
                gid: meta.gid().into(),
                size: if ft.is_file() { meta.len() } else { 0 },
                sha256: hex::encode(sha2::Sha256::digest(&content)),
                link: if ft.is_symlink() {
                    std::fs::read_link(&path)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                } else {
                    String::new()
                },
            });
            if ft.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Fails with the entries that differ, not two whole listings.
fn assert_same_tree(ours: &[ExportEntry], theirs: &[ExportEntry], what: &str) {
    let only = |a: &[ExportEntry], b: &[ExportEntry]| -> Vec<String> {
        a.iter()
            .filter(|e| !b.contains(e))
            .take(20)
            .map(|e| format!("{e:?}"))
            .collect()
    };
    let (mine, other) = (only(ours, theirs), only(theirs, ours));
    assert!(
        mine.is_empty() && other.is_empty(),
        "{what}\nonly in kiln's:\n  {}\nonly in the other:\n  {}",
        mine.join("\n  "),
        other.join("\n  ")
    );
}

/// docker 20.10's BuildKit (0.8) leaves the empty mount points of a RUN step, `/dev`, `/proc`
/// and `/sys`, in its layer; BuildKit 0.12 and later remove them, as kiln does. Only those
/// three, and only empty, are dropped.
fn without_mount_stubs(entries: Vec<ExportEntry>) -> Vec<ExportEntry> {
    let stub = |e: &ExportEntry| {
        e.kind == 'd'
            && matches!(e.path.as_str(), "dev" | "proc" | "sys")
            && !entries
                .iter()
                .any(|c| c.path.starts_with(&format!("{}/", e.path)))
    };
    let keep: Vec<bool> = entries.iter().map(|e| !stub(e)).collect();
    entries
        .into_iter()
        .zip(keep)
        .filter_map(|(e, k)| k.then_some(e))
        .collect()
}

/// The files docker puts into every container, which `docker export` shows and an image
/// does not hold.
fn without_container_files(entries: Vec<ExportEntry>) -> Vec<ExportEntry> {
    entries
        .into_iter()
        .filter(|e| {
            let top = e.path.split('/').next().unwrap_or("");
            !matches!(top, ".dockerenv" | "dev" | "proc" | "sys")
                && !matches!(
                    e.path.as_str(),
                    "etc/hostname" | "etc/hosts" | "etc/resolv.conf" | "etc/mtab"
                )
        })
        .collect()
}

/// The Dockerfile the output tests build on `base`: a chowned copy, a mode, a symlink, a file
/// of the base deleted (a whiteout in the image, absent from the files). Three layers.
fn app_dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         COPY --chown=1000:1000 app.txt /app/app.txt\n\
         RUN mkdir -p /app/sub && echo built > /app/sub/built && chmod 0750 /app/sub \\\n\
         && ln -s sub/built /app/link && rm /etc/group\n"
    )
}

/// An env with the busybox base as `base` (a name of its own per test: the tests share one
/// docker) and the app's context; the context's path.
fn app_env(base: &str) -> (Env, String) {
    let env = Env::new();
    env.busybox_base(base);
    let ctx = env.context(
        "app",
        &app_dockerfile(base),
        &[("app.txt", "hello from the context\n")],
    );
    (env, ctx)
}

/// Runs docker's BuildKit on a context with `args`.
fn docker_buildkit(args: &[&str]) -> String {
    run(docker().env("DOCKER_BUILDKIT", "1").arg("build").args(args))
}

#[test]
fn local_output_is_the_files_buildkit_writes() {
    let base = "kiln-out/busybox-local";
    let (env, ctx) = app_env(base);
    let ours = env.path("ours");
    let short = env.path("short");
    env.build(&[
        "-o",
        &format!("type=local,dest={}", ours.display()),
        "-o",
        short.to_str().unwrap(),
        &ctx,
    ]);
    let files = tree(&ours);
    assert!(
        files
            .iter()
            .any(|e| e.path == "app/sub/built" && e.size == 6 && e.mode == 0o644),
        "{files:#?}"
    );
    assert!(
        files
            .iter()
            .any(|e| e.path == "app/link" && e.link == "sub/built")
    );
    assert!(
        !ours.join("etc/group").exists(),
        "the whiteout was not applied"
    );
    assert_same_tree(&files, &tree(&short), "-o DIR is type=local,dest=DIR");

    // BuildKit's own local exporter, on the same Dockerfile and base.
    kiln_to_docker(&env, base);
    let theirs = env.path("theirs");
    docker_buildkit(&["-o", &format!("type=local,dest={}", theirs.display()), &ctx]);
    assert_same_tree(
        &files,
        &without_mount_stubs(tree(&theirs)),
        "kiln's -o type=local differs from BuildKit's",
    );
    // Both write the files as the user who runs the build, whatever the image says.
    let app = files.iter().find(|e| e.path == "app/app.txt").unwrap();
    assert_eq!((app.uid, app.gid), (0, 0));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&ours).unwrap().permissions().mode() & 0o7777,
        0o700,
        "BuildKit's client creates the directory 0700"
    );

    // And the image docker builds holds the same files, with the image's owners.
    docker_buildkit(&["-q", "-t", "kiln-out/local-docker", &ctx]);
    let exported = without_container_files(docker_export("kiln-out/local-docker"));
    let owners = |v: &[ExportEntry]| -> Vec<ExportEntry> {
        v.iter()
            .map(|e| ExportEntry {
                uid: 0,
                gid: 0,
                ..e.clone()
            })
            .collect()
    };
    assert!(
        exported
            .iter()
            .any(|e| e.path == "app/app.txt" && e.uid == 1000),
        "{exported:#?}"
    );
    assert_same_tree(
        &owners(&files),
        &owners(&exported),
        "kiln's -o type=local differs from docker export of BuildKit's image",
    );
    run(docker().args(["rmi", "-f", "kiln-out/local-docker", base]));

    // Into a directory that has files: they stay, the image's are added (mode=copy).
    let existing = env.path("existing");
    std::fs::create_dir_all(existing.join("app")).unwrap();
    std::fs::write(existing.join("keep.txt"), "mine").unwrap();
    std::fs::write(existing.join("app/app.txt"), "old").unwrap();
    env.build(&[
        "-o",
        &format!("type=local,dest={},mode=copy", existing.display()),
        &ctx,
    ]);
    assert_eq!(
        std::fs::read_to_string(existing.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_to_string(existing.join("app/app.txt")).unwrap(),
        "hello from the context\n"
    );
    assert_eq!(
        std::fs::read_to_string(existing.join("app/sub/built")).unwrap(),
        "built\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&existing)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".kiln"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Extracts a tarball with GNU tar, owners kept (the tests run as root).
fn gnu_untar(tarball: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    run(Command::new(require("tar"))
        .arg("-C")
        .arg(into)
        .args(["--numeric-owner", "-xpf"])
        .arg(tarball));
}

#[test]
fn tar_output_is_the_tarball_buildkit_writes() {
    let base = "kiln-out/busybox-tar";
    let (env, ctx) = app_env(base);
    let file = env.path("ours.tar");
    let out = env
        .kiln()
        .args([
            "build",
            "-o",
            &format!("type=tar,dest={}", file.display()),
            "-o",
            "-",
            &ctx,
        ])
        .output()
        .unwrap();
    assert_success(&out, "kiln build -o type=tar -o -");
    let written = std::fs::read(&file).unwrap();
    assert!(written.len() > 1_000_000, "{} bytes", written.len());
    assert!(
        out.stdout == written,
        "-o - wrote other bytes than type=tar,dest=FILE (and stdout carries nothing else)"
    );
    // GNU tar reads it, owners and all.
    let listed = run(Command::new(require("tar"))
        .args(["--numeric-owner", "-tvf"])
        .arg(&file));
    assert!(
        listed
            .lines()
            .any(|l| l.contains("1000/1000") && l.ends_with("app/app.txt")),
        "{listed}"
    );
    let ours = env.path("ours");
    gnu_untar(&file, &ours);

    kiln_to_docker(&env, base);
    let theirs_tar = env.path("theirs.tar");
    docker_buildkit(&[
        "-o",
        &format!("type=tar,dest={}", theirs_tar.display()),
        &ctx,
    ]);
    let theirs = env.path("theirs");
    gnu_untar(&theirs_tar, &theirs);
    assert_same_tree(
        &tree(&ours),
        &without_mount_stubs(tree(&theirs)),
        "kiln's -o type=tar differs from BuildKit's",
    );
    run(docker().args(["rmi", "-f", base]));
}

/// The raw manifest skopeo reads at a reference.
fn skopeo_manifest(reference: &str) -> (Vec<u8>, serde_json::Value) {
    let out = skopeo()
        .args(["inspect", "--raw", "--tls-verify=false", reference])
        .output()
        .unwrap();
    assert_success(&out, &format!("skopeo inspect --raw {reference}"));
    let json = serde_json::from_slice(&out.stdout).unwrap();
    (out.stdout, json)
}

fn layer_types(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_owned())
        .collect()
}

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

#[test]
fn oci_output_is_read_by_skopeo_and_umoci() {
    let base = "kiln-out/busybox-oci";
    let (env, ctx) = app_env(base);
    let archive = env.path("app-oci.tar");
    let layout = env.path("layout");
    let meta = env.path("meta.json");
    let local = env.path("local");
    env.build(&[
        "-t",
        "kiln-out/app:1",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        "-o",
        &format!("type=oci,dest={},tar=false", layout.display()),
        "-o",
        &format!("type=local,dest={}", local.display()),
        "--metadata-file",
        meta.to_str().unwrap(),
        &ctx,
    ]);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    // BuildKit's oci exporter gzips the layers and names the image in full.
    let (raw, manifest) = skopeo_manifest(&format!("oci-archive:{}", archive.display()));
    assert_eq!(meta["containerimage.digest"], sha256_of(&raw));
    assert_eq!(meta["containerimage.descriptor"]["size"], raw.len());
    assert_eq!(meta["image.name"], "docker.io/kiln-out/app:1");
    assert_eq!(layer_types(&manifest), [GZIP_LAYER, GZIP_LAYER, GZIP_LAYER]);
    let (raw_dir, _) = skopeo_manifest(&format!("oci:{}:kiln-out/app:1", layout.display()));
    assert_eq!(
        raw_dir, raw,
        "the layout holds the manifest the archive holds"
    );

    // umoci unpacks the layout into the files the local output holds, with the image's owners.
    let bundle = env.path("bundle");
    run(Command::new(require("umoci"))
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:kiln-out/app:1", layout.display()))
        .arg(&bundle));
    let unpacked = tree(&bundle.join("rootfs"));
    assert!(
        unpacked
            .iter()
            .any(|e| e.path == "app/app.txt" && e.uid == 1000 && e.gid == 1000),
        "umoci's rootfs lost the owner of app.txt"
    );
    let rootless = |v: Vec<ExportEntry>| -> Vec<ExportEntry> {
        v.into_iter()
            .map(|e| ExportEntry {
                uid: 0,
                gid: 0,
                ..e
            })
            .collect()
    };
    assert_same_tree(
        &rootless(tree(&local)),
        &rootless(unpacked),
        "umoci's unpack of -o type=oci differs from -o type=local",
    );

    // zstd at a level, which kiln's own load reads back to the same image.
    let zstd = env.path("app-zstd.tar");
    env.build(&[
        "-t",
        "kiln-out/app:1",
        "-o",
        &format!(
            "type=oci,dest={},compression=zstd,compression-level=19",
            zstd.display()
        ),
        &ctx,
    ]);
    let (_, manifest) = skopeo_manifest(&format!("oci-archive:{}", zstd.display()));
    assert_eq!(layer_types(&manifest), [ZSTD_LAYER, ZSTD_LAYER, ZSTD_LAYER]);
    let other = Env::new();
    let loaded = other.ok(&["load", "-i", zstd.to_str().unwrap()]);
    assert!(loaded.contains("kiln-out/app:1"), "{loaded}");
    assert_eq!(
        inspect_id(&other, "kiln-out/app:1"),
        inspect_id(&env, "kiln-out/app:1")
    );

    // rewrite-timestamp: the layers built under SOURCE_DATE_EPOCH carry it as their times,
    // even though the steps are in the cache from the builds above, made without it.
    let stamped = env.path("stamped");
    let (_, log) = env.build(&[
        "--build-arg",
        "SOURCE_DATE_EPOCH=1000000000",
        "-o",
        &format!(
            "type=oci,dest={},tar=false,rewrite-timestamp=true,name=stamped",
            stamped.display()
        ),
        &ctx,
    ]);
    let bundle = env.path("stamped-bundle");
    run(Command::new(require("umoci"))
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:stamped", stamped.display()))
        .arg(&bundle));
    // The epoch is in every step's cache key: the steps built before without it run again.
    assert!(!log.contains("CACHED"), "{log}");
    use std::os::unix::fs::MetadataExt as _;
    let built = std::fs::metadata(bundle.join("rootfs/app/sub/built")).unwrap();
    assert_eq!(built.mtime(), 1_000_000_000);
}

#[test]
fn force_compression_is_refused_for_a_base_layer_of_another_compression() {
    let source = Env::new();
    let base = "kiln-out/busybox-zstd";
    source.busybox_base(base);
    let zbase = source.path("zbase.tar");
    source.ok(&[
        "save",
        "--format",
        "oci",
        "--compress",
        "zstd",
        "-o",
        zbase.to_str().unwrap(),
        base,
    ]);
    let env = Env::new();
    env.ok(&["load", "-i", zbase.to_str().unwrap()]);
    let ctx = env.context(
        "app",
        &app_dockerfile(base),
        &[("app.txt", "hello from the context\n")],
    );
    let forced = env.path("forced.tar");
    let stderr = env.fails(&[
        "build",
        "-o",
        &format!(
            "type=oci,dest={},compression=gzip,force-compression=true",
            forced.display()
        ),
        &ctx,
    ]);
    assert!(
        stderr.contains("force-compression") && stderr.contains("is zstd"),
        "{stderr}"
    );
    assert!(!forced.exists());
    // Without force, the base layer stays zstd and the built one is gzipped, as BuildKit does.
    let mixed = env.path("mixed.tar");
    env.build(&[
        "-o",
        &format!("type=oci,dest={},compression=gzip", mixed.display()),
        &ctx,
    ]);
    let (_, manifest) = skopeo_manifest(&format!("oci-archive:{}", mixed.display()));
    assert_eq!(layer_types(&manifest), [ZSTD_LAYER, GZIP_LAYER, GZIP_LAYER]);
}

#[test]
fn docker_output_and_load_are_read_by_docker() {
    let base = "kiln-out/busybox-docker";
    let (env, ctx) = app_env(base);
    let file = env.path("app-docker.tar");
    env.build(&[
        "-t",
        "kiln-out/docker:1",
        "-o",
        &format!("type=docker,dest={}", file.display()),
        &ctx,
    ]);
    let id = inspect_id(&env, "kiln-out/docker:1");
    let said = run(docker().args(["load", "-i", file.to_str().unwrap()]));
    assert!(said.contains("Loaded image: kiln-out/docker:1"), "{said}");
    let known = run(docker().args([
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "kiln-out/docker:1",
    ]));
    assert_eq!(known.trim(), id);
    let built = run(docker().args(["run", "--rm", "kiln-out/docker:1", "cat", "/app/sub/built"]));
    assert_eq!(built, "built\n");

    env.build(&["-t", "kiln-out/load:1", "--load", &ctx]);
    let known = run(docker().args(["image", "inspect", "--format", "{{.Id}}", "kiln-out/load:1"]));
    assert_eq!(known.trim(), id);
    let owner = run(docker().args([
        "run",
        "--rm",
        "kiln-out/load:1",
        "stat",
        "-c",
        "%u:%g",
        "/app/app.txt",
    ]));
    assert_eq!(owner, "1000:1000\n");
    run(docker().args(["rmi", "-f", "kiln-out/docker:1", "kiln-out/load:1"]));

    // No docker to load into: said before anything is built.
    let empty = env.path("no-docker-here");
    std::fs::create_dir_all(&empty).unwrap();
    let out = env
        .kiln()
        .env("PATH", &empty)
        .args(["build", "-t", "kiln-out/nodocker", "--load", &ctx])
        .output()
        .unwrap();
    let stderr = assert_clean_failure(&out, "kiln build --load without docker");
    assert!(
        stderr.contains("--load: there is no `docker` command on PATH"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("] FROM"),
        "it built before failing:\n{stderr}"
    );
    assert!(!env.ok(&["images"]).contains("kiln-out/nodocker"));
}

#[test]
fn registry_output_is_pulled_by_docker_and_zstd_pushes_by_skopeo_and_kiln() {
    let base = "kiln-out/busybox-registry";
    let (env, ctx) = app_env(base);
    let registry = crate::registry::Registry::start(&env, "outputs");
    let app = format!("{}/kiln-out/app:1", registry.host());
    let meta = env.path("meta.json");
    env.build(&[
        "-t",
        &app,
        "-o",
        "type=registry",
        "--metadata-file",
        meta.to_str().unwrap(),
        &ctx,
    ]);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    let (raw, manifest) = skopeo_manifest(&format!("docker://{app}"));
    assert_eq!(meta["containerimage.digest"], sha256_of(&raw));
    assert_eq!(meta["containerimage.descriptor"]["size"], raw.len());
    assert_eq!(meta["image.name"], app.as_str());
    assert_eq!(layer_types(&manifest), [GZIP_LAYER, GZIP_LAYER, GZIP_LAYER]);
    run(docker().args(["pull", &app]));
    let built = run(docker().args(["run", "--rm", &app, "cat", "/app/sub/built"]));
    assert_eq!(built, "built\n");
    run(docker().args(["rmi", "-f", &app]));

    // type=image with push=true and its own name (no -t), zstd layers.
    let zstd = format!("{}/kiln-out/zstd:1", registry.host());
    env.build(&[
        "-o",
        &format!("type=image,name={zstd},push=true,compression=zstd"),
        &ctx,
    ]);
    let (_, manifest) = skopeo_manifest(&format!("docker://{zstd}"));
    assert_eq!(layer_types(&manifest), [ZSTD_LAYER, ZSTD_LAYER, ZSTD_LAYER]);
    let copied = env.path("zstd-dir");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{zstd}"),
        &format!("dir:{}", copied.display()),
    ]));
    let other = Env::new();
    other.ok(&["pull", &zstd]);
    assert_eq!(inspect_id(&other, &zstd), inspect_id(&env, &zstd));

    // --push is type=registry.
    let pushed = format!("{}/kiln-out/pushed:1", registry.host());
    env.build(&["-t", &pushed, "--push", &ctx]);
    let (raw_pushed, _) = skopeo_manifest(&format!("docker://{pushed}"));
    assert_eq!(
        raw_pushed, raw,
        "--push and -o type=registry push the same manifest"
    );
}

#[test]
fn bad_outputs_fail_before_the_build_naming_the_flag() {
    let base = "kiln-out/busybox-bad";
    let (env, ctx) = app_env(base);
    let file = env.path("a-file");
    std::fs::write(&file, "x").unwrap();
    let dir = env.path("a-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let new = env.path("new.tar");
    let f = file.display();
    let d = dir.display();
    let n = new.display();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-o".into(), format!("type=bogus,dest={n}")],
            "unknown output type \"bogus\"",
        ),
        (
            vec!["-o".into(), "type=local".into()],
            "dest=DIR is required for type=local",
        ),
        (
            vec!["-o".into(), format!("type=local,dest={f}")],
            "is a file",
        ),
        (
            vec!["-o".into(), format!("type=oci,dest={d}")],
            "is a directory",
        ),
        (
            vec![
                "-o".into(),
                format!("type=oci,dest={n},compression=estargz"),
            ],
            "compression=estargz",
        ),
        (
            vec![
                "-o".into(),
                format!("type=oci,dest={n},oci-mediatypes=false"),
            ],
            "oci-mediatypes=false",
        ),
        (
            vec!["-o".into(), format!("type=oci,dest={n},unpack=false")],
            "option \"unpack\"",
        ),
        (
            vec![
                "-o".into(),
                format!("type=oci,dest={n},rewrite-timestamp=true"),
            ],
            "needs SOURCE_DATE_EPOCH",
        ),
        (
            vec!["-o".into(), format!("type=oci,dest={d}/missing/x.tar")],
            "does not exist",
        ),
        (
            vec![
                "-o".into(),
                "type=tar".into(),
                "-o".into(),
                "type=oci,dest=-".into(),
            ],
            "multiple outputs write to stdout",
        ),
        (
            vec!["-o".into(), "type=registry".into()],
            "a push needs a name",
        ),
        (vec!["--push".into()], "--push: a push needs a name"),
        (
            vec![
                "--iidfile".into(),
                format!("{n}"),
                "-o".into(),
                format!("type=local,dest={d}"),
            ],
            "--iidfile",
        ),
        (vec!["-o".into(), "-".into(), "-q".into()], "-q/--quiet"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["build".to_owned()];
        all.extend(args.iter().cloned());
        all.push(ctx.clone());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = bare_kiln(&env)
            .args(&all)
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let stderr = assert_clean_failure(&out, &all.join(" "));
        assert!(
            stderr.contains(expected),
            "{all:?}: want {expected:?} in:\n{stderr}"
        );
        assert!(
            !stderr.contains("] FROM"),
            "{all:?} built before failing:\n{stderr}"
        );
        assert!(!new.exists(), "{all:?} wrote {n}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn a_failed_export_leaves_nothing_half_written() {
    let base = "kiln-out/busybox-failed";
    let (env, ctx) = app_env(base);
    env.build(&["-t", "kiln-out/app", &ctx]);
    // Corrupt the layer the build made (kiln stores its layers uncompressed: the blob is
    // named by the diff id), then export the cached result.
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "kiln-out/app"])).unwrap();
    let layers = json[0]["RootFS"]["Layers"].as_array().unwrap();
    let top = layers.last().unwrap().as_str().unwrap();
    let blob = env
        .root()
        .join("oci/blobs/sha256")
        .join(top.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let out_dir = env.path("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    for output in [
        format!("type=oci,dest={}/app.tar", out_dir.display()),
        format!("type=local,dest={}/files", out_dir.display()),
        format!("type=tar,dest={}/files.tar", out_dir.display()),
        format!("type=docker,dest={}/docker.tar", out_dir.display()),
    ] {
        let stderr = env.fails(&["build", "-t", "kiln-out/app", "-o", &output, &ctx]);
        assert!(
            stderr.contains(top),
            "{output}: the error does not name the layer:\n{stderr}"
        );
        assert_eq!(
            std::fs::read_dir(&out_dir).unwrap().count(),
            0,
            "{output} left files behind"
        );
    }
}

/// A context that shows what COPY takes from it: a subdirectory, an executable, a symlink,
/// and a file that `.dockerignore` leaves out.
pub const CONTEXT_DOCKERFILE: &str = "FROM busybox\nCOPY . /ctx/\n\
    RUN cat /ctx/sub/file.txt && test -x /ctx/run.sh && test -L /ctx/link \\\n\
    && test ! -e /ctx/ignored.txt && echo \"context seen $((6*7))\"\n";

pub fn context_dir(env: &Env) -> PathBuf {
    let dir = PathBuf::from(env.context(
        "ctx",
        CONTEXT_DOCKERFILE,
        &[
            ("sub/file.txt", "from the context\n"),
            ("run.sh", "#!/bin/sh\necho run\n"),
            (".dockerignore", "ignored.txt\n"),
            ("ignored.txt", "left out\n"),
        ],
    ));
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("sub/file.txt", dir.join("link")).unwrap();
    dir
}

/// `kiln build --no-cache` of `args`, with `stdin` from a file if given: its image id. Every
/// timestamp is SOURCE_DATE_EPOCH's, so that the same files give the same id whatever they
/// came in (a tar keeps mtimes to the second, a directory to the nanosecond).
pub fn context_build(env: &Env, args: &[&str], stdin: Option<&Path>) -> String {
    let mut cmd = env.kiln();
    cmd.args([
        "build",
        "--no-lint",
        "--no-cache",
        "--build-arg",
        "SOURCE_DATE_EPOCH=0",
    ])
    .args(args);
    if let Some(file) = stdin {
        cmd.stdin(std::fs::File::open(file).unwrap());
    }
    let out = cmd.output().unwrap();
    assert_success(&out, &format!("kiln build {args:?} < {stdin:?}"));
    assert!(
        text(&out.stderr).contains("context seen 42"),
        "{}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_owned();
    assert!(id.starts_with("sha256:"), "{id}");
    id
}

#[test]
fn every_context_kind_builds_the_image_the_directory_builds() {
    let env = Env::new();
    env.busybox_base("busybox");
    let dir = context_dir(&env);
    let dir_str = dir.to_str().unwrap();
    let from_dir = context_build(&env, &[dir_str], None);

    // -f - with the directory: the Dockerfile from stdin, the files from the directory.
    let dockerfile = dir.join("Dockerfile");
    assert_eq!(
        context_build(&env, &["-f", "-", dir_str], Some(&dockerfile)),
        from_dir,
        "-f - with a context directory"
    );

    // The directory as a tar stream on stdin, plain and compressed by the real tools.
    let plain = env.path("ctx.tar");
    run(Command::new(require("tar"))
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&plain)
        .arg("."));
    for (tool, suffix) in [
        ("gzip", "gz"),
        ("bzip2", "bz2"),
        ("xz", "xz"),
        ("zstd", "zst"),
    ] {
        let compressed = env.path(&format!("ctx.tar.{suffix}"));
        let out = Command::new(require(tool))
            .arg("-c")
            .arg(&plain)
            .output()
            .unwrap();
        assert_success(&out, tool);
        std::fs::write(&compressed, &out.stdout).unwrap();
        assert_eq!(
            context_build(&env, &["-"], Some(&compressed)),
            from_dir,
            "a {tool} tar context on stdin"
        );
    }
    assert_eq!(
        context_build(&env, &["-"], Some(&plain)),
        from_dir,
        "a plain tar context on stdin"
    );
    // -f names a Dockerfile inside the stdin context.
    std::fs::create_dir_all(dir.join("docker")).unwrap();
    std::fs::rename(&dockerfile, dir.join("docker/Build.file")).unwrap();
    std::fs::write(&dockerfile, "FROM busybox\nRUN exit 1\n").unwrap();
    let moved = env.path("moved.tar");
    run(Command::new(require("tar"))
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&moved)
        .arg("."));
    let out = env
        .kiln()
        .args(["build", "--no-lint", "-f", "docker/Build.file", "-"])
        .stdin(std::fs::File::open(&moved).unwrap())
        .output()
        .unwrap();
    assert_success(&out, "kiln build -f docker/Build.file - < ctx.tar");
    assert!(text(&out.stderr).contains("context seen 42"));
}

/// A tar whose entry names are written as given, `..` and all (the tar crate's builder
/// refuses them, as it should).
fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        if *kind == tar::EntryType::Symlink {
            h.set_link_name(body).unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        } else {
            let data = if *kind == tar::EntryType::Regular {
                body.as_bytes()
            } else {
                b""
            };
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn a_hostile_stdin_context_stays_in_its_directory() {
    use tar::EntryType::{Directory, Regular, Symlink};
    let env = Env::new();
    env.busybox_base("busybox");
    let tag = format!("kiln-escape-{}", std::process::id());
    let outside = PathBuf::from("/tmp").join(&tag);
    let dockerfile = "FROM busybox\nCOPY . /ctx/\nRUN cat /ctx/up /ctx/tmp/through-link\n";
    let up = format!("../../{tag}");
    // `../..` is clamped at the context's root, and the link to `/` is followed inside it, as
    // in a chroot.
    let tar = raw_tar(&[
        ("Dockerfile", Regular, dockerfile),
        ("../../up", Regular, "clamped inside\n"),
        ("tmp/", Directory, ""),
        ("evil", Symlink, "/"),
        ("evil/tmp/through-link", Regular, "followed inside\n"),
        (&up, Regular, "must not leave\n"),
    ]);
    let out = env.with_stdin(&["build", "--no-lint", "-"], &tar);
    assert_success(&out, "kiln build - < hostile.tar");
    let log = text(&out.stderr);
    assert!(
        log.contains("clamped inside") && log.contains("followed inside"),
        "{log}"
    );
    assert!(!outside.exists(), "{} was written", outside.display());
    assert!(!env.root().join(&tag).exists());
    assert!(!Path::new("/tmp/through-link").exists());

    // A Dockerfile that is a link out of the context is not read.
    let tar = raw_tar(&[("Dockerfile", Symlink, "/etc/passwd")]);
    let out = env.with_stdin(&["build", "-"], &tar);
    let stderr = assert_clean_failure(&out, "kiln build - < Dockerfile-link.tar");
    assert!(stderr.contains("link to outside the context"), "{stderr}");
    assert!(!stderr.contains("root:x:0:0"), "{stderr}");

    // Files named `.wh.…` would be taken for whiteouts: refused, not dropped.
    let tar = raw_tar(&[
        ("Dockerfile", Regular, "FROM busybox\n"),
        (".wh.x", Regular, "x"),
    ]);
    let out = env.with_stdin(&["build", "-"], &tar);
    let stderr = assert_clean_failure(&out, "kiln build - < whiteout.tar");
    assert!(stderr.contains(".wh."), "{stderr}");

    // stdin cannot be both; a Dockerfile on stdin with -f is ambiguous.
    let stderr = env.fails(&["build", "-f", "-", "-"]);
    assert!(stderr.contains("stdin cannot be both"), "{stderr}");
    let out = env.with_stdin(&["build", "-f", "Dockerfile", "-"], "FROM busybox\n");
    let stderr = assert_clean_failure(&out, "kiln build -f Dockerfile - < Dockerfile");
    assert!(stderr.contains("ambiguous"), "{stderr}");
}

#[test]
fn build_contexts_of_each_kind_serve_from_and_copy_from() {
    let env = Env::new();
    env.busybox_base("kiln-ctx/busybox");
    // An image reached through an OCI layout: saved by kiln, made a layout by skopeo (tag v1).
    let marked = env.context(
        "marked",
        "FROM kiln-ctx/busybox\nRUN echo from-the-layout > /marker\n",
        &[],
    );
    env.build(&["--no-lint", "-t", "kiln-ctx/marked", &marked]);
    let archive = env.path("marked.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "kiln-ctx/marked",
    ]);
    let layout = env.path("layout");
    run(skopeo().args([
        "copy",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:v1", layout.display()),
    ]));
    // A directory with its own .dockerignore.
    let extra = PathBuf::from(env.context(
        "extra",
        "not a Dockerfile here",
        &[
            ("file.txt", "from the extra dir\n"),
            ("secret.txt", "left out\n"),
            (".dockerignore", "secret.txt\n"),
        ],
    ));
    // A stage named like a context is replaced by it: this one would fail if it ran.
    let ctx = env.context(
        "uses",
        "FROM kiln-ctx/busybox AS layout\nRUN exit 1\n\
         FROM base\nCOPY --from=extra / /extra/\nCOPY --from=layout /marker /marker\n\
         RUN --mount=from=extra,target=/mnt cat /mnt/file.txt /extra/file.txt /marker \\\n\
         && test ! -e /extra/secret.txt && echo \"contexts seen $((6*7))\"\n",
        &[],
    );
    let contexts = [
        "--build-context".to_owned(),
        "base=docker-image://kiln-ctx/busybox".to_owned(),
        "--build-context".to_owned(),
        format!("extra={}", extra.display()),
    ];
    let with = |layout_ref: &str| -> String {
        let mut args: Vec<&str> = vec!["--no-lint", "--no-cache"];
        args.extend(contexts.iter().map(String::as_str));
        let layout_arg = format!("layout={layout_ref}");
        args.extend(["--build-context", &layout_arg, &ctx]);
        let (_, log) = env.build(&args);
        log
    };
    let log = with(&format!("oci-layout://{}:v1", layout.display()));
    for seen in ["from the extra dir", "from-the-layout", "contexts seen 42"] {
        assert!(log.contains(seen), "{seen:?} not in:\n{log}");
    }
    assert!(
        !log.contains("RUN exit 1"),
        "the replaced stage ran:\n{log}"
    );
    // The layout's manifest by digest, as skopeo reads it.
    let (raw, _) = skopeo_manifest(&format!("oci:{}:v1", layout.display()));
    let log = with(&format!(
        "oci-layout://{}@{}",
        layout.display(),
        sha256_of(&raw)
    ));
    assert!(log.contains("from-the-layout"), "{log}");

    // What kiln does not do, said by name.
    let bad = |args: &[&str], expected: &str| {
        let mut all = vec!["build", "--no-lint"];
        all.extend(args);
        let stderr = env.fails(&all);
        assert!(
            stderr.contains(expected),
            "{all:?}: want {expected:?} in:\n{stderr}"
        );
    };
    // FROM a directory context starts from its files, its .dockerignore applied (BuildKit's
    // local source as a base).
    let from_dir = env.context("from-dir", "FROM extra\n", &[]);
    let extra_arg = format!("extra={}", extra.display());
    let from_dir_out =
        env.build_to_dir("from-dir-out", &["--build-context", &extra_arg, &from_dir]);
    assert_eq!(
        std::fs::read_to_string(from_dir_out.join("file.txt")).unwrap(),
        "from the extra dir\n"
    );
    assert!(!from_dir_out.join("secret.txt").exists());
    let target = env.context("target", "FROM kiln-ctx/busybox AS final\n", &[]);
    bad(
        &[
            "--build-context",
            "final=docker-image://kiln-ctx/busybox",
            &target,
        ],
        "which is the build's target",
    );
    bad(
        &["--build-context", "x=git://127.0.0.1:1/none.git", &target],
        "--build-context x=git://127.0.0.1:1/none.git",
    );
    // With one image, buildx takes it whatever the tag; with two, the tag must match.
    run(skopeo().args([
        "copy",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:v3", layout.display()),
    ]));
    let no_tag = format!("layout=oci-layout://{}:v2", layout.display());
    bad(
        &["--build-context", &no_tag, &target],
        "the layout has no tag \"v2\"",
    );
    let no_digest = format!(
        "layout=oci-layout://{}@sha256:{}",
        layout.display(),
        "0".repeat(64)
    );
    bad(
        &["--build-context", &no_digest, &target],
        "the layout has no manifest sha256:000",
    );
    bad(
        &["--build-context", "x=/nonexistent-dir", &target],
        "is not a directory",
    );
}

/// Several platforms, as buildx exports them: `type=local` and `type=tar` hold a directory per
/// platform (`linux_amd64`, `linux_arm64`); `type=oci` an index skopeo reads for each
/// platform; `type=registry` the index pushed; `--iidfile` and `--metadata-file` the index's
/// digest (an index has no config digest); the docker exporter and `--load` are refused
/// before the build with BuildKit's words.
#[test]
fn several_platforms_export_as_an_index_and_a_directory_per_platform() {
    let env = Env::new();
    env.busybox_base_for("bb", "amd64");
    env.busybox_base_for("bb", "arm64");
    // No RUN: nothing needs emulation. WORKDIR makes a directory named after the platform.
    let ctx = env.context(
        "multi",
        "FROM bb\nARG TARGETARCH\nWORKDIR /made-for-$TARGETARCH\nCOPY f /f\n",
        &[("f", "same\n")],
    );
    let out_dir = env.path("local");
    let oci = env.path("multi-oci.tar");
    let tarball = env.path("multi.tar");
    let iid = env.path("iid");
    let meta = env.path("meta.json");
    let (o_local, o_oci, o_tar) = (
        format!("type=local,dest={}", out_dir.display()),
        format!("type=oci,dest={}", oci.display()),
        format!("type=tar,dest={}", tarball.display()),
    );
    let out = bare_kiln(&env)
        .args([
            "build",
            "--no-lint",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .args(["-o", &o_local, "-o", &o_tar, &ctx])
        .output()
        .unwrap();
    assert_success(&out, "a two-platform build with local and tar outputs");
    // buildx refuses --iidfile with local and tar outputs, which have no image id.
    let out = bare_kiln(&env)
        .args([
            "build",
            "--no-lint",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .args(["-o", &o_oci, "-t", "multi:1"])
        .args(["--iidfile", iid.to_str().unwrap()])
        .args(["--metadata-file", meta.to_str().unwrap(), &ctx])
        .output()
        .unwrap();
    assert_success(&out, "a two-platform build with an oci output");
    for arch in ["amd64", "arm64"] {
        let dir = out_dir.join(format!("linux_{arch}"));
        assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "same\n");
        assert!(dir.join(format!("made-for-{arch}")).is_dir(), "{arch}");
        assert!(dir.join("bin/busybox").is_file(), "{arch}");
    }
    let listing = run(Command::new(require("tar")).arg("-tf").arg(&tarball));
    for entry in ["linux_amd64/made-for-amd64/", "linux_arm64/f"] {
        assert!(
            listing.lines().any(|l| l.trim_start_matches("./") == entry),
            "{entry} in the tar output:\n{listing}"
        );
    }
    let archive = format!("oci-archive:{}", oci.display());
    let (raw, index) = skopeo_manifest(&archive);
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    for arch in ["amd64", "arm64"] {
        let config = run(skopeo().args(["inspect", "--config", "--override-arch", arch, &archive]));
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(config["architecture"], arch);
    }
    let digest = sha256_of(&raw);
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), digest);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], digest.as_str(), "{meta}");
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{meta}"
    );
    assert!(meta.get("containerimage.config.digest").is_none(), "{meta}");
    assert_eq!(meta["image.name"], "docker.io/library/multi:1", "{meta}");

    // The registry gets the index; the metadata names the digest it holds.
    let registry = crate::registry::Registry::start(&env, "multi-outputs");
    let target = format!("{}/kiln/multi:1", registry.host());
    let out = bare_kiln(&env)
        .args([
            "build",
            "--no-lint",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .args(["-o", "type=registry", "-t", &target])
        .args(["--metadata-file", meta_path(&env).to_str().unwrap(), &ctx])
        .output()
        .unwrap();
    assert_success(&out, "a two-platform build pushed with -o type=registry");
    let (raw, pushed) = skopeo_manifest(&format!("docker://{target}"));
    assert_eq!(pushed["manifests"].as_array().unwrap().len(), 2, "{pushed}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(meta_path(&env)).unwrap()).unwrap();
    assert_eq!(
        meta["containerimage.digest"],
        sha256_of(&raw).as_str(),
        "{meta}"
    );

    for refused in [&["-o", "type=docker,dest=x.tar"][..], &["--load"][..]] {
        let out = bare_kiln(&env)
            .args([
                "build",
                "--no-lint",
                "--platform",
                "linux/amd64,linux/arm64",
            ])
            .args(refused)
            .arg(&ctx)
            .output()
            .unwrap();
        let err = assert_clean_failure(&out, "the docker exporter with several platforms");
        assert!(
            err.contains("does not currently support exporting manifest lists")
                && err.contains(refused[0]),
            "{err}"
        );
    }
}

fn meta_path(env: &Env) -> PathBuf {
    env.path("pushed-meta.json")
}
