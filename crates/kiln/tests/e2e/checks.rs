//! BuildKit's build checks (`frontend/dockerfile/linter`) under BuildKit's rule names:
//! warnings during a build, `# check=skip=…;error=true`, the `BUILDKIT_DOCKERFILE_CHECK`
//! build arg, and `kiln build --check`.
//!
//! docker 20.10's BuildKit predates build checks (Dockerfile 1.8), so these are not
//! differential cases: each follows a test of BuildKit's
//! `frontend/dockerfile/dockerfile_check_test.go`, named at the test.

use crate::util::Env;

/// What the step prints when the build runs it: the shell computes it, so the Dockerfile's
/// text (which `--check` quotes) does not contain it.
const MARK: &str = "step-ran-2222";

fn dockerfile(directive: &str) -> String {
    format!("{directive}FROM busybox AS Base\nRUN echo step-ran-$((1111*2))\nCMD echo hi\n")
}

/// Follows `testJSONArgsRecommended` and `testStageName`: the checks warn, the build succeeds.
#[test]
fn checks_warn_during_a_build_in_buildkit_words() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("warn", &dockerfile(""), &[]);
    let (out, log) = env.build_output(&[
        "--no-lint",
        "--no-cache",
        "--progress=plain",
        "-t",
        "warn",
        &ctx,
    ]);
    assert!(
        out.status.success(),
        "the warnings do not fail the build:\n{log}"
    );
    assert!(
        log.contains(
            "WARN: JSONArgsRecommended: JSON arguments recommended for CMD to prevent \
             unintended behavior related to OS signals (line 3)"
        ),
        "{log}"
    );
    assert!(
        log.contains("WARN: StageNameCasing: Stage name 'Base' should be lowercase (line 1)"),
        "{log}"
    );
    assert!(log.contains(MARK), "the build ran its step:\n{log}");
}

/// Follows `testRuleCheckOption` (the `error=true` cases): the build fails on the checks,
/// naming the rules, before any step runs.
#[test]
fn check_error_true_fails_before_any_step_runs() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("err", &dockerfile("# check=error=true\n"), &[]);
    let (out, log) = env.build_output(&[
        "--no-lint",
        "--no-cache",
        "--progress=plain",
        "-t",
        "err",
        &ctx,
    ]);
    assert!(!out.status.success(), "error=true fails the build:\n{log}");
    assert!(
        log.contains("lint violation found for rules: JSONArgsRecommended, StageNameCasing"),
        "{log}"
    );
    assert!(log.contains("WARN: JSONArgsRecommended"), "{log}");
    assert!(!log.contains(MARK), "no step ran:\n{log}");
    let stderr = env.fails(&["inspect", "err"]);
    assert!(stderr.contains("err"), "no image was named:\n{stderr}");
}

/// Follows `testRuleCheckOption`: skipped rules neither warn nor fail, even with error=true;
/// a BuildKit rule kiln does not implement may be skipped too.
#[test]
fn check_skip_leaves_rules_out() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "skip",
        &dockerfile(
            "# check=skip=JSONArgsRecommended,StageNameCasing,InvalidDefaultArgInFrom;error=true\n",
        ),
        &[],
    );
    let (out, log) = env.build_output(&[
        "--no-lint",
        "--no-cache",
        "--progress=plain",
        "-t",
        "skip",
        &ctx,
    ]);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(MARK), "the build ran:\n{log}");
    assert!(!log.contains("WARN: "), "no check warned:\n{log}");
    let ctx = env.context("all", &dockerfile("# check=skip=all;error=true\n"), &[]);
    let (out, log) = env.build_output(&[
        "--no-lint",
        "--no-cache",
        "--progress=plain",
        "-t",
        "all",
        &ctx,
    ]);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(MARK), "the build ran:\n{log}");
}

/// Follows the last two cases of `testRuleCheckOption`: the build arg replaces the directive.
#[test]
fn buildkit_dockerfile_check_build_arg_overrides_the_directive() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("over", &dockerfile("# check=error=true\n"), &[]);
    let (out, log) = env.build_output(&[
        "--no-lint",
        "--progress=plain",
        "--no-cache",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=all",
        "-t",
        "over",
        &ctx,
    ]);
    assert!(
        out.status.success(),
        "skip=all from the build arg wins:\n{log}"
    );
    assert!(log.contains(MARK), "{log}");
    let ctx = env.context("plain", &dockerfile(""), &[]);
    let (out, log) = env.build_output(&[
        "--no-lint",
        "--progress=plain",
        "--no-cache",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=StageNameCasing;error=true",
        "-t",
        "plain",
        &ctx,
    ]);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("lint violation found for rules: JSONArgsRecommended"),
        "{log}"
    );
    assert!(
        !log.contains("StageNameCasing"),
        "skipped by the arg:\n{log}"
    );
    assert!(!log.contains(MARK), "{log}");
}

/// `docker build --check`: the checks only, nothing built, non-zero on a violation (BuildKit's
/// docs, "Check a build without building"); an unknown experimental rule is an error.
#[test]
fn build_check_runs_the_checks_only() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("chk", &dockerfile(""), &[]);
    let (out, log) = env.build_output(&["--check", "-t", "chk", &ctx]);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("JSONArgsRecommended"), "{log}");
    assert!(
        log.contains("Stage name 'Base' should be lowercase"),
        "{log}"
    );
    assert!(!log.contains(MARK), "nothing was built:\n{log}");
    env.fails(&["inspect", "chk"]);

    let clean = env.context("clean", "FROM busybox\nCMD [\"true\"]\n", &[]);
    let (out, log) = env.build_output(&["--check", &clean]);
    assert!(out.status.success(), "no violation, exit 0:\n{log}");
    assert!(log.contains("Check complete, no warnings found."), "{log}");

    let stderr = env.fails(&[
        "build",
        "--check",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=experimental=CopyIgnoredFile",
        &clean,
    ]);
    assert!(stderr.contains("CopyIgnoredFile"), "{stderr}");
}

/// Follows `testUnmatchedVars`: UndefinedVar knows the base image's environment (here from
/// the store) and suggests the near name.
#[test]
fn undefined_var_uses_the_base_image_environment() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "uv",
        "FROM busybox\nENV PATH=$PATH:/opt/bin\nENV X=$PAHT\n",
        &[],
    );
    let (out, log) = env.build_output(&["--no-lint", "--progress=plain", "-t", "uv", &ctx]);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(
            "WARN: UndefinedVar: Usage of undefined variable '$PAHT' (did you mean $PATH?) (line 3)"
        ),
        "{log}"
    );
    assert!(!log.contains("'$PATH'"), "PATH comes from the base:\n{log}");
}
