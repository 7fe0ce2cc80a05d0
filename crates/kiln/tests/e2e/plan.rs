//! The build plan and the solver, seen from outside: stages that ONBUILD triggers read,
//! independent stages that run at once, a failure that stops the others, `kiln debug plan`.

use crate::util::{Env, docker, docker_export, kiln_to_docker, mounts_under, run};

/// Two RUN steps that can only finish if they run at the same time: each leaves a mark in a
/// shared cache mount and waits (up to a minute) for the other's. Run one after the other, the
/// first gives up and fails the build.
fn rendezvous(me: &str, other: &str) -> String {
    format!(
        "RUN --mount=type=cache,id=rendezvous,target=/meet,sharing=shared \
         touch /meet/{me} && i=0; while [ ! -e /meet/{other} ]; do \
         i=$((i+1)); [ $i -lt 600 ] || {{ echo {me} waited alone; exit 1; }}; sleep 0.1; done; \
         echo \"{me} met {other} $((6*7))\""
    )
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let env = Env::new();
    env.busybox_base("busybox");
    let dockerfile = format!(
        "FROM busybox AS left\n{}\nRUN echo left > /side\n\
         FROM busybox AS right\n{}\nRUN echo right > /side\n\
         FROM busybox\nCOPY --from=left /side /left\nCOPY --from=right /side /right\n\
         RUN cat /left /right\n",
        rendezvous("left", "right"),
        rendezvous("right", "left"),
    );
    let ctx = env.context("together", &dockerfile, &[]);
    let (_, log) = env.build(&["--no-lint", "--jobs", "2", "-t", "together", &ctx]);
    assert!(log.contains("left met right 42"), "{log}");
    assert!(log.contains("right met left 42"), "{log}");
    // Progress names stages as BuildKit does, counting the FROM as the first step.
    assert!(log.contains("[left 1/3] FROM busybox"), "{log}");
    assert!(log.contains("[stage-2 4/4] RUN cat /left /right"), "{log}");
}

#[test]
fn a_failing_stage_stops_the_others_and_leaves_nothing_behind() {
    let env = Env::new();
    env.busybox_base("busybox");
    // `slow` would run for ten minutes; `fails` waits until `slow` runs, then fails.
    let dockerfile = "FROM busybox AS slow\n\
        RUN --mount=type=cache,id=c,target=/c,sharing=shared touch /c/slow && sleep 600\n\
        FROM busybox AS fails\n\
        RUN --mount=type=cache,id=c,target=/c,sharing=shared \
        while [ ! -e /c/slow ]; do sleep 0.1; done; echo failing-on-purpose-$((6*7)); exit 3\n\
        FROM busybox\nCOPY --from=slow /etc/passwd /a\nCOPY --from=fails /etc/passwd /b\n";
    let ctx = env.context("cancel", dockerfile, &[]);
    let started = std::time::Instant::now();
    let stderr = env.fails(&["build", "--no-lint", "--jobs", "2", "-t", "cancel", &ctx]);
    assert!(stderr.contains("failed with exit code 3"), "{stderr}");
    assert!(stderr.contains("failing-on-purpose-42"), "{stderr}");
    // Not a timing assertion: `slow` sleeps 600 s, so returning at all shows it was killed.
    assert!(
        started.elapsed().as_secs() < 300,
        "the slow stage was not cancelled"
    );
    assert_eq!(mounts_under(&env.root()), Vec::<String>::new());
    let check = env.ok(&["check"]);
    assert!(check.contains("no problems"), "{check}");
    // Neither step left a cache record: a rebuild runs both again (and fails again).
    let again = env.fails(&["build", "--no-lint", "--jobs", "2", "-t", "cancel", &ctx]);
    assert!(again.contains("failing-on-purpose-42"), "{again}");
}

#[test]
fn an_onbuild_trigger_reads_a_stage_of_the_child_as_buildkit_does() {
    // Dockerfile 1.11's frontend (BuildKit 0.16) plans stages that only an ONBUILD trigger
    // reads (`ONBUILD COPY --from=src`). docker 20.10's BuildKit predates that: it skips the
    // stage and fails with `"/out" not found`. So the reference here is what BuildKit builds
    // for the trigger written out after FROM, which 20.10 does build.
    let env = Env::new();
    env.busybox_base("kiln-plan/busybox");
    kiln_to_docker(&env, "kiln-plan/busybox");
    let base = env.context(
        "onbuild-base",
        "FROM kiln-plan/busybox\nONBUILD COPY --from=src /out/ /from-src/\n",
        &[],
    );
    env.build(&["--no-lint", "-t", "kiln-plan/onbuild-base", &base]);
    let src = "FROM kiln-plan/busybox AS src\nRUN mkdir /out && echo \"$((6*7))\" > /out/answer\n";
    let child = env.context(
        "onbuild-child",
        &format!(
            "{src}FROM kiln-plan/onbuild-base\n\
             RUN test \"$(cat /from-src/answer)\" = 42 && echo \"answer $((40+2)) found\"\n"
        ),
        &[],
    );
    let (_, log) = env.build(&["--no-lint", "-t", "kiln-plan/onbuild-child", &child]);
    assert!(log.contains("answer 42 found"), "{log}");
    let plan = env.ok(&["debug", "plan", &child]);
    assert!(
        plan.contains("ONBUILD trigger: COPY --from=src /out/ /from-src/"),
        "{plan}"
    );

    let inline = env.context(
        "onbuild-inline",
        &format!(
            "{src}FROM kiln-plan/busybox\nCOPY --from=src /out/ /from-src/\n\
             RUN test \"$(cat /from-src/answer)\" = 42 && echo \"answer $((40+2)) found\"\n"
        ),
        &[],
    );
    run(docker().env("DOCKER_BUILDKIT", "1").args([
        "build",
        "-q",
        "-t",
        "kiln-plan/onbuild-docker",
        &inline,
    ]));
    kiln_to_docker(&env, "kiln-plan/onbuild-child");
    let ours = docker_export("kiln-plan/onbuild-child");
    let theirs = docker_export("kiln-plan/onbuild-docker");
    assert!(
        ours.iter()
            .any(|e| e.path == "from-src/answer" && e.size == 3),
        "{ours:?}"
    );
    assert_eq!(ours, theirs, "kiln's image differs from BuildKit's");
}

#[test]
fn debug_plan_prints_stages_dependencies_and_formats() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "plan",
        "FROM busybox AS unused\nRUN x\nFROM busybox AS a\nRUN echo a\n\
         FROM busybox AS b\nARG WHO=world\nENV GREETING=hello-$WHO\nRUN echo $GREETING\n\
         FROM a\nCOPY --from=b /etc/passwd /p\n",
        &[],
    );
    let text = env.ok(&["debug", "plan", "--build-arg", "WHO=kiln", &ctx]);
    assert!(text.contains("stage 3 [stage-3] (target)"), "{text}");
    assert!(
        text.contains("  from stage 1\n  needs stages 1, 2\n"),
        "{text}"
    );
    assert!(
        text.contains("ENV GREETING=hello-$WHO\n       = ENV GREETING=hello-kiln\n"),
        "{text}"
    );
    assert!(!text.contains("[unused]"), "{text}");
    let json = env.ok(&["debug", "plan", "--format", "json", "--target", "b", &ctx]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["target"], 2);
    assert_eq!(value["stages"].as_array().map(Vec::len), Some(1));
    let dot = env.ok(&["debug", "plan", "--format", "dot", &ctx]);
    assert!(
        dot.contains("s1 -> s3;") && dot.contains("s2 -> s3;"),
        "{dot}"
    );
    // Errors are found before anything runs.
    let missing = env.context(
        "missing",
        "FROM busybox\nRUN echo ran\nCOPY nothere /\n",
        &[],
    );
    let stderr = env.fails(&["build", "--no-lint", &missing]);
    // Shown at its line, as parse errors are.
    assert!(
        stderr.contains("--> Dockerfile:3\n") && stderr.contains("3 | COPY nothere /\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("] RUN echo ran"), "{stderr}");
}

fn kiln_with_progress(env: &Env, mode: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("--root").arg(env.root()).args(["--progress", mode]);
    cmd
}

#[test]
fn progress_comes_as_json_events_or_a_live_terminal_view() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "progress",
        "FROM busybox\nRUN echo \"line-$((6*7))\"\nCMD [\"sh\"]\n",
        &[],
    );
    let out = kiln_with_progress(&env, "json")
        .args(["build", "--no-lint", "-t", "progress", &ctx])
        .output()
        .unwrap();
    crate::util::assert_success(&out, "kiln --progress json build");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let of = |kind: &'static str| events.iter().filter(move |e| e["type"] == kind);
    assert_eq!(of("step").count(), 3, "{events:?}");
    assert!(of("output").any(|e| e["line"] == "line-42"), "{events:?}");
    assert_eq!(of("done").count(), 3, "{events:?}");

    // The live view needs a terminal: `script` gives the build one.
    let script = crate::util::require("script");
    let command = format!(
        "{} --root {} --progress tty build --no-lint --no-cache -t progress {ctx}",
        env!("CARGO_BIN_EXE_kiln"),
        env.root().display()
    );
    let out = std::process::Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    crate::util::assert_success(&out, "kiln --progress tty build under script");
    let screen = String::from_utf8_lossy(&out.stdout);
    // Finished steps fold into one line each, with their time.
    assert!(
        screen.contains("=> [stage-0 2/3] RUN echo \"line-$((6*7))\""),
        "{screen}"
    );
    assert!(screen.contains("=> [stage-0 3/3] CMD [\"sh\"]"), "{screen}");
    assert!(
        screen.contains('\u{1b}'),
        "no terminal drawing in {screen:?}"
    );
}

#[test]
fn the_image_is_the_same_however_the_stages_interleave() {
    // One stage at a time, then all at once, every step run again: the same image id.
    let dockerfile = "FROM busybox AS a\nRUN echo a > /a\nFROM busybox AS b\nRUN echo b > /b\n\
        FROM busybox AS c\nENV C=1\nRUN echo c > /c\n\
        FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\n";
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("interleave", dockerfile, &[]);
    let mut ids = Vec::new();
    for jobs in ["1", "4", "1"] {
        let out = env
            .kiln()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "build",
                "--no-lint",
                "--no-cache",
                "--jobs",
                jobs,
                "-t",
                "interleave",
                &ctx,
            ])
            .output()
            .unwrap();
        crate::util::assert_success(&out, "kiln build");
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    assert!(ids[0].starts_with("sha256:"), "{ids:?}");
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
}

#[test]
fn debug_logs_show_each_steps_key_inputs_and_why_it_missed() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("keys", "FROM busybox\nRUN echo keyed-$((6*7))\n", &[]);
    let out = env
        .kiln()
        .args([
            "--log-level",
            "debug",
            "build",
            "--no-lint",
            "-t",
            "keys",
            &ctx,
        ])
        .output()
        .unwrap();
    crate::util::assert_success(&out, "kiln --log-level debug build");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("cache key"), "{log}");
    assert!(
        log.contains(r#"\"format\":1"#) || log.contains(r#""format":1"#),
        "{log}"
    );
    assert!(log.contains("cache miss"), "{log}");
    // A level kiln does not know is an error, not a silent `warn`.
    let stderr = env.fails(&["--log-level", "loud", "images"]);
    assert!(stderr.contains("--log-level"), "{stderr}");
}
