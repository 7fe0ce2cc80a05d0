//! BuildKit's build checks (Dockerfile 1.8's `frontend/dockerfile/linter`), under BuildKit's
//! rule names and with BuildKit's messages, next to kiln's own KL rules.
//!
//! [`CheckConfig`] is the `# check=skip=…;experimental=…;error=true` directive (or the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg, which replaces it). [`build_checks`] returns the
//! violations as [`Finding`]s whose rule IDs are BuildKit's names (`JSONArgsRecommended`).
//! A comment `# check=skip=RULE` right above an instruction skips RULE for it alone.
//!
//! Some checks need what the build knows besides the Dockerfile: [`BuildFacts`] carries it
//! (the base images' environment and platform from the store, the `.dockerignore`, whether a
//! name is an image reference). A check whose fact is missing does not run.
//! `InvalidDefinitionDescription` is experimental in BuildKit, as here: it runs only when
//! `experimental=` names it (or says `all`), and `skip=` does not apply to it.

use std::collections::{BTreeSet, HashMap, HashSet};

use kiln_dockerfile::{
    Instruction, Node, Parsed, Platform, PlatformArgs, Variables, parse_instruction,
};

use crate::rules::{Rule, Severity};
use crate::{Error, Finding, Location};

macro_rules! bk_rule {
    (@doc $name:literal, $description:literal, $example:literal, $more:expr) => {
        Rule {
            id: $name,
            name: $name,
            severity: Severity::Warning,
            summary: $description,
            doc: concat!(
                "BuildKit build check ",
                $name,
                ": ",
                $description,
                ".\n\n",
                $example,
                "\n\nSkip it with `# check=skip=",
                $name,
                "`; fail the build on any check with `# check=error=true`.",
                $more
            ),
        }
    };
    ($name:literal, $description:literal, $slug:literal, $example:literal) => {
        bk_rule!(
            @doc $name,
            $description,
            $example,
            concat!(
                "\nMore info: https://docs.docker.com/go/dockerfile/rule/",
                $slug,
                "/"
            )
        )
    };
    // A check BuildKit gives no page (no URL).
    ($name:literal, $description:literal, $example:literal) => {
        bk_rule!(@doc $name, $description, $example, "")
    };
}

/// BuildKit's checks that kiln implements, by name.
pub const BUILDKIT_RULES: &[Rule] = &[
    bk_rule!(
        "ConsistentInstructionCasing",
        "All commands within the Dockerfile should use the same casing (either upper or lower)",
        "consistent-instruction-casing",
        "Wrong:\n    FROM alpine\n    run echo hi\n\nRight:\n    FROM alpine\n    RUN echo hi"
    ),
    bk_rule!(
        "CopyIgnoredFile",
        "Attempting to Copy file that is excluded by .dockerignore",
        "copy-ignored-file",
        "Needs the build context: `kiln build --check` runs it, `kiln lint` does not. With `Dockerfile` in .dockerignore:\n\nWrong:\n    COPY Dockerfile .\n\nRight:\n    COPY app.py ."
    ),
    bk_rule!(
        "DuplicateStageName",
        "Stage names should be unique",
        "duplicate-stage-name",
        "Wrong:\n    FROM alpine AS build\n    FROM debian AS build\n\nRight:\n    FROM alpine AS build\n    FROM debian AS test"
    ),
    bk_rule!(
        "ExposeInvalidFormat",
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
        "expose-invalid-format",
        "Wrong:\n    EXPOSE 127.0.0.1:80:80\n\nRight:\n    EXPOSE 80"
    ),
    bk_rule!(
        "ExposeProtoCasing",
        "Protocol in EXPOSE instruction should be lowercase",
        "expose-proto-casing",
        "Wrong:\n    EXPOSE 80/TCP\n\nRight:\n    EXPOSE 80/tcp"
    ),
    bk_rule!(
        "FromAsCasing",
        "The 'as' keyword should match the case of the 'from' keyword",
        "from-as-casing",
        "Wrong:\n    FROM alpine as build\n\nRight:\n    FROM alpine AS build"
    ),
    bk_rule!(
        "FromPlatformFlagConstDisallowed",
        "FROM --platform flag should not use a constant value",
        "from-platform-flag-const-disallowed",
        "Wrong:\n    FROM --platform=linux/amd64 alpine AS build\n\nRight:\n    FROM --platform=$BUILDPLATFORM alpine AS build\n    FROM --platform=linux/amd64 alpine AS build_amd64"
    ),
    bk_rule!(
        "InvalidBaseImagePlatform",
        "Base image platform does not match expected target platform",
        "Needs the base image: `kiln build --check` reads its platform from the store. With an arm64-only image, building for amd64:\n\nWrong:\n    FROM my-arm64-image\n\nRight:\n    FROM --platform=linux/arm64 my-arm64-image AS arm64-tools"
    ),
    bk_rule!(
        "InvalidDefaultArgInFrom",
        "Default value for global ARG results in an empty or invalid base image name",
        "invalid-default-arg-in-from",
        "Wrong:\n    ARG TAG\n    FROM busybox:${TAG}\n\nRight:\n    ARG TAG=latest\n    FROM busybox:${TAG}"
    ),
    bk_rule!(
        "InvalidDefinitionDescription",
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
        "invalid-definition-description",
        "Experimental in BuildKit: runs only with `# check=experimental=InvalidDefinitionDescription`.\n\nWrong:\n    # the version to build\n    ARG VERSION=1\n\nRight:\n    # VERSION the version to build\n    ARG VERSION=1"
    ),
    bk_rule!(
        "JSONArgsRecommended",
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
        "json-args-recommended",
        "Wrong:\n    CMD my-server --port 80\n\nRight:\n    CMD [\"my-server\", \"--port\", \"80\"]"
    ),
    bk_rule!(
        "LegacyKeyValueFormat",
        "Legacy key/value format with whitespace separator should not be used",
        "legacy-key-value-format",
        "Wrong:\n    ENV key value\n\nRight:\n    ENV key=value"
    ),
    bk_rule!(
        "MaintainerDeprecated",
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
        "maintainer-deprecated",
        "Wrong:\n    MAINTAINER Jane <jane@example.com>\n\nRight:\n    LABEL org.opencontainers.image.authors=\"jane@example.com\""
    ),
    bk_rule!(
        "MultipleInstructionsDisallowed",
        "Multiple instructions of the same type should not be used in the same stage",
        "multiple-instructions-disallowed",
        "Only the last CMD counts.\n\nWrong:\n    CMD [\"a\"]\n    CMD [\"b\"]\n\nRight:\n    CMD [\"b\"]"
    ),
    bk_rule!(
        "NoEmptyContinuation",
        "Empty continuation lines will become errors in a future release",
        "no-empty-continuation",
        "Wrong:\n    RUN apk add \\\n\n        curl\n\nRight:\n    RUN apk add \\\n        curl"
    ),
    bk_rule!(
        "RedundantTargetPlatform",
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        "redundant-target-platform",
        "Wrong:\n    FROM --platform=$TARGETPLATFORM alpine\n\nRight:\n    FROM alpine"
    ),
    bk_rule!(
        "ReservedStageName",
        "Reserved words should not be used as stage names",
        "reserved-stage-name",
        "Wrong:\n    FROM alpine AS scratch\n\nRight:\n    FROM alpine AS base"
    ),
    bk_rule!(
        "SecretsUsedInArgOrEnv",
        "Sensitive data should not be used in the ARG or ENV commands",
        "secrets-used-in-arg-or-env",
        "Wrong:\n    ARG GITHUB_TOKEN\n\nRight:\n    RUN --mount=type=secret,id=github_token ..."
    ),
    bk_rule!(
        "StageNameCasing",
        "Stage names should be lowercase",
        "stage-name-casing",
        "Wrong:\n    FROM alpine AS Build\n\nRight:\n    FROM alpine AS build"
    ),
    bk_rule!(
        "UndefinedArgInFrom",
        "FROM command must use declared ARGs",
        "undefined-arg-in-from",
        "Wrong:\n    FROM alpine:${VERSION}\n\nRight:\n    ARG VERSION=3.20\n    FROM alpine:${VERSION}"
    ),
    bk_rule!(
        "UndefinedVar",
        "Variables should be defined before their use",
        "undefined-var",
        "Wrong:\n    COPY $SRC /app\n\nRight:\n    ARG SRC=.\n    COPY $SRC /app"
    ),
    bk_rule!(
        "WorkdirRelativePath",
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
        "workdir-relative-path",
        "Wrong:\n    WORKDIR app\n\nRight:\n    WORKDIR /app"
    ),
];

/// BuildKit's experimental checks: they run only when `experimental=` names them.
pub const EXPERIMENTAL: &[&str] = &["InvalidDefinitionDescription"];

/// The build arg that replaces the `# check=` directive (BuildKit's name).
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What `# check=` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=A,B`.
    pub skip: BTreeSet<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=A,B`.
    pub experimental: BTreeSet<String>,
    /// `error=true`: a violation fails the build.
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;experimental=all;error=true` as BuildKit does: at most three parts,
    /// each `key=value`; `error` takes Go's boolean words. An `experimental=` rule that kiln
    /// does not implement is an error, since it would otherwise be silently not checked.
    pub fn parse(text: &str) -> Result<CheckConfig, Error> {
        let bad = |message: String| Error::CheckOption {
            value: text.to_string(),
            message,
        };
        let mut config = CheckConfig::default();
        let text_trimmed = text.trim();
        if text_trimmed.is_empty() {
            return Ok(config);
        }
        for part in text_trimmed.splitn(3, ';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(bad(format!("invalid check option {part:?}")));
            };
            let value = value.trim();
            let names = || {
                value
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .collect::<BTreeSet<_>>()
            };
            match key.trim() {
                "skip" if value == "all" => config.skip_all = true,
                "skip" => config.skip.extend(names()),
                "experimental" if value == "all" => config.experimental_all = true,
                "experimental" => {
                    for name in names() {
                        if !BUILDKIT_RULES.iter().any(|r| r.id == name) {
                            return Err(bad(format!(
                                "{name} is not a BuildKit check; `kiln lint --rules` lists the \
                                 checks kiln runs"
                            )));
                        }
                        config.experimental.insert(name);
                    }
                }
                "error" => {
                    config.error = go_bool(value).ok_or_else(|| {
                        bad(format!(
                            "failed to parse check option {part:?}: not a boolean"
                        ))
                    })?;
                }
                other => return Err(bad(format!("invalid check option {other:?}"))),
            }
        }
        Ok(config)
    }

    /// The config of a build: the `BUILDKIT_DOCKERFILE_CHECK` build arg when given (it
    /// replaces the directive, as in BuildKit), else the `# check=` directive.
    pub fn for_build(parsed: &Parsed, build_arg: Option<&str>) -> Result<CheckConfig, Error> {
        if let Some(value) = build_arg {
            return CheckConfig::parse(value);
        }
        match parsed.directives.iter().find(|d| d.name == "check") {
            Some(d) => CheckConfig::parse(&d.value),
            None => Ok(CheckConfig::default()),
        }
    }

    /// BuildKit's linter: an experimental rule runs when asked for, whatever `skip=` says;
    /// any other runs unless skipped.
    fn runs(&self, rule: &str) -> bool {
        if EXPERIMENTAL.contains(&rule) {
            return self.experimental_all || self.experimental.contains(rule);
        }
        !(self.skip_all || self.skip.contains(rule))
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The error BuildKit returns for `error=true` when checks were violated: the rule names,
/// sorted and once each.
pub fn violation_error(findings: &[Finding]) -> Option<String> {
    let names: BTreeSet<&str> = findings.iter().map(|f| f.rule.id).collect();
    (!names.is_empty()).then(|| {
        format!(
            "lint violation found for rules: {}",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// BuildKit's `# check=…` comments directly above an instruction: what they ask for there,
/// on top of the file's config (`WithMergedConfigFromComments`).
fn local_config(node: &Node) -> CheckConfig {
    let mut out = CheckConfig::default();
    for comment in &node.comments {
        let Some(value) = comment.trim().strip_prefix("check=") else {
            continue;
        };
        // BuildKit reads the value up to the first space (the rest is a remark).
        let value = value.split(' ').next().unwrap_or("");
        if let Ok(config) = CheckConfig::parse(value) {
            out.skip_all |= config.skip_all;
            out.skip.extend(config.skip);
            out.experimental_all |= config.experimental_all;
            out.experimental.extend(config.experimental);
        }
    }
    out
}

struct Out<'c> {
    config: &'c CheckConfig,
    findings: Vec<Finding>,
}

impl Out<'_> {
    fn push(&mut self, rule: &str, node: &Node, line: usize, message: String) {
        let local = local_config(node);
        let runs = if EXPERIMENTAL.contains(&rule) {
            self.config.runs(rule) || local.runs(rule)
        } else {
            self.config.runs(rule) && local.runs(rule)
        };
        if !runs {
            return;
        }
        let Some(rule) = BUILDKIT_RULES.iter().find(|r| r.id == rule) else {
            return;
        };
        self.findings.push(Finding {
            rule,
            location: Location { line, column: 1 },
            message,
            related: Vec::new(),
        });
    }
}

/// Names BuildKit's platform args, which FROM may use without declaring them.
const PLATFORM_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// The names a word refers to with `$NAME` or `${NAME…}` (escape `\` honoured, single quotes
/// not expanding, as BuildKit's lexer treats a FROM word).
fn referenced_vars(word: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_single = false;
    while i < chars.len() {
        let c = chars[i];
        if c == escape && !in_single {
            i += 2;
            continue;
        }
        if c == '\'' {
            in_single = !in_single;
        } else if c == '$' && !in_single {
            let braced = chars.get(i + 1) == Some(&'{');
            let start = if braced { i + 2 } else { i + 1 };
            let mut end = start;
            while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
                end += 1;
            }
            if end > start {
                out.push(chars[start..end].iter().collect());
            }
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

/// `is_ascii_lowercase` for the whole word, as Go's `s == strings.ToLower(s)`.
fn is_lower(s: &str) -> bool {
    s == s.to_lowercase()
}

fn is_upper(s: &str) -> bool {
    s == s.to_uppercase()
}

/// Runs BuildKit's checks on Dockerfile text. `build_args` are the names given with
/// `--build-arg` (they count as declared for `UndefinedArgInFrom`). Findings are sorted by
/// line, then rule name.
pub fn build_checks(
    text: &str,
    config: &CheckConfig,
    build_args: &[String],
) -> Result<Vec<Finding>, Error> {
    let parsed = kiln_dockerfile::parse(text)?;
    build_checks_parsed(&parsed, config, build_args)
}

/// [`build_checks`] on an already parsed Dockerfile. `UndefinedVar` runs only on stages whose
/// root is `scratch` (see [`build_checks_with`]).
pub fn build_checks_parsed(
    parsed: &Parsed,
    config: &CheckConfig,
    build_args: &[String],
) -> Result<Vec<Finding>, Error> {
    build_checks_with_base_env(parsed, config, build_args, &|_| None)
}

/// [`build_checks_parsed`] with the environment of base images: `base_env(NAME)` gives the
/// variable names that image `NAME` (as written after FROM) sets, or `None` when unknown.
pub fn build_checks_with_base_env(
    parsed: &Parsed,
    config: &CheckConfig,
    build_args: &[String],
    base_env: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<Finding>, Error> {
    let build_args: Vec<(String, String)> = build_args
        .iter()
        .map(|name| (name.clone(), String::new()))
        .collect();
    let facts = BuildFacts {
        build_args: &build_args,
        base_env: Some(base_env),
        ..BuildFacts::default()
    };
    build_checks_with(parsed, config, &facts)
}

/// A lookup by name: an image's environment, a path's exclusion, an image's platform.
pub type Lookup<'a, T> = &'a dyn Fn(&str) -> Option<T>;

/// What a build knows besides the Dockerfile, for the checks that need it. A check whose fact
/// is `None` does not run.
#[derive(Default, Clone, Copy)]
pub struct BuildFacts<'a> {
    /// `--build-arg`s with their values: they count as declared for `UndefinedArgInFrom`, and
    /// FROM lines are expanded with them.
    pub build_args: &'a [(String, String)],
    /// The platform the build is for; the host's when `None`.
    pub platform: Option<&'a Platform>,
    /// `UndefinedVar`: the variable names that image NAME (as written after FROM) sets, or
    /// `None` when unknown (BuildKit reads the base image's config; on a stage whose root
    /// image's environment is unknown the check does not run, rather than flag `$PATH`).
    pub base_env: Option<Lookup<'a, Vec<String>>>,
    /// `InvalidDefaultArgInFrom`: whether a name is an image reference (docker's grammar).
    pub is_image_reference: Option<&'a dyn Fn(&str) -> bool>,
    /// `CopyIgnoredFile`: for a COPY or ADD source from the context, the cleaned path when the
    /// `.dockerignore` excludes it by BuildKit's rule.
    pub copy_ignored: Option<Lookup<'a, String>>,
    /// `InvalidBaseImagePlatform`: the platform of image NAME when NAME is a single image (not
    /// an index) that the build can read.
    pub base_platform: Option<Lookup<'a, Platform>>,
}

/// BuildKit's checks with what the build knows ([`BuildFacts`]). Findings are sorted by line,
/// then rule name.
pub fn build_checks_with(
    parsed: &Parsed,
    config: &CheckConfig,
    facts: &BuildFacts<'_>,
) -> Result<Vec<Finding>, Error> {
    let mut out = Out {
        config,
        findings: Vec::new(),
    };
    let first_from = parsed
        .nodes
        .iter()
        .position(|n| n.keyword_lower() == "from")
        .unwrap_or(parsed.nodes.len());

    for warning in &parsed.warnings {
        if warning.rule == "NoEmptyContinuation"
            && config.runs(warning.rule)
            && let Some(rule) = BUILDKIT_RULES.iter().find(|r| r.id == warning.rule)
        {
            out.findings.push(Finding {
                rule,
                location: Location {
                    line: warning.line,
                    column: 1,
                },
                message: "Empty continuation line".to_string(),
                related: Vec::new(),
            });
        }
    }

    // Meta ARGs (before the first FROM) declare what FROM may use.
    let mut declared: HashSet<String> = facts.build_args.iter().map(|(k, _)| k.clone()).collect();
    declared.extend(PLATFORM_ARGS.iter().map(|s| s.to_string()));
    for node in &parsed.nodes[..first_from] {
        if node.keyword_lower() == "maintainer" {
            out.push(
                "MaintainerDeprecated",
                node,
                node.span.start.line,
                "Maintainer instruction is deprecated in favor of using label".into(),
            );
        }
        if let Ok(inst) = parse_instruction(node)
            && let Instruction::Arg(defs) = &inst.value
        {
            declared.extend(defs.iter().map(|d| d.key.clone()));
        }
    }

    // ConsistentInstructionCasing: the instructions of the stages (not the meta ARGs).
    let stage_nodes = &parsed.nodes[first_from..];
    let (mut lower, mut upper) = (0usize, 0usize);
    for node in stage_nodes {
        let k = node.keyword.as_str();
        if is_lower(k) {
            lower += 1;
        } else if is_upper(k) {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for node in stage_nodes {
        let k = node.keyword.as_str();
        let casing = if majority_lower && !is_lower(k) {
            "lowercase"
        } else if !majority_lower && !is_upper(k) {
            "uppercase"
        } else {
            continue;
        };
        out.push(
            "ConsistentInstructionCasing",
            node,
            node.span.start.line,
            format!("Command '{k}' should match the case of the command majority ({casing})"),
        );
    }

    struct StageState {
        shell_set: bool,
        workdir_set: bool,
        /// Names in the stage's environment (base image, ENV, ARG with a value); `None` when
        /// the base image's is unknown.
        env: Option<BTreeSet<String>>,
        /// ARGs declared in the stage.
        args: HashSet<String>,
    }
    let mut stages: HashMap<String, usize> = HashMap::new();
    let mut states: Vec<StageState> = Vec::new();
    let mut seen_names: HashSet<String> = HashSet::new();
    // The last CMD/ENTRYPOINT/HEALTHCHECK of the stage, for MultipleInstructionsDisallowed.
    let mut used_once: HashMap<String, &Node> = HashMap::new();

    for node in stage_nodes {
        let line = node.span.start.line;
        let keyword = node.keyword.as_str();
        let lower_kw = node.keyword_lower();
        if lower_kw == "from" {
            check_from(node, &mut out, &declared, parsed.escape, &mut seen_names);
            let words = node.words();
            let base = words.first().map(|b| b.to_lowercase()).unwrap_or_default();
            let parent = stages.get(&base).and_then(|&i| states.get(i));
            // BuildKit gives every Linux stage a PATH, scratch included (its emptyImage).
            let with_path = |mut names: BTreeSet<String>| {
                names.insert("PATH".to_string());
                names
            };
            let env = match parent {
                Some(p) => p.env.clone(),
                None if base == "scratch" => Some(with_path(BTreeSet::new())),
                None if base.contains('$') => None,
                None => words
                    .first()
                    .and_then(|b| facts.base_env.and_then(|env| env(b)))
                    .map(|names| with_path(names.into_iter().collect())),
            };
            let state = StageState {
                shell_set: parent.is_some_and(|p| p.shell_set),
                workdir_set: parent.is_some_and(|p| p.workdir_set),
                env,
                args: HashSet::new(),
            };
            if words.len() == 3 {
                stages.insert(words[2].to_lowercase(), states.len());
            }
            states.push(state);
            used_once.clear();
            continue;
        }
        let Some(state) = states.last_mut() else {
            continue;
        };
        if lower_kw == "maintainer" {
            out.push(
                "MaintainerDeprecated",
                node,
                line,
                "Maintainer instruction is deprecated in favor of using label".into(),
            );
            continue;
        }
        // An instruction that does not parse is the build's error, not a check's.
        let Ok(inst) = parse_instruction(node) else {
            continue;
        };
        if let Some(env) = &state.env {
            let mut unmatched = BTreeSet::new();
            for word in expanded_words(&inst.value, node) {
                let defined = |name: &str| env.contains(name) || state.args.contains(name);
                unmatched_vars(&word, parsed.escape, &defined, &mut unmatched);
            }
            for var in unmatched {
                if NON_ENV_ARGS.contains(&var.as_str()) {
                    continue;
                }
                let hint = suggest(&var, env)
                    .map(|m| format!(" (did you mean ${m}?)"))
                    .unwrap_or_default();
                out.push(
                    "UndefinedVar",
                    node,
                    line,
                    format!("Usage of undefined variable '${var}'{hint}"),
                );
            }
        }
        match &inst.value {
            Instruction::Env(kvs) => {
                if let Some(env) = &mut state.env {
                    env.extend(kvs.iter().map(|kv| kv.key.clone()));
                }
            }
            Instruction::Arg(defs) => {
                for d in defs {
                    state.args.insert(d.key.clone());
                    if d.default.is_some()
                        && let Some(env) = &mut state.env
                    {
                        env.insert(d.key.clone());
                    }
                }
            }
            _ => {}
        }
        match &inst.value {
            Instruction::Cmd(_) | Instruction::Entrypoint(_) | Instruction::Healthcheck(_) => {
                if let Some(previous) = used_once.insert(lower_kw.clone(), node) {
                    // BuildKit points at the earlier one: it is the one that is ignored.
                    out.push(
                        "MultipleInstructionsDisallowed",
                        previous,
                        previous.span.start.line,
                        format!(
                            "Multiple {keyword} instructions should not be used in the same \
                             stage because only the last one will be used"
                        ),
                    );
                }
                let shell_form = match &inst.value {
                    Instruction::Cmd(c) | Instruction::Entrypoint(c) => !c.is_exec(),
                    _ => false,
                };
                if shell_form && !state.shell_set {
                    out.push(
                        "JSONArgsRecommended",
                        node,
                        line,
                        format!(
                            "JSON arguments recommended for {keyword} to prevent unintended \
                             behavior related to OS signals"
                        ),
                    );
                }
            }
            Instruction::Shell(_) => state.shell_set = true,
            Instruction::Env(kvs) => {
                for kv in kvs {
                    if kv.legacy {
                        out.push("LegacyKeyValueFormat", node, line, legacy(keyword));
                    }
                    check_secret("ENV", &kv.key, node, &mut out);
                }
            }
            Instruction::Label(kvs) => {
                for kv in kvs {
                    if kv.legacy {
                        out.push("LegacyKeyValueFormat", node, line, legacy(keyword));
                    }
                }
            }
            Instruction::Arg(defs) => {
                for d in defs {
                    check_secret("ARG", &d.key, node, &mut out);
                }
            }
            Instruction::Workdir(path) => {
                if !state.workdir_set && !path.starts_with('/') {
                    out.push(
                        "WorkdirRelativePath",
                        node,
                        line,
                        format!(
                            "Relative workdir {} can have unexpected results if the base image \
                             changes",
                            go_quote(path)
                        ),
                    );
                }
                state.workdir_set = true;
            }
            Instruction::Expose(ports) => {
                for port in ports {
                    check_expose(port, node, &mut out);
                }
            }
            // A COPY --from reads a stage or an image, which .dockerignore does not filter.
            Instruction::Copy(c) if c.from.is_none() => {
                check_copy_ignored("Copy", &c.sources, node, facts, &mut out)
            }
            Instruction::Add(a) => check_copy_ignored("Add", &a.sources, node, facts, &mut out),
            _ => {}
        }
    }
    check_default_args_in_from(parsed, facts, &mut out);
    check_base_image_platforms(parsed, facts, &mut out);
    check_definition_descriptions(parsed, &mut out);

    let mut findings = out.findings;
    findings.sort_by(|a, b| {
        (a.location, a.rule.id, &a.message).cmp(&(b.location, b.rule.id, &b.message))
    });
    findings.dedup();
    Ok(findings)
}

/// ARGs that BuildKit never puts in the environment, and never reports as undefined.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// The words BuildKit expands against the stage's environment (its `Expand` methods): ENV and
/// LABEL keys and values, ADD/COPY sources, destination, `--chown`, `--chmod`, `--checksum`,
/// WORKDIR, USER, VOLUME, STOPSIGNAL, RUN `--mount` options and ARG defaults.
fn expanded_words(inst: &Instruction, node: &Node) -> Vec<String> {
    let mut words = Vec::new();
    match inst {
        Instruction::Env(kvs) | Instruction::Label(kvs) => {
            for kv in kvs {
                words.push(kv.key.clone());
                words.push(kv.value.clone());
            }
        }
        Instruction::Copy(c) => {
            words.extend(c.sources.iter().cloned());
            words.push(c.dest.clone());
            words.extend(c.chown.iter().chain(&c.chmod).cloned());
        }
        Instruction::Add(a) => {
            words.extend(a.sources.iter().cloned());
            words.push(a.dest.clone());
            words.extend(a.chown.iter().chain(&a.chmod).chain(&a.checksum).cloned());
        }
        Instruction::Workdir(w) | Instruction::User(w) | Instruction::StopSignal(w) => {
            words.push(w.clone())
        }
        Instruction::Volume(v) => words.extend(v.iter().cloned()),
        Instruction::Arg(defs) => words.extend(defs.iter().filter_map(|d| d.default.clone())),
        Instruction::Run(_) => words.extend(
            node.flags
                .iter()
                .filter_map(|f| f.strip_prefix("--mount="))
                .map(str::to_string),
        ),
        _ => {}
    }
    words
}

/// The variables a word looks up and does not find, as BuildKit's lexer records them:
/// `$NAME` and `${NAME…}` outside single quotes and not escaped; the word of `${NAME:-word}`
/// only when NAME is unset, of `${NAME:+word}` only when it is set.
fn unmatched_vars(
    word: &str,
    escape: char,
    defined: &dyn Fn(&str) -> bool,
    out: &mut BTreeSet<String>,
) {
    let chars: Vec<char> = word.chars().collect();
    let mut i = 0;
    let mut in_single = false;
    let mut in_double = false;
    while i < chars.len() {
        let c = chars[i];
        if c == escape && !in_single {
            i += 2;
            continue;
        }
        match c {
            '\'' if !in_double => in_single = !in_single,
            '"' if !in_single => in_double = !in_double,
            '$' if !in_single => {
                if chars.get(i + 1) == Some(&'{') {
                    // Find the matching brace, counting nested `${`.
                    let mut depth = 1;
                    let mut j = i + 2;
                    while j < chars.len() && depth > 0 {
                        if chars[j] == '{' && j > 0 && chars[j - 1] == '$' {
                            depth += 1;
                        } else if chars[j] == '}' {
                            depth -= 1;
                        }
                        j += 1;
                    }
                    let inner: String = chars[i + 2..j.saturating_sub(1).max(i + 2)]
                        .iter()
                        .collect();
                    let name: String = inner
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let rest = &inner[name.len()..];
                    if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
                        let set = defined(&name);
                        if !set {
                            out.insert(name.clone());
                        }
                        let op = rest.trim_start_matches(':');
                        let nested = op.get(1..).unwrap_or("");
                        let evaluated = match op.chars().next() {
                            Some('-') | Some('?') => !set,
                            Some('+') => set,
                            Some(_) => true,
                            None => false,
                        };
                        if evaluated {
                            unmatched_vars(nested, escape, defined, out);
                        }
                    }
                    i = j;
                    continue;
                }
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                {
                    end += 1;
                }
                if end > start && !chars[start].is_ascii_digit() {
                    let name: String = chars[start..end].iter().collect();
                    if !defined(&name) {
                        out.insert(name);
                    }
                }
                i = end.max(start);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// BuildKit's suggestion: the closest name at a Levenshtein distance under 3 (case-sensitive).
fn suggest(var: &str, names: &BTreeSet<String>) -> Option<String> {
    let mut best: Option<(usize, &String)> = None;
    for name in names {
        if name == var {
            return None;
        }
        let d = levenshtein(var, name);
        if d < best.map_or(3, |(bd, _)| bd) {
            best = Some((d, name));
        }
    }
    best.map(|(_, n)| n.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

fn legacy(keyword: &str) -> String {
    format!(
        "\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"
    )
}

/// Go's `%q` for the plain strings these messages quote.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn check_from(
    node: &Node,
    out: &mut Out<'_>,
    declared: &HashSet<String>,
    escape: char,
    seen: &mut HashSet<String>,
) {
    let line = node.span.start.line;
    let words = node.words();
    if words.len() == 3 {
        let (as_word, name) = (&words[1], &words[2]);
        if !is_lower(name) {
            out.push(
                "StageNameCasing",
                node,
                line,
                format!("Stage name '{name}' should be lowercase"),
            );
        }
        let from = node.keyword.as_str();
        let matches = if is_lower(from) {
            is_lower(as_word)
        } else if is_upper(from) {
            is_upper(as_word)
        } else {
            // Mixed-case FROM is ConsistentInstructionCasing's business.
            true
        };
        if !matches {
            out.push(
                "FromAsCasing",
                node,
                line,
                format!("'{as_word}' and '{from}' keywords' casing do not match"),
            );
        }
        let name = name.to_lowercase();
        if name == "context" || name == "scratch" {
            out.push(
                "ReservedStageName",
                node,
                line,
                format!(
                    "Stage name should not use the same name as reserved stage {}",
                    go_quote(&name)
                ),
            );
        }
        if !seen.insert(name.clone()) {
            out.push(
                "DuplicateStageName",
                node,
                line,
                format!(
                    "Duplicate stage name {}, stage names should be unique",
                    go_quote(&name)
                ),
            );
        }
    }
    let mut words_to_check: Vec<String> = words.first().cloned().into_iter().collect();
    for flag in &node.flags {
        if let Some(p) = flag.strip_prefix("--platform=") {
            words_to_check.push(p.to_string());
            check_platform_flag(p, words.get(2).map(|n| n.to_lowercase()), node, escape, out);
        }
    }
    let mut reported = HashSet::new();
    for word in words_to_check {
        for var in referenced_vars(&word, escape) {
            if !declared.contains(&var) && reported.insert(var.clone()) {
                out.push(
                    "UndefinedArgInFrom",
                    node,
                    line,
                    format!("FROM argument '{var}' is not declared"),
                );
            }
        }
    }
}

/// `FROM --platform=…`: `$TARGETPLATFORM` alone is the default (RedundantTargetPlatform); a
/// constant platform is flagged unless the stage name mentions its OS or architecture
/// (FromPlatformFlagConstDisallowed).
fn check_platform_flag(
    value: &str,
    stage_name: Option<String>,
    node: &Node,
    escape: char,
    out: &mut Out<'_>,
) {
    let line = node.span.start.line;
    let vars = referenced_vars(value, escape);
    let whole_target_platform = matches!(value, "$TARGETPLATFORM" | "${TARGETPLATFORM}")
        || ["${TARGETPLATFORM:-", "${TARGETPLATFORM-"]
            .iter()
            .any(|p| value.starts_with(p) && value.ends_with('}') && vars.len() == 1);
    if whole_target_platform {
        out.push(
            "RedundantTargetPlatform",
            node,
            line,
            format!(
                "Setting platform to predefined {value} in FROM is redundant as this is the \
                 default behavior"
            ),
        );
    }
    if !vars.is_empty() || value.contains('$') {
        return;
    }
    // A value that is no platform fails the build later; the check stays quiet.
    let Some((os, arch)) = parse_platform(value) else {
        return;
    };
    let name = stage_name.unwrap_or_default();
    if name.contains(&os) || name.contains(&arch) {
        return;
    }
    out.push(
        "FromPlatformFlagConstDisallowed",
        node,
        line,
        format!(
            "FROM --platform flag should not use constant value {}",
            go_quote(value)
        ),
    );
}

/// containerd's `platforms.Parse`, as far as the OS and the normalized architecture: `os`,
/// `arch`, `os/arch[/variant]`; a lone word is an OS if it names one, else an architecture.
fn parse_platform(value: &str) -> Option<(String, String)> {
    const OSES: &[&str] = &[
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
        "zos",
    ];
    const ARCHES: &[&str] = &[
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "ppc64",
        "ppc64le",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ];
    let lower = value.to_lowercase();
    let valid = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let parts: Vec<&str> = lower.split('/').collect();
    if !parts.iter().all(|p| valid(p)) {
        return None;
    }
    let host_arch = normalize_arch(std::env::consts::ARCH);
    match parts.as_slice() {
        [one] if OSES.contains(one) => Some((one.to_string(), host_arch)),
        [one] => {
            let arch = normalize_arch(one);
            ARCHES
                .contains(&arch.as_str())
                .then(|| ("linux".to_string(), arch))
        }
        [os, arch] | [os, arch, _] => Some((os.to_string(), normalize_arch(arch))),
        _ => None,
    }
}

fn normalize_arch(arch: &str) -> String {
    match arch {
        "i386" => "386",
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" | "armel" => "arm",
        other => other,
    }
    .to_string()
}

/// `CopyIgnoredFile`: each local source (not a URL or a git repository) that the build
/// context's `.dockerignore` excludes. A source with a variable is left out: BuildKit judges
/// it expanded against the stage, which the checks do not follow.
fn check_copy_ignored(
    command: &str,
    sources: &[String],
    node: &Node,
    facts: &BuildFacts<'_>,
    out: &mut Out<'_>,
) {
    let Some(ignored) = facts.copy_ignored else {
        return;
    };
    for source in sources {
        let remote = source.contains("://") || source.starts_with("git@");
        if remote || source.contains('$') {
            continue;
        }
        if let Some(path) = ignored(source) {
            out.push(
                "CopyIgnoredFile",
                node,
                node.span.start.line,
                format!(
                    "Attempting to {command} file {} that is excluded by .dockerignore",
                    go_quote(&path)
                ),
            );
        }
    }
}

/// The stages with their FROM nodes, and the global scope to expand FROM lines with: the
/// platform ARGs (a `--build-arg` may set those) and the meta ARGs, with `build_args` when
/// given (BuildKit's `defaultArgs` and `buildMetaArgs`). `None` when an expansion fails: the
/// build reports that.
fn global_scope<'p>(
    parsed: &'p Parsed,
    facts: &BuildFacts<'_>,
    build_args: &[(String, String)],
) -> Option<(Vec<(kiln_dockerfile::Stage, &'p Node)>, Variables)> {
    let (meta_args, stages) = kiln_dockerfile::parse_stages(parsed).ok()?;
    let mut platforms = PlatformArgs::same(facts.platform.cloned().unwrap_or_else(Platform::host));
    platforms.build = Platform::host();
    let mut global = Variables::new(&platforms, build_args.iter().cloned());
    global.declare_meta_args(&meta_args, parsed.escape).ok()?;
    let froms = parsed.nodes.iter().filter(|n| n.keyword_lower() == "from");
    Some((stages.into_iter().zip(froms).collect(), global))
}

/// `InvalidDefaultArgInFrom`: with no `--build-arg` but the platform ones, every FROM name must
/// still be an image reference (BuildKit's `validateBaseImagesWithDefaultArgs`).
fn check_default_args_in_from(parsed: &Parsed, facts: &BuildFacts<'_>, out: &mut Out<'_>) {
    let Some(is_reference) = facts.is_image_reference else {
        return;
    };
    let platform_args: Vec<(String, String)> = facts
        .build_args
        .iter()
        .filter(|(k, _)| {
            PlatformArgs::same(Platform::host())
                .builtin_args()
                .iter()
                .any(|(name, _)| name == k)
        })
        .cloned()
        .collect();
    let Some((stages, defaults)) = global_scope(parsed, facts, &platform_args) else {
        return;
    };
    for (stage, node) in stages {
        let Ok(expanded) = defaults
            .clone()
            .expand_and_apply(&stage.from, parsed.escape)
        else {
            return;
        };
        let (Instruction::From(written), Instruction::From(from)) =
            (&stage.from.value, &expanded.value)
        else {
            continue;
        };
        if !is_reference(&from.base) {
            out.push(
                "InvalidDefaultArgInFrom",
                node,
                node.span.start.line,
                format!(
                    "Default value for ARG {} results in empty or invalid base image name",
                    written.base
                ),
            );
        }
    }
}

/// `InvalidBaseImagePlatform`: a base image whose OS or architecture is not the stage's
/// platform (its `--platform`, else the build's). BuildKit checks every stage when it only
/// checks (`--check`), as here.
fn check_base_image_platforms(parsed: &Parsed, facts: &BuildFacts<'_>, out: &mut Out<'_>) {
    let Some(base_platform) = facts.base_platform else {
        return;
    };
    let Some((stages, global)) = global_scope(parsed, facts, facts.build_args) else {
        return;
    };
    let target = facts.platform.cloned().unwrap_or_else(Platform::host);
    let mut stage_names = HashSet::new();
    for (stage, node) in stages {
        let Ok(expanded) = global.clone().expand_and_apply(&stage.from, parsed.escape) else {
            continue;
        };
        let Instruction::From(from) = &expanded.value else {
            continue;
        };
        let base = from.base.to_lowercase();
        let from_stage = stage_names.contains(&base) || base == "scratch";
        stage_names.extend(from.stage_name.clone());
        if from_stage {
            continue;
        }
        let expected = match from.platform.as_deref().filter(|p| !p.is_empty()) {
            Some(flag) => match platform_of(flag) {
                Some(p) => p,
                // Not a platform: the build fails on it.
                None => continue,
            },
            None => target.clone(),
        };
        let Some(actual) = base_platform(&from.base) else {
            continue;
        };
        let (expected_text, actual_text) = (normalized(&expected), normalized(&actual));
        let same = expected.os == actual.os
            && normalize_arch(&expected.architecture) == normalize_arch(&actual.architecture);
        if !same {
            out.push(
                "InvalidBaseImagePlatform",
                node,
                node.span.start.line,
                format!(
                    "Base image {} was pulled with platform {}, expected {} for current build",
                    from.base,
                    go_quote(&actual_text),
                    go_quote(&expected_text)
                ),
            );
        }
    }
}

/// `os/arch[/variant]` as a platform (containerd's `platforms.Parse`, as far as
/// [`parse_platform`] goes).
fn platform_of(value: &str) -> Option<Platform> {
    let (os, arch) = parse_platform(value)?;
    let variant = value.split('/').nth(2).unwrap_or_default().to_lowercase();
    Some(Platform::new(&os, &arch, &variant))
}

/// containerd's `FormatAll(Normalize(p))`: arm64's `v8` goes, a bare arm is `arm/v7`.
fn normalized(p: &Platform) -> String {
    let arch = normalize_arch(&p.architecture);
    let variant = match (arch.as_str(), p.variant.as_str()) {
        ("arm64", "8" | "v8") => String::new(),
        ("arm", "" | "7") => "v7".to_string(),
        ("arm", v @ ("5" | "6" | "8")) => format!("v{v}"),
        (_, v) => v.to_string(),
    };
    Platform::new(&p.os, &arch, &variant).format()
}

/// `InvalidDefinitionDescription` (experimental): the comment right above a named FROM or an
/// ARG must start with the stage's or an ARG's name (BuildKit's
/// `validateDefinitionDescription`, on the last comment's first space-separated word).
fn check_definition_descriptions(parsed: &Parsed, out: &mut Out<'_>) {
    for node in &parsed.nodes {
        let Some(last) = node.comments.last() else {
            continue;
        };
        let (instruction, keys) = match node.keyword_lower().as_str() {
            "from" => {
                let words = node.words();
                match words.get(2).filter(|_| words.len() == 3) {
                    Some(name) => ("FROM", vec![name.to_lowercase()]),
                    None => continue,
                }
            }
            "arg" => match parse_instruction(node).map(|i| i.value) {
                Ok(Instruction::Arg(defs)) => ("ARG", defs.into_iter().map(|d| d.key).collect()),
                _ => continue,
            },
            _ => continue,
        };
        let first = last.split(' ').next().unwrap_or_default();
        if keys.is_empty() || keys.iter().any(|k| k == first) {
            continue;
        }
        let example = if keys.len() > 1 {
            "<arg_key>"
        } else {
            &keys[0]
        };
        out.push(
            "InvalidDefinitionDescription",
            node,
            node.span.start.line,
            format!(
                "Comment for {instruction} should follow the format: `# {example} <description>`"
            ),
        );
    }
}

/// BuildKit's secret-name test: a token (whole name, or first or last `_` part, any case) from
/// its deny list, and none from its allow list.
fn check_secret(instruction: &str, key: &str, node: &Node, out: &mut Out<'_>) {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: &[&str] = &["public", "file", "version"];
    if has_token(key, DENY) && !has_token(key, ALLOW) {
        out.push(
            "SecretsUsedInArgOrEnv",
            node,
            node.span.start.line,
            format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
                go_quote(key)
            ),
        );
    }
}

/// True when a token appears bounded by `_` or the ends of `key` (case-insensitive): the
/// regexp `(?:_|^)(?:TOKENS)(?:_|$)`.
fn has_token(key: &str, tokens: &[&str]) -> bool {
    let lower = key.to_lowercase();
    let parts: Vec<&str> = lower.split('_').collect();
    // A token bounded by `_` or the ends is exactly one `_`-separated part.
    parts.iter().any(|p| tokens.contains(p))
}

/// EXPOSE `[ip:][hostport:]port[/proto]`: the protocol must be lower case, and neither an IP
/// nor a host port may be given.
fn check_expose(raw: &str, node: &Node, out: &mut Out<'_>) {
    let line = node.span.start.line;
    // An IPv6 address is written in brackets; its colons do not separate parts.
    let after_bracket = raw.rfind(']').map_or(0, |i| i + 1);
    let has_host_part = raw.starts_with('[') || raw[after_bracket..].contains(':');
    let container = raw[after_bracket..]
        .rsplit(':')
        .next()
        .unwrap_or(&raw[after_bracket..]);
    if let Some((_, proto)) = container.split_once('/')
        && !is_lower(proto)
    {
        out.push(
            "ExposeProtoCasing",
            node,
            line,
            format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
        );
    }
    if has_host_part {
        out.push(
            "ExposeInvalidFormat",
            node,
            line,
            format!(
                "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
            ),
        );
    }
}

#[cfg(test)]
#[path = "buildkit_tests.rs"]
mod tests;
