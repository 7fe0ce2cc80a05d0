//! Instructions that change only the image config: ENV, LABEL, CMD, ENTRYPOINT, USER, EXPOSE,
//! VOLUME, STOPSIGNAL, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER.

use std::collections::BTreeMap;

use kiln_dockerfile::{HealthcheckInstruction, Instruction};
use kiln_image::{EmptyObject, Healthcheck};

use super::stage::{StageState, push_history};
use crate::Error;

/// Applies a config-only instruction (already expanded) and records it in the history.
pub(crate) fn apply(
    state: &mut StageState,
    inst: &Instruction,
    original: &str,
) -> Result<(), Error> {
    let shell = state.shell();
    let env = state.vars.config_env();
    let mut history = original.to_owned();
    let config = state.config.container();
    match inst {
        Instruction::Env(_) => config.env = Some(env),
        Instruction::Label(pairs) => {
            let labels = config.labels.get_or_insert_with(BTreeMap::new);
            for kv in pairs {
                labels.insert(kv.key.clone(), kv.value.clone());
            }
        }
        Instruction::Maintainer(author) => state.config.author = Some(author.clone()),
        Instruction::User(user) => config.user = user.clone(),
        Instruction::Cmd(command) => {
            config.cmd = argv_or_null(command.to_argv(&shell));
            state.cmd_set = true;
        }
        Instruction::Entrypoint(command) => {
            config.entrypoint = argv_or_null(command.to_argv(&shell));
            // Docker's rule: an ENTRYPOINT drops a CMD inherited from the base.
            if !state.cmd_set {
                config.cmd = None;
            }
        }
        Instruction::Expose(words) => {
            let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            let mut added = Vec::new();
            for word in words {
                for port in parse_ports(word)? {
                    added.push(port.clone());
                    ports.insert(port, EmptyObject {});
                }
            }
            history = format!(
                "EXPOSE map[{}]",
                added
                    .iter()
                    .map(|p| format!("{p}:{{}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        Instruction::Volume(paths) => {
            let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
            for path in paths {
                if path.is_empty() {
                    return Err(Error::BadInput(
                        "VOLUME specified can not be an empty string".into(),
                    ));
                }
                volumes.insert(path.clone(), EmptyObject {});
            }
        }
        Instruction::StopSignal(signal) => {
            check_signal(signal)?;
            config.stop_signal = signal.clone();
        }
        Instruction::Shell(argv) => config.shell = Some(argv.clone()),
        Instruction::Healthcheck(check) => {
            config.healthcheck = Some(match check {
                HealthcheckInstruction::Disable => Healthcheck {
                    test: Some(check.test()),
                    ..Healthcheck::default()
                },
                HealthcheckInstruction::Check(c) => Healthcheck {
                    test: Some(check.test()),
                    interval: c.interval.as_nanos() as i64,
                    timeout: c.timeout.as_nanos() as i64,
                    start_period: c.start_period.as_nanos() as i64,
                    start_interval: c.start_interval.as_nanos() as i64,
                    retries: i64::from(c.retries),
                },
            });
        }
        Instruction::Onbuild(trigger) => config
            .on_build
            .get_or_insert_with(Vec::new)
            .push(trigger.expression.clone()),
        other => {
            return Err(Error::BadInput(format!(
                "{other:?} is not a config instruction"
            )));
        }
    }
    push_history(&mut state.config, history, true);
    Ok(())
}

/// `CMD []` and `ENTRYPOINT []` unset the field: docker's config then says `null`, not `[]`
/// (Go's nil slice), with either builder.
fn argv_or_null(argv: Vec<String>) -> Option<Vec<String>> {
    (!argv.is_empty()).then_some(argv)
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, … (ranges expand, as docker's nat package does).
pub(crate) fn parse_ports(word: &str) -> Result<Vec<String>, Error> {
    let bad = || {
        Error::BadInput(format!(
            "EXPOSE {word:?}: expected PORT[-PORT][/tcp|/udp|/sctp], e.g. 80 or 8000-8010/udp"
        ))
    };
    let (range, proto) = match word.split_once('/') {
        Some((range, proto)) => (range, proto.to_lowercase()),
        None => (word, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    // An IP prefix (`127.0.0.1:80:80`) is not valid in EXPOSE; docker rejects it too.
    let (start, end) = match range.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = range.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn check_signal(signal: &str) -> Result<(), Error> {
    let name = signal.strip_prefix("SIG").unwrap_or(signal);
    let numeric = signal.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n));
    let named = name
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'+' || b == b'-')
        && !name.is_empty();
    if numeric || named {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "STOPSIGNAL {signal:?} is not a signal: use a name such as SIGTERM or a number"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_exec_form_is_null() {
        assert_eq!(argv_or_null(vec![]), None);
        assert_eq!(argv_or_null(vec!["sh".into()]), Some(vec!["sh".to_owned()]));
    }

    #[test]
    fn ports_expand_like_docker() {
        assert_eq!(parse_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_ports("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            parse_ports("8000-8002").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(parse_ports("80/icmp").is_err());
        assert!(parse_ports("x").is_err());
        assert!(parse_ports("90-80").is_err());
    }
}
