//! BuildKit's Dockerfile semantics where kiln used to differ: each test names what BuildKit
//! does.

use crate::util::*;

#[test]
fn a_dockerfile_without_from_is_an_error_not_a_panic() {
    let env = Env::new();
    let out = env.with_stdin(&["build", "--no-lint", "-t", "x", "-"], "ARG foo=bar\n");
    let stderr = assert_clean_failure(&out, "build without FROM");
    // BuildKit: "dockerfile contains no stages to build".
    assert!(
        stderr.contains("no stages to build"),
        "the error says what is missing:\n{stderr}"
    );
}

#[test]
fn flags_kiln_does_not_implement_are_refused_by_name_before_anything_runs() {
    let env = Env::new();
    env.busybox_base("busybox");
    let cases = [
        ("RUN --device=/dev/fuse true", "--device"),
        ("RUN --mount=type=ssh,source=k true", "source="),
    ];
    for (i, (line, named)) in cases.iter().enumerate() {
        let dockerfile = format!("FROM busybox\nRUN echo first-step-ran\n{line}\n");
        let ctx = env.context(&format!("c{i}"), &dockerfile, &[("a", "x")]);
        let out = env
            .kiln()
            .args(["build", "--no-lint", "-t", "x", &ctx])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = assert_clean_failure(&out, line);
        assert!(
            stderr.contains(named),
            "{line}: the error names {named}:\n{stderr}"
        );
        assert!(
            stderr.contains("Dockerfile:3"),
            "{line}: the error gives its line:\n{stderr}"
        );
        assert!(
            !stdout.contains("first-step-ran") && !stderr.contains("first-step-ran"),
            "{line}: refused only after a step ran"
        );
    }
    // BuildKit refuses a checksum on a local source.
    let ctx = env.context("checksum",
        "FROM busybox\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 a /a\n",
        &[("a", "x")],
    );
    let stderr = env.fails(&["build", "--no-lint", "-t", "x", &ctx]);
    assert!(
        stderr.contains("checksum requires HTTP(S) or Git sources"),
        "{stderr}"
    );
}

#[test]
fn directives_name_the_frontend_and_refuse_what_kiln_cannot_do() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "v1",
        "# syntax=docker/dockerfile:1.7\nFROM busybox\nRUN echo ok\n",
        &[],
    );
    let (_, stderr) = env.build(&["--no-lint", "-t", "v1", &ctx]);
    assert!(
        stderr.contains("docker/dockerfile:1 reference"),
        "the build says which Dockerfile version it implements:\n{stderr}"
    );
    for (directive, named) in [
        (
            "# syntax=example.com/other/frontend:2",
            "example.com/other/frontend:2",
        ),
        ("# syntax=docker/dockerfile:1-labs", "1-labs"),
    ] {
        let stderr = env.build_error("d", &format!("{directive}\nFROM busybox\nRUN echo ok\n"));
        assert!(stderr.contains(named), "{directive}:\n{stderr}");
    }
    // `# check=` is BuildKit's build checks, now run (checks.rs): a Dockerfile that passes
    // them builds with error=true.
    let ctx = env.context("c", "# check=error=true\nFROM busybox\nRUN echo ok\n", &[]);
    env.build(&["--no-lint", "-t", "c", &ctx]);
}

#[test]
fn secret_mounts_take_env_owner_and_mode_and_the_hostname_arg_is_used() {
    let env = Env::new();
    env.busybox_base("busybox");
    let secret = env.path("token.txt");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let ctx = env.context("s",
        "FROM busybox\n\
         RUN --mount=type=secret,id=t,env=TOKEN sh -c 'echo \"token=$TOKEN\"; ls /run/secrets/t 2>/dev/null || echo no-file'\n\
         RUN --mount=type=secret,id=t stat -c 'default=%u:%g:%a' /run/secrets/t\n\
         RUN --mount=type=secret,id=t,uid=1000,gid=1000,mode=0440 stat -c 'custom=%u:%g:%a' /run/secrets/t\n\
         RUN --mount=type=secret,id=absent sh -c 'ls /run/secrets/absent 2>/dev/null || echo optional-absent'\n\
         RUN --mount=type=cache,target=/c,sharing=locked sh -c 'echo locked > /c/x && cat /c/x'\n\
         RUN hostname\n",
        &[],
    );
    let secret_arg = format!("id=t,src={}", secret.display());
    let (stdout, stderr) = env.build(&[
        "--no-lint",
        "--secret",
        &secret_arg,
        "--build-arg",
        "BUILDKIT_SANDBOX_HOSTNAME=builder-7",
        "-t",
        "s",
        &ctx,
    ]);
    let text = format!("{stdout}{stderr}");
    for expected in [
        "token=s3cr3t",
        "no-file",
        "default=0:0:400",
        "custom=1000:1000:440",
        "optional-absent",
        "#6 locked",
        "builder-7",
    ] {
        assert!(text.contains(expected), "expected {expected}:\n{text}");
    }
}

#[test]
fn the_primary_group_is_among_the_supplementary_groups() {
    // runc since CVE-2023-25173: `id` as root lists gid 0 besides the groups that name root.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "groups",
        "FROM busybox\nRUN echo 'wheel:x:10:root' >> /etc/group\nRUN id\nUSER app\nRUN id\n",
        &[],
    );
    let (stdout, stderr) = env.build(&["--no-lint", "-t", "g", &ctx]);
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("groups=0(root),10(wheel)"), "{text}");
    assert!(
        text.contains("uid=1000(app) gid=1000(app) groups=1000(app)"),
        "{text}"
    );
}

#[test]
fn a_lower_case_dockerfile_is_found_and_a_lone_bang_is_refused() {
    let env = Env::new();
    env.busybox_base("busybox");
    let dir = env.path("lower");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dockerfile"),
        "FROM busybox\nRUN echo lower-$((6*7))\n",
    )
    .unwrap();
    let ctx = dir.to_str().unwrap();
    let (stdout, stderr) = env.build(&["--no-lint", "-t", "lower", ctx]);
    assert!(format!("{stdout}{stderr}").contains("lower-42"), "{stderr}");
    // BuildKit: `illegal exclusion pattern: "!"`.
    std::fs::write(dir.join(".dockerignore"), "a\n!\n").unwrap();
    let stderr = env.fails(&["build", "--no-lint", "-t", "lower", ctx]);
    assert!(stderr.contains("illegal exclusion pattern"), "{stderr}");
}

#[test]
fn a_stage_named_through_a_global_arg_is_built() {
    // BuildKit resolves `FROM stage-$TARGETOS` to the stage `stage-linux`.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "argstage",
        "FROM busybox AS stage-linux\nRUN echo from-linux > /os\n\
         FROM busybox AS stage-windows\nRUN echo from-windows > /os\n\
         FROM stage-$TARGETOS\nRUN cat /os\n",
        &[],
    );
    let (stdout, stderr) = env.build(&["--no-lint", "-t", "argstage", &ctx]);
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("from-linux"), "{text}");
    assert!(
        !text.contains("echo from-windows"),
        "the unused stage is skipped:\n{text}"
    );
}

#[test]
fn a_heredoc_with_a_shebang_runs_under_its_interpreter() {
    // BuildKit's TestDockerfileHeredoc ("#!/bin/awk -f"): the heredoc is the program.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "shebang",
        "FROM busybox\nRUN <<EOF\n#!/bin/awk -f\nBEGIN { print \"awk-ran-\" 6*7 }\nEOF\n\
         RUN <<EOF\necho sh-ran-$((6*7))\nEOF\n",
        &[],
    );
    let (stdout, stderr) = env.build(&["--no-lint", "-t", "shebang", &ctx]);
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("awk-ran-42"), "{text}");
    assert!(
        text.contains("sh-ran-42"),
        "a plain heredoc still runs in the shell:\n{text}"
    );
    // Nothing of the program's mount is left in the image.
    let listing = env.ok(&["run", "--rm", "shebang", "ls", "-a", "/dev"]);
    assert!(!listing.contains("pipes"), "{listing}");
}

#[test]
fn a_socket_in_the_context_becomes_an_empty_file() {
    // BuildKit's context transfer sends a socket as an empty regular file.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "socket",
        "FROM busybox\nCOPY . /ctx/\nRUN test -f /ctx/app.sock && test ! -s /ctx/app.sock && echo empty-file-$((6*7))\n",
        &[],
    );
    let _listener =
        std::os::unix::net::UnixListener::bind(std::path::Path::new(&ctx).join("app.sock"))
            .unwrap();
    let (out, text) = env.build_output(&["--no-lint", "-t", "sock", &ctx]);
    assert_success(&out, "the build with a socket in its context");
    assert!(text.contains("empty-file-42"), "{text}");
}

#[test]
fn a_wildcard_that_matches_nothing_beside_a_source_that_does_is_no_error() {
    // BuildKit copies with AllowEmptyWildcard: `COPY foo nomatch* /dest/` copies foo.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "wild",
        "FROM busybox\nCOPY foo nomatch* /dest/\nRUN cat /dest/foo\n",
        &[("foo", "foo-content\n")],
    );
    let (out, text) = env.build_output(&["--no-lint", "-t", "wild", &ctx]);
    assert_success(&out, "COPY with an empty wildcard");
    assert!(text.contains("foo-content"), "{text}");
    // Nothing at all to copy is still an error, and a missing plain path always is.
    for line in ["COPY nomatch* /dest/", "COPY foo missing /dest/"] {
        let ctx = env.context(
            "wild-bad",
            &format!("FROM busybox\n{line}\n"),
            &[("foo", "x")],
        );
        let stderr = env.fails(&["build", "--no-lint", "-t", "wild", &ctx]);
        assert!(
            stderr.contains("nomatch*") || stderr.contains("missing"),
            "{line}: {stderr}"
        );
    }
}

#[test]
fn source_date_epoch_comes_from_a_build_arg_too() {
    // BuildKit (>= 0.11): --build-arg SOURCE_DATE_EPOCH sets the image's timestamps.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("epoch", "FROM busybox\nRUN echo hi > /hi\n", &[]);
    env.build(&[
        "--no-lint",
        "--build-arg",
        "SOURCE_DATE_EPOCH=1700000000",
        "-t",
        "epoch",
        &ctx,
    ]);
    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "epoch"])).unwrap();
    let text = inspect.to_string();
    assert!(
        text.contains("2023-11-14T22:13:20Z"),
        "the epoch's time is the image's:\n{text}"
    );
    let stderr = env.fails(&["build", "--build-arg", "SOURCE_DATE_EPOCH=yesterday", &ctx]);
    assert!(stderr.contains("SOURCE_DATE_EPOCH"), "{stderr}");
}

#[test]
fn proxy_build_args_reach_run_without_arg_and_stay_out_of_the_history() {
    // BuildKit's predefined proxy args (reference.md, "Predefined ARGs").
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "proxy",
        "FROM busybox\nRUN echo \"proxy=$HTTP_PROXY\"\n",
        &[],
    );
    let (stdout, stderr) = env.build(&[
        "--no-lint",
        "--build-arg",
        "HTTP_PROXY=http://proxy.example:3128",
        "-t",
        "proxy",
        &ctx,
    ]);
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("proxy=http://proxy.example:3128"), "{text}");
    let history = env.ok(&["history", "--no-trunc", "proxy"]);
    assert!(history.contains("echo"), "{history}");
    assert!(
        !history.contains("proxy.example"),
        "the proxy stays out of the history:\n{history}"
    );
}

#[test]
fn proxy_build_arg_reaches_run_in_both_cases() {
    // BuildKit's testBuiltinArgs (dockerfile_args_test.go): `--build-arg http_proxy=…` is read
    // as `$HTTP_PROXY`; the exec op sets each proxy variable in upper and lower case
    // (proxyEnvList in solver/llbsolver/ops/exec.go), whatever case the build arg had.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "proxy-case",
        "FROM busybox\nARG FOO\nRUN echo \"out=$HTTP_PROXY::$http_proxy::$NO_PROXY::$no_proxy::$FOO\"\n",
        &[],
    );
    let (stdout, stderr) = env.build(&[
        "--no-lint",
        "--build-arg",
        "FOO=foocontents",
        "--build-arg",
        "http_proxy=hpvalue",
        "--build-arg",
        "NO_PROXY=npvalue",
        &ctx,
    ]);
    let text = format!("{stdout}{stderr}");
    assert!(
        text.contains("out=hpvalue::hpvalue::npvalue::npvalue::foocontents"),
        "{text}"
    );
}

#[test]
fn copy_from_a_later_stage_is_refused_as_buildkit_does() {
    // BuildKit's testOutOfOrderStage (dockerfile_multistage_test.go): a stage named by
    // --from but defined after the current one is an error, not an image to look up.
    let env = Env::new();
    env.busybox_base("busybox");
    for src in ["/", "/d2"] {
        let ctx = env.context(
            &format!("ooo{}", src.len()),
            &format!(
                "FROM busybox AS target\nCOPY --from=build {src} /out\n\
                 FROM busybox AS build\nCOPY /Dockerfile /d2\nFROM target\n"
            ),
            &[],
        );
        let (out, text) = env.build_output(&["--no-lint", &ctx]);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains(
                "cannot copy from stage \"build\", it needs to be defined before current stage \"target\""
            ),
            "{text}"
        );
    }
}

#[test]
fn a_failed_run_names_the_process_as_buildkit_does() {
    // BuildKit's testDockerfileInvalidCommand (dockerfile_cmd_test.go): the error holds
    // `/bin/sh -c invalidcmd` and "did not complete successfully".
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("invalidcmd", "FROM busybox\nRUN invalidcmd\n", &[]);
    let (out, text) = env.build_output(&["--no-lint", &ctx]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("process \"/bin/sh -c invalidcmd\" did not complete successfully"),
        "{text}"
    );
}

#[test]
fn a_mistyped_target_gets_buildkits_error_and_hint() {
    // BuildKit's testTargetMistype (dockerfile_core_test.go).
    let env = Env::new();
    let ctx = env.context(
        "mistype",
        "FROM scratch AS build\nCOPY Dockerfile /out\nFROM scratch\nCOPY --from=build /out /\n",
        &[],
    );
    let (out, text) = env.build_output(&["--no-lint", "--target", "bulid", &ctx]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("target stage \"bulid\" could not be found (did you mean build?)"),
        "{text}"
    );
}

#[test]
fn a_scratch_stage_numbers_its_steps_without_the_from() {
    // BuildKit's testStepNames (dockerfile_core_test.go): `FROM scratch` is no step, so the
    // COPY of a one-instruction scratch stage is `[stage-1 1/1]`; a base image's FROM counts.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "stepnames",
        "FROM busybox AS base\nWORKDIR /out\nRUN echo \"base\" > base\n\
         FROM scratch\nCOPY --from=base --chmod=0644 /out /out\n",
        &[],
    );
    let (stdout, stderr) = env.build(&["--no-lint", "--progress", "plain", &ctx]);
    let log = format!("{stdout}{stderr}");
    assert!(log.contains("[base 3/3] RUN echo \"base\" > base"), "{log}");
    assert!(
        log.contains("[stage-1 1/1] COPY --from=base --chmod=0644 /out /out"),
        "{log}"
    );
    assert!(!log.contains("FROM scratch"), "{log}");
}

#[test]
fn the_sandbox_hostname_resolves_in_etc_hosts() {
    // BuildKit's testDockerfileCheckHostname (dockerfile_core_test.go), its build-arg case:
    // with BUILDKIT_SANDBOX_HOSTNAME=foo, `/etc/hosts`, `$HOSTNAME` and `hostname` all say foo
    // (BuildKit writes `127.0.0.1 localhost foo` in the step's hosts file).
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "hostname",
        "FROM busybox\nRUN cat /etc/hosts | grep foo\nRUN echo $HOSTNAME | grep foo\n\
         RUN echo $(hostname) | grep foo\nRUN grep -E '^127.0.0.1\\s+foo$' /etc/hosts\n",
        &[],
    );
    env.build(&[
        "--no-lint",
        "--build-arg",
        "BUILDKIT_SANDBOX_HOSTNAME=foo",
        &ctx,
    ]);
}

#[test]
fn a_required_secret_not_given_says_not_found_as_buildkit_does() {
    // BuildKit's testSecretRequiredWithoutValue (dockerfile_secrets_test.go): the error holds
    // "secret mysecret: not found".
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "secret-required",
        "FROM busybox\nRUN --mount=type=secret,required,id=mysecret foo\n",
        &[],
    );
    let (out, text) = env.build_output(&["--no-lint", &ctx]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("secret mysecret: not found"), "{text}");
    assert!(text.contains("--secret id=mysecret,src=FILE"), "{text}");
}

#[test]
fn a_tab_stripped_shebang_heredoc_runs_with_its_interpreter() {
    // BuildKit's testRunShebangHeredoc (dockerfile_heredoc_test.go), its `RUN <<-EOF` case:
    // the shebang is found after the leading tabs are removed.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "shebang-chomp",
        "FROM busybox\nWORKDIR /dest\nRUN <<-EOF\n\t#!/bin/awk -f\n\tBEGIN {\n\
         \t\tprint \"hello\" >> \"./out2\"\n\t\tprint \"world\" >> \"./out2\"\n\t}\nEOF\n\
         RUN cat /dest/out2\n",
        &[],
    );
    let (stdout, stderr) = env.build(&["--no-lint", "--progress", "plain", &ctx]);
    let log = format!("{stdout}{stderr}");
    assert_eq!(
        step_log(&log, "RUN cat /dest/out2")
            .into_iter()
            .filter(|l| *l == "hello" || *l == "world")
            .collect::<Vec<_>>(),
        ["hello", "world"],
        "{log}"
    );
}

#[test]
fn mistyped_flags_and_mount_keys_get_buildkits_hints() {
    // BuildKit's testMountInvalid (dockerfile_mount_test.go): "unknown flag: --mont" with
    // "did you mean mount?", and "unexpected key 'typ'" with "did you mean type?".
    let env = Env::new();
    for (name, dockerfile, wants) in [
        (
            "mont",
            "FROM scratch\nRUN --mont=target=/mytmp,type=tmpfs /bin/true\n",
            ["unknown flag: --mont", "did you mean mount?"],
        ),
        (
            "typ",
            "FROM scratch\nRUN --mount=typ=tmpfs /bin/true\n",
            ["unexpected key 'typ'", "did you mean type?"],
        ),
    ] {
        let text = env.build_error(name, dockerfile);
        for want in wants {
            assert!(text.contains(want), "{name}: want {want:?}:\n{text}");
        }
    }
}

#[test]
fn targetstage_is_the_last_stages_name() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "ts",
        "FROM busybox AS first\nFROM busybox AS release\nARG TARGETSTAGE\nRUN echo \"stage=$TARGETSTAGE\"\n",
        &[],
    );
    let (stdout, stderr) = env.build(&["--no-lint", "-t", "ts", &ctx]);
    assert!(
        format!("{stdout}{stderr}").contains("stage=release"),
        "{stderr}"
    );
}

#[test]
fn a_rw_mount_from_a_stage_writes_to_a_throwaway_layer() {
    // BuildKit: `--mount=from=STAGE,rw` may be written; the writes vanish with the step.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "rwfrom",
        "FROM busybox AS src\nRUN echo original > /f\n\
         FROM busybox\n\
         RUN --mount=from=src,target=/m,rw sh -c 'echo changed > /m/f && echo \"in-step=$(cat /m/f)\"'\n\
         RUN --mount=from=src,target=/m echo \"after=$(cat /m/f)\"\n",
        &[],
    );
    let (stdout, stderr) = env.build(&["--no-lint", "-t", "rwfrom", &ctx]);
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("in-step=changed"), "{text}");
    assert!(text.contains("after=original"), "{text}");
}

#[test]
fn an_onbuild_trigger_with_a_flag_kiln_lacks_is_refused_by_name() {
    let env = Env::new();
    env.busybox_base("busybox");
    let base = env.context(
        "onbuild-base",
        "FROM busybox\nONBUILD RUN --device=/dev/fuse true\n",
        &[],
    );
    env.build(&["--no-lint", "-t", "with-trigger", &base]);
    let child = env.context("onbuild-child", "FROM with-trigger\n", &[("a/b", "x")]);
    let stderr = env.fails(&["build", "--no-lint", "-t", "child", &child]);
    assert!(stderr.contains("--device"), "{stderr}");
}

#[test]
fn a_url_without_a_file_name_is_saved_as_unnamed() {
    // BuildKit (source/http): a URL path that ends in `/` gives the file `__unnamed__`.
    let env = Env::new();
    env.busybox_base("busybox");
    let port = loopback_server("served-body");
    let ctx = env.context(
        "unnamed",
        &format!(
            "FROM busybox\nADD http://127.0.0.1:{port}/ /d/\nRUN cat /d/__unnamed__ && echo\n"
        ),
        &[],
    );
    let (stdout, stderr) = env.build(&["--no-lint", "-t", "unnamed", &ctx]);
    assert!(
        format!("{stdout}{stderr}").contains("served-body"),
        "{stderr}"
    );
}

#[test]
fn a_download_takes_its_mtime_from_last_modified_or_the_epoch() {
    // BuildKit (source/http/httpsource.go): the file's mtime is the response's Last-Modified,
    // and the Unix epoch without one; so the same bytes give the same layer whenever fetched.
    let env = Env::new();
    env.busybox_base("busybox");
    let dated = loopback_server_with(
        "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
        b"dated".to_vec(),
    );
    let undated = loopback_server("undated");
    let ctx = env.context(
        "mtime",
        &format!(
            "FROM busybox\nADD http://127.0.0.1:{dated}/dated /dated\n\
             ADD http://127.0.0.1:{undated}/undated /undated\n\
             RUN echo \"mtimes $(stat -c %Y /dated) $(stat -c %Y /undated)\"\n"
        ),
        &[],
    );
    let (out, log) = env.build_output(&["--no-lint", &ctx]);
    assert_success(&out, "kiln build of two downloads");
    assert!(log.contains("mtimes 784111777 0"), "{log}");
    // Fetched again, the same bytes: the same key.
    let (_, log) = env.build_output(&["--no-lint", &ctx]);
    assert_eq!(
        step_log(&log, "/dated /dated").last(),
        Some(&"CACHED"),
        "{log}"
    );
}

#[test]
fn bind_mounts_of_the_context_leave_out_what_dockerignore_leaves_out() {
    // BuildKit sends a step only the context files the ignore rules keep, whether COPY or a
    // `RUN --mount=type=bind` reads them (the context is one filtered source).
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "bind-ignore",
        "FROM busybox\n\
         RUN --mount=type=bind,target=/ctx --mount=type=bind,source=sub,target=/sub \\\n\
         --mount=type=bind,source=sub/keep.txt,target=/one.txt \\\n\
         echo \"seen: $(ls -A /ctx | tr '\\n' ' ')| $(ls -A /sub | tr '\\n' ' ')| $(cat /one.txt)\"\n",
        &[
            (".dockerignore", "secret.txt\nsub/skip.txt\n"),
            ("secret.txt", "hidden"),
            ("sub/keep.txt", "kept"),
            ("sub/skip.txt", "skipped"),
        ],
    );
    let (out, log) = env.build_output(&["--no-lint", &ctx]);
    assert_success(&out, "kiln build with context bind mounts");
    assert!(
        log.contains("seen: .dockerignore Dockerfile sub | keep.txt | kept"),
        "{log}"
    );
}

#[test]
fn a_dockerfiles_own_ignore_file_wins_over_the_contexts() {
    // BuildKit: `<name>.Dockerfile.dockerignore` beside the Dockerfile replaces .dockerignore.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "own-ignore",
        "FROM busybox\n",
        &[
            ("a.txt", "a"),
            ("b.txt", "b"),
            (".dockerignore", "a.txt\n"),
            ("app.Dockerfile.dockerignore", "b.txt\n"),
            (
                "app.Dockerfile",
                "FROM busybox\nCOPY . /c/\nRUN ls /c | tr '\\n' ' ' | sed \"s/^/listing-$((6*7)): /\"\n",
            ),
        ],
    );
    let file = format!("{ctx}/app.Dockerfile");
    let (stdout, stderr) = env.build(&["--no-lint", "-f", &file, "-t", "own", &ctx]);
    let text = format!("{stdout}{stderr}");
    let listing = text
        .lines()
        .find(|l| l.contains("listing-42: "))
        .unwrap_or_else(|| panic!("no listing:\n{text}"));
    assert!(listing.contains("a.txt"), "{listing}");
    assert!(!listing.contains("b.txt"), "{listing}");
    // The plain Dockerfile keeps the context's .dockerignore.
    std::fs::write(
        format!("{ctx}/Dockerfile"),
        "FROM busybox\nCOPY . /c/\nRUN ls /c | tr '\\n' ' ' | sed \"s/^/listing-$((6*7)): /\"\n",
    )
    .unwrap();
    let (stdout, stderr) = env.build(&["--no-lint", "-t", "plain", &ctx]);
    let text = format!("{stdout}{stderr}");
    let listing = text.lines().find(|l| l.contains("listing-42: ")).unwrap();
    assert!(
        !listing.contains("a.txt") && listing.contains("b.txt"),
        "{listing}"
    );
}

#[test]
fn an_arg_default_is_not_evaluated_when_a_build_arg_gives_the_value() {
    // BuildKit's testArgDefaultExpansion (dockerfile_args_test.go): `${FOO:?…}` in a default
    // fails only when the default is used. docker 20.10's BuildKit expanded every default
    // first and fails even with --build-arg BAR, so this follows the current reference.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "argdefault",
        "FROM busybox\nARG FOO\nARG BAR=${FOO:?\"foo missing\"}\nRUN echo \"bar=$BAR\"\n",
        &[],
    );
    let stderr = env.fails(&["build", "--no-lint", "-t", "argdefault", &ctx]);
    assert!(stderr.contains("FOO: foo missing"), "{stderr}");
    let (stdout, stderr) = env.build(&["--no-lint", "--build-arg", "FOO=123", "-t", "a", &ctx]);
    assert!(format!("{stdout}{stderr}").contains("bar=123"), "{stderr}");
    let (stdout, stderr) = env.build(&["--no-lint", "--build-arg", "BAR=456", "-t", "b", &ctx]);
    assert!(format!("{stdout}{stderr}").contains("bar=456"), "{stderr}");
    // The history shows the value the ARG took, as BuildKit's dispatchArg commits it.
    let history = env.ok(&["history", "--no-trunc", "b"]);
    assert!(history.contains("ARG BAR=456"), "{history}");
}

#[test]
fn copy_chmod_gives_its_mode_to_the_parents_it_creates() {
    // BuildKit's testCopyChmod (dockerfile_copy_test.go), with fsutil since 183e7fb (2025,
    // "copy: fix custom chmod for parent directories"): directories that COPY --chmod creates
    // take the mode (its permission bits); docker 20.10 made them 0755 (the differential
    // copy-chmod case says so). An archive's destination stays 0755: BuildKit's unpack makes
    // it with that mode whatever --chmod says.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "chmod-parents",
        "FROM busybox\n\
         COPY --chmod=777 foo /parent/foo\n\
         COPY --chmod=770 foo /parent/sub/foo\n\
         COPY --chmod=4711 foo /setuid/deeper/foo\n\
         COPY --chmod=700 dir /newdir/\n\
         ADD --chmod=600 t.tar /unpacked/here/\n\
         RUN stat -c 'mode %n %04a' /parent /parent/sub /parent/foo /setuid /setuid/deeper /setuid/deeper/foo /newdir /newdir/inner /unpacked /unpacked/here /unpacked/here/in-tar\n",
        &[("foo", "foo-contents"), ("dir/inner", "x")],
    );
    let tar_src = env.path("tar-src");
    std::fs::create_dir_all(&tar_src).unwrap();
    std::fs::write(tar_src.join("in-tar"), "t").unwrap();
    run(std::process::Command::new("tar")
        .arg("-C")
        .arg(&tar_src)
        .arg("-cf")
        .arg(format!("{ctx}/t.tar"))
        .arg("in-tar"));
    let (stdout, stderr) = env.build(&["--no-lint", "-t", "chmod-parents", &ctx]);
    let text = format!("{stdout}{stderr}");
    for expected in [
        "mode /parent 0777",
        "mode /parent/sub 0770",
        "mode /parent/foo 0777",
        "mode /setuid 0711",
        "mode /setuid/deeper 0711",
        "mode /setuid/deeper/foo 4711",
        "mode /newdir 0700",
        "mode /newdir/inner 0700",
        "mode /unpacked 0755",
        "mode /unpacked/here 0755",
    ] {
        assert!(text.contains(expected), "expected {expected}:\n{text}");
    }
}

#[test]
fn symbolic_chmod_modes_give_what_chmod_gives() {
    // BuildKit's testChmodNonOctal (dockerfile_copy_test.go): COPY --chmod=<symbolic> must
    // leave the modes that `chmod <symbolic>` gives the same file, for files and directories
    // (Dockerfile 1.14; BuildKit's vendored dchapes-mode, where `X` also works with `=`).
    // One difference is checked apart: with `=`, busybox's chmod looks for an `x` bit after
    // clearing the class, BuildKit (and GNU chmod) in the mode before, so
    // `u=rwX,go=rX` keeps an executable file executable.
    let env = Env::new();
    env.busybox_base("busybox");
    let modes = [
        "go-w",
        "u=rw,g=r,o=r",
        "a+X",
        "u+rw,g+r,o-x,o+w",
        "u=rwX,go=rX",
        "go=u-w",
        "g=u",
        "o=g-w",
        "a-X",
        "u+s,+t",
    ];
    let mut expected = String::new();
    let mut copies = String::new();
    let mut verify = String::new();
    for (i, mode) in modes.iter().enumerate() {
        for (src, is_dir) in [("file", false), ("exe", false), ("dir", true)] {
            if src == "exe" && mode.contains("=rX") {
                continue; // checked apart, below
            }
            let dst = format!("{src}{i}");
            if is_dir {
                // COPY copies a directory's contents: nest it, so that it is copied itself.
                expected.push_str(&format!(
                    "RUN mkdir -p /input/dirs/{dst} && cp -a /input/{src} /input/dirs/{dst}/{dst} \
                     && cp -a /input/dirs/{dst}/. /expected/ && chmod {mode} /expected/{dst}\n"
                ));
                copies.push_str(&format!(
                    "COPY --from=base --chmod={mode} /input/dirs/{dst} /\n"
                ));
            } else {
                expected.push_str(&format!(
                    "RUN cp -a /input/{src} /expected/{dst} && chmod {mode} /expected/{dst}\n"
                ));
                copies.push_str(&format!(
                    "COPY --from=base --chmod={mode} /input/{src} /{dst}\n"
                ));
            }
            verify.push_str(&format!(
                "a=$(stat -c %A /actual/{dst}); e=$(stat -c %A /expected/{dst}); \
                 if [ \"$a\" = \"$e\" ]; then echo \"chmod-same {dst} {mode} $a\"; \
                 else echo \"chmod-differs {dst} {mode} got $a want $e\"; fi\n"
            ));
        }
    }
    let dockerfile = format!(
        "FROM busybox AS base\n\
         RUN mkdir /input /expected && touch /input/file /input/exe && chmod 666 /input/file \
         && chmod 744 /input/exe && mkdir /input/dir && chmod 124 /input/dir\n\
         {expected}\n\
         FROM scratch AS result\n\
         {copies}\n\
         COPY --from=base --chmod=u=rwX,go=rX /input/exe /exe-kept\n\
         FROM base\n\
         COPY --from=result / /actual/\n\
         RUN <<EOF\n{verify}EOF\n\
         RUN stat -c 'kept %a' /actual/exe-kept\n"
    );
    let ctx = env.context("chmod-symbolic", &dockerfile, &[]);
    let (out, text) = env.build_output(&["--no-lint", "-t", "chmod-symbolic", &ctx]);
    assert_success(&out, "COPY --chmod with symbolic modes");
    assert!(text.contains("kept 755"), "{text}");
    let same = text.lines().filter(|l| l.contains("chmod-same ")).count();
    assert_eq!(
        same,
        modes.len() * 3 - 1,
        "every copy has chmod's mode:\n{}",
        text.lines()
            .filter(|l| l.contains("chmod-"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Octal values keep BuildKit's words; other text is a syntax error naming the flag.
    for (mode, words) in [
        (
            "64a",
            "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777",
        ),
        ("10000", "invalid chmod parameter: '10000'"),
        ("u+z", "--chmod=u+z"),
        ("u+r,", "--chmod=u+r,"),
    ] {
        let ctx = env.context(
            "chmod-bad",
            &format!("FROM busybox\nCOPY --chmod={mode} f /f\n"),
            &[("f", "x")],
        );
        let stderr = env.fails(&["build", "--no-lint", "-t", "bad", &ctx]);
        assert!(stderr.contains(words), "{mode}: {stderr}");
    }
}

#[test]
fn copy_parents_keeps_the_path_from_the_context_or_from_a_pivot() {
    // BuildKit's testCopyParents, testCopyRelativeParents and testCopyParentsMissingDirectory
    // (dockerfile_parents_test.go); --parents is stable since Dockerfile 1.20. docker 20.10
    // has no --parents, so this is no differential case.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "parents",
        "FROM busybox AS base\n\
         WORKDIR /test\n\
         RUN mkdir -p a/b/c/d/e a/b2/c/d/e a/b/c2/d/e a/b/c2/d/e2 && touch a/b/c/d/foo \
         a/b/c/d/e/bay a/b2/c/d/e/bar a/b/c2/d/e/baz a/b/c2/d/e2/baz && chmod 700 a/b/c\n\
         FROM busybox\n\
         COPY --parents foo1/foo2/bar /\n\
         WORKDIR /test\n\
         COPY --parents foo1/foo2/ba* .\n\
         COPY --parents ./x/a.txt ./y/a.txt /parents/\n\
         COPY --parents ./src/**/*.txt /star/\n\
         COPY --from=base --parents /test/a/b/./c/d /middle/\n\
         COPY --from=base --parents /test/a/b/c/d/. /end/\n\
         COPY --from=base --parents /test/a/./b/./c /double/\n\
         COPY --from=base --parents /test/a/./*/c /wildcard/\n\
         COPY --from=base --parents /test/a/b*/./c/**/e /doublewildcard/\n\
         COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /doubleinputs/\n\
         COPY --from=base --parents /test/a/b3*/c /nomatch/\n\
         RUN for p in /foo1/foo2/bar /test/foo1/foo2/bar /test/foo1/foo2/baz /parents/x/a.txt \
         /parents/y/a.txt /star/src/a.txt /star/src/x/b.txt /star/src/x/y/c.txt /middle/c/d/foo \
         /middle/c/d/e /end/test/a/b/c/d/foo /double/b/c/d/foo /wildcard/b/c/d/e \
         /wildcard/b2/c/d/e/bar /doublewildcard/c/d/e/bay /doublewildcard/c/d/e/bar \
         /doubleinputs/d/e/baz /doubleinputs/d/e2/baz /doubleinputs/c/d/e/bar /nomatch; do \
         test -e $p && echo \"present $p\" || echo \"absent $p\"; done; \
         for p in /middle/a /middle/e /doubleinputs/d/e/bay /nomatch/test /parents/a.txt; do \
         test -e $p && echo \"present $p\" || echo \"absent $p\"; done; \
         stat -c 'mode %n %a' /middle/c /double/b/c\n",
        &[
            ("foo1/foo2/bar", "testing"),
            ("foo1/foo2/baz", "testing2"),
            ("x/a.txt", "x"),
            ("y/a.txt", "y"),
            ("src/a.txt", "a"),
            ("src/x/b.txt", "b"),
            ("src/x/y/c.txt", "c"),
            ("src/x/y/c.md", "not copied"),
        ],
    );
    let (out, text) = env.build_output(&["--no-lint", "-t", "parents", &ctx]);
    assert_success(&out, "COPY --parents");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("present /") || l.contains("absent /"))
        .collect();
    let absent: Vec<&&str> = lines.iter().filter(|l| l.contains("absent /")).collect();
    assert_eq!(lines.len(), 25, "{text}");
    assert_eq!(
        absent.len(),
        5,
        "only the last five paths are absent:\n{}",
        lines.join("\n")
    );
    for gone in [
        "/middle/a",
        "/middle/e",
        "/doubleinputs/d/e/bay",
        "/nomatch/test",
        "/parents/a.txt",
    ] {
        assert!(text.contains(&format!("absent {gone}")), "{gone}:\n{text}");
    }
    // Parent directories keep their own mode, as fsutil creates them.
    assert!(text.contains("mode /middle/c 700"), "{text}");
    assert!(text.contains("mode /double/b/c 700"), "{text}");
    // A path without a wildcard must be there.
    let stderr = env.build_error(
        "parents-missing",
        "FROM busybox\nCOPY --parents nonexistent-file /out/\n",
    );
    assert!(stderr.contains("nonexistent-file"), "{stderr}");
}

#[test]
fn copy_and_add_exclude_leave_out_what_the_patterns_match() {
    // BuildKit's testExcludedFilesOnCopy (exclude_patterns_test.go); --exclude is stable since
    // Dockerfile 1.19. Patterns match paths below each source, as .dockerignore's do.
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "exclude",
        "FROM busybox\n\
         COPY --exclude=*/*.png --exclude=*/*.jpeg . /1\n\
         COPY --exclude=*/*.pdf --exclude=*/*.txt . /2\n\
         ADD --exclude=*.mp3 dir3/ /3/\n\
         COPY --exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/\n\
         ADD --exclude=*.mp* --exclude=*.jpeg --exclude=*.png --exclude=*.pdf dir* /5\n\
         ADD --exclude=* dir* /6\n\
         COPY --exclude=dir1 --exclude=!dir1/*.txt --exclude=Dockerfile . /7\n\
         RUN cd / && find 1 2 3 4 5 6 7 | sort | tr '\\n' ' ' | sed \"s/^/listing-$((6*7)): /\"\n",
        &[
            ("dir1/file-101.png", "2"),
            ("dir1/file-102.txt", "3"),
            ("dir1/file-103.jpeg", "4"),
            ("dir2/file-201.pdf", "6"),
            ("dir2/file-202.jpeg", "7"),
            ("dir2/file-203.png", "8"),
            ("dir3/file-301.mp3", "9"),
            ("dir3/file-302.mpeg", "10"),
            ("dir4/file-401.txt", "11"),
        ],
    );
    std::os::unix::fs::symlink("file-401.txt", format!("{ctx}/dir4/file-402.txt")).unwrap();
    std::os::unix::fs::symlink("file-404.txt", format!("{ctx}/dir4/file-403.txt")).unwrap();
    let (out, text) = env.build_output(&["--no-lint", "-t", "exclude", &ctx]);
    assert_success(&out, "COPY --exclude");
    let listing = text
        .lines()
        .find_map(|l| l.split_once("listing-42: ").map(|(_, rest)| rest.trim()))
        .unwrap_or_else(|| panic!("no listing:\n{text}"));
    let want = "1 1/Dockerfile 1/dir1 1/dir1/file-102.txt 1/dir2 1/dir2/file-201.pdf 1/dir3 \
                1/dir3/file-301.mp3 1/dir3/file-302.mpeg 1/dir4 1/dir4/file-401.txt \
                1/dir4/file-402.txt 1/dir4/file-403.txt \
                2 2/Dockerfile 2/dir1 2/dir1/file-101.png 2/dir1/file-103.jpeg 2/dir2 \
                2/dir2/file-202.jpeg 2/dir2/file-203.png 2/dir3 2/dir3/file-301.mp3 \
                2/dir3/file-302.mpeg 2/dir4 \
                3 3/file-302.mpeg \
                4 4/file-302.mpeg \
                5 5/file-102.txt 5/file-401.txt 5/file-402.txt 5/file-403.txt \
                6 \
                7 7/dir1 7/dir1/file-102.txt 7/dir2 7/dir2/file-201.pdf 7/dir2/file-202.jpeg \
                7/dir2/file-203.png 7/dir3 7/dir3/file-301.mp3 7/dir3/file-302.mpeg 7/dir4 \
                7/dir4/file-401.txt 7/dir4/file-402.txt 7/dir4/file-403.txt";
    let want: Vec<&str> = want.split_whitespace().collect();
    let got: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(got, want, "{text}");
}

#[test]
fn run_security_insecure_needs_the_entitlement_and_then_drops_the_sandbox() {
    // BuildKit's testRunSecurityInsecure, testRunSecurityDefault and
    // testInsecureDevicesWhitelist (dockerfile_runsecurity_test.go): without the
    // security.insecure entitlement the build fails naming it; with it the step has every
    // capability (CapBnd all ones, ambient too, so a USER keeps them), no seccomp filter, no
    // masked or read-only /proc paths, a writable /sys and the fuse and loop devices; other
    // steps keep docker's default set (CapBnd 00000000a80425fb).
    let env = Env::new();
    env.busybox_base("busybox");
    let probe = "grep -E '^(CapBnd|CapEff|CapAmb|Seccomp):' /proc/self/status | tr '\\t' ' ' \\
                 | sed \"s/^/$MARK /\"; \\
                 if grep -qE ' /proc/[a-z_-]+ ' /proc/self/mountinfo; then echo \"$MARK proc-masked\"; fi; \\
                 if grep -qE ' /sys ro[, ]' /proc/self/mountinfo; then echo \"$MARK sys-ro\"; fi; \\
                 for d in fuse loop-control; do [ -c /dev/$d ] && echo \"$MARK dev-$d\"; done; true";
    let dockerfile = format!(
        "FROM busybox\n\
         RUN --security=insecure MARK=insecure-root; {probe}\n\
         USER app\n\
         RUN --security=insecure MARK=insecure-app; {probe}\n\
         USER root\n\
         RUN --security=sandbox MARK=sandboxed; {probe}\n"
    );
    let ctx = env.context("insecure", &dockerfile, &[]);
    let stderr = env.fails(&["build", "--no-lint", "-t", "insecure", &ctx]);
    assert!(
        stderr.contains("entitlement security.insecure is not allowed")
            && stderr.contains("--allow security.insecure"),
        "{stderr}"
    );
    let (stdout, stderr) = env.build(&[
        "--no-lint",
        "--allow",
        "security.insecure",
        "-t",
        "insecure",
        &ctx,
    ]);
    let text = format!("{stdout}{stderr}");
    let marked = |mark: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                l.split_once(&format!("{mark} "))
                    .map(|(_, r)| r.trim().to_owned())
            })
            .collect()
    };
    // Every capability kiln has itself (BuildKit grants its current set).
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own_caps = own
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| v.trim().to_owned())
        .unwrap();
    for mark in ["insecure-root", "insecure-app"] {
        let lines = marked(mark);
        for field in ["CapBnd:", "CapEff:", "CapAmb:"] {
            let want = format!("{field} {own_caps}");
            assert!(lines.contains(&want), "{mark}: want {want}:\n{text}");
        }
        assert!(lines.iter().any(|l| l == "Seccomp: 0"), "{mark}:\n{text}");
        for absent in ["proc-masked", "sys-ro"] {
            assert!(
                !lines.iter().any(|l| l == absent),
                "{mark} {absent}:\n{text}"
            );
        }
        for device in ["dev-fuse", "dev-loop-control"] {
            if std::path::Path::new(&format!("/dev/{}", &device[4..])).exists() {
                assert!(
                    lines.iter().any(|l| l == device),
                    "{mark} {device}:\n{text}"
                );
            }
        }
    }
    let sandboxed = marked("sandboxed");
    for want in [
        "CapBnd: 00000000a80425fb",
        "CapAmb: 0000000000000000",
        "Seccomp: 2",
        "proc-masked",
        "sys-ro",
    ] {
        assert!(
            sandboxed.iter().any(|l| l == want),
            "sandboxed {want}:\n{text}"
        );
    }
    assert!(!sandboxed.iter().any(|l| l.starts_with("dev-")), "{text}");
}

/// BuildKit's `testSourceDateEpochDockerfileDefault`, `…DefaultOverride`, `…DefaultInvalid`,
/// `…ContextLocalUnset` and `…StageInvalid` (dockerfile_source_date_epoch_test.go): a meta
/// `ARG SOURCE_DATE_EPOCH=<seconds>` is the epoch unless `--build-arg` gives another; a value
/// that is neither seconds, `context` nor a source stage is refused; `context` on a local
/// directory leaves the epoch unset.
#[test]
fn a_meta_arg_source_date_epoch_is_the_epoch_as_buildkit_takes_it() {
    let env = Env::new();
    env.busybox_base("busybox");
    let created = |tag: &str| -> String {
        let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", tag])).unwrap();
        inspect[0]["Created"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // 1445412480 is 2015-10-21T07:28:00Z.
    let default = env.context(
        "default",
        "ARG SOURCE_DATE_EPOCH=1445412480\nFROM busybox\nARG SOURCE_DATE_EPOCH\nRUN echo -n \"$SOURCE_DATE_EPOCH\" > /epoch\n",
        &[],
    );
    env.ok(&["build", "--no-lint", "-t", "default", &default]);
    assert!(
        created("default").starts_with("2015-10-21T07:28:00"),
        "the Dockerfile's default is the epoch: {}",
        created("default")
    );
    env.ok(&[
        "build",
        "--no-lint",
        "--build-arg",
        "SOURCE_DATE_EPOCH=1700000002",
        "-t",
        "override",
        &default,
    ]);
    assert!(
        created("override").starts_with("2023-11-14T22:13:22"),
        "--build-arg wins over the default: {}",
        created("override")
    );

    let stderr = env.build_error(
        "invalid",
        "ARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM scratch\nCOPY Dockerfile .\n",
    );
    assert!(
        stderr.contains("invalid SOURCE_DATE_EPOCH: not-a-timestamp"),
        "BuildKit's words:\n{stderr}"
    );

    let stderr = env.build_error("stage", "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nCOPY Dockerfile /Dockerfile\nFROM scratch\n");
    assert!(
        stderr.contains("SOURCE_DATE_EPOCH stage does not meet source-only requirements"),
        "a stage that is not one remote ADD is refused as BuildKit refuses it:\n{stderr}"
    );

    // A source stage of a git commit is what BuildKit reads the time of; kiln does not (a
    // download's it does: remote_contexts.rs), and says so.
    let stderr = env.build_error("remote", "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nADD https://127.0.0.1:9/repo.git /\nFROM busybox\nARG SOURCE_DATE_EPOCH\nRUN echo -n \"$SOURCE_DATE_EPOCH\" > /epoch\n");
    assert!(
        stderr.contains("SOURCE_DATE_EPOCH=mysource") && stderr.contains("not supported"),
        "the error names what kiln does not do:\n{stderr}"
    );

    let local = env.context(
        "local",
        "FROM busybox\nARG SOURCE_DATE_EPOCH\nRUN echo -n \"[$SOURCE_DATE_EPOCH]\" > /epoch\n",
        &[],
    );
    let out_dir = env.build_to_dir(
        "local-out",
        &["--build-arg", "SOURCE_DATE_EPOCH=context", &local],
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("epoch")).unwrap(),
        "[]",
        "context on a local directory leaves SOURCE_DATE_EPOCH empty, as BuildKit does"
    );
}

/// BuildKit's `testRunHostNetwork` (dockerfile_runnetwork_test.go), denied: "entitlement
/// network.host is not allowed", checked on the whole Dockerfile before any step runs, and
/// `testErrorsSourceMap` (errors_test.go): the error names the Dockerfile line, here also for
/// a `# syntax=` directive kiln cannot honour.
#[test]
fn refused_entitlements_and_frontends_are_named_in_buildkit_words_with_their_line() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "host",
        "FROM busybox\nRUN echo first-step-ran\nRUN --network=host true\n",
        &[],
    );
    let out = env
        .kiln()
        .args(["build", "--no-lint", "-t", "x", &ctx])
        .output()
        .unwrap();
    let stderr = assert_clean_failure(&out, "RUN --network=host without --allow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("entitlement network.host is not allowed")
            && stderr.contains("--allow network.host")
            && stderr.contains("Dockerfile:3"),
        "BuildKit's words, kiln's flag, the line:\n{stderr}"
    );
    assert!(
        !stdout.contains("first-step-ran") && !stderr.contains("first-step-ran"),
        "refused before anything runs:\n{stdout}\n{stderr}"
    );
    // Granted, the same Dockerfile builds.
    env.ok(&[
        "build",
        "--no-lint",
        "--allow",
        "network.host",
        "-t",
        "x",
        &ctx,
    ]);

    let stderr = env.build_error("syntax", "#syntax=foobar\nFROM busybox\n");
    assert!(
        stderr.contains("Dockerfile:1") && stderr.contains("syntax=foobar"),
        "the directive's line:\n{stderr}"
    );
}

/// BuildKit's `testErrorsSourceMap` (errors_test.go), `invalidrun` and `invalidmultiline`: a
/// RUN that cannot start (no shell in `FROM scratch`) is an error at its Dockerfile line.
#[test]
fn a_run_that_cannot_start_names_its_line() {
    let env = Env::new();
    for (name, dockerfile, line) in [
        (
            "invalidrun",
            "from scratch\nenv foo=bar\nrun what",
            "line 3",
        ),
        (
            "invalidmultiline",
            "from scratch\nrun wh\\\nat\nenv bar=baz",
            "line 2",
        ),
    ] {
        let stderr = env.build_error(name, dockerfile);
        assert!(
            stderr.contains(&format!("RUN at Dockerfile {line}")) && stderr.contains("/bin/sh"),
            "{name}: the step, its line and what is missing:\n{stderr}"
        );
    }
}

/// BuildKit's `testErrorsSourceMap` (errors_test.go), `invalidcopyfrom`: `COPY --from=` of
/// neither a stage nor an image is an error at its Dockerfile line.
#[test]
fn copy_from_of_no_stage_and_no_image_names_its_line() {
    let env = Env::new();
    let stderr = env.build_error(
        "invalidcopyfrom",
        "from scratch\nenv foo=bar\ncopy --from=invalid foo bar\nenv bar=baz",
    );
    assert!(
        stderr.contains("Dockerfile:3") && stderr.contains("--from=invalid"),
        "the line and the name:\n{stderr}"
    );
}

/// BuildKit's `testNamedImageContextScratch` (dockerfile_namedcontext_test.go): a
/// `--build-context NAME=docker-image://scratch` makes `FROM NAME` the empty image.
#[test]
fn a_named_context_of_docker_image_scratch_is_the_empty_base() {
    let env = Env::new();
    let ctx = env.context(
        "scratchctx",
        "FROM busybox AS build\nCOPY <<EOF /out\nhello world!\nEOF\n",
        &[],
    );
    let out_dir = env.build_to_dir(
        "out",
        &["--build-context", "busybox=docker-image://scratch", &ctx],
    );
    assert_eq!(
        entries(&out_dir),
        vec!["out".to_owned()],
        "only the copied file"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("out")).unwrap(),
        "hello world!\n"
    );
}

/// BuildKit's `testDockerfileAddArchive` (dockerfile_add_test.go), "ADD from URL with
/// --unpack=true": the downloaded archive is extracted into the destination; without the
/// flag a download stays packed.
#[test]
fn add_unpack_true_extracts_a_downloaded_archive() {
    let env = Env::new();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(8);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "foo", &b"content0"[..])
        .unwrap();
    let archive = tar.into_inner().unwrap();
    let gz = env.path("t.tar");
    std::fs::write(&gz, &archive).unwrap();
    run(std::process::Command::new(require("gzip"))
        .arg("-kn")
        .arg(&gz));
    let port = loopback_server_of(std::fs::read(env.path("t.tar.gz")).unwrap());
    let url = format!("http://127.0.0.1:{port}/t.tar.gz");
    for (name, flag, expected) in [
        ("unpacked", "--unpack=true ", vec!["dest/foo"]),
        ("packed", "", vec!["dest/t.tar.gz"]),
    ] {
        let ctx = env.context(
            name,
            &format!("FROM scratch\nADD {flag}{url} /dest/\n"),
            &[],
        );
        let out_dir = env.path(&format!("{name}-out"));
        env.ok(&[
            "build",
            "--no-lint",
            "-o",
            &format!("type=local,dest={}", out_dir.display()),
            &ctx,
        ]);
        let (dir, file) = expected[0].split_once('/').unwrap();
        assert_eq!(entries(&out_dir.join(dir)), vec![file.to_owned()], "{name}");
        if name == "unpacked" {
            assert_eq!(
                std::fs::read_to_string(out_dir.join("dest/foo")).unwrap(),
                "content0"
            );
        }
    }
}

/// BuildKit's `testNoCache` (dockerfile_cache_test.go): `--no-cache-filter s1` runs stage s1
/// again, and what the final stage copies from it is the new run's file, not the layer a
/// previous build copied (BuildKit keys a copy on the content it copies).
#[test]
fn no_cache_filter_reruns_the_stage_and_what_copies_from_it() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "nocache",
        "FROM busybox AS s0\nRUN head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /unique\n\
         FROM busybox AS s1\nRUN head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /unique2\n\
         FROM scratch\nCOPY --from=s0 /unique /\nCOPY --from=s1 /unique2 /\n",
        &[],
    );
    let build = |name: &str, extra: &[&str]| -> (String, String) {
        let out_dir = env.path(name);
        let dest = format!("type=local,dest={}", out_dir.display());
        let mut args = vec!["build", "--no-lint", "-o", &dest];
        args.extend_from_slice(extra);
        args.push(&ctx);
        env.ok(&args);
        let read = |f: &str| std::fs::read_to_string(out_dir.join(f)).unwrap();
        (read("unique"), read("unique2"))
    };
    let first = build("first", &[]);
    let filtered = build("filtered", &["--no-cache-filter", "s1"]);
    assert_eq!(first.0, filtered.0, "s0 is not in the filter: cached");
    assert_ne!(
        first.1, filtered.1,
        "s1 ran again: the copy has its new file"
    );
    let again = build("again", &["--no-cache-filter", "s1"]);
    assert_ne!(filtered.1, again.1, "and again");
}

/// BuildKit's `testCacheMountModeNoCache` (dockerfile_cache_test.go, moby/buildkit#5305): a
/// `--no-cache` build starts its cache mounts empty, and the next build (with the cache) finds
/// what that build left.
#[test]
fn no_cache_starts_cache_mounts_empty() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "cachemount",
        "FROM busybox AS base\nARG FOO=abc\n\
         RUN --mount=type=cache,target=/cache,mode=0773 touch /cache/$FOO && ls /cache | tr '\\n' ' ' > /out\n\
         FROM scratch\nCOPY --from=base /out /\n",
        &[],
    );
    let build = |name: &str, extra: &[&str]| -> String {
        let out_dir = env.path(name);
        let dest = format!("type=local,dest={}", out_dir.display());
        let mut args = vec!["build", "--no-lint", "-o", &dest];
        args.extend_from_slice(extra);
        args.push(&ctx);
        env.ok(&args);
        std::fs::read_to_string(out_dir.join("out")).unwrap()
    };
    assert_eq!(build("one", &["--no-cache"]), "abc ");
    assert_eq!(
        build("two", &["--no-cache", "--build-arg", "FOO=def"]),
        "def ",
        "--no-cache: the cache mount starts empty"
    );
    assert_eq!(
        build("three", &["--build-arg", "FOO=ghi"]),
        "def ghi ",
        "with the cache: the mount the last build left"
    );
}

/// BuildKit's `testExportMultiPlatform` (dockerfile_export_test.go): `--platform linux/arm` is
/// normalized as containerd's `platforms.Normalize` does, to `linux/arm/v7`: TARGETPLATFORM,
/// TARGETVARIANT, the image's variant and the output directory say so.
#[test]
fn platforms_are_normalized_as_buildkit_normalizes_them() {
    let env = Env::new();
    let ctx = env.context(
        "arm",
        "FROM scratch\nARG TARGETARCH\nARG TARGETPLATFORM\nARG TARGETVARIANT\n\
         LABEL target=$TARGETPLATFORM variant=$TARGETVARIANT\nCOPY arch-$TARGETARCH whoami\n",
        &[
            ("arch-arm", "i am arm"),
            ("arch-s390x", "i am s390x"),
            ("arch-arm64", "i am arm64"),
        ],
    );
    let out_dir = env.build_to_dir("out", &["--platform", "linux/arm,linux/s390x", &ctx]);
    assert_eq!(entries(&out_dir), vec!["linux_arm_v7", "linux_s390x"]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("linux_arm_v7/whoami")).unwrap(),
        "i am arm"
    );
    for (asked, label, variant, arch) in [
        ("linux/arm", "linux/arm/v7", "v7", "arm"),
        ("linux/arm64/v8", "linux/arm64", "", "arm64"),
    ] {
        env.ok(&[
            "build",
            "--no-lint",
            "--platform",
            asked,
            "-t",
            "norm",
            &ctx,
        ]);
        let inspect: serde_json::Value =
            serde_json::from_str(&env.ok(&["inspect", "norm"])).unwrap();
        let labels = &inspect[0]["Config"]["Labels"];
        assert_eq!(labels["target"], label, "{asked}: {inspect}");
        assert_eq!(labels["variant"], variant, "{asked}: {inspect}");
        assert_eq!(inspect[0]["Architecture"], arch, "{asked}");
        let want = (!variant.is_empty()).then_some(variant);
        assert_eq!(inspect[0]["Variant"].as_str(), want, "{asked}: {inspect}");
    }
}

/// BuildKit's `testNamedFilteredContext` (dockerfile_namedcontext_test.go), `image_source`:
/// `FROM foo` where `--build-context foo=DIR` is a directory starts the stage from the
/// directory's files (its `.dockerignore` applied).
#[test]
fn from_a_named_directory_context_starts_from_its_files() {
    let env = Env::new();
    env.busybox_base("alpine");
    let dir = env.path("foo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("foo"), "foo").unwrap();
    std::fs::write(dir.join("skipped"), "x").unwrap();
    std::fs::write(dir.join(".dockerignore"), "skipped\n").unwrap();
    let ctx = env.context(
        "filtered",
        "FROM foo AS image_source\nCOPY --from=alpine / /\nRUN cat /foo > /bar && ls / > /listing\n\
         FROM scratch\nCOPY --from=image_source /bar /foo.d\nCOPY --from=image_source /listing /\n",
        &[],
    );
    let out_dir = env.build_to_dir(
        "out",
        &["--build-context", &format!("foo={}", dir.display()), &ctx],
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("foo.d")).unwrap(),
        "foo"
    );
    let listing = std::fs::read_to_string(out_dir.join("listing")).unwrap();
    assert!(!listing.lines().any(|l| l == "skipped"), "{listing}");
}

/// BuildKit's `testPlatformArgsExplicit` (dockerfile_platform_test.go): a target platform
/// other than linux builds when its stages run nothing (`FROM --platform=$BUILDPLATFORM` does
/// the work); a RUN for such a platform is refused by name.
#[test]
fn a_non_linux_target_platform_builds_when_no_step_runs_for_it() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "darwin",
        "FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETPLATFORM\nARG TARGETOS\n\
         RUN mkdir /out && echo -n $TARGETPLATFORM > /out/platform && echo -n $TARGETOS > /out/os\n\
         FROM scratch\nCOPY --from=build out .\n",
        &[],
    );
    let out_dir = env.build_to_dir(
        "out",
        &[
            "--platform",
            "darwin/ppc64le",
            "--build-arg",
            "TARGETOS=freebsd",
            &ctx,
        ],
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("platform")).unwrap(),
        "darwin/ppc64le"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("os")).unwrap(),
        "freebsd"
    );
    let runs = env.context("runs", "FROM busybox\nRUN true\n", &[]);
    let err = env.fails(&["build", "--no-lint", "--platform", "windows/amd64", &runs]);
    assert!(
        err.contains("windows/amd64") && err.contains("linux"),
        "{err}"
    );
}

/// BuildKit's `BUILDKIT_MULTI_PLATFORM=1` build arg (reference.md "Automatic platform ARGs" /
/// built-in build args; `testNamedImageContextPlatform` builds with it): the output is the
/// multi-platform one for a single platform too, so a local output is under `linux_<arch>/`.
#[test]
fn buildkit_multi_platform_gives_the_multi_platform_output_for_one_platform() {
    let env = Env::new();
    let ctx = env.context("multi", "FROM scratch\nCOPY foo /\n", &[("foo", "x")]);
    let out_dir = env.build_to_dir("out", &["--build-arg", "BUILDKIT_MULTI_PLATFORM=1", &ctx]);
    let dir = format!("linux_{}", kiln_image_host_arch());
    assert_eq!(entries(&out_dir), vec![dir.clone()]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join(dir).join("foo")).unwrap(),
        "x"
    );
}

#[test]
fn a_missing_copy_from_source_names_the_stage_or_image_not_the_context() {
    // BuildKit's testCopyParents (dockerfile_parents_test.go), target nonexistentfile:
    // `"/test/nonexistent-file": not found`, the path quoted with its leading slash. The
    // checksum's ref is the stage's snapshot there; kiln names the stage or image instead.
    let env = Env::new();
    env.busybox_base("busybox");
    let cases = [
        (
            "FROM busybox AS base\nRUN mkdir -p /test\n\
             FROM busybox\nCOPY --from=base --parents /test/nonexistent-file /out/\n",
            "\"/test/nonexistent-file\": not found in stage base",
        ),
        (
            "FROM busybox AS base\nFROM busybox\nCOPY --from=base missing /x\n",
            "\"/missing\": not found in stage base",
        ),
        (
            "FROM busybox\nCOPY --from=busybox /no/such/file /x\n",
            "\"/no/such/file\": not found in image busybox",
        ),
    ];
    for (i, (dockerfile, want)) in cases.iter().enumerate() {
        let err = env.build_error(&format!("from-missing-{i}"), dockerfile);
        assert!(err.contains(want), "want {want:?}:\n{err}");
        assert!(!err.contains("build context"), "{err}");
    }
    // From the context, the words stay the context's.
    let err = env.build_error("ctx-missing", "FROM busybox\nCOPY missing /x\n");
    assert!(err.contains("not found in the build context"), "{err}");
}
