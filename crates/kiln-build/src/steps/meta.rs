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
    let mut history = history_text(inst, &shell).unwrap_or_else(|| original.to_owned());
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
            let added = kiln_dockerfile::exposed_ports(words)
                .map_err(|why| Error::BadInput(format!("EXPOSE: {why}")))?;
            let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            for port in &added {
                ports.insert(port.clone(), EmptyObject {});
            }
            // BuildKit's `fmt.Sprintf("EXPOSE %v", ports)` of the list (convert_expose.go).
            history = format!("EXPOSE [{}]", added.join(" "));
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
        Instruction::Onbuild(trigger) => {
            config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(trigger.expression.clone());
            // BuildKit (docker 20.10's) records no history entry for ONBUILD.
            return Ok(());
        }
        other => {
            return Err(Error::BadInput(format!(
                "{other:?} is not a config instruction"
            )));
        }
    }
    push_history(&mut state.config, history, true);
    Ok(())
}

/// The history's `created_by` of a config instruction, as BuildKit writes it: the expanded
/// values, and Go's `%q`/`%v` renderings where BuildKit formats with them (checked against
/// docker 20.10's BuildKit by the differential e2e test). `None`: keep the text as written.
fn history_text(inst: &Instruction, shell: &[String]) -> Option<String> {
    let pairs = |pairs: &[kiln_dockerfile::KeyValue]| {
        pairs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some(match inst {
        Instruction::Env(kvs) => format!("ENV {}", pairs(kvs)),
        Instruction::Label(kvs) => format!("LABEL {}", pairs(kvs)),
        Instruction::Maintainer(author) => format!("MAINTAINER {author}"),
        Instruction::User(user) => format!("USER {user}"),
        Instruction::Cmd(command) => format!("CMD {}", go_quote_list(&command.to_argv(shell))),
        Instruction::Entrypoint(command) => {
            format!("ENTRYPOINT {}", go_quote_list(&command.to_argv(shell)))
        }
        Instruction::Volume(paths) => format!("VOLUME [{}]", paths.join(" ")),
        Instruction::StopSignal(signal) => format!("STOPSIGNAL {signal}"),
        Instruction::Shell(argv) => format!("SHELL [{}]", argv.join(" ")),
        // `fmt.Sprintf("HEALTHCHECK %q", config.Healthcheck)` on docker's HealthConfig struct:
        // Test, Interval, Timeout, StartPeriod, (StartInterval: not in docker 20.10's struct,
        // so shown only when set), Retries (an int, which %q renders as a rune literal).
        Instruction::Healthcheck(check) => {
            let (interval, timeout, start_period, start_interval, retries) = match check {
                HealthcheckInstruction::Disable => Default::default(),
                HealthcheckInstruction::Check(c) => (
                    c.interval,
                    c.timeout,
                    c.start_period,
                    c.start_interval,
                    c.retries,
                ),
            };
            let mut fields = vec![
                go_quote_list(&check.test()),
                go_quote(&go_duration(interval)),
                go_quote(&go_duration(timeout)),
                go_quote(&go_duration(start_period)),
            ];
            if !start_interval.is_zero() {
                fields.push(go_quote(&go_duration(start_interval)));
            }
            fields.push(go_quote_rune(retries));
            format!("HEALTHCHECK &{{{}}}", fields.join(" "))
        }
        _ => return None,
    })
}

/// Go's `%q` of a string (`strconv.Quote`).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => push_go_escaped(&mut out, c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a rune (`strconv.QuoteRune`), which is what `%q` does to an int.
fn go_quote_rune(n: u32) -> String {
    let Some(c) = char::from_u32(n) else {
        return "'\\ufffd'".into();
    };
    let mut out = String::from("'");
    match c {
        '\'' => out.push_str("\\'"),
        '\\' => out.push_str("\\\\"),
        c => push_go_escaped(&mut out, c),
    }
    out.push('\'');
    out
}

fn push_go_escaped(out: &mut String, c: char) {
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
        c if c.is_control() => {
            let n = c as u32;
            if n <= 0xffff {
                out.push_str(&format!("\\u{n:04x}"));
            } else {
                out.push_str(&format!("\\U{n:08x}"));
            }
        }
        c => out.push(c),
    }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| go_quote(i)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `time.Duration.String()`: `1m30s`, `500ms`, `1h0m0s`, `1.5s`, `0s`.
fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    // Fractions drop trailing zeros, as Go's fmtFrac does.
    let frac = |value: u128, digits: u32| -> String {
        let unit = 10u128.pow(digits);
        let (whole, part) = (value / unit, value % unit);
        if part == 0 {
            return whole.to_string();
        }
        let text = format!("{part:0width$}", width = digits as usize);
        format!("{whole}.{}", text.trim_end_matches('0'))
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", frac(nanos, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", frac(nanos, 6));
    }
    let secs = nanos / 1_000_000_000;
    let sub = nanos % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let seconds = frac(s * 1_000_000_000 + sub, 9);
    if h > 0 {
        format!("{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{m}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `CMD []` and `ENTRYPOINT []` unset the field: docker's config then says `null`, not `[]`
/// (Go's nil slice), with either builder.
fn argv_or_null(argv: Vec<String>) -> Option<Vec<String>> {
    (!argv.is_empty()).then_some(argv)
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

    fn state() -> StageState {
        let platforms = kiln_dockerfile::PlatformArgs::same(kiln_dockerfile::Platform::host());
        StageState {
            config: kiln_image::ImageConfig::scratch(),
            layers: Vec::new(),
            key: kiln_image::Digest::of(b""),
            vars: kiln_dockerfile::Variables::new(&platforms, Vec::<(String, String)>::new())
                .for_stage(),
            cmd_set: false,
        }
    }

    /// BuildKit's testHistory (dockerfile_history_test.go) and convert_expose.go since
    /// moby/buildkit 98eab32: `EXPOSE %v` of the port list, in the order of the words (which
    /// the parser sorted as written), ranges expanded, repeats kept. docker 20.10 printed the
    /// config's map instead (`EXPOSE map[80/tcp:{} …]`).
    #[test]
    fn expose_history_lists_the_ports_as_buildkit_prints_them() {
        let mut state = state();
        let words = ["9999/sctp", "80", "80", "127.0.0.1:8080-8081:7000-7001/UDP"]
            .map(String::from)
            .to_vec();
        apply(&mut state, &Instruction::Expose(words), "EXPOSE …").unwrap();
        let last = state.config.history.last().unwrap();
        assert_eq!(
            last.created_by.as_deref(),
            Some("EXPOSE [9999/sctp 80/tcp 80/tcp 7000/udp 7001/udp]")
        );
        assert!(last.empty_layer);
        let ports = state.config.config.as_ref().unwrap().exposed_ports.as_ref();
        assert_eq!(ports.map(|p| p.len()), Some(4));
        let err = apply(&mut state, &Instruction::Expose(vec!["80/icmp".into()]), "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"invalid port: "80/icmp": invalid proto: icmp"#),
            "{err}"
        );
    }

    #[test]
    fn go_renderings() {
        assert_eq!(go_quote("a \"b\" \\ \t é"), r#""a \"b\" \\ \t é""#);
        assert_eq!(go_quote("\u{0}\u{1b}"), r#""\x00\x1b""#);
        assert_eq!(go_quote_rune(0), r"'\x00'");
        assert_eq!(go_quote_rune(7), r"'\a'");
        assert_eq!(go_quote_rune(1), r"'\x01'");
        assert_eq!(go_quote_rune(65), "'A'");
        assert_eq!(go_quote_list(&["a".into(), "b c".into()]), r#"["a" "b c"]"#);
        let d = std::time::Duration::from_millis;
        assert_eq!(go_duration(d(0)), "0s");
        assert_eq!(go_duration(d(500)), "500ms");
        assert_eq!(go_duration(d(1500)), "1.5s");
        assert_eq!(go_duration(d(60_000)), "1m0s");
        assert_eq!(go_duration(d(90_000)), "1m30s");
        assert_eq!(go_duration(d(3_600_000)), "1h0m0s");
        assert_eq!(go_duration(std::time::Duration::from_micros(1500)), "1.5ms");
    }

    #[test]
    fn healthcheck_history_is_docker_20_10s_percent_q() {
        let mut state = state();
        let check = kiln_dockerfile::HealthcheckConfig {
            command: kiln_dockerfile::CommandLine::Exec(vec!["true".into()]),
            interval: std::time::Duration::from_secs(30),
            timeout: std::time::Duration::from_secs(5),
            start_period: std::time::Duration::from_secs(90),
            start_interval: std::time::Duration::ZERO,
            retries: 7,
        };
        let inst = Instruction::Healthcheck(HealthcheckInstruction::Check(check));
        apply(&mut state, &inst, "HEALTHCHECK …").unwrap();
        assert_eq!(
            state.config.history.last().unwrap().created_by.as_deref(),
            Some(r#"HEALTHCHECK &{["CMD" "true"] "30s" "5s" "1m30s" '\a'}"#)
        );
        let none = Instruction::Healthcheck(HealthcheckInstruction::Disable);
        apply(&mut state, &none, "HEALTHCHECK NONE").unwrap();
        assert_eq!(
            state.config.history.last().unwrap().created_by.as_deref(),
            Some(r#"HEALTHCHECK &{["NONE"] "0s" "0s" "0s" '\x00'}"#)
        );
    }

    #[test]
    fn an_empty_exec_form_is_null() {
        assert_eq!(argv_or_null(vec![]), None);
        assert_eq!(argv_or_null(vec!["sh".into()]), Some(vec!["sh".to_owned()]));
    }
}
