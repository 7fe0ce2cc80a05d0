//! BuildKit's Dockerfile semantics where kiln used to differ: each test names what BuildKit
//! does.

use std::io::Write;
use std::process::Stdio;

use crate::util::*;

#[test]
fn a_dockerfile_without_from_is_an_error_not_a_panic() {
    let env = Env::new();
    let mut child = env
        .kiln()
        .args(["build", "--no-lint", "-t", "x", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ARG foo=bar\n")
        .unwrap();
    let stderr = assert_clean_failure(&child.wait_with_output().unwrap(), "build without FROM");
    // BuildKit: "dockerfile contains no stages to build".
    assert!(
        stderr.contains("no stages to build"),
        "the error says what is missing:\n{stderr}"
    );
}
