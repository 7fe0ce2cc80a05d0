//! `kiln analyze` and `kiln history`: where the bytes go, against numbers known by
//! construction, on store images, kiln and docker archives, and on the seed's two images.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// Content size of a tar (sum of the sizes `tar -tv` lists for regular files), measured by
/// GNU tar, not by kiln.
fn tar_content_size(tar: &Path) -> u64 {
    require("tar");
    let listing = run(Command::new("tar").arg("-tvf").arg(tar));
    listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no size in tar listing line {l:?}"))
        })
        .sum()
}

fn analyze_json(env: &Env, target: &str) -> Value {
    let out = env.ok(&["analyze", "--format", "json", "--top", "1000", target]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("analyze json: {e}\n{out}"))
}

/// Builds the crafted image: busybox, then a 1 MB file, a 300 kB file, the first file
/// overwritten by a 250 kB one, and the 300 kB file deleted by a RUN.
fn crafted(env: &Env) {
    env.busybox_base("bb:1");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let bytes = |n: usize, seed: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    std::fs::write(ctx.join("one.bin"), bytes(1_000_000, 1)).unwrap();
    std::fs::write(ctx.join("gone.bin"), bytes(300_000, 2)).unwrap();
    std::fs::write(ctx.join("two.bin"), bytes(250_000, 3)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nCOPY one.bin /data/one.bin\nCOPY gone.bin /data/gone.bin\nCOPY two.bin /data/one.bin\nRUN rm /data/gone.bin\n",
    )
    .unwrap();
    env.build(&["--no-lint", "-t", "crafted", ctx.to_str().unwrap()]);
}

/// The numbers dive's definition gives for the crafted image, computed by hand:
/// - every busybox path is stored once: its smallest copy is its only copy (B bytes);
/// - /data/one.bin: 1,000,000 + 250,000 stored, the smallest copy is 250,000;
/// - /data/gone.bin: 300,000 stored, then a whiteout (a deleted file adds 0), smallest 0.
///
/// efficiency = (B + 250,000) / (B + 1,550,000); wasted = 1,250,000 + 300,000 (dive counts
/// every copy of an inefficient path); reclaimable = 1,000,000 + 300,000; user size = the
/// four upper layers = 1,550,000; user wasted = 1.0.
fn assert_crafted_numbers(doc: &Value, base: u64) {
    let image = &doc["image"];
    let efficiency = (base + 250_000) as f64 / (base + 1_550_000) as f64;
    assert_eq!(image["sizeBytes"], base + 1_550_000, "{doc:#}");
    assert_eq!(image["userSizeBytes"], 1_550_000, "{doc:#}");
    assert_eq!(
        image["efficiencyScore"].as_f64(),
        Some(efficiency),
        "{doc:#}"
    );
    assert_eq!(image["inefficientBytes"], 1_550_000, "{doc:#}");
    assert_eq!(image["reclaimableBytes"], 1_300_000, "{doc:#}");
    assert_eq!(image["userWastedPercent"].as_f64(), Some(1.0), "{doc:#}");
    let files = image["fileReference"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{doc:#}");
    assert_eq!(files[0]["path"], "/data/one.bin");
    assert_eq!(files[0]["sizeBytes"], 1_250_000);
    assert_eq!(files[0]["layers"], serde_json::json!([1, 3]));
    assert_eq!(files[1]["path"], "/data/gone.bin");
    assert_eq!(files[1]["sizeBytes"], 300_000);
    assert_eq!(files[1]["layers"], serde_json::json!([2, 4]));
    let sizes: Vec<u64> = doc["layer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["sizeBytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [base, 1_000_000, 300_000, 250_000, 0]);
    let hidden: Vec<u64> = doc["layer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["hiddenBytes"].as_u64().unwrap())
        .collect();
    assert_eq!(hidden, [0, 1_000_000, 300_000, 0, 0]);
}

#[test]
fn crafted_image_gives_the_hand_computed_waste_from_store_and_archives() {
    let env = Env::new();
    crafted(&env);
    let base = tar_content_size(&busybox_tar());
    assert_crafted_numbers(&analyze_json(&env, "crafted"), base);

    // The same image as kiln's docker-archive and OCI archive, read in place.
    for format in ["docker", "oci"] {
        let file = env.path(&format!("crafted-{format}.tar"));
        env.ok(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            "crafted",
        ]);
        assert_crafted_numbers(&analyze_json(&env, file.to_str().unwrap()), base);
    }

    // And as docker itself saves it, after loading kiln's archive into docker.
    let docker_in = env.path("crafted-docker.tar");
    run(docker().arg("load").arg("-i").arg(&docker_in));
    let docker_out = env.path("docker-saved.tar");
    run(docker()
        .arg("save")
        .arg("-o")
        .arg(&docker_out)
        .arg("crafted:latest"));
    let _ = docker().args(["rmi", "crafted:latest"]).output();
    assert_crafted_numbers(&analyze_json(&env, docker_out.to_str().unwrap()), base);
}

#[test]
fn ci_gates_fail_with_exit_1_only_when_crossed() {
    let env = Env::new();
    crafted(&env);
    let status = |args: &[&str]| {
        let out = env.kiln().arg("analyze").args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), stdout)
    };
    let (code, stdout) = status(&["--highest-wasted-bytes", "1MB", "crafted"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("FAIL: highestWastedBytes"), "{stdout}");
    let (code, stdout) = status(&["--highest-wasted-bytes", "1550000", "crafted"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("PASS: highestWastedBytes"), "{stdout}");
    let (code, _) = status(&["--lowest-efficiency", "0.9", "crafted"]);
    assert_eq!(code, Some(1));
    let (code, _) = status(&["--lowest-efficiency", "50%", "crafted"]);
    assert_eq!(code, Some(0));
    let (code, stdout) = status(&[
        "--highest-user-wasted-percent",
        "0.1",
        "--format",
        "json",
        "crafted",
    ]);
    assert_eq!(code, Some(1));
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["ci"]["pass"], false);
    let (code, _) = status(&["--highest-user-wasted-percent", "100%", "crafted"]);
    assert_eq!(code, Some(0));
    let err = env.fails(&["analyze", "no-such-image"]);
    assert!(err.contains("no-such-image"), "{err}");
}

#[test]
fn history_sizes_are_content_sizes_as_in_docker_history() {
    let env = Env::new();
    crafted(&env);
    let doc: Value =
        serde_json::from_str(&env.ok(&["history", "--format", "json", "crafted"])).unwrap();
    let sizes: Vec<u64> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["Size"].as_u64().unwrap())
        .collect();
    // Newest first: RUN rm (0), COPY two (250 kB), COPY gone (300 kB), COPY one (1 MB), base.
    let base = tar_content_size(&busybox_tar());
    assert_eq!(&sizes[..5], [0, 250_000, 300_000, 1_000_000, base]);
    let table = env.ok(&["history", "crafted"]);
    assert!(table.contains("250kB") && table.contains("1MB"), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("IMAGE "), "{table}");
    assert!(!lines[1].starts_with("<missing>"), "{table}");
    assert!(
        lines[2..].iter().all(|l| l.starts_with("<missing>")),
        "{table}"
    );
    assert_eq!(doc[1]["ID"], "<missing>");
}

/// Sum of the sizes of the files under `dir` in an image, measured inside a container.
fn files_size_in(env: &Env, image: &str, dir: &str) -> u64 {
    let out = env.ok(&[
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        &format!("find {dir} -type f -printf '%s\\n' | awk '{{s+=$1}} END {{print s+0}}'"),
    ]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("size of {dir} in {image}: {e}: {out:?}"))
}

fn example_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-base")
}

fn lint_data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-lint/tests/data")
        .join(name)
}

/// Acceptance 2 and 4 in one store (one Debian base, shared apt work): the seed's right
/// image, its wrong practice (clean-up in a RUN of its own), and `kiln init python`'s slim
/// template, built, run and measured.
#[test]
#[allow(clippy::print_stderr)]
fn seed_images_wrong_practice_wastes_the_apt_lists() {
    let env = Env::new();
    env.debian_base("debian:bookworm");
    let context = example_dir();
    let context = context.to_str().unwrap();
    env.build(&["--no-lint", "-t", "seed-right", context]);
    let wrong = lint_data("seed-wrong.Dockerfile");
    env.build(&[
        "--no-lint",
        "-t",
        "seed-wrong",
        "-f",
        wrong.to_str().unwrap(),
        context,
    ]);

    // The real size of the lists: the wrong Dockerfile's install step alone (a cache hit),
    // measured inside a container.
    let install_only = env.path("install-only");
    std::fs::create_dir_all(&install_only).unwrap();
    let text = std::fs::read_to_string(&wrong).unwrap();
    let cut = text.find("RUN rm -rf").unwrap();
    std::fs::write(install_only.join("Dockerfile"), &text[..cut]).unwrap();
    let (_, stderr) = env.build(&[
        "--no-lint",
        "-t",
        "seed-install",
        install_only.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("CACHED"),
        "the install step should be reused:\n{stderr}"
    );
    let lists = files_size_in(&env, "seed-install", "/var/lib/apt/lists");
    assert!(
        lists > 10_000_000,
        "apt lists of bookworm are tens of MB, got {lists}"
    );

    let right = analyze_json(&env, "seed-right");
    let wrong = analyze_json(&env, "seed-wrong");
    let top = &wrong["image"]["fileReference"][0];
    assert!(
        top["path"]
            .as_str()
            .unwrap()
            .starts_with("/var/lib/apt/lists/"),
        "top waste of the wrong practice: {top:#}"
    );
    let listed: u64 = wrong["image"]["fileReference"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["path"]
                .as_str()
                .unwrap()
                .starts_with("/var/lib/apt/lists/")
        })
        .map(|f| f["sizeBytes"].as_u64().unwrap())
        .sum();
    assert_eq!(listed, lists, "wasted apt lists vs their real size");
    let eff_right = right["image"]["efficiencyScore"].as_f64().unwrap();
    let eff_wrong = wrong["image"]["efficiencyScore"].as_f64().unwrap();
    eprintln!(
        "seed right: {} bytes, efficiency {eff_right:.6}, wasted {}; seed wrong: {} bytes, efficiency {eff_wrong:.6}, wasted {}, apt lists {lists} bytes, top {}",
        right["image"]["sizeBytes"],
        right["image"]["inefficientBytes"],
        wrong["image"]["sizeBytes"],
        wrong["image"]["inefficientBytes"],
        top
    );
    assert!(
        eff_wrong < eff_right,
        "efficiency wrong {eff_wrong} vs right {eff_right}"
    );
    // The right practice removes the lists in the install's own RUN: what it "wastes" under
    // /var/lib/apt/lists is only the base image's empty lock file and partial/ directory.
    let right_lists: u64 = right["image"]["fileReference"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["path"]
                .as_str()
                .unwrap()
                .starts_with("/var/lib/apt/lists/")
        })
        .map(|f| f["sizeBytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        right_lists, 0,
        "the right practice wastes no apt-list bytes"
    );

    // kiln init python (slim): lints clean, builds, runs python3 -V, and is smaller.
    let slim = env.path("slim");
    env.ok(&["init", "python", slim.to_str().unwrap()]);
    let lint = env.ok(&["lint", slim.join("Dockerfile").to_str().unwrap()]);
    assert_eq!(lint, "", "the template lints clean");
    let (_, stderr) = env.build(&["-t", "py-slim", slim.to_str().unwrap()]);
    assert!(
        !stderr.contains("KL0"),
        "no lint warnings in the build:\n{stderr}"
    );
    let version = env.ok(&["run", "--rm", "py-slim", "python3", "-V"]);
    assert!(version.starts_with("Python 3."), "{version}");
    let slim_doc = analyze_json(&env, "py-slim");
    let size = |d: &Value| d["image"]["sizeBytes"].as_u64().unwrap();
    eprintln!(
        "seed right: {} bytes, efficiency {eff_right:.6}, wasted {} bytes; seed wrong: {} bytes, efficiency {eff_wrong:.6}, wasted {} bytes (apt lists {lists}); init slim: {} bytes, efficiency {:.6}",
        size(&right),
        right["image"]["inefficientBytes"],
        size(&wrong),
        wrong["image"]["inefficientBytes"],
        size(&slim_doc),
        slim_doc["image"]["efficiencyScore"].as_f64().unwrap()
    );
    assert!(
        size(&slim_doc) < size(&right),
        "slim {} vs seed {}",
        size(&slim_doc),
        size(&right)
    );
}
