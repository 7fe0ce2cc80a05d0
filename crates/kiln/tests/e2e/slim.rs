//! The slim base (`make-debian-base.sh --variant slim`) and `kiln init python --variant slim`
//! built on it: smaller than python:3-slim-bookworm (124 MB uncompressed, amd64), measured by
//! `kiln analyze` and by docker after `kiln save | docker load`, with the same runtime.

use std::path::Path;

use crate::util::*;

/// python:3-slim-bookworm's uncompressed size on amd64, as `docker images` shows it (SI MB).
const PYTHON_SLIM_BYTES: u64 = 124_000_000;

/// The host's CA bundle: PyPI is reached through a proxy that re-signs HTTPS, so pip needs
/// it, as a secret mount that never lands in a layer.
pub const HOST_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Builds `kiln init python --variant slim` on the slim base as `tag`.
pub fn build_slim_python(env: &Env, tag: &str) {
    env.debian_slim_base("debian:bookworm-slim");
    let dir = env.path("slim-python");
    env.ok(&[
        "init",
        "python",
        "--variant",
        "slim",
        "--base",
        "debian:bookworm-slim",
        dir.to_str().unwrap(),
    ]);
    env.build(&["-t", tag, dir.to_str().unwrap()]);
}

#[test]
// The figures go to the test's output for the note (cargo test -- --nocapture).
#[allow(clippy::print_stderr)]
fn slim_python_is_smaller_than_python_slim_with_the_same_runtime() {
    assert!(Path::new(HOST_CA).is_file(), "this test needs {HOST_CA}");
    let env = Env::new();
    build_slim_python(&env, "py-slim");

    // kiln analyze: the merged content of every layer.
    let out = env.ok(&["analyze", "--format", "json", "--top", "1", "py-slim"]);
    let analysis: serde_json::Value = serde_json::from_str(&out).unwrap();
    let total = analysis["image"]["sizeBytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no image.sizeBytes in {out}"));
    eprintln!("kiln analyze py-slim: total {total} bytes");
    assert!(
        total > 50_000_000 && total < PYTHON_SLIM_BYTES,
        "kiln analyze: {total} bytes, python:3-slim is {PYTHON_SLIM_BYTES}"
    );

    // docker's own figure, after kiln save | docker load.
    let name = format!("kiln-slim-test:{}", std::process::id());
    env.ok(&["tag", "py-slim", &name]);
    kiln_to_docker(&env, &name);
    let size = run(docker().args(["image", "inspect", "--format", "{{.Size}}", &name]));
    run(docker().args(["rmi", &name]));
    let size: u64 = size.trim().parse().unwrap();
    eprintln!("docker image inspect: {size} bytes");
    assert!(
        size < PYTHON_SLIM_BYTES,
        "docker: {size} bytes, python:3-slim is {PYTHON_SLIM_BYTES}"
    );

    // The runtime: the stdlib modules that need shared libraries, a new venv, and pip
    // installing a pure-Python package and a manylinux wheel (MarkupSafe's C speedups).
    let ctx = env.context(
        "app",
        "FROM py-slim\n\
         RUN python3 -c 'import ssl, sqlite3, venv, ctypes, zlib, lzma, bz2, readline' \\\n \
         && python3 -m venv /tmp/venv && /tmp/venv/bin/python -m pip --version\n\
         RUN --mount=type=secret,id=ca PIP_CERT=/run/secrets/ca pip install --only-binary=:all: six==1.16.0 MarkupSafe==2.1.5\n",
        &[],
    );
    let secret = format!("id=ca,src={HOST_CA}");
    env.build(&["--secret", &secret, "-t", "py-app", &ctx]);
    let out = env.ok(&[
        "run",
        "py-app",
        "python3",
        "-c",
        "import six, markupsafe._speedups as s; print(six.__version__, s.__file__)",
    ]);
    assert!(
        out.starts_with("1.16.0 /opt/venv/lib/python3.11/site-packages/markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so"),
        "{out}"
    );
    // The CA was a secret: nothing of it is in the image.
    let out = env.ok(&[
        "run",
        "py-app",
        "sh",
        "-c",
        "ls /run/secrets 2>&1; ls /etc/pip.conf 2>&1; echo done",
    ]);
    assert!(
        out.contains("No such file") && out.ends_with("done\n"),
        "{out}"
    );
}
