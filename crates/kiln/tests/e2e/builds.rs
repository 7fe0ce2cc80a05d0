//! Builds and runs on the busybox base: reproducible digests, concurrent builds on one store,
//! `--no-cache`, and `kiln run`'s flags and terminal.

use std::process::{Command, Stdio};

use crate::util::*;

const APP: &str = "FROM busybox\nCOPY app.txt /app/\nRUN echo built > /app/built && mkdir -p /var/run/x\nWORKDIR /app\nENV MODE=prod\nCMD [\"cat\", \"/app/built\"]\n";

#[test]
fn source_date_epoch_makes_builds_byte_reproducible() {
    let mut digests = Vec::new();
    for attempt in 0..2 {
        let env = Env::new();
        // The base is an input too: import it under the same epoch.
        let base = busybox_tar();
        let out = env
            .kiln()
            .args(["import", base.to_str().unwrap(), "busybox"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert_success(&out, "import");
        let ctx = env.context("app", APP, &[("app.txt", "hello\n")]);
        let out = env
            .kiln()
            .args(["build", "--no-cache", "-t", "repro", &ctx])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert_success(&out, &format!("build {attempt}"));
        let inspect: serde_json::Value =
            serde_json::from_str(&env.ok(&["inspect", "repro"])).unwrap();
        digests.push(inspect[0]["Manifest"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        digests[0], digests[1],
        "same inputs and SOURCE_DATE_EPOCH give the same manifest digest"
    );
}

#[test]
fn two_builds_on_one_store_at_once_both_succeed() {
    let env = Env::new();
    env.busybox_base("busybox");
    let a = env.context("a", &APP.replace("built", "built-a"), &[("app.txt", "a\n")]);
    let b = env.context("b", &APP.replace("built", "built-b"), &[("app.txt", "b\n")]);
    let first = env
        .kiln()
        .args(["build", "-t", "a", &a])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = env
        .kiln()
        .args(["build", "-t", "b", &b])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_success(&first.wait_with_output().unwrap(), "first build");
    assert_success(&second.wait_with_output().unwrap(), "second build");
    assert_eq!(env.ok(&["run", "--rm", "a"]).trim(), "built-a");
    assert_eq!(env.ok(&["run", "--rm", "b"]).trim(), "built-b");
}

#[test]
fn no_cache_reruns_and_a_changed_copy_source_reruns_from_there() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("app", APP, &[("app.txt", "v1\n")]);
    env.build(&["-t", "app", &ctx]);
    let (id_no_cache, log) = env.build(&["--no-cache", "-t", "app", &ctx]);
    assert_eq!(step_lines(&log), 6, "FROM and five steps:\n{log}");
    assert!(
        !log.contains("CACHED"),
        "--no-cache runs every step:\n{log}"
    );
    // The cache does work (else the check above proves nothing): a plain rebuild now finds
    // every step but FROM, and gives the very image the --no-cache build made.
    let (id_cached, log) = env.build(&["-t", "app", &ctx]);
    let cached = log.lines().filter(|l| l.ends_with(" CACHED")).count();
    assert_eq!(
        (step_lines(&log), cached),
        (6, 5),
        "a plain rebuild reports every step but FROM as CACHED:\n{log}"
    );
    assert_eq!(
        id_cached.trim(),
        id_no_cache.trim(),
        "a fully cached rebuild gives the same image id"
    );
    std::fs::write(env.path("app/app.txt"), "v2\n").unwrap();
    let (_, log) = env.build(&["-t", "app", &ctx]);
    let cached: Vec<&str> = log.lines().filter(|l| l.ends_with("CACHED")).collect();
    assert!(
        cached.is_empty(),
        "COPY's source changed, so it and every later step rerun:\n{log}"
    );
    assert_eq!(
        env.ok(&["run", "--rm", "app", "cat", "/app/app.txt"])
            .trim(),
        "v2"
    );
}

#[test]
fn kiln_run_honours_env_workdir_user_network_and_exit_codes() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("app", APP, &[("app.txt", "x\n")]);
    env.build(&["-t", "app", &ctx]);
    assert_eq!(
        env.ok(&["run", "--rm", "app"]).trim(),
        "built",
        "the image's CMD"
    );
    assert_eq!(
        env.ok(&["run", "--rm", "app", "sh", "-c", "echo $MODE; pwd"])
            .trim(),
        "prod\n/app"
    );
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "-e",
            "EXTRA=1",
            "-w",
            "/tmp",
            "app",
            "sh",
            "-c",
            "echo $EXTRA; pwd"
        ])
        .trim(),
        "1\n/tmp"
    );
    assert_eq!(
        env.ok(&["run", "--rm", "-u", "1000:1000", "app", "id", "-u"])
            .trim(),
        "1000"
    );
    assert_eq!(
        env.ok(&["run", "--rm", "-u", "app", "app", "id", "-un"])
            .trim(),
        "app"
    );
    let links = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "app",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let status = env
        .kiln()
        .args(["run", "--rm", "app", "sh", "-c", "exit 42"])
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(42),
        "the container's exit code is kiln's"
    );
}

#[test]
fn kiln_run_it_gives_a_terminal_in_the_workdir() {
    let env = Env::new();
    require("script");
    env.busybox_base("busybox");
    let ctx = env.context("app", "FROM busybox\nWORKDIR /app\nCMD [\"sh\"]\n", &[]);
    env.build(&["-t", "shell", &ctx]);
    // `script` gives kiln a real terminal; the shell inside must see one too.
    let kiln = format!(
        "{} --root {} run --rm -it shell",
        env!("CARGO_BIN_EXE_kiln"),
        env.root().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &kiln, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"pwd; [ -t 0 ] && echo IS-A-TTY; exit 3\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/app"), "{text}");
    assert!(text.contains("IS-A-TTY"), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
}

/// `--no-cache-filter` reruns the named stages only; a name that is no stage is an error.
#[test]
fn no_cache_filter_reruns_only_the_named_stages() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "filter",
        "FROM busybox AS Fresh\nRUN echo \"fresh ran $((6*7))\" | tee /a\n\
         FROM busybox AS kept\nRUN echo \"kept ran $((6*7))\" | tee /b\n\
         FROM busybox\nCOPY --from=Fresh /a /a\nCOPY --from=kept /b /b\n",
        &[],
    );
    env.build(&[&ctx]);
    let (_, log) = env.build(&["--no-cache-filter", "fresh", &ctx]);
    assert!(
        step_log(&log, "echo \"fresh ran")
            .iter()
            .any(|l| l.contains("fresh ran 42")),
        "the filtered stage ran again:\n{log}"
    );
    assert_eq!(
        step_log(&log, "echo \"kept ran").last(),
        Some(&"CACHED"),
        "the other stage stayed cached:\n{log}"
    );
    let err = env.fails(&["build", "--no-cache-filter", "nosuch", &ctx]);
    assert!(
        err.contains("--no-cache-filter nosuch") && err.contains("no stage named"),
        "{err}"
    );
}

/// `--annotation` annotates each platform's manifest (or one platform's), the index
/// (`index:`) and its entries (`manifest-descriptor:`), and the registry gets them, from the
/// build's push and from `kiln push` of the stored index. As BuildKit's exporter, index types
/// need an index; `index-descriptor` (an OCI layout's) is refused by name.
#[test]
fn annotations_reach_the_pushed_manifests() {
    let env = Env::new();
    env.busybox_base_for("bb", "amd64");
    env.busybox_base_for("bb", "arm64");
    let registry = crate::registry::Registry::start(&env, "annotations");
    let ctx = env.context("annotated", "FROM bb\nLABEL made=by-kiln\n", &[]);
    let target = format!("{}/kiln/annotated:1", registry.host());
    env.build(&[
        "--no-lint",
        "--platform",
        "linux/amd64,linux/arm64",
        "--annotation",
        "org.opencontainers.image.title=kiln-test",
        "--annotation",
        "manifest[linux/arm64]:only=arm",
        "--annotation",
        "index:org.opencontainers.image.description=the family",
        "--annotation",
        "manifest-descriptor[linux/amd64]:entry=amd",
        "--push",
        "-t",
        &target,
        &ctx,
    ]);
    let again = format!("{}/kiln/annotated:again", registry.host());
    env.ok(&["push", &target, &again]);
    let skopeo = |reference: &str| -> serde_json::Value {
        let raw = run(std::process::Command::new(require("skopeo")).args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ]));
        serde_json::from_str(&raw).unwrap()
    };
    for pushed in [&target, &again] {
        let index = skopeo(pushed);
        assert_eq!(
            index["annotations"]["org.opencontainers.image.description"], "the family",
            "{pushed}: {index}"
        );
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{index}");
        for entry in entries {
            let arch = entry["platform"]["architecture"].as_str().unwrap();
            let annotation = entry["annotations"]["entry"].as_str();
            assert_eq!(annotation, (arch == "amd64").then_some("amd"), "{index}");
        }
    }
    let index = skopeo(&target);
    let repo = format!("{}/kiln/annotated", registry.host());
    for entry in index["manifests"].as_array().unwrap() {
        let arch = entry["platform"]["architecture"].as_str().unwrap();
        let manifest = skopeo(&format!("{repo}@{}", entry["digest"].as_str().unwrap()));
        let annotations = &manifest["annotations"];
        assert_eq!(
            annotations["org.opencontainers.image.title"], "kiln-test",
            "{arch}"
        );
        let only = annotations.get("only").and_then(|v| v.as_str());
        assert_eq!(
            only,
            (arch == "arm64").then_some("arm"),
            "{arch}: {manifest}"
        );
    }
    for single in ["index:a=b", "manifest-descriptor:a=b"] {
        let err = env.fails(&["build", "--annotation", single, &ctx]);
        assert!(
            err.contains(&format!("--annotation {single}"))
                && err.contains("not supported for single platform export"),
            "{err}"
        );
    }
    let err = env.fails(&["build", "--annotation", "index-descriptor:a=b", &ctx]);
    assert!(
        err.contains("--annotation index-descriptor:a=b") && err.contains("OCI layout"),
        "{err}"
    );
    let err = env.fails(&["build", "--annotation", "index[linux/amd64]:a=b", &ctx]);
    assert!(err.contains("every platform's"), "{err}");
}
