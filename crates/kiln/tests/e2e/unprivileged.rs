//! Building where CI builds: `--isolation chroot` (no namespaces, no mounts), on the host
//! against the oci mode's layers, and kiln's own image under `docker run` with docker's
//! default security (no --privileged, no added capabilities, default seccomp and AppArmor).
//! `--network host` only lets the container reach the test's registry on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::registry::Registry;
use crate::util::*;

/// One entry of a layer tar, as the layer records it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LayerEntry {
    path: String,
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    link: String,
    size: u64,
    sha256: String,
}

/// The entries of each layer of `image`, bottom first, from `kiln save`.
fn layers(env: &Env, image: &str) -> Vec<Vec<LayerEntry>> {
    use sha2::Digest;
    use std::io::Read;
    let dir = env.path(&format!("save-{}", image.replace([':', '/'], "-")));
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("image.tar");
    env.ok(&["save", image, "-o", archive.to_str().unwrap()]);
    run(std::process::Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&dir));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let file = std::fs::File::open(dir.join(layer.as_str().unwrap())).unwrap();
        let mut entries = Vec::new();
        for entry in tar::Archive::new(file).entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            entries.push(LayerEntry {
                path: entry.path().unwrap().to_string_lossy().into_owned(),
                kind: header.entry_type().as_byte(),
                mode: header.mode().unwrap(),
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                link: entry
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size: header.size().unwrap(),
                sha256: hex::encode(sha2::Sha256::digest(&data)),
            });
        }
        out.push(entries);
    }
    out
}

/// Whether a process whose command line holds `marker` is alive on this machine.
fn process_alive(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(marker)
            })
            .unwrap_or(false)
    })
}

const STEPS: &str = r#"FROM busybox AS main
RUN echo hi > /hello && mkdir -p /a/b && echo x > /a/b/c && rm -rf /tmp \
 && echo 'app2:x:1001:1001::/:/bin/sh' >> /etc/passwd && ls /dev/null /dev/urandom
COPY f.txt /a/
RUN rm /a/b/c && chmod 700 /a && ln -s /hello /link && ln /hello /hard \
 && mkdir /owned && chown 1001:1001 /owned && mkfifo /fifo
WORKDIR /app
RUN (sleep 987654 &) ; (setsid sleep 987655 &) ; echo started in background
FROM busybox AS other
RUN echo other > /other.txt
FROM main
COPY --from=other /other.txt /from-other.txt
"#;

/// Each layer of a chroot build is the oci build's, entry for entry (paths, kinds, modes,
/// owners, links, sizes, content and whiteouts), a step's daemon does not outlive it, and a
/// chroot build that resumes after cache hits rebuilds its rootfs from the store.
#[test]
fn chroot_layers_match_the_oci_modes() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("ctx", STEPS, &[("f.txt", "file\n")]);
    let (_, chroot_log) = env.build(&["--isolation", "chroot", "-t", "t:chroot", &ctx]);
    assert!(
        chroot_log.contains("isolation: chroot (asked for)"),
        "{chroot_log}"
    );
    assert!(chroot_log.contains("/dev/urandom"), "{chroot_log}");
    assert!(chroot_log.contains("started in background"), "{chroot_log}");
    for marker in ["sleep 987654", "sleep 987655"] {
        assert!(
            !process_alive(marker),
            "the step's background process `{marker}` outlived the build"
        );
    }
    env.build(&["--isolation", "oci", "--no-cache", "-t", "t:oci", &ctx]);
    let (chroot, oci) = (layers(&env, "t:chroot"), layers(&env, "t:oci"));
    assert_eq!(chroot.len(), oci.len());
    for (i, (c, o)) in chroot.iter().zip(&oci).enumerate() {
        assert_eq!(c, o, "layer {i} differs between chroot and oci");
    }
    // The layers the steps made, seen positively: a whiteout, an owner, a hard link.
    let all: Vec<&LayerEntry> = chroot[1..].iter().flatten().collect();
    assert!(all.iter().any(|e| e.path == ".wh.tmp"), "{all:?}");
    assert!(all.iter().any(|e| e.path == "a/b/.wh.c"), "{all:?}");
    assert!(
        all.iter()
            .any(|e| e.path == "owned/" && e.uid == 1001 && e.gid == 1001),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.kind == b'1' && (e.path == "hard" || e.link == "hard")),
        "{all:?}"
    );

    // Cached steps, then a miss: the rootfs is made again from the stored layers.
    let more = format!("{STEPS}RUN rm /from-other.txt && echo more > /more\n");
    let ctx2 = env.context("ctx2", &more, &[("f.txt", "file\n")]);
    let (_, resumed) = env.build(&["--isolation", "chroot", "-t", "t:chroot2", &ctx2]);
    assert!(resumed.contains("CACHED"), "{resumed}");
    env.build(&["--isolation", "oci", "--no-cache", "-t", "t:oci2", &ctx2]);
    let (chroot, oci) = (layers(&env, "t:chroot2"), layers(&env, "t:oci2"));
    assert_eq!(chroot.last(), oci.last());
    assert!(
        chroot
            .last()
            .unwrap()
            .iter()
            .any(|e| e.path == ".wh.from-other.txt"),
        "{chroot:?}"
    );
}

/// Errors name what is missing and what to do.
#[test]
fn isolation_errors_say_what_to_do() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "ctx",
        "FROM busybox\nRUN --mount=type=tmpfs,target=/t true\n",
        &[],
    );
    let err = env.fails(&["build", "--isolation", "chroot", &ctx]);
    assert!(
        err.contains("RUN --mount=type=tmpfs") && err.contains("--isolation oci"),
        "{err}"
    );
    let err = env.fails(&["build", "--isolation", "chroot", "--network", "none", &ctx]);
    assert!(err.contains("share the container's network"), "{err}");
    let err = env.fails(&["build", "--isolation", "vm", &ctx]);
    assert!(err.contains("oci, rootless, chroot and auto"), "{err}");
}

/// kiln's own image, built by kiln (scripts/build-kiln-image.sh) once per test run.
fn kiln_image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        require("objcopy");
        debian_tar();
        let store = tempfile::Builder::new()
            .prefix("kiln-image-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let script = repo().join("scripts/build-kiln-image.sh");
        run(std::process::Command::new("bash")
            .arg(&script)
            .arg("kiln:e2e")
            .env("KILN", env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_ROOT", store.path()));
        "kiln:e2e".to_owned()
    })
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `docker run` of kiln's image with docker's default security: no --privileged, no
/// --cap-add, no --security-opt.
fn docker_kiln(extra: &[&str], args: &[&str]) -> std::process::Output {
    docker()
        .args(["run", "--rm"])
        .args(extra)
        .arg(kiln_image())
        .args(args)
        .output()
        .unwrap()
}

/// In a default container as root, auto picks chroot and says so; oci says what it needs; as
/// a non-root user nothing works, and the error says what to do.
#[test]
fn kiln_image_picks_chroot_and_explains_the_rest() {
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        "FROM scratch\nCOPY f.txt /f.txt\n",
        &[("f.txt", "x\n")],
    );
    let mount = format!("{ctx}:/ctx:ro");
    let out = docker_kiln(&["-v", &mount], &["build", "/ctx"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_success(&out, "kiln build in a default container");
    assert!(
        text.contains("isolation: chroot (no user namespaces or mounts allowed here"),
        "{text}"
    );
    assert!(!text.contains("WARN"), "{text}");

    let out = docker_kiln(&["-v", &mount], &["build", "--isolation", "oci", "/ctx"]);
    let text = assert_clean_failure(&out, "kiln build --isolation oci in a default container");
    assert!(
        text.contains("--isolation oci cannot work here") && text.contains("--isolation chroot"),
        "{text}"
    );

    // A store the user can write: the image's /var/lib/kiln is root's.
    let out = docker_kiln(
        &[
            "-v",
            &mount,
            "--user",
            "1000:1000",
            "-e",
            "KILN_ROOT=/tmp/kiln",
        ],
        &["build", "/ctx"],
    );
    let text = assert_clean_failure(&out, "kiln build as a non-root user in a container");
    assert!(
        text.contains("CAP_SYS_CHROOT") && text.contains("--isolation rootless"),
        "{text}"
    );
}

/// The seed's image, built inside kiln's image under docker's default security, pushed to a
/// registry on 127.0.0.1, pulled and run by docker.
#[test]
fn kiln_image_builds_the_python_base_unprivileged() {
    let env = Env::new();
    let registry = Registry::start(&env, "unprivileged");
    let host = registry.host();
    env.debian_base("debian:bookworm");
    let base = format!("{host}/debian:bookworm");
    env.ok(&["push", "debian:bookworm", &base]);
    let target = format!("{host}/python-base:unprivileged");
    let examples = format!("{}:/ctx:ro", repo().join("examples/python-base").display());
    let context = format!("debian:bookworm=docker-image://{base}");
    let out = docker_kiln(
        &["--network", "host", "-v", &examples],
        &[
            "build",
            "--progress",
            "plain",
            "--build-context",
            &context,
            "-t",
            &target,
            "--push",
            "/ctx",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_success(
        &out,
        "kiln build of examples/python-base in a default container",
    );
    assert!(text.contains("isolation: chroot"), "{text}");
    assert!(text.contains(&format!("pushed {target}")), "{text}");
    run(docker().args(["pull", "-q", &target]));
    let version = run(docker().args(["run", "--rm", &target, "python3", "-V"]));
    let _ = docker().args(["rmi", "-f", &target]).output();
    assert!(version.starts_with("Python 3."), "{version}");
}

/// Runners of a farm export their caches to one ref: a writer never drops another's records,
/// so each image's steps are found by a later runner with an empty store.
#[test]
fn writers_of_one_cache_ref_keep_each_others_records() {
    let seed = Env::new();
    let registry = Registry::start(&seed, "farm-cache");
    seed.busybox_base("busybox");
    let base = format!("{}/base/busybox:1", registry.host());
    seed.ok(&["push", "busybox", &base]);
    let cache = format!("type=registry,ref={}/cache/family:main", registry.host());
    let dockerfile = |name: &str| format!("FROM {base}\nRUN echo {name} > /{name}\n");
    for name in ["first", "second"] {
        let runner = Env::new();
        let ctx = runner.context("ctx", &dockerfile(name), &[]);
        let (out, err) = runner.build(&["--cache-to", &cache, "-t", name, &ctx]);
        assert!(
            format!("{out}{err}").contains("exported 1 cache records"),
            "{out}{err}"
        );
    }
    for name in ["first", "second"] {
        let runner = Env::new();
        let ctx = runner.context("ctx", &dockerfile(name), &[]);
        let (out, err) = runner.build(&["--cache-from", &cache, "-t", name, &ctx]);
        let log = format!("{out}{err}");
        let step = step_log(&log, &format!("RUN echo {name}"));
        assert!(
            step.contains(&"CACHED") && !step.iter().any(|l| l.starts_with("committed")),
            "the {name} image's RUN was not found in the shared cache:\n{log}"
        );
    }
}

/// The shell of the CI job named `name` in docs/ci.md: the block under its `# kiln-ci: NAME`
/// line, up to the first line indented less, with that indentation taken off.
fn ci_recipe(name: &str) -> String {
    let doc = std::fs::read_to_string(repo().join("docs/ci.md")).unwrap();
    let marker = format!("# kiln-ci: {name}");
    let mut lines = doc.lines().skip_while(|l| l.trim() != marker);
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("docs/ci.md has no {marker:?} line"));
    let indent = first.len() - first.trim_start().len();
    let mut script = String::new();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        script.push_str(line.get(indent..).unwrap_or(""));
        script.push('\n');
    }
    script
}

/// Runs a docs/ci.md job's shell in kiln's image as the runner would: docker's default
/// security, an empty store, the repository at `workdir` (holding `python-base/`, the seed's
/// Dockerfile), the CI variables, and a kiln config sending docker.io pulls to `mirror`.
/// Returns the output and `build-metadata.json`.
fn run_ci_recipe(
    env: &Env,
    name: &str,
    workdir: &str,
    variables: &[(&str, String)],
    mirror: &str,
) -> (String, serde_json::Value) {
    let checkout = env.path(&format!("checkout-{name}"));
    std::fs::create_dir_all(&checkout).unwrap();
    let config = env.path(&format!("kiln-config-{name}.toml"));
    std::fs::write(
        &config,
        format!("[registry.\"docker.io\"]\nmirrors = [\"http://{mirror}\"]\n"),
    )
    .unwrap();
    let python_base = repo().join("examples/python-base");
    let mut args: Vec<String> = vec![
        "--network".into(),
        "host".into(),
        "-v".into(),
        format!("{}:{workdir}", checkout.display()),
        "-v".into(),
        format!("{}:{workdir}/python-base:ro", python_base.display()),
        "-v".into(),
        format!("{}:/etc/kiln/config.toml:ro", config.display()),
        "-w".into(),
        workdir.into(),
        "--entrypoint".into(),
        "sh".into(),
    ];
    for (key, value) in variables {
        args.push("-e".into());
        args.push(format!("{key}={value}"));
    }
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker_kiln(&extra, &["-e", "-c", &ci_recipe(name)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_success(&out, &format!("the {name} job of docs/ci.md"));
    let metadata = std::fs::read_to_string(checkout.join("build-metadata.json"))
        .unwrap_or_else(|e| panic!("{name}: build-metadata.json: {e}\n{text}"));
    (text, serde_json::from_str(&metadata).unwrap())
}

/// docs/ci.md's GitLab and GitHub jobs, run as written: the GitLab job builds the Python base
/// cold, pushes it and writes the metadata; the GitHub job, in a new container with an empty
/// store, finds every step in the registry cache and pushes the same image.
#[test]
fn ci_recipes_in_the_docs_build_the_python_base_and_share_the_cache() {
    let env = Env::new();
    let registry = Registry::start(&env, "ci-recipes");
    let host = registry.host();
    env.debian_base("debian:bookworm");
    env.ok(&[
        "push",
        "debian:bookworm",
        &format!("{host}/library/debian:bookworm"),
    ]);

    let (gitlab, first) = run_ci_recipe(
        &env,
        "gitlab",
        "/builds/team/app",
        &[
            ("CI_REGISTRY", host.clone()),
            ("CI_REGISTRY_USER", "gitlab-ci-token".into()),
            ("CI_REGISTRY_PASSWORD", "token".into()),
            ("CI_REGISTRY_IMAGE", format!("{host}/team/app")),
            ("CI_COMMIT_SHORT_SHA", "0123abcd".into()),
            ("CI_PROJECT_DIR", "/builds/team/app".into()),
        ],
        &host,
    );
    let pushed = format!("{host}/team/app/my-python-base:0123abcd");
    assert!(gitlab.contains(&format!("pushed {pushed}")), "{gitlab}");
    assert!(gitlab.contains("exported"), "{gitlab}");
    let inspect: serde_json::Value =
        serde_json::from_str(&run(std::process::Command::new(require("skopeo")).args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{pushed}"),
        ])))
        .unwrap();
    assert_eq!(
        first["containerimage.digest"], inspect["Digest"],
        "the metadata's digest is the registry's: {first}"
    );
    assert!(
        first["image.name"].as_str().unwrap_or("").contains(&pushed),
        "{first}"
    );

    let (github, second) = run_ci_recipe(
        &env,
        "github",
        "/__w/app/app",
        &[
            ("REGISTRY", host.clone()),
            ("REGISTRY_USER", "octocat".into()),
            ("REGISTRY_TOKEN", "token".into()),
            ("GITHUB_REPOSITORY", "Team/App".into()),
            ("GITHUB_SHA", "0123abcd0123abcd".into()),
        ],
        &host,
    );
    assert!(
        github.contains(&format!("pushed {host}/team/app/my-python-base:latest")),
        "{github}"
    );
    // Progress is BuildKit's: `#N [stage-0 3/7] RUN …`, then `#N CACHED`.
    let run_steps: Vec<&str> = github
        .lines()
        .filter(|l| l.contains("] RUN "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(run_steps.len(), 2, "{github}");
    for step in run_steps {
        assert!(
            github.lines().any(|l| l == format!("{step} CACHED")),
            "{step} not CACHED:\n{github}"
        );
    }
    assert!(!github.contains("Setting up python3"), "{github}");
    assert_eq!(
        first["containerimage.config.digest"], second["containerimage.config.digest"],
        "the same image from the cache"
    );
}
