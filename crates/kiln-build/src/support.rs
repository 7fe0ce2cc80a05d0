//! What kiln does with every flag, mount option and directive that the parser accepts.
//!
//! The parser follows BuildKit and accepts all of them. The builder implements most; the rest
//! are refused here, before anything runs, with an error that names them. A Dockerfile is
//! never built with a flag quietly dropped: that would give an image BuildKit would not.

use kiln_dockerfile::{AddInstruction, Directive, Instruction, MountType, RunInstruction};

/// Checks the flags of one instruction as written (before variables are expanded: the flags
/// themselves never come from variables).
pub(crate) fn check_instruction(inst: &Instruction) -> Result<(), String> {
    match inst {
        Instruction::Run(run) => check_run(run),
        // Every COPY flag is implemented.
        Instruction::Copy(_) => Ok(()),
        Instruction::Add(add) => check_add(add),
        _ => Ok(()),
    }
}

fn check_run(run: &RunInstruction) -> Result<(), String> {
    match run.security.as_deref() {
        // insecure is granted per build: see check_entitlements.
        None | Some("sandbox") | Some("insecure") => {}
        Some(other) => {
            return Err(format!(
                "RUN --security={other}: BuildKit knows sandbox and insecure"
            ));
        }
    }
    if let Some(device) = run.devices.first() {
        return Err(format!(
            "RUN --device={device}: kiln does not give build steps host devices"
        ));
    }
    for mount in &run.mounts {
        match mount.kind {
            MountType::Ssh => {
                if mount.source.is_some() {
                    return Err(
                        "RUN --mount=type=ssh,source=…: ssh does not support source \
                                (BuildKit's words): the mount is the agent's socket; drop source="
                            .into(),
                    );
                }
                // BuildKit accepts these on an ssh mount and does nothing with them.
                for (option, given) in [
                    ("from=", mount.from.is_some()),
                    ("env=", mount.env.is_some()),
                ] {
                    if given {
                        return Err(format!(
                            "RUN --mount=type=ssh,{option}…: an ssh mount has no use for \
                             {option} (BuildKit ignores it); drop {option}"
                        ));
                    }
                }
            }
            MountType::Bind | MountType::Cache | MountType::Tmpfs | MountType::Secret => {}
        }
    }
    Ok(())
}

fn check_add(_add: &AddInstruction) -> Result<(), String> {
    Ok(())
}

/// Checks what only the expanded instruction shows (a flag's value may come from a variable).
pub(crate) fn check_expanded(inst: &Instruction) -> Result<(), String> {
    let (keyword, link, chown, chmod) = match inst {
        Instruction::Copy(c) => ("COPY", c.link, &c.chown, &c.chmod),
        Instruction::Add(a) => ("ADD", a.link, &a.chown, &a.chmod),
        _ => return Ok(()),
    };
    match chown.as_deref().filter(|spec| !spec.is_empty()) {
        Some(spec) if links(link, chmod.as_deref()) => refuse_chown_names_with_link(keyword, spec),
        _ => Ok(()),
    }
}

/// Whether a copy is linked: BuildKit's dispatchCopy uses its MergeOp only for `--link`
/// without `--chmod`; with one it copies onto the stage as if `--link` were not given.
pub(crate) fn links(link: bool, chmod: Option<&str>) -> bool {
    link && chmod.is_none_or(str::is_empty)
}

/// A `--link` copy is made in an empty root, which has no `/etc/passwd` to look a name up in:
/// BuildKit's solver then fails with "invalid user index: -1" (moby/buildkit#2987), and its
/// frontend refuses the name before building since moby/buildkit#7134. Numeric ids and `root`
/// need no lookup.
fn refuse_chown_names_with_link(keyword: &str, spec: &str) -> Result<(), String> {
    let (user, group) = split_chown(spec);
    if chown_id(user).is_some() && group.is_none_or(|g| chown_id(g).is_some()) {
        return Ok(());
    }
    Err(format!(
        "{keyword} --link --chown={spec}: a --link copy is made in an empty root, where no \
         user or group name can be looked up (BuildKit refuses it too); give numeric ids \
         (--chown=1000:1000) or drop --link"
    ))
}

/// `--chown`'s user and group parts; an empty group is no group (BuildKit's `WithUser`).
pub(crate) fn split_chown(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((user, group)) => (user, Some(group).filter(|g| !g.is_empty())),
        None => (spec, None),
    }
}

/// A `--chown` part that needs no lookup: a number, or `root` (BuildKit's `parseUID`).
pub(crate) fn chown_id(part: &str) -> Option<u32> {
    if part == "root" {
        return Some(0);
    }
    part.parse().ok()
}

/// The entitlements an instruction needs that `kiln build --allow` did not grant, as BuildKit
/// checks them on the whole build before it runs anything (its words: "entitlement
/// security.insecure is not allowed"). `kiln build --network host` grants network.host too.
pub(crate) fn check_entitlements(
    inst: &Instruction,
    allow_security_insecure: bool,
    allow_network_host: bool,
) -> Result<(), String> {
    match inst {
        Instruction::Run(run) if run.network.as_deref() == Some("host") && !allow_network_host => {
            Err(
                "RUN --network=host: entitlement network.host is not allowed: pass --allow \
                 network.host to kiln build to run this step in the host's network"
                    .into(),
            )
        }
        Instruction::Run(run)
            if run.security.as_deref() == Some("insecure") && !allow_security_insecure =>
        {
            Err(
                "RUN --security=insecure: entitlement security.insecure is not allowed: pass \
                 --allow security.insecure to kiln build to run this step with every \
                 capability, no seccomp filter and nothing of /proc masked"
                    .into(),
            )
        }
        _ => Ok(()),
    }
}

/// What the `# syntax=` directive asks for. kiln is its own frontend: it implements the
/// `docker/dockerfile:1` reference, so naming that image is fine and only noted; any other
/// frontend image (or the labs channel) would build differently. `# check=` is BuildKit's
/// build checks, which the `kiln` binary runs (kiln-lint) before it builds.
pub(crate) fn check_directives(directives: &[Directive]) -> Result<Vec<String>, (usize, String)> {
    let mut notes = Vec::new();
    for directive in directives.iter().filter(|d| d.name == "syntax") {
        if !is_dockerfile_v1(&directive.value) {
            return Err((
                directive.line,
                format!(
                    "# syntax={}: kiln implements the docker/dockerfile:1 frontend itself \
                     and cannot run another frontend image",
                    directive.value
                ),
            ));
        }
        notes.push(format!(
            "# syntax={}: kiln builds with its own implementation of the \
             docker/dockerfile:1 reference; the frontend image is not pulled",
            directive.value
        ));
    }
    Ok(notes)
}

/// `docker/dockerfile:1`, `:1.7`, `:1.7.1`, with or without `docker.io/`, a digest, or no
/// tag at all (the latest 1.x). Not `:1-labs`, whose extra flags kiln does not implement.
fn is_dockerfile_v1(image: &str) -> bool {
    let image = image.split('@').next().unwrap_or(image);
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    let Some(rest) = image.strip_prefix("docker/dockerfile") else {
        return false;
    };
    match rest.strip_prefix(':') {
        None => rest.is_empty(),
        Some(tag) => {
            let mut parts = tag.split('.');
            parts.next() == Some("1")
                && parts.all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first instruction of `dockerfile`, parsed as the builder gets it.
    fn instruction(dockerfile: &str) -> Instruction {
        let parsed = kiln_dockerfile::parse(dockerfile).expect("parses");
        let (_, stages) = kiln_dockerfile::parse_stages(&parsed).expect("stages");
        stages[0].instructions[0].value.clone()
    }

    /// Every flag the parser accepts, per instruction, with what kiln does with it: `None` if
    /// it is implemented, or the words of the error that refuses it.
    const FLAGS: &[(&str, &str, Option<&str>)] = &[
        ("RUN", "--mount=type=bind,target=/x", None),
        ("RUN", "--network=none", None),
        ("RUN", "--security=sandbox", None),
        ("RUN", "--security=insecure", None),
        ("RUN", "--device=/dev/fuse", Some("--device")),
        ("COPY", "--from=base", None),
        ("COPY", "--chown=1:1", None),
        ("COPY", "--chmod=644", None),
        ("COPY", "--chmod=u=rwX,go=rX", None),
        ("COPY", "--link", None),
        ("COPY", "--parents", None),
        ("COPY", "--exclude=*.md", None),
        ("ADD", "--chown=1:1", None),
        ("ADD", "--chmod=644", None),
        ("ADD", "--link", None),
        ("ADD", "--checksum=sha256:00", None),
        ("ADD", "--unpack=false", None),
        ("ADD", "--keep-git-dir", None),
        ("ADD", "--exclude=*.md", None),
        // The plan picks the stage's platform (plan.rs); the config takes the health check.
        ("FROM", "--platform=linux/amd64", None),
        ("HEALTHCHECK", "--interval=5s", None),
        ("HEALTHCHECK", "--timeout=5s", None),
        ("HEALTHCHECK", "--start-period=5s", None),
        ("HEALTHCHECK", "--start-interval=5s", None),
        ("HEALTHCHECK", "--retries=3", None),
    ];

    /// A line of `keyword` with `flag` that parses.
    fn line_with(keyword: &str, flag: &str) -> String {
        match keyword {
            "RUN" => format!("FROM scratch AS base\nRUN {flag} true\n"),
            "FROM" => format!("FROM {flag} scratch AS base\nCMD [\"x\"]\n"),
            "HEALTHCHECK" => format!("FROM scratch AS base\nHEALTHCHECK {flag} CMD true\n"),
            _ => format!("FROM scratch AS base\n{keyword} {flag} a /b\n"),
        }
    }

    /// Every `--mount` option, with what kiln does with it.
    const MOUNT_OPTIONS: &[(&str, Option<&str>)] = &[
        ("type=bind,target=/x,source=a", None),
        ("type=bind,target=/x,from=base", None),
        ("type=bind,target=/x,rw", None),
        ("type=bind,target=/x,readonly", None),
        ("type=tmpfs,target=/x,size=1000", None),
        (
            "type=cache,target=/x,id=c,sharing=shared,mode=0755,uid=1,gid=1",
            None,
        ),
        ("type=cache,target=/x,sharing=locked", None),
        ("type=cache,target=/x,sharing=private", None),
        ("type=cache,target=/x,from=base,source=sub", None),
        (
            "type=secret,id=s,target=/s,required,mode=0400,uid=1,gid=1",
            None,
        ),
        ("type=secret,id=s,env=TOKEN", None),
        (
            "type=ssh,id=k,target=/s,required,mode=0600,uid=1,gid=1",
            None,
        ),
        ("type=ssh", None),
        ("type=ssh,source=k", Some("source=")),
        ("type=ssh,from=base", Some("from=")),
        ("type=ssh,env=SOCK", Some("env=")),
    ];

    #[test]
    fn a_link_copy_takes_only_ids_for_chown() {
        let check = |line: &str| check_expanded(&instruction(&format!("FROM scratch\n{line}\n")));
        for ok in [
            "COPY --link --chown=1000 a /b",
            "COPY --link --chown=root:4001 a /b",
            "ADD --link --chown=1:2 a /b",
            "COPY --link --chown= a /b",
            // --chmod turns --link off in BuildKit: the names are looked up in the stage.
            "COPY --link --chmod=644 --chown=app a /b",
            "COPY --chown=app:staff a /b",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for refused in [
            "COPY --link --chown=app a /b",
            "COPY --link --chown=1000:staff a /b",
            "ADD --link --chown=app:1 a /b",
        ] {
            let err = check(refused).unwrap_err();
            assert!(
                err.contains("--link --chown=") && err.contains("numeric ids"),
                "{err}"
            );
        }
    }

    #[test]
    fn every_flag_is_implemented_or_refused_by_name() {
        for (keyword, flag, refused) in FLAGS {
            let line = line_with(keyword, flag);
            let parsed = kiln_dockerfile::parse(&line).expect("parses");
            let (_, stages) = kiln_dockerfile::parse_stages(&parsed)
                .unwrap_or_else(|e| panic!("{keyword} {flag} parses: {e:?}"));
            let inst = match *keyword {
                "FROM" => &stages[0].from.value,
                _ => &stages[0].instructions[0].value,
            };
            let result = check_instruction(inst).and_then(|()| check_expanded(inst));
            match refused {
                None => assert_eq!(result, Ok(()), "{keyword} {flag}"),
                Some(words) => {
                    let error = result.expect_err(&format!("{keyword} {flag} is refused"));
                    assert!(error.contains(words), "{keyword} {flag}: {error}");
                }
            }
        }
    }

    #[test]
    fn security_insecure_needs_its_entitlement() {
        let inst = instruction("FROM scratch AS base\nRUN --security=insecure true\n");
        let error = check_entitlements(&inst, false, false).unwrap_err();
        assert!(
            error.contains("entitlement security.insecure is not allowed")
                && error.contains("--allow security.insecure"),
            "{error}"
        );
        assert_eq!(check_entitlements(&inst, true, false), Ok(()));
        let plain = instruction("FROM scratch AS base\nRUN --security=sandbox true\n");
        assert_eq!(check_entitlements(&plain, false, false), Ok(()));
    }

    #[test]
    fn the_table_covers_every_flag_the_parser_accepts() {
        // The parser names the flags it accepts when it meets one it does not know.
        for keyword in ["RUN", "COPY", "ADD", "FROM", "HEALTHCHECK"] {
            let line = line_with(keyword, "--zzzz");
            let parsed = kiln_dockerfile::parse(&line).expect("parses");
            let error = match kiln_dockerfile::parse_stages(&parsed) {
                Ok(_) => String::new(),
                Err(e) => format!("{e:?}"),
            };
            let accepted: Vec<&str> = error
                .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
                .filter_map(|w| w.strip_prefix("--"))
                .filter(|w| *w != "zzzz" && !w.is_empty())
                .collect();
            assert!(
                !accepted.is_empty(),
                "{keyword}: the parser lists its flags: {error}"
            );
            for flag in accepted {
                assert!(
                    FLAGS
                        .iter()
                        .any(|(k, f, _)| k == &keyword
                            && f.trim_start_matches("--").starts_with(flag)),
                    "{keyword} --{flag} is accepted by the parser but not in the table"
                );
            }
        }
    }

    #[test]
    fn every_mount_option_is_implemented_or_refused_by_name() {
        for (options, refused) in MOUNT_OPTIONS {
            let line = format!("FROM scratch AS base\nRUN --mount={options} true\n");
            let result = check_instruction(&instruction(&line));
            match refused {
                None => assert_eq!(result, Ok(()), "--mount={options}"),
                Some(words) => {
                    let error = result.expect_err(&format!("--mount={options} is refused"));
                    assert!(error.contains(words), "--mount={options}: {error}");
                }
            }
        }
        for key in kiln_dockerfile::MOUNT_KEYS {
            assert!(
                MOUNT_OPTIONS
                    .iter()
                    .any(|(o, _)| o.split(',').any(|kv| kv.split('=').next() == Some(key)))
                    || ["src", "dst", "destination", "ro", "readwrite"].contains(&key),
                "--mount option {key} is accepted by the parser but not in the table"
            );
        }
    }

    #[test]
    fn syntax_directives_name_the_frontend() {
        for ok in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7",
            "docker.io/docker/dockerfile:1.4.3",
            "docker/dockerfile",
            "docker/dockerfile:1@sha256:abc",
        ] {
            assert!(is_dockerfile_v1(ok), "{ok}");
        }
        for other in [
            "docker/dockerfile:1-labs",
            "docker/dockerfile-upstream:master",
            "example.com/frontend:1",
            "docker/dockerfile:2",
        ] {
            assert!(!is_dockerfile_v1(other), "{other}");
        }
        let directive = |name: &str, value: &str| Directive {
            name: name.into(),
            value: value.into(),
            line: 1,
        };
        let notes = check_directives(&[directive("syntax", "docker/dockerfile:1")]).unwrap();
        assert!(
            notes[0].contains("docker/dockerfile:1 reference"),
            "{notes:?}"
        );
        let (line, error) = check_directives(&[directive("syntax", "tonistiigi/x:1")]).unwrap_err();
        assert!(error.contains("tonistiigi/x:1") && line == 1, "{error}");
        assert_eq!(
            check_directives(&[directive("check", "skip=JSONArgsRecommended")]),
            Ok(vec![])
        );
        assert_eq!(
            check_directives(&[directive("check", "skip=all;error=true")]),
            Ok(vec![])
        );
    }
}
