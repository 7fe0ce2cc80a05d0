//! Multi-platform images: one command builds for amd64 and arm64 into one index, foreign RUN
//! steps run under qemu-user, `FROM --platform=$BUILDPLATFORM` stages run natively, and the
//! index survives save, push and pull.

use std::process::Command;

use crate::registry::Registry;
use crate::util::{Env, docker, require, require_emulation, run};

/// What a stage learns about where it runs, as one line.
const SHOW: &str = "echo \"TARGETPLATFORM=$TARGETPLATFORM TARGETOS=$TARGETOS \
    TARGETARCH=$TARGETARCH TARGETVARIANT=$TARGETVARIANT BUILDPLATFORM=$BUILDPLATFORM \
    BUILDOS=$BUILDOS BUILDARCH=$BUILDARCH BUILDVARIANT=$BUILDVARIANT\"";

fn cross_dockerfile() -> String {
    format!(
        "FROM --platform=$BUILDPLATFORM bb AS tools\n\
         ARG TARGETARCH\n\
         RUN echo \"tools-on-$(uname -m)-for-$TARGETARCH\" > /tools && cat /tools\n\
         FROM bb\n\
         ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT\n\
         COPY --from=tools /tools /tools\n\
         RUN {SHOW} > /args && echo \"final-on-$(uname -m)\"\n"
    )
}

#[test]
fn two_platforms_build_into_one_index_that_skopeo_docker_and_kiln_read() {
    require_emulation("arm64");
    let env = Env::new();
    env.busybox_base_for("bb", "amd64");
    env.busybox_base_for("bb", "arm64");
    let registry = Registry::start(&env, "platforms");
    let ctx = env.context("cross", &cross_dockerfile(), &[]);
    let target = format!("{}/kiln/cross:1", registry.host());
    let (index, log) = env.build(&[
        "--no-lint",
        "--platform",
        "linux/amd64,linux/arm64",
        "--push",
        "-t",
        &target,
        &ctx,
    ]);
    // The cross stage runs natively for both targets; the final stages run on their own.
    assert!(log.contains("tools-on-x86_64-for-amd64"), "{log}");
    assert!(log.contains("tools-on-x86_64-for-arm64"), "{log}");
    assert!(!log.contains("tools-on-aarch64"), "{log}");
    assert!(log.contains("final-on-x86_64"), "{log}");
    assert!(log.contains("final-on-aarch64"), "{log}");
    assert!(log.contains("[linux/arm64 stage-1 "), "{log}");
    assert!(index.trim().starts_with("sha256:"), "{index}");

    let raw = run(Command::new(require("skopeo")).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]));
    let value: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        value["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let arches: Vec<&str> = value["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);

    run(docker().args(["pull", "-q", "--platform", "linux/arm64", &target]));
    let machine = run(docker().args([
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        &target,
        "uname",
        "-m",
    ]));
    assert_eq!(machine.trim(), "aarch64");
    let args = run(docker().args([
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        &target,
        "cat",
        "/args",
    ]));
    assert!(
        args.contains("TARGETPLATFORM=linux/arm64 TARGETOS=linux TARGETARCH=arm64"),
        "{args}"
    );
    assert!(
        args.contains("BUILDPLATFORM=linux/amd64 BUILDOS=linux BUILDARCH=amd64"),
        "{args}"
    );
    let _ = Command::new("/usr/bin/docker")
        .args(["rmi", "-f", &target])
        .output();

    let store_name = target.clone();
    let out = env.ok(&[
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        &store_name,
        "uname",
        "-m",
    ]);
    assert_eq!(out.trim(), "aarch64");
    let out = env.ok(&["run", "--rm", &store_name, "uname", "-m"]);
    assert_eq!(out.trim(), "x86_64", "the host's platform by default");

    // Save: OCI keeps the index; docker's archive needs one platform.
    let oci = env.path("cross.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        oci.to_str().unwrap(),
        &store_name,
    ]);
    let raw = run(Command::new(require("skopeo")).args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}", oci.display()),
    ]));
    assert!(raw.contains("\"architecture\": \"arm64\""), "{raw}");
    let stderr = env.fails(&[
        "save",
        "-o",
        env.path("d.tar").to_str().unwrap(),
        &store_name,
    ]);
    assert!(stderr.contains("choose one with --platform"), "{stderr}");
    assert!(!env.path("d.tar").exists(), "nothing half-written");
    env.ok(&[
        "save",
        "--platform",
        "linux/arm64",
        "-o",
        env.path("d.tar").to_str().unwrap(),
        &store_name,
    ]);
    // The store stays sound: check and gc keep both platforms.
    assert!(env.ok(&["check"]).contains("no problems"));
    env.ok(&["gc"]);
    let out = env.ok(&[
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        &store_name,
        "cat",
        "/tools",
    ]);
    assert_eq!(out.trim(), "tools-on-x86_64-for-arm64");
}

#[test]
fn target_and_build_args_match_docker_buildkit() {
    // A stage on the build platform sees the target's TARGET* values, with both builders.
    // (docker 20.10 keeps one platform per local image name and looks for any other in a
    // registry, so the stage runs on the host's platform, as cross-compiling stages do.)
    let env = Env::new();
    env.busybox_base("kiln-plat/bb");
    crate::util::kiln_to_docker(&env, "kiln-plat/bb");
    let dockerfile = format!(
        "FROM --platform=$BUILDPLATFORM kiln-plat/bb\n\
         ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT\n\
         RUN {SHOW} > /args\n"
    );
    let ctx = env.context("args", &dockerfile, &[]);
    for platform in ["linux/arm64", "linux/arm/v7"] {
        env.build(&[
            "--no-lint",
            "--platform",
            platform,
            "-t",
            "kiln-plat/args",
            &ctx,
        ]);
        let ours = env.ok(&["run", "--rm", "kiln-plat/args", "cat", "/args"]);
        run(docker().env("DOCKER_BUILDKIT", "1").args([
            "build",
            "-q",
            "--platform",
            platform,
            "-t",
            "kiln-plat/args-docker",
            &ctx,
        ]));
        let theirs = run(docker().args(["run", "--rm", "kiln-plat/args-docker", "cat", "/args"]));
        assert!(
            ours.contains(&format!("TARGETPLATFORM={platform} ")),
            "{ours}"
        );
        assert_eq!(ours, theirs, "for {platform}");
    }
}

/// The `TARGETPLATFORM=…` lines a build log holds, sorted (whatever prefixes the builder
/// gives its RUN output).
fn args_lines(log: &str) -> Vec<String> {
    let mut lines: Vec<String> = log
        .lines()
        .filter_map(|l| {
            l.find("TARGETPLATFORM=")
                .map(|i| l[i..].trim_end().to_owned())
        })
        .filter(|l| !l.contains('$'))
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

#[test]
fn target_and_build_args_match_buildah_for_a_platform_list() {
    // buildah 1.28 takes a platform list's bases from a registry (not from a local manifest
    // list, and it ignores `FROM --platform`), so both builders start from the same
    // two-platform base pushed to one; each prints what each platform's stage saw.
    require_emulation("arm64");
    let buildah = require("buildah");
    let env = Env::new();
    env.busybox_base_for("bb", "amd64");
    env.busybox_base_for("bb", "arm64");
    let registry = Registry::start(&env, "buildah-list");
    let base = format!("{}/kiln-plat/bb:1", registry.host());
    env.ok(&["tag", "bb", &base]);
    env.ok(&["push", &base]);
    let storage = env.path("buildah-storage");
    let dockerfile = format!(
        "FROM {base}\n\
         ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT\n\
         RUN {SHOW}\n"
    );
    let ctx = env.context("list", &dockerfile, &[]);
    let platforms = "linux/amd64,linux/arm64";
    let (out, ours) = env.build_output(&["--no-lint", "--platform", platforms, &ctx]);
    crate::util::assert_success(&out, "kiln build --platform list");
    let theirs = Command::new(&buildah)
        .arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"))
        .args(["--storage-driver", "vfs", "bud", "--isolation", "chroot"])
        .args(["--tls-verify=false", "--platform", platforms])
        .args(["--manifest", "kiln-plat-list", &ctx])
        .output()
        .unwrap();
    crate::util::assert_success(&theirs, "buildah bud --platform list");
    let theirs = String::from_utf8_lossy(&theirs.stdout).into_owned();
    let ours = args_lines(&ours);
    assert_eq!(ours.len(), 2, "one line per platform:\n{ours:?}");
    assert!(
        ours.iter()
            .any(|l| l.starts_with("TARGETPLATFORM=linux/arm64 ")),
        "{ours:?}"
    );
    assert_eq!(ours, args_lines(&theirs));
}

#[test]
fn bad_platforms_fail_early_and_leave_the_store_as_it_was() {
    let env = Env::new();
    env.busybox_base("bb");
    let ctx = env.context("bad", "FROM bb\nRUN echo ran-$((6*7))\n", &[]);
    let before = env.blobs();
    let stderr = env.fails(&[
        "build",
        "--no-lint",
        "--platform",
        "linux/bogus",
        "-t",
        "x",
        &ctx,
    ]);
    assert!(
        stderr.contains("unknown architecture \"bogus\""),
        "{stderr}"
    );
    let stderr = env.fails(&[
        "build",
        "--no-lint",
        "--platform",
        "windows/amd64",
        "-t",
        "x",
        &ctx,
    ]);
    // Another OS is a platform as BuildKit's (a stage that runs nothing builds for it); bb
    // has no image for it.
    assert!(
        stderr.contains("bb has no image for windows/amd64"),
        "{stderr}"
    );
    // bb exists for amd64 only.
    let stderr = env.fails(&[
        "build",
        "--no-lint",
        "--platform",
        "linux/arm64",
        "-t",
        "x",
        &ctx,
    ]);
    assert!(stderr.contains("has no image for linux/arm64"), "{stderr}");
    assert!(!stderr.contains("ran-42"), "nothing ran: {stderr}");
    let stderr = env.fails(&[
        "build",
        "--no-lint",
        "--platform",
        "linux/amd64,linux/amd64",
        &ctx,
    ]);
    assert!(stderr.contains("given twice"), "{stderr}");
    let stderr = env.fails(&[
        "build",
        "--no-lint",
        &env.context("badfrom", "FROM --platform=linux/nope bb\nRUN true\n", &[]),
    ]);
    assert!(stderr.contains("FROM --platform=linux/nope"), "{stderr}");
    assert_eq!(before, env.blobs(), "the store is as it was");
}
