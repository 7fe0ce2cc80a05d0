//! The store, import, load and save, judged by docker, skopeo and umoci.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::*;

#[test]
fn import_then_save_loads_into_docker_with_the_same_files() {
    let env = Env::new();
    env.busybox_base("kiln-e2e/busybox:import");
    let images = env.ok(&["images"]);
    assert!(
        images.contains("kiln-e2e/busybox") && images.contains("import"),
        "{images}"
    );
    let save = env
        .kiln()
        .args(["save", "kiln-e2e/busybox:import"])
        .output()
        .unwrap();
    assert_success(&save, "kiln save");
    let mut load = docker()
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    load.stdin.take().unwrap().write_all(&save.stdout).unwrap();
    let out = load.wait_with_output().unwrap();
    assert_success(&out, "docker load");
    let listing = run(docker().args([
        "run",
        "--rm",
        "kiln-e2e/busybox:import",
        "ls",
        "/bin/busybox",
        "/etc/passwd",
    ]));
    assert_eq!(listing.lines().count(), 2, "{listing}");
}

#[test]
fn skopeo_and_umoci_read_the_store_and_the_oci_archive() {
    let env = Env::new();
    require("skopeo");
    require("umoci");
    env.busybox_base("bb:oci");
    let store_ref = format!("oci:{}:bb:oci", env.root().join("oci").display());
    let inspected = run(Command::new("skopeo").args(["inspect", &store_ref]));
    assert!(inspected.contains("\"Layers\""), "{inspected}");

    let archive = env.path("bb.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "bb:oci",
    ]);
    let inspected = run(
        Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", archive.display())])
    );
    assert!(inspected.contains("\"Layers\""), "{inspected}");

    let layout = env.path("layout");
    env.ok(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        layout.to_str().unwrap(),
        "bb:oci",
    ]);
    let bundle = env.path("bundle");
    run(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:bb:oci", layout.display()),
        bundle.to_str().unwrap(),
    ]));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    // umoci also reads the store in place.
    let bundle2 = env.path("bundle2");
    run(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:bb:oci", env.root().join("oci").display()),
        bundle2.to_str().unwrap(),
    ]));
    assert!(bundle2.join("rootfs/etc/passwd").is_file());
}

#[test]
fn a_docker_saved_image_round_trips_through_kiln() {
    let env = Env::new();
    let tar = busybox_tar();
    let name = "kiln-e2e/roundtrip:1";
    run(docker().args([
        "import",
        "--change",
        "ENV FOO=bar",
        "--change",
        "CMD [\"/bin/sh\"]",
        tar.to_str().unwrap(),
        name,
    ]));
    let saved = env.path("docker.tar");
    run(docker().args(["save", "-o", saved.to_str().unwrap(), name]));
    let before = run(docker().args([
        "image",
        "inspect",
        "--format",
        "{{json .Config}} {{json .RootFS}}",
        name,
    ]));
    env.ok(&["load", "-i", saved.to_str().unwrap()]);
    run(docker().args(["rmi", name]));
    let resaved = env.kiln().args(["save", name]).output().unwrap();
    assert_success(&resaved, "kiln save");
    let mut load = docker()
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    load.stdin
        .take()
        .unwrap()
        .write_all(&resaved.stdout)
        .unwrap();
    assert_success(&load.wait_with_output().unwrap(), "docker load");
    let after = run(docker().args([
        "image",
        "inspect",
        "--format",
        "{{json .Config}} {{json .RootFS}}",
        name,
    ]));
    assert_eq!(before, after);
}

#[test]
fn bad_input_fails_cleanly() {
    let env = Env::new();
    let junk = env.path("junk.tar");
    std::fs::write(
        &junk,
        b"this is not a tar archive at all, not even close............",
    )
    .unwrap();
    let err = env.fails(&["import", junk.to_str().unwrap(), "junk"]);
    assert!(err.contains("import failed"), "{err}");
    let err = env.fails(&["load", "-i", junk.to_str().unwrap()]);
    assert!(err.contains("load failed"), "{err}");
    let err = env.fails(&["import", env.path("missing.tar").to_str().unwrap(), "x"]);
    assert!(err.contains("missing.tar"), "{err}");
    let err = env.fails(&["inspect", "no-such-image"]);
    assert!(err.contains("hint:"), "{err}");
    let err = env.fails(&["tag", "no-such-image", "x"]);
    assert!(err.contains("no-such-image"), "{err}");
    env.busybox_base("ok");
    let err = env.fails(&["tag", "ok", "Not/A:Valid:Name"]);
    assert!(err.contains("invalid image reference"), "{err}");
    assert!(env.ok(&["images"]).contains("ok"));
}

#[test]
fn gc_removes_what_no_name_reaches() {
    let env = Env::new();
    env.busybox_base("gc:1");
    env.ok(&["rmi", "gc:1"]);
    let out = env.ok(&["gc"]);
    assert!(out.starts_with("removed 3 blobs"), "{out}");
    let blobs = std::fs::read_dir(env.root().join("oci/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}
