//! `kiln bake`: bake files resolved as buildx resolves them, and their targets built in one
//! run (shared steps once, `target:` contexts from the built image, only dependents rebuilt).

use std::process::Output;

use crate::util::{Env, assert_clean_failure, assert_success, step_log};

impl Env {
    /// `kiln bake ARGS` run in the test's directory (bake paths are relative to it).
    fn bake(&self, args: &[&str]) -> Output {
        self.kiln()
            .arg("bake")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// `kiln bake` that must succeed: (stdout, stderr).
    fn bake_ok(&self, args: &[&str]) -> (String, String) {
        let out = self.bake(args);
        assert_success(&out, &format!("kiln bake {}", args.join(" ")));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// The steps of `log` whose instruction contains `instruction`: each step's own lines.
fn steps<'a>(log: &'a str, instruction: &str) -> Vec<Vec<&'a str>> {
    log.lines()
        .filter(|l| l.starts_with('#') && l.contains("] ") && l.contains(instruction))
        .map(|step| {
            let prefix = format!("{} ", step.split(' ').next().unwrap());
            log.lines()
                .filter(|l| *l != step)
                .filter_map(|l| l.strip_prefix(&prefix))
                .collect()
        })
        .collect()
}

fn ran(lines: &[&str]) -> bool {
    lines.iter().any(|l| l.starts_with("DONE")) && !lines.contains(&"CACHED")
}

const FAMILY: &str = r#"
variable "GREETING" {
  default = "hello"
}

group "default" {
  targets = ["dev", "app", "other"]
}

target "_common" {
  args = { GREETING = GREETING }
}

target "base" {
  context = "base"
}

target "dev" {
  inherits = ["_common"]
  context = "dev"
  contexts = { base = "target:base" }
  tags = ["family/dev"]
}

target "app" {
  inherits = ["_common"]
  name = "app-${v}"
  matrix = { v = ["a", "b"] }
  context = "app"
  contexts = { base = "target:base" }
  args = { V = v }
  tags = ["family/app:${v}"]
}

target "other" {
  context = "other"
  tags = ["family/other"]
}
"#;

fn family(env: &Env) {
    env.busybox_base("bb");
    env.write("docker-bake.hcl", FAMILY);
    env.write("base/Dockerfile", "FROM bb\nRUN echo base-1 > /base\n");
    env.write(
        "dev/Dockerfile",
        "FROM base\nARG GREETING\nRUN echo \"dev $GREETING\" > /dev-marker\n",
    );
    env.write(
        "app/Dockerfile",
        "FROM base\nARG GREETING\nARG V\nRUN echo \"app $GREETING $V\" > /app-marker\n",
    );
    env.write("other/Dockerfile", "FROM bb\nRUN echo other > /other\n");
}

#[test]
fn bake_builds_groups_inherits_matrix_and_variables() {
    let env = Env::new();
    family(&env);
    let (stdout, _) = env.bake_ok(&[]);
    // One line per target built: the base (built for its dependents), both matrix targets.
    let names: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["base", "app-a", "app-b", "dev", "other"],
        "{stdout}"
    );
    let app_b = env.ok(&["run", "--rm", "family/app:b", "cat", "/app-marker", "/base"]);
    assert_eq!(app_b, "app hello b\nbase-1\n");
    // A variable takes the environment's value; --set overrides per target.
    let out = env
        .kiln()
        .args(["bake", "--set", "dev.args.GREETING=set", "dev", "app"])
        .env("GREETING", "env")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_success(&out, "kiln bake with GREETING and --set");
    let dev = env.ok(&["run", "--rm", "family/dev", "cat", "/dev-marker"]);
    assert_eq!(dev, "dev set\n");
    let app_a = env.ok(&["run", "--rm", "family/app:a", "cat", "/app-marker"]);
    assert_eq!(app_a, "app env a\n");
}

#[test]
fn bake_print_is_what_buildx_prints() {
    let env = Env::new();
    env.write("docker-bake.hcl", FAMILY);
    env.write(
        "docker-bake.override.hcl",
        "target \"other\" {\n  platforms = [\"linux/amd64\"]\n  cache-from = [\"user/other:cache\"]\n}\n",
    );
    let out = env
        .kiln()
        .args([
            "bake",
            "--print",
            "--set",
            "app-*.tags+=extra",
            "app",
            "other",
        ])
        .env("GREETING", "hi")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_success(&out, "kiln bake --print");
    let printed = String::from_utf8_lossy(&out.stdout);
    // As buildx resolves it: the matrix block is a group of its targets, the names asked
    // for are the `default` group, the linked `base` target is cache-only, defaults filled
    // in, maps sorted, cache entries as objects.
    let expected = r#"{
  "group": {
    "app": {
      "targets": [
        "app-a",
        "app-b"
      ]
    },
    "default": {
      "targets": [
        "app",
        "other"
      ]
    }
  },
  "target": {
    "app-a": {
      "context": "app",
      "contexts": {
        "base": "target:base"
      },
      "dockerfile": "Dockerfile",
      "args": {
        "GREETING": "hi",
        "V": "a"
      },
      "tags": [
        "family/app:a",
        "extra"
      ]
    },
    "app-b": {
      "context": "app",
      "contexts": {
        "base": "target:base"
      },
      "dockerfile": "Dockerfile",
      "args": {
        "GREETING": "hi",
        "V": "b"
      },
      "tags": [
        "family/app:b",
        "extra"
      ]
    },
    "base": {
      "context": "base",
      "dockerfile": "Dockerfile",
      "output": [
        {
          "type": "cacheonly"
        }
      ]
    },
    "other": {
      "context": "other",
      "dockerfile": "Dockerfile",
      "tags": [
        "family/other"
      ],
      "cache-from": [
        {
          "ref": "user/other:cache",
          "type": "registry"
        }
      ],
      "platforms": [
        "linux/amd64"
      ]
    }
  }
}
"#;
    assert_eq!(printed, expected);
}

#[test]
fn bake_target_context_is_the_built_target() {
    let env = Env::new();
    family(&env);
    let (_, log) = env.bake_ok(&["dev"]);
    // `base` is no image of the store or of a registry: the dependent read the built one.
    let dev = env.ok(&["run", "--rm", "family/dev", "cat", "/base", "/dev-marker"]);
    assert_eq!(dev, "base-1\ndev hello\n");
    assert!(log.contains("[base] cache only: image sha256:"), "{log}");
    let base_run = log.find("[base stage-0 2/2] RUN").expect("base's RUN step");
    let dev_from = log
        .find("[dev stage-0 1/3] FROM base")
        .expect("dev's FROM step");
    assert!(
        base_run < dev_from,
        "dev started before base was built:\n{log}"
    );
    // A FROM of a bake context is no moving `:latest` image: lint says nothing of it.
    assert!(!log.contains("FROM base has no tag"), "{log}");
    assert!(log.contains("FROM bb has no tag"), "{log}");
    // Only the targets asked for (and what they need) are built.
    assert!(!log.contains("[other "), "{log}");
}

#[test]
fn bake_shared_steps_run_once() {
    let env = Env::new();
    env.busybox_base("bb");
    let dockerfile =
        |last: &str| format!("FROM bb\nRUN echo shared-work > /shared\nRUN echo {last} > /last\n");
    env.write("one/Dockerfile", &dockerfile("one"));
    env.write("two/Dockerfile", &dockerfile("two"));
    env.write(
        "docker-bake.hcl",
        "group \"default\" {\n  targets = [\"one\", \"two\"]\n}\ntarget \"one\" {\n  context = \"one\"\n}\ntarget \"two\" {\n  context = \"two\"\n}\n",
    );
    let (_, log) = env.bake_ok(&[]);
    let shared = steps(&log, "RUN echo shared-work");
    assert_eq!(shared.len(), 2, "{log}");
    assert_eq!(shared.iter().filter(|s| ran(s)).count(), 1, "{log}");
    assert_eq!(
        shared.iter().filter(|s| s.contains(&"CACHED")).count(),
        1,
        "{log}"
    );
    assert!(ran(&step_log(&log, "RUN echo one")), "{log}");
    assert!(ran(&step_log(&log, "RUN echo two")), "{log}");
}

#[test]
fn bake_after_a_base_change_rebuilds_exactly_its_dependents() {
    let env = Env::new();
    family(&env);
    env.bake_ok(&[]);
    env.write("base/Dockerfile", "FROM bb\nRUN echo base-2 > /base\n");
    let (_, log) = env.bake_ok(&[]);
    assert!(ran(&step_log(&log, "RUN echo base-2")), "{log}");
    for dependent in ["RUN echo \"dev", "RUN echo \"app"] {
        let found = steps(&log, dependent);
        assert!(!found.is_empty(), "no step {dependent}:\n{log}");
        assert!(
            found.iter().all(|s| ran(s)),
            "{dependent} did not rerun:\n{log}"
        );
    }
    assert_eq!(
        step_log(&log, "RUN echo other > /other"),
        ["CACHED"],
        "{log}"
    );
    let app = env.ok(&["run", "--rm", "family/app:a", "cat", "/base"]);
    assert_eq!(app, "base-2\n");
}

#[test]
fn bake_unsupported_attribute_fails_naming_it() {
    let env = Env::new();
    env.write(
        "docker-bake.hcl",
        "target \"default\" {\n  context = \".\"\n  shm-size = \"2g\"\n}\n",
    );
    let out = env.bake(&[]);
    let err = assert_clean_failure(&out, "kiln bake with shm-size");
    assert!(
        err.contains(
            "docker-bake.hcl:3: the attribute `shm-size` of target \"default\" is not supported by kiln"
        ),
        "{err}"
    );
}

/// Imports Debian `suite`'s base into `env`'s store as `debian:SUITE`, through
/// scripts/make-debian-base.sh (its tarball cached as the bookworm one is).
fn debian_suite_base(env: &Env, suite: &str) {
    crate::util::require("mmdebstrap");
    let script = repo().join("scripts/make-debian-base.sh");
    crate::util::run(
        std::process::Command::new("bash")
            .arg(&script)
            .args(["--suite", suite])
            .env("KILN", env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_ROOT", env.root()),
    );
}

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn bake_builds_the_python_family_and_its_app_imports_the_compiled_extension() {
    let ca = "/etc/ssl/certs/ca-certificates.crt";
    assert!(
        std::path::Path::new(ca).is_file(),
        "this test needs the host's CA bundle {ca} (the example's CA_CERT; package ca-certificates)"
    );
    let env = Env::new();
    env.debian_base("debian:bookworm");
    debian_suite_base(&env, "trixie");
    let out = env
        .kiln()
        .args(["bake", "-f", "examples/python-family/docker-bake.hcl"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_success(&out, "kiln bake -f examples/python-family/docker-bake.hcl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for target in ["base", "dev", "app"] {
        for release in ["bookworm", "trixie"] {
            let name = format!("{target}-{release} sha256:");
            assert!(stdout.lines().any(|l| l.starts_with(&name)), "{stdout}");
        }
    }
    for (release, python) in [("bookworm", "311"), ("trixie", "313")] {
        let image = format!("python-family/app:{release}");
        // The image's own CMD imports the extension and escapes with it.
        assert_eq!(env.ok(&["run", "--rm", &image]), "&lt;kiln&gt;\n");
        let file = env.ok(&[
            "run",
            "--rm",
            &image,
            "python3",
            "-c",
            "import markupsafe._speedups as s; print(s.__file__)",
        ]);
        let file = file.trim_end();
        assert!(
            file.contains(&format!("/_speedups.cpython-{python}-")) && file.ends_with(".so"),
            "{release}: {file}"
        );
        // The runtime has neither the compiler nor the CA bundle the build was given.
        let check = env.ok(&[
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "command -v gcc || echo no-gcc; test -e /run/secrets/ca && echo ca || echo no-ca",
        ]);
        assert_eq!(check, "no-gcc\nno-ca\n", "{release}");
    }
}

#[test]
fn bake_push_pushes_every_target_under_its_tags() {
    let env = Env::new();
    let registry = crate::registry::Registry::start(&env, "bake");
    family(&env);
    let host = registry.host();
    let sets = [
        format!("dev.tags={host}/family/dev:1"),
        format!("other.tags={host}/family/other:1"),
    ];
    let (_, log) = env.bake_ok(&[
        "--push", "--set", &sets[0], "--set", &sets[1], "dev", "other",
    ]);
    for repo in ["family/dev", "family/other"] {
        let manifest = format!("\"PUT /v2/{repo}/manifests/1 ");
        assert!(
            registry.log().contains(&manifest),
            "no {manifest} in the registry log:\n{log}"
        );
        let inspect = crate::util::run(
            std::process::Command::new(crate::util::require("skopeo")).args([
                "inspect",
                "--tls-verify=false",
                &format!("docker://{host}/{repo}:1"),
            ]),
        );
        assert!(inspect.contains("\"Digest\": \"sha256:"), "{inspect}");
    }
    // The linked base is cache-only: built, not pushed anywhere.
    assert!(
        !registry.log().contains("/v2/family/base"),
        "{}",
        registry.log()
    );
}

#[test]
fn bake_multi_platform_target_context_picks_each_platform() {
    let env = Env::new();
    env.write(
        "base/Dockerfile",
        "FROM scratch\nARG TARGETARCH\nCOPY f /f-$TARGETARCH\n",
    );
    env.write("base/f", "x");
    env.write(
        "app/Dockerfile",
        "FROM base\nARG TARGETARCH\nENV APP_ARCH=$TARGETARCH\n",
    );
    env.write(
        "docker-bake.hcl",
        r#"
target "base" {
  context = "base"
  platforms = ["linux/amd64", "linux/arm64"]
}
target "default" {
  context = "app"
  contexts = { base = "target:base" }
  platforms = ["linux/amd64", "linux/arm64"]
  tags = ["multi/app"]
}
"#,
    );
    let (stdout, log) = env.bake_ok(&[]);
    assert!(stdout.contains("default sha256:"), "{stdout}");
    assert!(log.contains("[default] writing index sha256:"), "{log}");
    for arch in ["amd64", "arm64"] {
        assert!(
            log.contains(&format!("[default] linux/{arch}: image sha256:")),
            "{log}"
        );
    }
    // Each platform's app was built FROM the same platform's base.
    let saved = env.path("app.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        saved.to_str().unwrap(),
        "multi/app",
    ]);
    let mut configs = String::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&saved).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut text = String::new();
        if std::io::Read::read_to_string(&mut entry, &mut text).is_ok() {
            configs.push_str(&text);
        }
    }
    for arch in ["amd64", "arm64"] {
        assert!(
            configs.contains(&format!("APP_ARCH={arch}")),
            "no APP_ARCH={arch}"
        );
        assert!(
            configs.contains(&format!("COPY f /f-{arch}")),
            "no base layer for {arch}"
        );
    }
}

#[test]
fn bake_attest_attaches_an_sbom_and_provenance_and_pushes_them() {
    // As `kiln build --sbom --provenance`: the target's image and its attestation manifest in
    // one index, which `kiln sbom` reads and a push sends whole (BuildKit's layout).
    let env = Env::new();
    let registry = crate::registry::Registry::start(&env, "bake-attest");
    family(&env);
    let host = registry.host();
    let set_tags = format!("other.tags={host}/family/attested:1");
    let (_, log) = env.bake_ok(&[
        "--push",
        "--set",
        &set_tags,
        "--set",
        "other.attest=type=sbom",
        "--set",
        "other.attest+=type=provenance,mode=min",
        "other",
    ]);
    assert!(log.contains("writing attestations: index sha256:"), "{log}");
    let sbom = env.ok(&[
        "sbom",
        "--format",
        "spdx-json",
        &format!("{host}/family/attested:1"),
    ]);
    let doc: serde_json::Value = serde_json::from_str(&sbom).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3", "{sbom}");
    let raw = crate::util::run(
        std::process::Command::new(crate::util::require("skopeo")).args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/family/attested:1"),
        ]),
    );
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let kinds: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["vnd.docker.reference.type"]
                .as_str()
                .unwrap_or("image")
        })
        .collect();
    assert_eq!(kinds, ["image", "attestation-manifest"], "{raw}");

    let out = env.bake(&["--set", "other.attest=type=provenance,mode=max", "other"]);
    let err = assert_clean_failure(&out, "kiln bake with provenance mode=max");
    assert!(err.contains("mode=max is not supported"), "{err}");
}
