//! What `kiln build` hands to CI scripts, as `docker buildx build` does: `--iidfile`, `-q`,
//! exit codes, `--metadata-file`, the `-o/--output` exporters, `--load`, and contexts from
//! stdin. Each result is read by the tool that consumes it: docker, skopeo, umoci, GNU tar,
//! docker-registry.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::util::{Env, assert_clean_failure, assert_success, docker, kiln_to_docker, run};

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
    let mut cmd = Command::new(crate::util::require("skopeo"));
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
