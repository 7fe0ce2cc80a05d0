//! Typed instructions: flags, mounts, heredocs, healthchecks and the errors users see.

use std::time::Duration;

use kiln_dockerfile::{
    CommandLine, HealthcheckInstruction, Instruction, InstructionError, MountType, parse,
    parse_instruction,
};

fn one(src: &str) -> Instruction {
    let parsed = parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    parse_instruction(&parsed.nodes[0])
        .unwrap_or_else(|e| panic!("{src:?}: {e}"))
        .value
}

fn error(src: &str) -> InstructionError {
    let parsed = parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    match parse_instruction(&parsed.nodes[0]) {
        Ok(i) => panic!("{src:?} accepted: {:?}", i.value),
        Err(e) => e,
    }
}

#[test]
fn copy_and_add_flags() {
    let Instruction::Copy(c) = one(
        "COPY --from=build --chown=1000:1000 --chmod=755 --link --parents --exclude=*.md --exclude=.git a b /dst/",
    ) else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("1000:1000"));
    assert_eq!(c.chmod.as_deref(), Some("755"));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, ["*.md", ".git"]);
    assert_eq!(c.sources, ["a", "b"]);
    assert_eq!(c.dest, "/dst/");

    let Instruction::Add(a) =
        one("ADD --checksum=sha256:abc --keep-git-dir=true --link=false https://x/y.tar /y")
    else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(a.keep_git_dir, Some(true));
    assert!(!a.link);
    assert_eq!(a.unpack, None);

    let Instruction::Copy(c) = one(r#"COPY ["a b", "/c d/"]"#) else {
        panic!()
    };
    assert_eq!(c.sources, ["a b"]);
    assert_eq!(c.dest, "/c d/");
}

#[test]
fn run_flags_and_forms() {
    let Instruction::Run(r) = one(
        "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked --mount=type=secret,id=npm,target=/root/.npmrc --network=none --security=insecure apt-get update",
    ) else {
        panic!()
    };
    assert_eq!(r.mounts.len(), 2);
    assert_eq!(r.mounts[0].kind, MountType::Cache);
    assert_eq!(r.mounts[1].kind, MountType::Secret);
    assert!(r.mounts[1].readonly);
    assert_eq!(r.network.as_deref(), Some("none"));
    assert_eq!(r.security.as_deref(), Some("insecure"));
    assert_eq!(r.command, CommandLine::Shell("apt-get update".into()));

    let Instruction::Run(r) = one(r#"RUN ["sh", "-c", "echo $HOME"]"#) else {
        panic!()
    };
    assert_eq!(
        r.command,
        CommandLine::Exec(vec!["sh".into(), "-c".into(), "echo $HOME".into()])
    );
    // Invalid JSON falls back to the shell form.
    let Instruction::Run(r) = one("RUN ['single', 'quotes']") else {
        panic!()
    };
    assert_eq!(r.command, CommandLine::Shell("['single', 'quotes']".into()));
    assert_eq!(
        r.command.to_argv(&["/bin/sh".into(), "-c".into()]),
        ["/bin/sh", "-c", "['single', 'quotes']"]
    );
}

#[test]
fn run_heredocs() {
    let Instruction::Run(r) = one("RUN <<EOF bash\nset -e\necho $HOME\nEOF\n") else {
        panic!()
    };
    assert_eq!(r.heredocs.len(), 1);
    assert_eq!(r.heredocs[0].name, "EOF");
    assert_eq!(r.heredocs[0].content, "set -e\necho $HOME\n");
    assert!(r.heredocs[0].expand);
    assert_eq!(r.command, CommandLine::Shell("<<EOF bash".into()));

    let Instruction::Run(r) = one("RUN 3<<-'END' cat <&3\n\tquoted $X\n\tEND\n") else {
        panic!()
    };
    let h = &r.heredocs[0];
    assert_eq!((h.fd, h.chomp, h.expand), (3, true, false));
    assert_eq!(h.chomped(), "quoted $X\n");
}

#[test]
fn env_label_arg() {
    assert_eq!(
        one("ENV A=1 B=\"two words\""),
        Instruction::Env(vec![
            kiln_dockerfile::KeyValue {
                key: "A".into(),
                value: "1".into(),
                legacy: false
            },
            kiln_dockerfile::KeyValue {
                key: "B".into(),
                value: "\"two words\"".into(),
                legacy: false
            },
        ])
    );
    let Instruction::Env(kv) = one("ENV PATH /usr/local/bin:$PATH") else {
        panic!()
    };
    assert!(kv[0].legacy);
    assert_eq!(kv[0].value, "/usr/local/bin:$PATH");
    let Instruction::Label(kv) = one("LABEL maintainer=\"a@b\" version=1") else {
        panic!()
    };
    assert_eq!(kv.len(), 2);
    let Instruction::Arg(defs) = one("ARG A B=2 C=") else {
        panic!()
    };
    assert_eq!(defs[0].default, None);
    assert_eq!(defs[1].default.as_deref(), Some("2"));
    assert_eq!(defs[2].default.as_deref(), Some(""));
}

#[test]
fn healthcheck() {
    let Instruction::Healthcheck(HealthcheckInstruction::Check(c)) = one(
        "HEALTHCHECK --interval=5s --timeout=1m30s --start-period=0s --retries=3 CMD curl -f http://x/",
    ) else {
        panic!()
    };
    assert_eq!(c.interval, Duration::from_secs(5));
    assert_eq!(c.timeout, Duration::from_secs(90));
    assert_eq!(c.start_period, Duration::ZERO);
    assert_eq!(c.retries, 3);
    let h = one("HEALTHCHECK CMD [\"/bin/check\", \"-q\"]");
    let Instruction::Healthcheck(h) = h else {
        panic!()
    };
    assert_eq!(h.test(), ["CMD", "/bin/check", "-q"]);
    let Instruction::Healthcheck(h) = one("HEALTHCHECK CMD check --quiet") else {
        panic!()
    };
    assert_eq!(h.test(), ["CMD-SHELL", "check --quiet"]);
    assert_eq!(
        one("HEALTHCHECK NONE"),
        Instruction::Healthcheck(HealthcheckInstruction::Disable)
    );
    assert!(
        error("HEALTHCHECK --interval=5 CMD x")
            .message
            .contains("missing unit")
    );
    assert!(
        error("HEALTHCHECK --retries=-1 CMD x")
            .message
            .contains("negative")
    );
    assert!(
        error("HEALTHCHECK CONNECT TCP 7000")
            .message
            .contains("Unknown type")
    );
    assert!(error("HEALTHCHECK NONE x").message.contains("no arguments"));
    assert!(error("HEALTHCHECK CMD").message.contains("Missing command"));
}

#[test]
fn onbuild_keeps_its_trigger_text() {
    let Instruction::Onbuild(o) = one("ONBUILD RUN echo hi") else {
        panic!()
    };
    assert_eq!(o.expression, "RUN echo hi");
    assert!(matches!(
        o.parse_trigger().unwrap().value,
        Instruction::Run(_)
    ));
    let Instruction::Onbuild(o) = one("onbuild COPY <<EOF /x\nbody\nEOF\n") else {
        panic!()
    };
    assert_eq!(o.expression, "COPY <<EOF /x\nbody\nEOF");
    assert!(error("ONBUILD ONBUILD RUN x").message.contains("Chaining"));
    assert!(error("ONBUILD FROM x").message.contains("isn't allowed"));
}

#[test]
fn from_and_stage_names() {
    let Instruction::From(f) = one("FROM --platform=$BUILDPLATFORM golang:1.22 AS Builder") else {
        panic!()
    };
    assert_eq!(f.base, "golang:1.22");
    assert_eq!(f.stage_name.as_deref(), Some("builder"));
    assert_eq!(f.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert!(error("FROM a AS 1bad").message.contains("invalid name"));
    assert!(error("FROM a b").message.contains("one or three"));
}

#[test]
fn errors_point_at_the_problem_and_say_what_to_write() {
    let e = error("COPY --chwon=app src /dst");
    assert_eq!(e.hint.as_deref(), Some("did you mean chown?"));
    assert_eq!((e.position.line, e.position.column), (1, 6));
    let e = error("RUN --mount=type=cahce,target=/x make");
    assert_eq!(e.hint.as_deref(), Some("did you mean type=cache?"));
    let e = error("WROKDIR /app");
    assert_eq!(e.hint.as_deref(), Some("did you mean WORKDIR?"));
    assert!(e.render("Dockerfile", "WROKDIR /app\n").contains("^^^^^^^"));
    let e = error("SHELL /bin/bash -c");
    assert!(e.hint.unwrap().contains("[\"/bin/bash\", \"-c\"]"));
    assert!(
        error("COPY onlyone")
            .message
            .contains("at least two arguments")
    );
    assert!(
        error("COPY a <<EOF\nx\nEOF\n")
            .message
            .contains("heredoc as a destination")
    );
    assert!(
        error("RUN --network=bridge x")
            .message
            .contains("invalid network mode")
    );
    assert!(error("EXPOSE").message.contains("at least one"));
    assert!(error("USER").message.contains("exactly one"));
    assert!(error("COPY --link=maybe a b").message.contains("boolean"));
    assert!(error("COPY --from a b").message.contains("missing a value"));
    assert!(
        error("COPY --from=a --from=b a b")
            .message
            .contains("duplicate")
    );
}

#[test]
fn parse_errors_have_positions_and_hints() {
    let e = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
    assert_eq!((e.position.line, e.position.column), (2, 5));
    assert!(e.hint.as_deref().unwrap().contains("EOF"));
    let e = parse("FROM a\nENV PATH\n").unwrap_err();
    assert_eq!((e.position.line, e.position.column), (2, 5));
    let e = parse("# escape=x\nFROM a\n").unwrap_err();
    assert_eq!(e.position.line, 1);
    let e = parse("# escape=`\n# escape=`\nFROM a\n").unwrap_err();
    assert_eq!(e.position.line, 2);
    let e = parse("CMD [\"a\", [\"b\"]]").unwrap_err();
    let rendered = e.render("Dockerfile");
    assert!(
        rendered.contains("Dockerfile:1:5") && rendered.contains("hint:"),
        "{rendered}"
    );
}
