//! What kiln does with every flag, mount option and directive that the parser accepts.
//!
//! The parser follows BuildKit and accepts all of them. The builder implements most; the rest
//! are refused here, before anything runs, with an error that names them. A Dockerfile is
//! never built with a flag quietly dropped: that would give an image BuildKit would not.

use kiln_dockerfile::{
    AddInstruction, CacheSharing, Directive, Instruction, MountType, RunInstruction,
};

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
            MountType::Cache => {
                if mount.from.is_some() || mount.source.is_some() {
                    return Err(
                        "RUN --mount=type=cache with from= or source=: kiln's cache \
                                mounts start empty; seeding one from a stage is not supported"
                            .into(),
                    );
                }
                if mount.sharing == Some(CacheSharing::Private) {
                    return Err(
                        "RUN --mount=type=cache,sharing=private is not supported by \
                                kiln: use sharing=shared or sharing=locked"
                            .into(),
                    );
                }
            }
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
            MountType::Bind | MountType::Tmpfs | MountType::Secret => {}
        }
    }
    Ok(())
}

fn check_add(_add: &AddInstruction) -> Result<(), String> {
    Ok(())
}

/// The entitlements an instruction needs that `kiln build --allow` did not grant, as BuildKit
/// checks them on the whole build before it runs anything (its words: "entitlement
/// security.insecure is not allowed"). `RUN --network=host` is checked where the network is
/// chosen (steps/run.rs), since `kiln build --network host` grants it too.
pub(crate) fn check_entitlements(
    inst: &Instruction,
    allow_security_insecure: bool,
) -> Result<(), String> {
    match inst {
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
pub(crate) fn check_directives(directives: &[Directive]) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for directive in directives.iter().filter(|d| d.name == "syntax") {
        if !is_dockerfile_v1(&directive.value) {
            return Err(format!(
                "# syntax={}: kiln implements the docker/dockerfile:1 frontend itself \
                 and cannot run another frontend image",
                directive.value
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
    ];

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
        (
            "type=cache,target=/x,sharing=private",
            Some("sharing=private"),
        ),
        ("type=cache,target=/x,from=base", Some("from=")),
        ("type=cache,target=/x,source=sub", Some("source=")),
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
    fn every_flag_is_implemented_or_refused_by_name() {
        for (keyword, flag, refused) in FLAGS {
            let line = match *keyword {
                "RUN" => format!("FROM scratch AS base\nRUN {flag} true\n"),
                _ => format!("FROM scratch AS base\n{keyword} {flag} a /b\n"),
            };
            let result = check_instruction(&instruction(&line));
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
        let error = check_entitlements(&inst, false).unwrap_err();
        assert!(
            error.contains("entitlement security.insecure is not allowed")
                && error.contains("--allow security.insecure"),
            "{error}"
        );
        assert_eq!(check_entitlements(&inst, true), Ok(()));
        let plain = instruction("FROM scratch AS base\nRUN --security=sandbox true\n");
        assert_eq!(check_entitlements(&plain, false), Ok(()));
    }

    #[test]
    fn the_table_covers_every_flag_the_parser_accepts() {
        // The parser names the flags it accepts when it meets one it does not know.
        for keyword in ["RUN", "COPY", "ADD"] {
            let line = format!("FROM scratch\n{keyword} --zzzz a /b\n");
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
        let error = check_directives(&[directive("syntax", "tonistiigi/x:1")]).unwrap_err();
        assert!(error.contains("tonistiigi/x:1"), "{error}");
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
