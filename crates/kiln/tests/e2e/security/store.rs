//! The store's integrity: layer ids checked on the way in, digests checked on the way out,
//! permissions that keep other users out, and `kiln check`.
//!
//! The attacker here ships an image (an archive or a registry image) whose fields lie, or
//! corrupts a stored blob, or is a local user other than root looking into the store.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::Digest as _;

use crate::registry::{Registry, fake_registry, http, http_with_headers};
use crate::util::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new(require("gzip"))
        .args(["-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert_success(&out, "gzip");
    out.stdout
}

/// The busybox rootfs with `extra` files added: a working rootfs, as an attacker would ship.
fn busybox_with(extra: &[(&str, &[u8])]) -> Vec<u8> {
    let base = std::fs::read(busybox_tar()).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(&base[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.append(&header, &data[..]).unwrap();
    }
    for (path, content) in extra {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut header, path, *content).unwrap();
    }
    out.into_inner().unwrap()
}

fn layer_media(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    }
}

/// An image put together by hand, so that every field can lie.
struct Crafted {
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

impl Crafted {
    /// `layers` under a config that lists `diff_ids`, whatever the layers hold.
    fn new(layers: Vec<Vec<u8>>, diff_ids: Vec<String>) -> Crafted {
        Crafted::lying_about_sizes(layers, diff_ids, 0)
    }

    /// As [`Crafted::new`], with layer descriptors that claim `extra` bytes more than the
    /// layers have.
    fn lying_about_sizes(layers: Vec<Vec<u8>>, diff_ids: Vec<String>, extra: usize) -> Crafted {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch(), "os": "linux",
            "config": { "Cmd": ["/bin/sh"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len() },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": layer_media(l), "digest": sha256(l), "size": l.len() + extra,
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        Crafted {
            config,
            layers,
            manifest,
        }
    }

    /// The members of an OCI archive that names it `name`.
    fn oci_members(&self, name: &str) -> Vec<(String, Vec<u8>)> {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_MANIFEST, "digest": sha256(&self.manifest),
                "size": self.manifest.len(),
                "annotations": { "io.containerd.image.name": name },
            }],
        });
        let mut members = vec![(
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        )];
        for blob in self.layers.iter().chain([&self.config, &self.manifest]) {
            members.push((
                format!("blobs/sha256/{}", hex_of(&sha256(blob))),
                blob.clone(),
            ));
        }
        members.push(("index.json".to_owned(), serde_json::to_vec(&index).unwrap()));
        members
    }

    /// The members of a docker-archive (`docker save`) that names it `name`.
    fn docker_members(&self, name: &str) -> Vec<(String, Vec<u8>)> {
        let mut members = vec![("config.json".to_owned(), self.config.clone())];
        let mut paths = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            paths.push(format!("layer{i}/layer.tar"));
            members.push((format!("layer{i}/layer.tar"), layer.clone()));
        }
        let manifest =
            serde_json::json!([{ "Config": "config.json", "RepoTags": [name], "Layers": paths }]);
        members.push((
            "manifest.json".to_owned(),
            serde_json::to_vec(&manifest).unwrap(),
        ));
        members
    }
}

fn tar_bytes(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    for (path, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        archive.append_data(&mut header, path, &bytes[..]).unwrap();
    }
    archive.into_inner().unwrap()
}

/// Flips one byte of `member`'s content in place.
fn flip_member(members: &mut [(String, Vec<u8>)], member: &str) {
    let (_, bytes) = members.iter_mut().find(|(n, _)| n == member).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
}

/// A failed load or pull stored nothing: no blob, no name, no staging left behind.
fn assert_nothing_stored(env: &Env, case: &str) {
    assert_eq!(
        env.blobs(),
        Vec::<String>::new(),
        "{case}: blobs were stored"
    );
    assert_eq!(
        entries(&env.root().join("tmp")),
        Vec::<String>::new(),
        "{case}: staging left"
    );
    let images = env.ok(&["images"]);
    assert_eq!(
        images.lines().count(),
        1,
        "{case}: an image was stored:\n{images}"
    );
}

/// Loads an archive made of `members`; returns the error, asserting that nothing was stored.
fn load_fails(env: &Env, case: &str, members: &[(String, Vec<u8>)]) -> String {
    let path = env.path(&format!("{case}.tar"));
    std::fs::write(&path, tar_bytes(members)).unwrap();
    let out = env
        .kiln()
        .args(["load", "-i", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = assert_clean_failure(&out, &format!("kiln load of the {case} archive"));
    assert_nothing_stored(env, case);
    err
}

/// Streams a blob into a registry repository (a monolithic upload: POST, then PUT).
fn upload_blob(registry: &Registry, repo: &str, bytes: &[u8]) {
    let (status, headers, body) = http_with_headers(
        registry.port,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let location = headers
        .iter()
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .expect("the registry gave no upload location");
    let location = location
        .strip_prefix(&format!("http://{}", registry.host()))
        .unwrap_or(&location)
        .to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let (status, _, body) = http_with_headers(
        registry.port,
        "PUT",
        &format!("{location}{sep}digest={}", sha256(bytes)),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

/// Puts a crafted image into a registry as `repo:tag`.
fn put_crafted(registry: &Registry, repo: &str, tag: &str, image: &Crafted) {
    for blob in image.layers.iter().chain([&image.config]) {
        upload_blob(registry, repo, blob);
    }
    let (status, body) = http(
        registry.port,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        &image.manifest,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

/// Where a registry started by [`Registry::start`] keeps a blob.
fn registry_blob(env: &Env, registry: &str, digest: &str) -> PathBuf {
    let hex = hex_of(digest);
    env.path(&format!(
        "registry-{registry}/data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

fn truncate_half(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

/// Replaces `from` by `to` (same length) in a file.
fn rewrite(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| {
            panic!(
                "{} does not hold {:?}",
                path.display(),
                String::from_utf8_lossy(from)
            )
        });
    bytes[at..at + to.len()].copy_from_slice(to);
    std::fs::write(path, bytes).unwrap();
}

fn inspect(env: &Env, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&env.ok(&["inspect", name])).unwrap()[0].clone()
}

/// The stored blob of an image's only layer (kiln stores imported layers uncompressed, so its
/// digest is the diff id), and its config blob.
fn layer_and_config(env: &Env, name: &str) -> (String, PathBuf, PathBuf) {
    let json = inspect(env, name);
    let layer = json["RootFS"]["Layers"][0].as_str().unwrap().to_owned();
    let config = json["Id"].as_str().unwrap().to_owned();
    let blobs = env.root().join("oci/blobs/sha256");
    let layer_path = blobs.join(hex_of(&layer));
    assert!(layer_path.is_file(), "no blob for {layer}");
    (layer, layer_path, blobs.join(hex_of(&config)))
}

/// Imports the busybox rootfs plus a `/marker` file as `name`.
fn import_with_marker(env: &Env, name: &str, marker: &str, changes: &[&str]) {
    let tar = busybox_with(&[("marker", marker.as_bytes())]);
    let path = env.path(&format!("{}.tar", name.replace([':', '/'], "-")));
    std::fs::write(&path, tar).unwrap();
    let mut args = vec!["import"];
    for change in changes {
        args.extend(["--change", change]);
    }
    args.extend([path.to_str().unwrap(), name]);
    env.ok(&args);
}

fn kiln_output(env: &Env, args: &[&str]) -> Output {
    env.kiln().args(args).output().unwrap()
}

/// Finding 7: an archive or a registry image whose config lists the diff ids of someone
/// else's layers (`debian:bookworm`'s, here a busybox rootfs standing in) over its own layer.
/// Before, the load passed, and the first use unpacked the attacker's layer into the snapshot
/// of the victim's chain id: a later `FROM debian:bookworm` ran the attacker's files.
#[test]
fn layers_under_borrowed_diff_ids_are_refused_by_load_and_by_unpack() {
    let env = Env::new();
    let victim = std::fs::read(busybox_tar()).unwrap();
    let victim_diff_id = sha256(&victim);
    let evil_layer = busybox_with(&[("pwned", b"attacker's file\n")]);
    let evil_diff_id = sha256(&evil_layer);
    let substituted = Crafted::new(vec![evil_layer.clone()], vec![victim_diff_id.clone()]);

    // Substituted, from an OCI archive, a gzipped one, and a docker-archive.
    let err = load_fails(&env, "substituted-oci", &substituted.oci_members("evil:1"));
    assert!(
        err.contains(&format!("unpacks to {evil_diff_id}"))
            && err.contains(&format!("the config says {victim_diff_id}")),
        "{err}"
    );
    let gzipped = Crafted::new(vec![gzip(&evil_layer)], vec![victim_diff_id.clone()]);
    let err = load_fails(&env, "substituted-gzip", &gzipped.oci_members("evil:1"));
    assert!(err.contains(&format!("unpacks to {evil_diff_id}")), "{err}");
    let err = load_fails(
        &env,
        "substituted-docker",
        &substituted.docker_members("evil:1"),
    );
    assert!(err.contains(&format!("unpacks to {evil_diff_id}")), "{err}");

    // A layer with one byte flipped, one cut in half, one bigger than its descriptor says.
    let honest = Crafted::new(vec![gzip(&evil_layer)], vec![evil_diff_id.clone()]);
    let layer_member = format!("blobs/sha256/{}", hex_of(&sha256(&honest.layers[0])));
    let mut corrupt = honest.oci_members("evil:1");
    flip_member(&mut corrupt, &layer_member);
    let err = load_fails(&env, "corrupt", &corrupt);
    assert!(
        err.contains("digest mismatch") && err.contains(&sha256(&honest.layers[0])),
        "{err}"
    );
    let mut truncated = honest.oci_members("evil:1");
    for (name, bytes) in &mut truncated {
        if *name == layer_member {
            bytes.truncate(bytes.len() / 2);
        }
    }
    let err = load_fails(&env, "truncated", &truncated);
    assert!(err.contains(&sha256(&honest.layers[0])), "{err}");
    let lying = Crafted::lying_about_sizes(vec![evil_layer.clone()], vec![evil_diff_id.clone()], 1);
    let err = load_fails(&env, "size", &lying.oci_members("evil:1"));
    assert!(
        err.contains(&format!("{} bytes", evil_layer.len() + 1)) && err.contains(&evil_diff_id),
        "{err}"
    );
    // The honest image loads: the checks refuse lies, not images.
    env.ok(&[
        "load",
        "-i",
        {
            let path = env.path("honest.tar");
            std::fs::write(&path, tar_bytes(&honest.oci_members("honest:1"))).unwrap();
            path
        }
        .to_str()
        .unwrap(),
    ]);
    assert_eq!(
        env.ok(&["run", "--rm", "honest:1", "cat", "/pwned"]),
        "attacker's file\n"
    );
    env.ok(&["rmi", "honest:1"]);
    env.ok(&["gc"]);

    // The same lies from a registry. A pull checks each blob against its digest and size, as
    // skopeo does; the diff id is checked where the layer is first decompressed, its unpack,
    // so the lie is refused there and no snapshot is made of it.
    let registry = Registry::start(&env, "evil");
    put_crafted(&registry, "evil", "1", &substituted);
    let runner = Env::new();
    let evil_ref = format!("{}/evil:1", registry.host());
    runner.ok(&["pull", &evil_ref]);
    let context = runner.path("context");
    std::fs::create_dir_all(&context).unwrap();
    for command in [
        &["run", "--rm", &evil_ref, "cat", "/pwned"][..],
        &[
            "build",
            "-t",
            "on-evil",
            "-f",
            "-",
            context.to_str().unwrap(),
        ][..],
    ] {
        let out = runner.with_stdin(command, format!("FROM {evil_ref}\nRUN cat /pwned\n"));
        let err = assert_clean_failure(
            &out,
            &format!("kiln {} on the substituted image", command[0]),
        );
        assert!(
            err.contains(&format!("unpacks to {evil_diff_id}"))
                && err.contains(&format!("the config says {victim_diff_id}")),
            "{err}"
        );
        assert_eq!(
            entries(&runner.root().join("snapshots")),
            Vec::<String>::new(),
            "kiln {}: a snapshot was made of the lying layer",
            command[0]
        );
    }
    runner.ok(&["rmi", &evil_ref]);
    runner.ok(&["gc"]);
    assert_nothing_stored(&runner, "pull substituted, then rmi and gc");
    env.busybox_base("legit");
    let legit_ref = format!("{}/kiln/legit:1", registry.host());
    env.ok(&["push", "legit", &legit_ref]);
    let (status, manifest) = http(
        registry.port,
        "GET",
        "/v2/kiln/legit/manifests/1",
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let stored = registry_blob(&env, "evil", &layer);
    let good = std::fs::read(&stored).unwrap();
    flip_byte(&stored, good.len() / 2);
    let err = assert_clean_failure(&kiln_output(&runner, &["pull", &legit_ref]), "corrupt pull");
    assert!(
        err.contains("digest mismatch") && err.contains(&layer),
        "{err}"
    );
    assert_nothing_stored(&runner, "pull corrupt");
    std::fs::write(&stored, &good).unwrap();
    truncate_half(&stored);
    let err = assert_clean_failure(
        &kiln_output(&runner, &["pull", &legit_ref]),
        "truncated pull",
    );
    assert!(err.contains(&layer), "{err}");
    assert_nothing_stored(&runner, "pull truncated");
    std::fs::write(&stored, &good).unwrap();

    // `import` stores a tarball decompressed: its diff id is the hash of what it unpacks to.
    let gz = env.path("victim.tar.gz");
    std::fs::write(&gz, gzip(&victim)).unwrap();
    env.ok(&["import", gz.to_str().unwrap(), "imported:1"]);
    assert_eq!(
        inspect(&env, "imported:1")["RootFS"]["Layers"][0].as_str(),
        Some(victim_diff_id.as_str())
    );

    // The victim, got honestly afterwards, runs its own files.
    env.busybox_base("debian:bookworm");
    let said = env.ok(&[
        "run",
        "--rm",
        "debian:bookworm",
        "sh",
        "-c",
        "test -e /pwned && echo poisoned || echo clean",
    ]);
    assert_eq!(said.trim(), "clean");
    runner.ok(&["pull", &legit_ref]);
    assert_eq!(
        runner
            .ok(&["run", "--rm", &legit_ref, "echo", "pulled"])
            .trim(),
        "pulled"
    );
}

/// Finding 8: the store was 0755 throughout, so `nobody` could reach (and execute) a setuid
/// root file a build step left in a snapshot or a cache mount.
#[test]
fn the_store_is_closed_to_other_users() {
    let env = Env::new();
    let setpriv = require("setpriv");
    // The test dir stands in for /var/lib: open to everyone, so the store's own modes decide.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.busybox_base("bb");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nRUN mkdir /s && cp /bin/busybox /s/busybox && chmod 4755 /s/busybox\n\
         RUN --mount=type=cache,target=/cache mkdir /cache/s && cp /bin/busybox /cache/s/busybox \
         && chmod 4755 /cache/s/busybox\n",
    )
    .unwrap();
    env.build(&["-t", "suid", ctx.to_str().unwrap()]);
    env.ok(&[
        "save",
        "--compress",
        "gzip",
        "-o",
        env.path("suid.tar").to_str().unwrap(),
        "suid",
    ]);

    // The setuid files are there, as root sees them.
    let mut found = Vec::new();
    let mut dirs = vec![env.root()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() && meta.permissions().mode() & 0o4000 != 0 {
                found.push(entry.path());
            }
        }
    }
    let under = |part: &str| {
        found
            .iter()
            .find(|p| p.starts_with(env.root().join(part)))
            .cloned()
    };
    let in_snapshot = under("snapshots").expect("no setuid file in a snapshot");
    let in_cache = under("cache-mounts").expect("no setuid file in a cache mount");

    // `nobody` can neither see nor run them.
    for file in [&in_snapshot, &in_cache] {
        let out = Command::new(&setpriv)
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "stat",
                "-c",
                "%a",
            ])
            .arg(file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("Permission denied"),
            "nobody can stat {}: {}{stderr}",
            file.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        // Through a shell: setpriv itself still holds root's capabilities when it execs.
        let out = Command::new(&setpriv)
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/bin/sh",
                "-c",
            ])
            .arg(r#""$0" echo ran"#)
            .arg(file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("Permission denied"),
            "nobody ran {}: {}{stderr}",
            file.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Every directory of the store's own layout is 0700.
    for dir in [
        "",
        "oci",
        "oci/blobs",
        "oci/blobs/sha256",
        "snapshots",
        "cache",
        "tmp",
        "cache-mounts",
        "compressed",
        "compressed/gzip",
    ] {
        let path = env.root().join(dir);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
    }

    // A store made 0755 by an older kiln is closed again on its next use.
    for dir in ["", "oci", "snapshots", "cache-mounts"] {
        std::fs::set_permissions(env.root().join(dir), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    env.ok(&["images"]);
    for dir in ["", "oci", "snapshots", "cache-mounts"] {
        let mode = std::fs::metadata(env.root().join(dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o700, "{dir:?} was not tightened: {mode:o}");
    }
}

/// Finding 9: with one byte flipped in a stored layer, `save` and `push` exited 0, the
/// snapshot rebuilt from it took in the corrupt data, and a tampered config was used.
#[test]
fn a_corrupt_blob_in_the_store_is_named_by_save_push_and_unpack() {
    let env = Env::new();
    import_with_marker(&env, "flipped:1", "good-marker-flipped\n", &[]);
    import_with_marker(&env, "truncated:1", "good-marker-truncated\n", &[]);
    import_with_marker(
        &env,
        "tampered:1",
        "good-marker-tampered\n",
        &["ENV MODE=good-config"],
    );
    let (flipped, flipped_path, _) = layer_and_config(&env, "flipped:1");
    let (truncated, truncated_path, _) = layer_and_config(&env, "truncated:1");
    let (_, _, tampered_config) = layer_and_config(&env, "tampered:1");
    let config_id = inspect(&env, "tampered:1")["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    rewrite(
        &flipped_path,
        b"good-marker-flipped",
        b"bood-marker-flipped",
    );
    truncate_half(&truncated_path);
    rewrite(&tampered_config, b"MODE=good-config", b"MODE=evil-config");

    let out_dir = env.path("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = |name: &str| out_dir.join(name).to_str().unwrap().to_owned();
    for (image, blob) in [("flipped:1", &flipped), ("truncated:1", &truncated)] {
        for format in ["docker", "oci"] {
            let err = env.fails(&["save", "--format", format, "-o", &out("image.tar"), image]);
            assert!(
                err.contains(blob) && err.contains("corrupt"),
                "save {image} {format}: {err}"
            );
        }
        let err = env.fails(&["save", "--compress", "gzip", "-o", &out("image.tar"), image]);
        assert!(
            err.contains(blob) && err.contains("corrupt"),
            "save --compress {image}: {err}"
        );
        let err = env.fails(&["save", "--format", "oci-dir", "-o", &out("layout"), image]);
        assert!(
            err.contains(blob) && err.contains("corrupt"),
            "save oci-dir {image}: {err}"
        );
    }
    assert_eq!(
        entries(&out_dir),
        Vec::<String>::new(),
        "save left files behind"
    );

    let registry = Registry::start(&env, "store");
    for (image, blob) in [("flipped:1", &flipped), ("truncated:1", &truncated)] {
        let target = format!("{}/kiln/corrupt:1", registry.host());
        let err = env.fails(&["push", image, &target]);
        assert!(
            err.contains(blob) && err.contains("corrupt"),
            "push {image}: {err}"
        );
        let (status, _) = http(
            registry.port,
            "GET",
            "/v2/kiln/corrupt/manifests/1",
            &[],
            b"",
        );
        assert_eq!(status, 404, "a manifest over a corrupt blob was pushed");
    }

    // Unpacking (the first use of an image, or of a snapshot gc removed) checks the blob.
    for (image, blob) in [("flipped:1", &flipped), ("truncated:1", &truncated)] {
        let err = env.fails(&["run", "--rm", image, "cat", "/marker"]);
        assert!(
            err.contains(blob) && err.contains("corrupt"),
            "run {image}: {err}"
        );
        let ctx = env.path("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {image}\nRUN cat /marker\n"),
        )
        .unwrap();
        let err = env.fails(&["build", ctx.to_str().unwrap()]);
        assert!(
            err.contains(blob) && err.contains("corrupt"),
            "build FROM {image}: {err}"
        );
    }
    assert_eq!(entries(&env.root().join("snapshots")), Vec::<String>::new());

    // A tampered config is refused wherever it is read.
    for args in [
        &["inspect", "tampered:1"][..],
        &["run", "--rm", "tampered:1", "env"],
        &["save", "-o", &out("tampered.tar"), "tampered:1"],
    ] {
        let err = env.fails(args);
        assert!(
            err.contains(&config_id) && err.contains("corrupt"),
            "{args:?}: {err}"
        );
    }

    // What is sound still works.
    env.busybox_base("sound");
    env.ok(&["save", "-o", &out("sound.tar"), "sound"]);
    env.ok(&[
        "push",
        "sound",
        &format!("{}/kiln/sound:1", registry.host()),
    ]);
    assert_eq!(env.ok(&["run", "--rm", "sound", "echo", "ok"]).trim(), "ok");
}

/// Finding 9's `kiln check`: every blob verified, what is wrong named; `--repair` drops the
/// corrupt blobs and what depends on them.
#[test]
fn kiln_check_names_corrupt_blobs_and_repair_drops_what_depends_on_them() {
    let env = Env::new();
    let help = env.ok(&["check", "--help"]);
    assert!(
        help.contains("Example") && help.contains("kiln check --repair"),
        "{help}"
    );
    env.busybox_base("base");
    import_with_marker(&env, "flipped:1", "good-marker-flipped\n", &[]);
    import_with_marker(&env, "truncated:1", "good-marker-truncated\n", &[]);
    import_with_marker(&env, "substituted:1", "good-marker-substituted\n", &[]);
    import_with_marker(
        &env,
        "tampered:1",
        "good-marker-tampered\n",
        &["ENV MODE=good-config"],
    );
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM flipped:1\nRUN echo built > /built\n",
    )
    .unwrap();
    env.build(&["-t", "derived", ctx.to_str().unwrap()]);
    assert_eq!(env.ok(&["run", "--rm", "base", "echo", "ok"]).trim(), "ok");
    let snapshots_before = entries(&env.root().join("snapshots"));
    assert_eq!(snapshots_before.len(), 3, "{snapshots_before:?}");
    let cache_before = entries(&env.root().join("cache"));
    assert!(!cache_before.is_empty());

    let clean = kiln_output(&env, &["check"]);
    assert_success(&clean, "kiln check of a sound store");
    let said = String::from_utf8_lossy(&clean.stdout);
    assert!(said.contains("no problems"), "{said}");

    let (flipped, flipped_path, _) = layer_and_config(&env, "flipped:1");
    let (truncated, truncated_path, _) = layer_and_config(&env, "truncated:1");
    let (substituted, substituted_path, _) = layer_and_config(&env, "substituted:1");
    let (_, base_path, _) = layer_and_config(&env, "base");
    let (_, _, tampered_config) = layer_and_config(&env, "tampered:1");
    let config_id = inspect(&env, "tampered:1")["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    rewrite(
        &flipped_path,
        b"good-marker-flipped",
        b"bood-marker-flipped",
    );
    let truncated_size = std::fs::metadata(&truncated_path).unwrap().len();
    truncate_half(&truncated_path);
    std::fs::copy(&base_path, &substituted_path).unwrap();
    rewrite(&tampered_config, b"MODE=good-config", b"MODE=evil-config");

    let out = kiln_output(&env, &["check"]);
    let err = assert_clean_failure(&out, "kiln check of a corrupt store");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    for blob in [&flipped, &substituted, &config_id] {
        assert!(
            said.lines()
                .any(|l| l.contains(blob.as_str()) && l.contains("content hashes to")),
            "{blob} not reported:\n{said}"
        );
    }
    assert!(
        said.lines().any(|l| l.contains(&truncated)
            && l.contains(&format!("{} of {truncated_size} bytes", truncated_size / 2))),
        "truncation not reported:\n{said}"
    );
    for image in [
        "flipped:1",
        "truncated:1",
        "substituted:1",
        "tampered:1",
        "derived:latest",
    ] {
        assert!(said.contains(image), "{image} not named:\n{said}");
    }
    assert!(!said.contains("base:latest"), "{said}");
    assert!(
        err.contains("4 corrupt blobs") && err.contains("kiln check --repair"),
        "{err}"
    );

    let out = kiln_output(&env, &["check", "--repair"]);
    assert_success(&out, "kiln check --repair");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    for blob in [&flipped, &truncated, &substituted, &config_id] {
        assert!(
            said.contains(&format!("removed blob {blob}")),
            "{blob}:\n{said}"
        );
    }
    for image in [
        "flipped:1",
        "truncated:1",
        "substituted:1",
        "tampered:1",
        "derived:latest",
    ] {
        assert!(
            said.contains(&format!("removed image {image}")),
            "{image}:\n{said}"
        );
    }
    assert!(said.contains("removed 2 snapshots"), "{said}");
    assert!(
        said.contains(&format!("{} cache records", cache_before.len())),
        "{said}"
    );

    let after = kiln_output(&env, &["check"]);
    assert_success(&after, "kiln check after the repair");
    let images = env.ok(&["images"]);
    assert_eq!(images.lines().count(), 2, "{images}");
    assert!(images.contains("base"), "{images}");
    assert_eq!(entries(&env.root().join("snapshots")).len(), 1);
    assert_eq!(entries(&env.root().join("cache")), Vec::<String>::new());
    assert_eq!(env.ok(&["run", "--rm", "base", "echo", "ok"]).trim(), "ok");
    // The image can be had again, whole.
    import_with_marker(&env, "flipped:1", "good-marker-flipped\n", &[]);
    assert_eq!(
        env.ok(&["run", "--rm", "flipped:1", "cat", "/marker"]),
        "good-marker-flipped\n"
    );
}

/// Finding 10: manifests were read whole into memory, however big. kiln now takes up to
/// 4 MiB, as containerd does, from archives and registries.
#[test]
fn manifests_over_4_mib_are_refused() {
    let env = Env::new();
    let layer = busybox_with(&[]);
    let image = Crafted::new(vec![layer.clone()], vec![sha256(&layer)]);
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["annotations"] = serde_json::json!({ "padding": "x".repeat(5 << 20) });
    let big = Crafted {
        manifest: serde_json::to_vec(&manifest).unwrap(),
        ..image
    };
    let err = load_fails(&env, "big-manifest", &big.oci_members("big:1"));
    assert!(
        err.contains(&sha256(&big.manifest)) && err.contains("4 MiB"),
        "{err}"
    );

    let port = fake_registry(vec![(
        "/v2/big/manifests/1",
        OCI_MANIFEST,
        String::from_utf8(big.manifest.clone()).unwrap(),
    )]);
    let err = env.fails(&["pull", &format!("127.0.0.1:{port}/big:1")]);
    assert!(err.contains("4 MiB"), "{err}");
    assert_nothing_stored(&env, "pull of a big manifest");
}
