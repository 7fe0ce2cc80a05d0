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
        "BUILDKIT_DOCKERFILE_CHECK=experimental=NoSuchCheck",
        &clean,
    ]);
    assert!(
        stderr.contains("NoSuchCheck is not a BuildKit check"),
        "{stderr}"
    );
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

/// `kiln build --check` on a context: the log, asserting the exit code (1 with violations).
fn check(env: &Env, ctx: &str, extra: &[&str], violations: bool) -> String {
    let mut args = vec!["--check"];
    args.extend_from_slice(extra);
    args.push(ctx);
    let (out, log) = env.build_output(&args);
    assert_eq!(out.status.code(), Some(i32::from(violations)), "{log}");
    log
}

/// Follows `testCopyIgnoredFiles` and `testCopyIgnoredFileContextRoot`: a COPY or ADD source
/// that `.dockerignore` excludes, unless the ignore file has exclusions (`!`), which BuildKit
/// cannot judge statically; the context root only when every root entry is ignored.
#[test]
fn copy_ignored_file_reads_the_contexts_dockerignore() {
    let env = Env::new();
    let text = "\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n";
    let ctx = env.context("ignored", text, &[(".dockerignore", "\nDockerfile\n")]);
    let log = check(&env, &ctx, &[], true);
    for line in [
        "CopyIgnoredFile: Attempting to Copy file \"Dockerfile\" that is excluded by .dockerignore (line 3)",
        "CopyIgnoredFile: Attempting to Add file \"Dockerfile\" that is excluded by .dockerignore (line 4)",
    ] {
        assert!(log.contains(line), "{line}\n{log}");
    }
    let skipped = env.context(
        "skipped",
        &format!("# check=skip=CopyIgnoredFile\n{text}"),
        &[(".dockerignore", "\nDockerfile\n")],
    );
    check(&env, &skipped, &[], false);
    let negated = env.context(
        "negated",
        "\nFROM scratch\nCOPY ./Dockerfile .\n",
        &[(".dockerignore", "\n**\n!Dockerfile\n")],
    );
    check(&env, &negated, &[], false);
    let from_stage = env.context(
        "stage",
        "\nFROM scratch AS base\nCOPY Dockerfile /foobar\n\nFROM base\nCOPY --from=base /foobar /Dockerfile\n",
        &[(".dockerignore", "\nfoobar\n")],
    );
    check(&env, &from_stage, &[], false);
    let dotfiles = env.context(
        "dots",
        "\nFROM scratch\nCOPY . .\n",
        &[(".dockerignore", "\n.*\n")],
    );
    check(&env, &dotfiles, &[], false);
    let everything = env.context(
        "all",
        "\nFROM scratch\nCOPY . .\n",
        &[(".dockerignore", "\n*\n")],
    );
    let log = check(&env, &everything, &[], true);
    assert!(
        log.contains("CopyIgnoredFile: Attempting to Copy file \".\" that is excluded by .dockerignore (line 3)"),
        "{log}"
    );
}

/// Follows `testInvalidDefaultArgInFrom`: the FROM name with the global ARGs' defaults only
/// (a `--build-arg` does not hide it) must be a valid image reference.
#[test]
fn invalid_default_arg_in_from_ignores_build_args() {
    let env = Env::new();
    for (text, arg, base) in [
        (
            "\nARG VERSION\nFROM busybox:$VERSION\n",
            "VERSION=latest",
            "busybox:$VERSION",
        ),
        (
            "\nARG IMAGE\nFROM $IMAGE\n",
            "IMAGE=busybox:latest",
            "$IMAGE",
        ),
        (
            "\nARG SFX=\"box:\"\nFROM busy${SFX}\n",
            "SFX=box:latest",
            "busy${SFX}",
        ),
    ] {
        let ctx = env.context("bad", text, &[]);
        let log = check(&env, &ctx, &["--build-arg", arg], true);
        let want = format!(
            "InvalidDefaultArgInFrom: Default value for ARG {base} results in empty or invalid \
             base image name (line 3)"
        );
        assert!(log.contains(&want), "{want}\n{log}");
    }
    for (text, arg) in [
        (
            "\nARG VERSION=\"latest\"\nFROM busybox:${VERSION}\n",
            "VERSION=latest",
        ),
        (
            "\nARG BUSYBOX_VARIANT=\"\"\nFROM busybox:stable${BUSYBOX_VARIANT}\n",
            "BUSYBOX_VARIANT=-musl",
        ),
        (
            "\nARG BUSYBOX_VARIANT\nFROM busybox:stable${BUSYBOX_VARIANT}\n",
            "BUSYBOX_VARIANT=-musl",
        ),
    ] {
        let ctx = env.context("good", text, &[]);
        let log = check(&env, &ctx, &["--build-arg", arg], false);
        assert!(!log.contains("InvalidDefaultArgInFrom"), "{log}");
    }
}

/// Follows `testBaseImagePlatformMismatch`: a base image that the store has for another
/// platform than the build's. BuildKit pulls it; kiln reads the store (nothing is pulled for
/// the checks).
#[test]
fn invalid_base_image_platform_compares_the_stores_image_with_the_build() {
    let env = Env::new();
    let host = crate::util::kiln_image_host_arch();
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    let other_platform = format!("linux/{other}");
    let base = env.context("base", "FROM scratch\nCOPY foo /foo\n", &[("foo", "test")]);
    env.build(&[
        "--no-lint",
        "--platform",
        &other_platform,
        "-t",
        "elsewhere",
        &base,
    ]);
    let ctx = env.context("app", "\nFROM elsewhere\nENV foo=bar\n", &[]);
    let log = check(&env, &ctx, &["--platform", &format!("linux/{host}")], true);
    let want = format!(
        "InvalidBaseImagePlatform: Base image elsewhere was pulled with platform \
         \"{other_platform}\", expected \"linux/{host}\" for current build (line 2)"
    );
    assert!(log.contains(&want), "{want}\n{log}");
    assert!(
        !log.contains("More info: \n"),
        "BuildKit gives this check no page:\n{log}"
    );
    // The image's own platform: no finding.
    let log = check(&env, &ctx, &["--platform", &other_platform], false);
    assert!(!log.contains("InvalidBaseImagePlatform"), "{log}");
}

/// Follows `testDefinitionDescription`: experimental in BuildKit (its linter runs it only when
/// `experimental=` names it, and `skip=` does not apply to it).
#[test]
fn invalid_definition_description_runs_only_when_asked() {
    let env = Env::new();
    let body = "# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n\
                # definitely a bad comment\nARG version=latest\n# definitely a bad comment\n\
                ARG foo=baz bar=qux baz=quux\n";
    let quiet = env.context(
        "quiet",
        &format!("# check=skip=JSONArgsRecommended\n{body}"),
        &[],
    );
    check(&env, &quiet, &[], false);
    let asked = env.context(
        "asked",
        &format!("# check=experimental=InvalidDefinitionDescription\n{body}"),
        &[],
    );
    let log = check(&env, &asked, &[], true);
    for (line, what, name) in [
        (3, "ARG", "foo"),
        (5, "FROM", "base"),
        (7, "ARG", "version"),
        (9, "ARG", "<arg_key>"),
    ] {
        let want = format!(
            "InvalidDefinitionDescription: Comment for {what} should follow the format: \
             `# {name} <description>` (line {line})"
        );
        assert!(log.contains(&want), "{want}\n{log}");
    }
}
