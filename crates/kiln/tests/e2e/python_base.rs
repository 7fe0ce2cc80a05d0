//! The main job: the seed's Python base image, built by kiln and judged by docker.

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::*;

fn example_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-base")
}

/// Paths whose content records when or how the build ran (logs, caches, backups of state
/// files); their sizes may differ between two builds of the same thing.
pub(crate) fn records_time(path: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "var/log/",
        "var/cache/",
        "var/lib/apt/",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/diversions-old",
        "var/lib/dpkg/triggers/",
        "var/lib/systemd/",
        "etc/ld.so.cache",
    ];
    PREFIXES.iter().any(|p| path.starts_with(p))
        || path.contains("__pycache__")
        || path.ends_with(".pyc")
}

/// What `docker create` adds to every container, whoever built the image.
fn added_by_docker(path: &str) -> bool {
    matches!(
        path,
        ".dockerenv"
            | "etc/hostname"
            | "etc/hosts"
            | "etc/resolv.conf"
            | "etc/mtab"
            | "dev"
            | "proc"
            | "sys"
            | "dev/console"
            | "dev/pts"
            | "dev/shm"
    )
}

fn compare_files(ours: &[ExportEntry], theirs: &[ExportEntry]) -> Vec<String> {
    let index = |entries: &[ExportEntry]| -> BTreeMap<String, ExportEntry> {
        entries
            .iter()
            .filter(|e| !added_by_docker(&e.path))
            .map(|e| (e.path.clone(), e.clone()))
            .collect()
    };
    let (ours, theirs) = (index(ours), index(theirs));
    let mut diffs = Vec::new();
    for (path, a) in &ours {
        match theirs.get(path) {
            None => diffs.push(format!("only in kiln's: {path}")),
            Some(b) => {
                let same = a.kind == b.kind
                    && a.mode == b.mode
                    && a.uid == b.uid
                    && a.gid == b.gid
                    && a.link == b.link;
                let same_size = a.size == b.size || records_time(path);
                if !same || !same_size {
                    diffs.push(format!("differs: {path}\n  kiln:   {a:?}\n  docker: {b:?}"));
                }
            }
        }
    }
    for path in theirs.keys() {
        if !ours.contains_key(path) && !records_time(path) {
            diffs.push(format!("only in docker's: {path}"));
        }
    }
    diffs
}

#[test]
fn the_seed_image_builds_runs_matches_docker_and_reuses_layers() {
    let env = Env::new();
    env.debian_base("debian:bookworm");
    let context = env.path("python-base");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(example_dir().join("Dockerfile"), context.join("Dockerfile")).unwrap();
    let ctx = context.to_str().unwrap();

    // Build and run with no docker involved.
    let (_, log) = env.build(&["-t", "my-python-base", ctx]);
    assert!(
        log.contains("Setting up python3"),
        "apt-get ran in the build:\n{log}"
    );
    let version = env.ok(&[
        "run",
        "--rm",
        "my-python-base",
        "python3",
        "-c",
        "import sys; print(sys.version)",
    ]);
    assert!(version.starts_with("3."), "{version}");
    let cwd = env.ok(&["run", "--rm", "my-python-base", "pwd"]);
    assert_eq!(cwd.trim(), "/app");

    // Hand it to docker.
    kiln_to_docker(&env, "my-python-base");
    let v = run(docker().args(["run", "--rm", "my-python-base", "python3", "-V"]));
    assert!(v.starts_with("Python 3."), "{v}");
    let fields = run(docker().args([
        "inspect",
        "--format",
        "{{.Author}}|{{.Config.WorkingDir}}|{{json .Config.ExposedPorts}}|{{json .Config.Cmd}}",
        "my-python-base",
    ]));
    assert_eq!(
        fields.trim(),
        r#"Captain Dao <support@daocloud.io>|/app|{"80/tcp":{}}|["bash"]"#
    );

    // The same Dockerfile built by docker on the same base gives the same files.
    docker_debian_base("debian:bookworm");
    run(docker()
        .args(["build", "-q", "-t", "kiln-e2e/docker-python-base", ctx])
        .env("DOCKER_BUILDKIT", "0"));
    let diffs = compare_files(
        &docker_export("my-python-base"),
        &docker_export("kiln-e2e/docker-python-base"),
    );
    assert!(
        diffs.is_empty(),
        "kiln's and docker's images differ in {} places:\n{}",
        diffs.len(),
        diffs.join("\n")
    );

    // Change nothing: every step is CACHED.
    let (id_again, log) = env.build(&["-t", "my-python-base", ctx]);
    let steps = log
        .lines()
        .filter(|l| l.starts_with('#') && l.contains("] "))
        .count();
    let cached = log.lines().filter(|l| l.ends_with(" CACHED")).count();
    assert_eq!(
        cached,
        steps - 1,
        "every step but FROM reports CACHED:\n{log}"
    );

    // Change only CMD: apt-get does not run, its step is CACHED. (How long such a rebuild
    // takes is bench/build.sh's business.)
    let dockerfile = std::fs::read_to_string(context.join("Dockerfile")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        dockerfile.replace(r#"CMD ["bash"]"#, r#"CMD ["python3"]"#),
    )
    .unwrap();
    let (id_cmd, log) = env.build(&["-t", "my-python-base", ctx]);
    assert!(
        !log.contains("Setting up") && !log.contains("Get:"),
        "apt-get must not run:\n{log}"
    );
    assert_eq!(
        step_log(&log, "RUN apt-get"),
        ["CACHED"],
        "the apt-get step is taken from the cache:\n{log}"
    );
    assert_ne!(id_cmd, id_again);

    // Change the RUN: it reruns.
    std::fs::write(
        context.join("Dockerfile"),
        dockerfile.replace("RUN mkdir -p /app", "RUN mkdir -p /app /srv"),
    )
    .unwrap();
    let (_, log) = env.build(&["-t", "my-python-base", ctx]);
    assert!(
        log.contains("RUN mkdir -p /app /srv") && !log.contains("Setting up"),
        "{log}"
    );
    let rerun = step_log(&log, "RUN mkdir -p /app /srv");
    assert!(
        rerun.iter().any(|l| l.starts_with("DONE ")) && !rerun.contains(&"CACHED"),
        "the changed RUN reruns:\n{log}"
    );
}

fn docker_size(image: &str) -> f64 {
    run(docker().args(["image", "inspect", "--format", "{{.Size}}", image]))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_seeds_lesson_clean_up_in_the_same_run() {
    let env = Env::new();
    env.debian_base("debian:bookworm");
    docker_debian_base("debian:bookworm");
    let right = "FROM debian:bookworm\nRUN apt-get update && \\\n    apt-get install -y python3 && \\\n    rm -rf /var/lib/apt/lists/*\n";
    let wrong = "FROM debian:bookworm\nRUN apt-get update && \\\n    apt-get install -y python3\nRUN rm -rf /var/lib/apt/lists/*\n";
    let mut sizes = Vec::new();
    for (name, text) in [("right", right), ("wrong", wrong)] {
        let dir = env.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), text).unwrap();
        let tag = format!("kiln-e2e/lesson-{name}");
        env.build(&["-t", &tag, dir.to_str().unwrap()]);
        kiln_to_docker(&env, &tag);
        let docker_tag = format!("kiln-e2e/lesson-{name}-docker");
        run(docker()
            .args(["build", "-q", "-t", &docker_tag, dir.to_str().unwrap()])
            .env("DOCKER_BUILDKIT", "0"));
        let (ours, theirs) = (docker_size(&tag), docker_size(&docker_tag));
        assert!(
            (ours - theirs).abs() / theirs < 0.01,
            "{name}: kiln {ours} vs docker {theirs} bytes differ by more than 1%"
        );
        sizes.push(ours);
    }
    // The lists are ~20 MB here; the wrong variant keeps them in its first layer.
    assert!(
        sizes[1] > sizes[0] + 10e6,
        "the wrong practice should be larger: right {} wrong {}",
        sizes[0],
        sizes[1]
    );
}
