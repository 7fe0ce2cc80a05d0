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
