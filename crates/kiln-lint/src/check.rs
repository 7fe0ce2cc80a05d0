//! The checks: instructions grouped by stage, each RUN read into facts, then the rules.

use std::collections::{BTreeSet, HashSet};

use kiln_dockerfile::{
    CommandLine, Instruction, MountType, Node, Parsed, RunInstruction, parse_instruction,
};

use crate::shell::{self, Command};
use crate::{Error, Finding, Location, Related, rules};

/// One instruction with its node.
struct Inst<'a> {
    node: &'a Node,
    value: Instruction,
    ignores: HashSet<String>,
}

struct Stage<'a> {
    name: Option<String>,
    base: String,
    from: Inst<'a>,
    insts: Vec<Inst<'a>>,
}

/// What one RUN does, as far as the rules care.
#[derive(Default)]
struct RunFacts {
    apt_updates: Vec<Location>,
    apt_installs: Vec<(Location, String)>,
    apt_install_no_recommends_missing: Vec<(Location, String)>,
    apt_upgrades: Vec<(Location, String)>,
    pip_installs_cached: Vec<(Location, String)>,
    pip_requirements: Vec<Location>,
    apk_adds_cached: Vec<Location>,
    other_installs: Vec<(Location, String)>,
    clean_lists: Option<Location>,
    clean_apt_cache: Option<Location>,
    clean_pip_cache: Option<Location>,
    clean_apk_cache: bool,
    first_cd: Option<Location>,
    mounts_apt_cache: bool,
    mounts_pip_cache: bool,
    sets_no_recommends: bool,
}

pub(crate) fn run(text: &str, parsed: &Parsed) -> Result<Vec<Finding>, Error> {
    let file_ignores = file_ignores(text);
    let mut meta_defaults: Vec<(String, String)> = Vec::new();
    let mut stages: Vec<Stage<'_>> = Vec::new();
    for node in &parsed.nodes {
        let inst = parse_instruction(node)?;
        let inst = Inst {
            node,
            value: inst.value,
            ignores: node_ignores(node),
        };
        match &inst.value {
            Instruction::Arg(defs) if stages.is_empty() => {
                for d in defs {
                    meta_defaults.push((d.key.clone(), d.default.clone().unwrap_or_default()));
                }
            }
            Instruction::From(from) => stages.push(Stage {
                name: from.stage_name.clone(),
                base: from.base.clone(),
                from: inst,
                insts: Vec::new(),
            }),
            _ => {
                if let Some(stage) = stages.last_mut() {
                    stage.insts.push(inst);
                }
            }
        }
    }

    let mut findings = Vec::new();
    let mut sink = Sink::new(&mut findings);
    // Meta ARGs: secrets.
    for node in parsed
        .nodes
        .iter()
        .take_while(|n| n.keyword_lower() != "from")
    {
        if let Ok(inst) = parse_instruction(node) {
            let inst = Inst {
                node,
                value: inst.value,
                ignores: node_ignores(node),
            };
            check_secrets(&inst, &mut sink);
        }
    }

    let shipping = shipping_stages(&stages);
    let mut stage_env: Vec<Vec<(String, String)>> = Vec::new();
    for (index, stage) in stages.iter().enumerate() {
        // ENV inherited from a parent stage.
        let mut env: Vec<(String, String)> = stage_parent(&stages, index)
            .and_then(|p| stage_env.get(p).cloned())
            .unwrap_or_default();
        check_from(stage, &stages[..index], &meta_defaults, &mut sink);
        let ships = shipping.contains(&index);
        let mut facts: Vec<Option<RunFacts>> = Vec::new();
        let mut no_recommends_config = false;
        for inst in &stage.insts {
            let f = match &inst.value {
                Instruction::Run(run) => {
                    let f = run_facts(inst.node, run, &env, no_recommends_config);
                    no_recommends_config |= f.sets_no_recommends;
                    Some(f)
                }
                _ => None,
            };
            match &inst.value {
                Instruction::Env(kvs) => {
                    for kv in kvs {
                        env.retain(|(k, _)| *k != kv.key);
                        env.push((kv.key.clone(), kv.value.clone()));
                    }
                }
                Instruction::Arg(defs) => {
                    for d in defs {
                        if let Some(v) = &d.default {
                            env.push((d.key.clone(), v.clone()));
                        }
                    }
                }
                _ => {}
            }
            facts.push(f);
        }
        stage_env.push(env);
        check_instructions(stage, &facts, ships, &mut sink);
        check_late_cleanup(stage, &facts, ships, &mut sink);
        check_volatile(stage, &facts, &mut sink);
        if ships {
            check_consecutive(stage, &mut sink);
        }
    }

    findings.retain(|f| {
        !file_ignores.contains(&f.rule.id.to_ascii_lowercase())
            && !file_ignores.contains(f.rule.name)
    });
    findings.sort_by(|a, b| {
        (a.location, a.rule.id, &a.message).cmp(&(b.location, b.rule.id, &b.message))
    });
    findings.dedup();
    Ok(findings)
}

/// Collects findings, leaving out those silenced on any instruction they involve.
struct Sink<'f> {
    findings: &'f mut Vec<Finding>,
}

impl<'f> Sink<'f> {
    fn new(findings: &'f mut Vec<Finding>) -> Self {
        Sink { findings }
    }

    fn push(
        &mut self,
        id: &str,
        at: &[&Inst<'_>],
        location: Location,
        message: String,
        related: Vec<Related>,
    ) {
        let rule = rules::get(id);
        let silenced = at.iter().any(|i| {
            i.ignores.contains(&rule.id.to_ascii_lowercase()) || i.ignores.contains(rule.name)
        });
        if !silenced {
            self.findings.push(Finding {
                rule,
                location,
                message,
                related,
            });
        }
    }
}

fn parse_ignore_list(text: &str, key: &str, out: &mut HashSet<String>) {
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        let after = &rest[at + key.len()..];
        let list: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ',' | '-' | '_'))
            .collect();
        for id in list.split(',').filter(|s| !s.is_empty()) {
            out.insert(id.to_ascii_lowercase());
        }
        rest = after;
    }
}

fn node_ignores(node: &Node) -> HashSet<String> {
    let mut out = HashSet::new();
    for comment in &node.comments {
        parse_ignore_list(comment, "kiln-ignore=", &mut out);
    }
    for line in node.source.lines() {
        if let Some(hash) = line.find('#') {
            parse_ignore_list(&line[hash..], "kiln-ignore=", &mut out);
        }
    }
    out
}

fn file_ignores(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') {
            parse_ignore_list(line, "kiln-ignore-file=", &mut out);
        }
    }
    out
}

fn start(inst: &Inst<'_>) -> Location {
    Location {
        line: inst.node.span.start.line,
        column: inst.node.span.start.column.max(1),
    }
}

/// Finds the commands of a RUN in its source lines, in order, for their line and column.
struct Locator<'a> {
    source: &'a str,
    first_line: usize,
    first_column: usize,
    cursor: usize,
    fallback: Location,
}

impl<'a> Locator<'a> {
    fn new(node: &'a Node) -> Self {
        let source = node.source.as_str();
        // Skip the keyword and the flags on the first line.
        let cursor = source
            .to_ascii_lowercase()
            .find(&node.keyword.to_ascii_lowercase())
            .map_or(0, |i| i + node.keyword.len());
        Locator {
            source,
            first_line: node.span.start.line,
            first_column: node.span.start.column.max(1),
            cursor,
            fallback: Location {
                line: node.span.start.line,
                column: node.span.start.column.max(1),
            },
        }
    }

    fn locate(&mut self, anchor: &str) -> Location {
        if anchor.is_empty() {
            return self.fallback;
        }
        let Some(rest) = self.source.get(self.cursor..) else {
            return self.fallback;
        };
        let Some(found) = rest.find(anchor) else {
            return self.fallback;
        };
        let at = self.cursor + found;
        self.cursor = at + anchor.len();
        let before = &self.source[..at];
        let line_offset = before.matches('\n').count();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        // `source` starts at the instruction's column on its first line.
        let column = if line_offset == 0 && !self.source.starts_with(char::is_whitespace) {
            column + self.first_column - 1
        } else {
            column
        };
        Location {
            line: self.first_line + line_offset,
            column,
        }
    }
}

fn run_commands(run: &RunInstruction) -> Vec<Command> {
    let mut cmds = match &run.command {
        CommandLine::Exec(argv) => shell::commands_of_argv(argv),
        CommandLine::Shell(script) => shell::commands(script),
    };
    // Heredoc scripts: `RUN <<EOF` (the shell reads the body) and `RUN bash <<EOF`.
    let command_is_shell = match &run.command {
        CommandLine::Shell(script) => {
            let first = script.split_whitespace().next().unwrap_or("");
            first.starts_with("<<")
                || matches!(
                    first.rsplit('/').next().unwrap_or(first),
                    "sh" | "bash" | "dash" | "ash" | "zsh"
                ) && !script.contains(" -c")
        }
        CommandLine::Exec(_) => false,
    };
    if command_is_shell {
        for heredoc in &run.heredocs {
            cmds.extend(shell::commands(&heredoc.content));
        }
    }
    cmds
}

fn apt_subcommand(cmd: &Command) -> Option<&str> {
    if !matches!(cmd.program(), "apt-get" | "apt" | "aptitude") {
        return None;
    }
    let args = cmd.args();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if matches!(
            a,
            "-o" | "-c"
                | "-t"
                | "--option"
                | "--config-file"
                | "--target-release"
                | "--default-release"
        ) {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        return Some(a);
    }
    None
}

fn is_pip_install(cmd: &Command) -> bool {
    let program = cmd.program();
    let args = cmd.args();
    let pip_args: &[String] = if program == "pip"
        || program
            .strip_prefix("pip")
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    {
        args
    } else if program.starts_with("python") {
        match args.iter().position(|a| a == "-m") {
            Some(i) if args.get(i + 1).is_some_and(|m| m == "pip" || m == "pip3") => &args[i + 2..],
            _ => return false,
        }
    } else {
        return false;
    };
    pip_args
        .iter()
        .find(|a| !a.starts_with('-'))
        .is_some_and(|a| a == "install")
}

fn removes(cmd: &Command, prefixes: &[&str]) -> bool {
    let matches = |a: &String| {
        prefixes.iter().any(|p| {
            let a = a.trim_end_matches('*').trim_end_matches('/');
            a == p.trim_end_matches('/') || a.starts_with(p)
        })
    };
    match cmd.program() {
        "rm" => cmd.args().iter().any(matches),
        "find" => {
            cmd.args()
                .iter()
                .take_while(|a| !a.starts_with('-'))
                .any(matches)
                && (cmd.has_arg("-delete") || cmd.has_arg("-exec"))
        }
        _ => false,
    }
}

const APT_LISTS: &[&str] = &["/var/lib/apt/lists"];
const APT_CACHE: &[&str] = &["/var/cache/apt"];
const PIP_CACHE: &[&str] = &[
    "/root/.cache",
    "~/.cache",
    "$HOME/.cache",
    "${HOME}/.cache",
    "/root/.cache/pip",
];

fn env_has(env: &[(String, String)], key: &str) -> bool {
    env.iter().any(|(k, v)| k == key && !v.is_empty())
}

fn run_facts(
    node: &Node,
    run: &RunInstruction,
    env: &[(String, String)],
    no_recommends_config: bool,
) -> RunFacts {
    let mut f = RunFacts::default();
    for mount in &run.mounts {
        if mount.kind != MountType::Cache && mount.kind != MountType::Tmpfs {
            continue;
        }
        let target = mount.target.as_deref().unwrap_or("").trim_end_matches('/');
        if target == "/var/lib/apt" || target == "/var/lib/apt/lists" {
            f.mounts_apt_cache = true;
        }
        if target == "/root/.cache" || target == "/root/.cache/pip" {
            f.mounts_pip_cache = true;
        }
    }
    let cmds = run_commands(run);
    let mut loc = Locator::new(node);
    let text_of = |c: &Command| c.words.join(" ");
    let mut first_real = true;
    for cmd in &cmds {
        let at = loc.locate(&cmd.anchor);
        let program = cmd.program();
        if first_real && program == "cd" {
            f.first_cd = Some(at);
        }
        if !matches!(program, "set" | "true" | ":" | "[" | "test") {
            first_real = false;
        }
        if cmd.words.iter().any(|w| w.contains("Install-Recommends"))
            && cmd
                .words
                .iter()
                .any(|w| w.contains("false") || w.contains("\"0\"") || w.ends_with("=0"))
        {
            f.sets_no_recommends = true;
        }
        if let Some(sub) = apt_subcommand(cmd) {
            match sub {
                "update" => f.apt_updates.push(at),
                "install" | "reinstall" => {
                    f.apt_installs.push((at, text_of(cmd)));
                    let no_rec = cmd.has_arg("--no-install-recommends")
                        || cmd.words.windows(2).any(|w| {
                            w[0] == "-o"
                                && w[1].contains("Install-Recommends")
                                && (w[1].ends_with("false") || w[1].ends_with("=0"))
                        })
                        || cmd.args().iter().any(|a| {
                            a.starts_with("-oAPT::Install-Recommends")
                                || a.starts_with("--option=APT::Install-Recommends")
                        });
                    if !no_rec && !no_recommends_config && cmd.program() != "aptitude" {
                        f.apt_install_no_recommends_missing.push((at, text_of(cmd)));
                    }
                }
                "upgrade" | "dist-upgrade" | "full-upgrade" => {
                    f.apt_upgrades
                        .push((at, format!("{} {sub}", cmd.program())));
                }
                "clean" | "autoclean" => {
                    f.clean_apt_cache.get_or_insert(at);
                }
                _ => {}
            }
            continue;
        }
        if is_pip_install(cmd) {
            let no_cache = cmd.has_arg("--no-cache-dir")
                || cmd.has_arg("--no-cache")
                || env_has(&cmd.env, "PIP_NO_CACHE_DIR")
                || env_has(env, "PIP_NO_CACHE_DIR")
                || f.mounts_pip_cache;
            if !no_cache {
                f.pip_installs_cached.push((at, text_of(cmd)));
            }
            if cmd
                .args()
                .iter()
                .any(|a| a == "-r" || a.starts_with("--requirement") || a.starts_with("-r"))
            {
                f.pip_requirements.push(at);
            }
            continue;
        }
        match program {
            "apk" => {
                let sub = cmd.args().iter().find(|a| !a.starts_with('-'));
                if sub.is_some_and(|s| s == "add") {
                    f.other_installs.push((at, text_of(cmd)));
                    if !cmd.has_arg("--no-cache") {
                        f.apk_adds_cached.push(at);
                    }
                }
                if sub.is_some_and(|s| s == "cache") && cmd.has_arg("clean") {
                    f.clean_apk_cache = true;
                }
            }
            "yum" | "dnf" | "microdnf" | "zypper" | "npm" | "yarn" | "pnpm" | "bundle"
            | "poetry" => {
                if cmd
                    .args()
                    .iter()
                    .find(|a| !a.starts_with('-'))
                    .is_some_and(|s| matches!(s.as_str(), "install" | "in" | "ci"))
                {
                    f.other_installs.push((at, text_of(cmd)));
                }
            }
            "go" if cmd.args().first().is_some_and(|a| a == "mod") => {
                f.other_installs.push((at, text_of(cmd)));
            }
            "rm" | "find" => {
                if removes(cmd, APT_LISTS) {
                    f.clean_lists.get_or_insert(at);
                }
                if removes(cmd, APT_CACHE) {
                    f.clean_apt_cache.get_or_insert(at);
                }
                if removes(cmd, PIP_CACHE) {
                    f.clean_pip_cache.get_or_insert(at);
                }
                if removes(cmd, &["/var/cache/apk"]) {
                    f.clean_apk_cache = true;
                }
            }
            _ => {
                // `pip cache purge`.
                if program.starts_with("pip") && cmd.args().first().is_some_and(|a| a == "cache") {
                    f.clean_pip_cache.get_or_insert(at);
                }
            }
        }
    }
    f
}

fn short(text: &str) -> String {
    if text.chars().count() > 60 {
        text.chars().take(57).collect::<String>() + "..."
    } else {
        text.to_owned()
    }
}

fn check_instructions(
    stage: &Stage<'_>,
    facts: &[Option<RunFacts>],
    ships: bool,
    sink: &mut Sink<'_>,
) {
    for (i, inst) in stage.insts.iter().enumerate() {
        match &inst.value {
            Instruction::Maintainer(who) => sink.push(
                "KL007",
                &[inst],
                start(inst),
                format!("MAINTAINER is deprecated: write LABEL maintainer=\"{who}\""),
                vec![],
            ),
            Instruction::Cmd(CommandLine::Shell(cmd))
            | Instruction::Entrypoint(CommandLine::Shell(cmd))
                if !cmd.is_empty() =>
            {
                let words: Vec<String> = shell::commands(cmd)
                    .first()
                    .map(|c| c.words.clone())
                    .unwrap_or_default();
                let exec = words
                    .iter()
                    .map(|w| format!("\"{}\"", w.replace('"', "\\\"")))
                    .collect::<Vec<_>>()
                    .join(", ");
                sink.push(
                    "KL008",
                    &[inst],
                    start(inst),
                    format!(
                        "{} in shell form runs under /bin/sh -c, which does not pass on signals: write {} [{exec}]",
                        inst.node.keyword.to_ascii_uppercase(),
                        inst.node.keyword.to_ascii_uppercase()
                    ),
                    vec![],
                )
            }
            Instruction::Add(add) => check_add(inst, add, sink),
            Instruction::Env(_) | Instruction::Arg(_) => check_secrets(inst, sink),
            _ => {}
        }
        let Some(Some(f)) = facts.get(i) else {
            continue;
        };
        for (at, what) in &f.apt_upgrades {
            sink.push(
                "KL004",
                &[inst],
                *at,
                format!("`{what}` rewrites files of the base image's layers, storing them twice; update the base image instead"),
                vec![],
            );
        }
        if let Some(at) = f.first_cd {
            sink.push(
                "KL009",
                &[inst],
                at,
                "RUN starts with cd: use WORKDIR, which lasts for later steps and the container"
                    .into(),
                vec![],
            );
        }
        if !ships {
            continue;
        }
        for (at, what) in &f.apt_install_no_recommends_missing {
            sink.push(
                "KL003",
                &[inst],
                *at,
                format!(
                    "`{}` without --no-install-recommends also installs recommended packages",
                    short(what)
                ),
                vec![],
            );
        }
        for (at, what) in &f.pip_installs_cached {
            sink.push(
                "KL005",
                &[inst],
                *at,
                format!("`{}` keeps its download cache in the layer: add --no-cache-dir or ENV PIP_NO_CACHE_DIR=1", short(what)),
                vec![],
            );
        }
        for at in &f.apk_adds_cached {
            if !f.clean_apk_cache {
                sink.push(
                    "KL014",
                    &[inst],
                    *at,
                    "`apk add` without --no-cache keeps the package index in the layer".into(),
                    vec![],
                );
            }
        }
        if !f.apt_updates.is_empty() && f.apt_installs.is_empty() {
            sink.push(
                "KL015",
                &[inst],
                f.apt_updates[0],
                "`apt-get update` in a RUN that installs nothing: its cached result goes stale; update, install and clean in one RUN".into(),
                vec![],
            );
        }
    }
}

fn check_add(inst: &Inst<'_>, add: &kiln_dockerfile::AddInstruction, sink: &mut Sink<'_>) {
    if add.checksum.is_some() || add.keep_git_dir.is_some() || add.unpack.is_some() {
        return;
    }
    let remote = |s: &str| {
        s.contains("://") || s.starts_with("git@") || s.contains('$') || s.ends_with(".git")
    };
    let archive = |s: &str| {
        let s = s.to_ascii_lowercase();
        [
            ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz", ".tar.zst",
            ".tzst", ".gz", ".bz2", ".xz", ".zst",
        ]
        .iter()
        .any(|ext| s.ends_with(ext))
            || s.contains('*')
    };
    if add.sources.iter().any(|s| remote(s) || archive(s)) {
        return;
    }
    if add.sources.is_empty() && add.inline_sources.is_empty() {
        return;
    }
    sink.push(
        "KL010",
        &[inst],
        start(inst),
        format!(
            "ADD of {} (not a URL or tar archive): COPY does the same and says so",
            if add.sources.is_empty() {
                "a heredoc".to_owned()
            } else {
                add.sources.join(" ")
            }
        ),
        vec![],
    );
}

const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "ACCESS_KEY",
    "CREDENTIAL",
    "AUTH_KEY",
];

fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if [
        "_FILE", "_PATH", "_DIR", "_URL", "_URI", "_ID", "_NAME", "_LENGTH", "_TTL",
    ]
    .iter()
    .any(|s| upper.ends_with(s))
    {
        return false;
    }
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

fn check_secrets(inst: &Inst<'_>, sink: &mut Sink<'_>) {
    let (kind, names): (&str, Vec<&str>) = match &inst.value {
        Instruction::Env(kvs) => ("ENV", kvs.iter().map(|k| k.key.as_str()).collect()),
        Instruction::Arg(defs) => ("ARG", defs.iter().map(|d| d.key.as_str()).collect()),
        _ => return,
    };
    for name in names.into_iter().filter(|n| looks_secret(n)) {
        let stored = if kind == "ENV" {
            "the image config"
        } else {
            "the image history"
        };
        sink.push(
            "KL012",
            &[inst],
            start(inst),
            format!("{kind} {name} looks like a secret, and {kind} values are stored in {stored}: use RUN --mount=type=secret"),
            vec![],
        );
    }
}

fn check_from(
    stage: &Stage<'_>,
    earlier: &[Stage<'_>],
    meta: &[(String, String)],
    sink: &mut Sink<'_>,
) {
    let mut base = stage.base.clone();
    for (k, v) in meta {
        base = base
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    if base.contains('$') || base == "scratch" || base.contains('@') {
        return;
    }
    if earlier.iter().any(|s| {
        s.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(&base))
    }) {
        return;
    }
    let last = base.rsplit('/').next().unwrap_or(&base);
    let tag = last.split_once(':').map(|(_, t)| t);
    let message = match tag {
        None => {
            format!("FROM {base} has no tag, so it means :latest, which moves: pin a tag or digest")
        }
        Some("latest") => format!("FROM {base}: :latest moves; pin a tag or digest"),
        Some(_) => return,
    };
    sink.push("KL011", &[&stage.from], start(&stage.from), message, vec![]);
}

/// Clean-ups in a later RUN than the install that wrote the files.
fn check_late_cleanup(
    stage: &Stage<'_>,
    facts: &[Option<RunFacts>],
    ships: bool,
    sink: &mut Sink<'_>,
) {
    for (i, inst) in stage.insts.iter().enumerate() {
        let Some(Some(f)) = facts.get(i) else {
            continue;
        };
        let lists_writer = f
            .apt_installs
            .first()
            .map(|a| a.0)
            .or(f.apt_updates.first().copied());
        let cache_writer = f.apt_installs.first().map(|a| a.0);
        let pip_writer = f.pip_installs_cached.first().map(|a| a.0);
        let mut late_lists = None;
        let mut late_cache = None;
        let mut late_pip = None;
        for (j, later) in stage.insts.iter().enumerate().skip(i + 1) {
            let Some(Some(g)) = facts.get(j) else {
                continue;
            };
            if lists_writer.is_some()
                && f.clean_lists.is_none()
                && !f.mounts_apt_cache
                && let Some(at) = g.clean_lists
            {
                late_lists.get_or_insert((later, at));
            }
            if cache_writer.is_some()
                && f.clean_apt_cache.is_none()
                && !f.mounts_apt_cache
                && let Some(at) = g.clean_apt_cache
            {
                late_cache.get_or_insert((later, at));
            }
            if pip_writer.is_some()
                && f.clean_pip_cache.is_none()
                && !f.mounts_pip_cache
                && let Some(at) = g.clean_pip_cache
            {
                late_pip.get_or_insert((later, at));
            }
        }
        let mut emit = |writer: Location,
                        what_writer: &str,
                        later: &Inst<'_>,
                        at: Location,
                        what: &str| {
            if !ships {
                return;
            }
            sink.push(
                "KL002",
                &[inst, later],
                at,
                format!(
                    "{what} at line {} runs in a later RUN than the {what_writer} at line {}: the files stay in line {}'s layer; clean up in that RUN",
                    at.line, writer.line, writer.line
                ),
                vec![Related {
                    location: writer,
                    message: format!("the {what_writer} whose layer keeps the files"),
                }],
            );
        };
        if let (Some(w), Some((later, at))) = (lists_writer, late_lists) {
            let what_writer = if f.apt_installs.is_empty() {
                "apt-get update"
            } else {
                "apt-get install"
            };
            emit(
                w,
                what_writer,
                later,
                at,
                "the clean-up of /var/lib/apt/lists",
            );
        } else if let (Some(w), Some((later, at))) = (cache_writer, late_cache) {
            emit(
                w,
                "apt-get install",
                later,
                at,
                "the clean-up of the apt cache",
            );
        }
        if let (Some(w), Some((later, at))) = (pip_writer, late_pip) {
            emit(w, "pip install", later, at, "the clean-up of the pip cache");
        }
        // An install without its clean-up anywhere: KL001.
        if ships
            && !f.apt_installs.is_empty()
            && f.clean_lists.is_none()
            && !f.mounts_apt_cache
            && late_lists.is_none()
        {
            let (at, what) = &f.apt_installs[0];
            sink.push(
                "KL001",
                &[inst],
                *at,
                format!("`{}` leaves /var/lib/apt/lists in the layer: end the RUN with && rm -rf /var/lib/apt/lists/*", short(what)),
                vec![],
            );
        }
    }
}

fn is_whole_context(sources: &[String]) -> bool {
    sources
        .iter()
        .any(|s| matches!(s.as_str(), "." | "./" | "*" | "./*" | "./."))
}

fn check_volatile(stage: &Stage<'_>, facts: &[Option<RunFacts>], sink: &mut Sink<'_>) {
    for (i, inst) in stage.insts.iter().enumerate() {
        let whole = match &inst.value {
            Instruction::Copy(c) => c.from.is_none() && is_whole_context(&c.sources),
            Instruction::Add(a) => is_whole_context(&a.sources),
            _ => false,
        };
        if !whole {
            continue;
        }
        let install = stage
            .insts
            .iter()
            .enumerate()
            .skip(i + 1)
            .find_map(|(j, later)| {
                let f = facts.get(j)?.as_ref()?;
                let at = f
                    .apt_installs
                    .first()
                    .map(|a| a.0)
                    .or(f.other_installs.first().map(|a| a.0))
                    .or(f.pip_requirements.first().copied())?;
                Some((later, at))
            });
        if let Some((later, at)) = install {
            sink.push(
                "KL013",
                &[inst, later],
                start(inst),
                format!(
                    "{} copies the whole context before the package install at line {}: any edit re-runs the install; install first, or copy only the dependency manifest",
                    inst.node.keyword.to_ascii_uppercase(),
                    at.line
                ),
                vec![Related {
                    location: at,
                    message: "the install that loses its cache".into(),
                }],
            );
        }
    }
}

fn check_consecutive(stage: &Stage<'_>, sink: &mut Sink<'_>) {
    let mut i = 0;
    while i < stage.insts.len() {
        let Instruction::Run(first) = &stage.insts[i].value else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < stage.insts.len() {
            match &stage.insts[j].value {
                Instruction::Run(r)
                    if r.mount_specs == first.mount_specs
                        && r.network == first.network
                        && r.security == first.security =>
                {
                    j += 1
                }
                _ => break,
            }
        }
        if j - i >= 2 {
            let group: Vec<&Inst<'_>> = stage.insts[i..j].iter().collect();
            let lines: Vec<String> = group
                .iter()
                .map(|g| g.node.span.start.line.to_string())
                .collect();
            sink.push(
                "KL006",
                &group,
                start(group[1]),
                format!(
                    "{} consecutive RUNs (lines {}) make {} layers; join them with && unless one must stay cached alone",
                    group.len(),
                    lines.join(", "),
                    group.len()
                ),
                group
                    .iter()
                    .take(1)
                    .map(|g| Related {
                        location: start(g),
                        message: "the first of the RUNs".into(),
                    })
                    .collect(),
            );
        }
        i = j;
    }
}

fn stage_parent(stages: &[Stage<'_>], index: usize) -> Option<usize> {
    let base = &stages[index].base;
    stages[..index]
        .iter()
        .position(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(base))
        })
        .or_else(|| base.parse::<usize>().ok().filter(|&n| n < index))
}

/// The stages whose layers end up in the final image: the last one and its `FROM` chain.
fn shipping_stages(stages: &[Stage<'_>]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut current = stages.len().checked_sub(1);
    while let Some(i) = current {
        if !out.insert(i) {
            break;
        }
        current = stage_parent(stages, i);
    }
    out
}
