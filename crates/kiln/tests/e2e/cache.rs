//! The build cache outside the store, as BuildKit has it: `--cache-to/--cache-from` of
//! `type=local` (an OCI layout directory) and `type=inline` (in the pushed image's config),
//! `mode=min|max`, merges of several exports, and the errors of bad specs. Each runner is an
//! [`Env`] of its own, with an empty store.

use std::path::Path;

use crate::registry::Registry;
use crate::util::*;

/// A stage `inter` whose result only a COPY of the final stage reads, and the final stage.
const TWO_STAGES: &str = "FROM bb AS inter\nRUN echo inter-ran && echo inter > /inter\n\
FROM bb\nCOPY --from=inter /inter /inter\nRUN echo final-ran && echo final > /final\n\
ENV DONE=1\n";

/// Two targets that share nothing but their base.
const TWO_TARGETS: &str = "FROM bb AS a\nRUN echo a-ran && echo a > /a\nENV A=1\n\
FROM bb AS b\nRUN echo b-ran && echo b > /b\nENV B=1\n";

/// The base `bb` as an OCI archive, for every runner of a test: an import stamps its own time,
/// so runners that imported it each would have bases of different digests, and no shared keys.
fn base_archive() -> (Env, String) {
    let seed = Env::new();
    seed.busybox_base("bb");
    let tar = seed.path("bb.tar").to_string_lossy().into_owned();
    seed.ok(&["save", "--format", "oci", "-o", &tar, "bb"]);
    (seed, tar)
}

/// A runner with an empty store, the base loaded and the Dockerfile written.
fn runner(base: &(Env, String), dockerfile: &str) -> (Env, String) {
    let env = Env::new();
    env.ok(&["load", "-i", &base.1]);
    let ctx = env.context("ctx", dockerfile, &[]);
    (env, ctx)
}

fn build(env: &Env, args: &[&str]) -> String {
    let (out, err) = env.build(args);
    format!("{out}{err}")
}

/// The image id (config digest) of an image in a store.
fn image_id(env: &Env, name: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
    json[0]["Id"].as_str().unwrap().to_owned()
}

/// Whether the step whose instruction contains `instruction` was a cache hit.
fn cached(log: &str, instruction: &str) -> bool {
    let step = step_log(log, instruction);
    step.contains(&"CACHED") && !step.iter().any(|l| l.starts_with("committed"))
}

/// Asserts that every step of the log was a cache hit, and that there were some.
fn all_cached(log: &str) {
    let steps = log
        .lines()
        .filter(|l| l.starts_with('#') && l.contains("] ") && !l.contains("] FROM "))
        .count();
    assert!(steps > 0, "no steps in the log:\n{log}");
    assert_eq!(log.matches(" CACHED").count(), steps, "{log}");
    assert!(!log.contains("-ran\n"), "a RUN ran:\n{log}");
}

#[test]
fn local_cache_round_trip_gives_every_step_cached_and_the_same_image() {
    let dockerfile = "FROM bb\nRUN echo one-ran && echo one > /one\nENV X=1\n\
                      RUN echo two-ran && echo two > /two\n";
    let base = base_archive();
    let (a, ctx) = runner(&base, dockerfile);
    let dir = a.path("cache-dir");
    let to = format!("type=local,dest={}", dir.display());
    let log = build(&a, &["--cache-to", &to, "-t", "app", &ctx]);
    assert!(log.contains("exported 3 cache records"), "{log}");
    for file in ["oci-layout", "index.json", "blobs/sha256"] {
        assert!(dir.join(file).exists(), "{file} missing in the cache dir");
    }
    let (b, ctx) = runner(&base, dockerfile);
    let from = format!("type=local,src={}", dir.display());
    let log = build(&b, &["--cache-from", &from, "-t", "app", &ctx]);
    all_cached(&log);
    assert_eq!(image_id(&a, "app"), image_id(&b, "app"));
    assert_eq!(b.ok(&["run", "--rm", "app", "cat", "/two"]).trim(), "two");
}

#[test]
fn local_cache_exports_of_two_targets_merge() {
    let base = base_archive();
    let (a, ctx) = runner(&base, TWO_TARGETS);
    let dir = a.path("cache-dir");
    let to = format!("type=local,dest={}", dir.display());
    build(&a, &["--target", "a", "--cache-to", &to, "-t", "a", &ctx]);
    // Another runner, another target, the same directory.
    let (b, ctx_b) = runner(&base, TWO_TARGETS);
    build(&b, &["--target", "b", "--cache-to", &to, "-t", "b", &ctx_b]);
    let (c, ctx_c) = runner(&base, TWO_TARGETS);
    let from = format!("type=local,src={}", dir.display());
    for (target, built_by) in [("a", &a), ("b", &b)] {
        let log = build(
            &c,
            &[
                "--target",
                target,
                "--cache-from",
                &from,
                "-t",
                target,
                &ctx_c,
            ],
        );
        all_cached(&log);
        assert_eq!(image_id(built_by, target), image_id(&c, target));
    }
}

#[test]
fn mode_min_exports_the_final_stage_and_mode_max_every_stage() {
    let base = base_archive();
    let (a, ctx) = runner(&base, TWO_STAGES);
    let min_dir = a.path("min");
    let max_dir = a.path("max");
    let log = build(
        &a,
        &[
            "--cache-to",
            &format!("type=local,dest={}", min_dir.display()),
            &ctx,
        ],
    );
    // The final stage's COPY, RUN and ENV.
    assert!(log.contains("exported 3 cache records"), "{log}");
    let log = build(
        &a,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", max_dir.display()),
            &ctx,
        ],
    );
    assert!(log.contains("exported 4 cache records"), "{log}");
    let (b, ctx) = runner(&base, TWO_STAGES);
    let from = format!("type=local,src={}", max_dir.display());
    let log = build(&b, &["--cache-from", &from, &ctx]);
    assert!(cached(&log, "RUN echo inter-ran"), "{log}");
    all_cached(&log);
    let (c, ctx) = runner(&base, TWO_STAGES);
    let from = format!("type=local,src={}", min_dir.display());
    let log = build(&c, &["--cache-from", &from, &ctx]);
    assert!(
        step_log(&log, "RUN echo inter-ran").contains(&"inter-ran"),
        "min exported the intermediate stage:\n{log}"
    );
    assert!(cached(&log, "RUN echo final-ran"), "{log}");
}

#[test]
fn registry_cache_mode_max_exports_an_intermediate_stage() {
    let base = base_archive();
    let (a, ctx) = runner(&base, TWO_STAGES);
    let registry = Registry::start(&a, "cache-max");
    let min = format!("type=registry,ref={}/cache/app:min", registry.host());
    let max = format!(
        "type=registry,ref={}/cache/app:max,mode=max",
        registry.host()
    );
    let log = build(&a, &["--cache-to", &min, &ctx]);
    assert!(log.contains("exported 3 cache records"), "{log}");
    let log = build(&a, &["--cache-to", &max, &ctx]);
    assert!(log.contains("exported 4 cache records"), "{log}");
    let (b, ctx) = runner(&base, TWO_STAGES);
    let from = format!("type=registry,ref={}/cache/app:max", registry.host());
    let log = build(&b, &["--cache-from", &from, &ctx]);
    assert!(cached(&log, "RUN echo inter-ran"), "{log}");
    all_cached(&log);
}

#[test]
fn inline_cache_in_the_pushed_image_gives_every_step_cached_and_the_same_image() {
    let base = base_archive();
    let (a, ctx) = runner(&base, TWO_STAGES);
    let registry = Registry::start(&a, "inline");
    let image = format!("{}/app/inline:1", registry.host());
    let log = build(
        &a,
        &["--cache-to", "type=inline", "-t", &image, "--push", &ctx],
    );
    assert!(log.contains("inline cache: 3 records"), "{log}");
    // buildx's shorthand (a bare reference is type=registry) and the long form.
    let registry_form = format!("type=registry,ref={image}");
    for from in [image.as_str(), registry_form.as_str()] {
        let (b, ctx) = runner(&base, TWO_STAGES);
        let log = build(
            &b,
            &[
                "--cache-from",
                from,
                "--cache-to",
                "type=inline",
                "-t",
                &image,
                &ctx,
            ],
        );
        // Inline is mode=min: the intermediate stage runs, the final stage is all hits.
        assert!(
            step_log(&log, "RUN echo inter-ran").contains(&"inter-ran"),
            "{log}"
        );
        for step in ["COPY --from=inter", "RUN echo final-ran", "ENV DONE=1"] {
            assert!(cached(&log, step), "{step} was not a hit:\n{log}");
        }
        assert_eq!(image_id(&a, &image), image_id(&b, &image));
    }
}

#[test]
fn inline_cache_of_a_single_stage_build_is_every_step() {
    let dockerfile = "FROM bb\nRUN echo one-ran && echo one > /one\nENV X=1\n";
    let base = base_archive();
    let (a, ctx) = runner(&base, dockerfile);
    let registry = Registry::start(&a, "inline-one");
    let image = format!("{}/app/one:1", registry.host());
    build(
        &a,
        &["--cache-to", "type=inline", "-t", &image, "--push", &ctx],
    );
    let (b, ctx) = runner(&base, dockerfile);
    let log = build(
        &b,
        &[
            "--cache-from",
            &image,
            "--cache-to",
            "type=inline",
            "-t",
            &image,
            &ctx,
        ],
    );
    all_cached(&log);
    assert_eq!(image_id(&a, &image), image_id(&b, &image));
    assert_eq!(b.ok(&["run", "--rm", &image, "cat", "/one"]).trim(), "one");
}

/// What a failed build left: no blobs beyond the base's, and no cache directory.
fn assert_nothing_written(env: &Env, blobs_before: &[String], dir: &Path) {
    assert_eq!(env.blobs(), blobs_before, "the failed build wrote blobs");
    assert!(!dir.exists(), "{} was created", dir.display());
}

#[test]
fn bad_cache_specs_get_clear_errors() {
    let base = base_archive();
    let (env, ctx) = runner(&base, "FROM bb\nRUN echo hi\n");
    let blobs = env.blobs();
    let dir = env.path("never");
    let dest = format!("type=local,dest={}", dir.display());
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("--cache-to", "type=local".into(), &["--cache-to", "dest="]),
        (
            "--cache-from",
            "type=local".into(),
            &["--cache-from", "src="],
        ),
        (
            "--cache-to",
            format!("{dest},colour=red"),
            &["--cache-to", "colour"],
        ),
        (
            "--cache-to",
            format!("{dest},mode=most"),
            &["--cache-to", "mode"],
        ),
        (
            "--cache-to",
            "type=inline,mode=max".into(),
            &["--cache-to", "mode=max"],
        ),
        ("--cache-to", "type=gha".into(), &["--cache-to", "gha"]),
        (
            "--cache-from",
            "type=local,src=/x,digest=nope".into(),
            &["--cache-from", "digest"],
        ),
    ];
    for (flag, spec, wanted) in &cases {
        let (out, text) = env.build_output(&[flag, spec, &ctx]);
        let err = assert_clean_failure(&out, &format!("build {flag} {spec}"));
        for word in *wanted {
            assert!(err.contains(word), "{flag} {spec}: {word} not in:\n{text}");
        }
        assert_nothing_written(&env, &blobs, &dir);
    }
    // A directory that is not a kiln cache layout.
    let not_cache = env.path("not-cache");
    std::fs::create_dir_all(&not_cache).unwrap();
    std::fs::write(
        not_cache.join("index.json"),
        "{\"schemaVersion\":2,\"manifests\":[{}]}",
    )
    .unwrap();
    let from = format!("type=local,src={}", not_cache.display());
    let err = env.fails(&["build", "--cache-from", &from, &ctx]);
    assert!(err.contains("--cache-from"), "{err}");
    assert!(err.contains("not-cache"), "{err}");
    assert_eq!(env.blobs(), blobs, "the failed build wrote blobs");
}

#[test]
fn concurrent_local_cache_writers_keep_each_others_records() {
    let base = base_archive();
    let (a, ctx_a) = runner(&base, TWO_TARGETS);
    let (b, ctx_b) = runner(&base, TWO_TARGETS);
    let dir = a.path("shared");
    let to = format!("type=local,dest={}", dir.display());
    // Both at once: each export is a read-merge-write of the same index.json.
    let spawn = |env: &Env, target: &str, ctx: &str| {
        env.kiln()
            .args([
                "build",
                "--target",
                target,
                "--cache-to",
                &to,
                "-t",
                target,
                ctx,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [spawn(&a, "a", &ctx_a), spawn(&b, "b", &ctx_b)];
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_success(&out, "a concurrent build with --cache-to type=local");
    }
    let (c, ctx) = runner(&base, TWO_TARGETS);
    let from = format!("type=local,src={}", dir.display());
    for target in ["a", "b"] {
        let log = build(&c, &["--target", target, "--cache-from", &from, &ctx]);
        all_cached(&log);
    }
    // One tag in the index, however many exports.
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );
}

/// With attestations the push is an index; its image's inline cache is read through it.
#[test]
fn inline_cache_is_read_through_an_index_with_attestations() {
    let dockerfile = "FROM bb\nRUN echo one-ran && echo one > /one\nENV X=1\n";
    let base = base_archive();
    let (a, ctx) = runner(&base, dockerfile);
    let registry = Registry::start(&a, "inline-index");
    let image = format!("{}/app/attested:1", registry.host());
    let log = build(
        &a,
        &[
            "--cache-to",
            "type=inline",
            "--provenance",
            "-t",
            &image,
            "--push",
            &ctx,
        ],
    );
    assert!(log.contains("inline cache: 2 records"), "{log}");
    let (b, ctx) = runner(&base, dockerfile);
    let log = build(
        &b,
        &["--cache-from", &image, "--cache-to", "type=inline", &ctx],
    );
    all_cached(&log);
}
