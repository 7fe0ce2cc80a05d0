//! Typed instructions: every AST [`Node`] becomes an [`Instruction`] with its flags parsed,
//! following BuildKit's `instructions.Parse`.
//!
//! Values stay as written (unexpanded); [`Instruction::expand`] substitutes variables the
//! way BuildKit does for each instruction kind, once the builder knows the variables.

mod expand;
mod flags;
mod mount;
mod ports;
mod values;

use std::time::Duration;

pub use expand::InstructionExpandError;
pub use mount::{CacheSharing, MOUNT_KEYS, Mount, MountType};
pub use ports::exposed_ports;

use crate::ast::{Heredoc, Node, chomp_leading_tabs};
use crate::error::{Position, Span, render_diagnostic, suggest};
use crate::heredoc::parse_heredoc;
use crate::text::{to_lower, to_upper, trim_space};
use flags::{FlagError, Flags};

/// A command in shell form (run through the image's shell) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum CommandLine {
    /// `RUN echo hi`: one string for `SHELL` (default `/bin/sh -c`).
    Shell(String),
    /// `RUN ["echo", "hi"]`: the argv as written.
    Exec(Vec<String>),
}

impl CommandLine {
    fn from_node(node: &Node, args: &[String]) -> Self {
        if node.json {
            CommandLine::Exec(args.to_vec())
        } else {
            CommandLine::Shell(args.join(" "))
        }
    }

    /// True for the exec (JSON) form.
    pub fn is_exec(&self) -> bool {
        matches!(self, CommandLine::Exec(_))
    }

    /// True when there is no command at all (`CMD []`, or `CMD` with nothing after it).
    pub fn is_empty(&self) -> bool {
        match self {
            CommandLine::Shell(s) => s.is_empty(),
            CommandLine::Exec(v) => v.is_empty(),
        }
    }

    /// The argv to run: exec form as is; shell form appended to `shell`
    /// (e.g. `["/bin/sh", "-c"]`).
    pub fn to_argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut argv = shell.to_vec();
                argv.push(s.clone());
                argv
            }
        }
    }
}

/// A `key=value` of `ENV` or `LABEL`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyValue {
    /// The key (quotes still in place until expanded).
    pub key: String,
    /// The value (quotes still in place until expanded).
    pub value: String,
    /// Written in the legacy `ENV key value` form (BuildKit lints it).
    pub legacy: bool,
}

/// One name of an `ARG`, with its default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgDefinition {
    /// The name.
    pub key: String,
    /// The default after `=`, if any (unexpanded). After
    /// [`crate::Variables::expand_and_apply`]: the value the ARG took, final text.
    pub default: Option<String>,
}

/// A file created from a heredoc by `COPY`/`ADD` (`COPY <<EOF /dest`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InlineSource {
    /// The heredoc name, used as the file name.
    pub name: String,
    /// The content (tabs already removed for `<<-`).
    pub data: String,
    /// Whether variables in `data` are to be expanded (unquoted delimiter).
    pub expand: bool,
}

/// `FROM [--platform=…] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FromInstruction {
    /// The base image or stage name, unexpanded (expanded against the meta ARGs).
    pub base: String,
    /// The stage name after `AS`, lower-cased.
    pub stage_name: Option<String>,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunInstruction {
    /// The command.
    pub command: CommandLine,
    /// Heredocs of the line, raw (RUN heredocs are expanded by the shell at run time).
    pub heredocs: Vec<Heredoc>,
    /// `--mount` specifications, parsed (values literal until [`Instruction::expand`]).
    pub mounts: Vec<Mount>,
    /// The raw `--mount` values, re-parsed by [`Instruction::expand`].
    pub mount_specs: Vec<String>,
    /// `--network`: `default`, `none` or `host`.
    pub network: Option<String>,
    /// `--security`: `sandbox` or `insecure`.
    pub security: Option<String>,
    /// `--device` values, as written.
    pub devices: Vec<String>,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyInstruction {
    /// Source paths (heredoc sources are in `inline_sources`).
    pub sources: Vec<String>,
    /// Files created from heredocs.
    pub inline_sources: Vec<InlineSource>,
    /// The destination.
    pub dest: String,
    /// `--from`: stage name, index, or image.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AddInstruction {
    /// Source paths or URLs (heredoc sources are in `inline_sources`).
    pub sources: Vec<String>,
    /// Files created from heredocs.
    pub inline_sources: Vec<InlineSource>,
    /// The destination.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`, if given.
    pub keep_git_dir: Option<bool>,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--unpack`, if given.
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum HealthcheckInstruction {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    Disable,
    /// `HEALTHCHECK [--options] CMD …`.
    Check(HealthcheckConfig),
}

/// The options and command of `HEALTHCHECK CMD`. Zero durations and retries mean "not set"
/// (inherit the default), as in the image config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthcheckConfig {
    /// The command.
    pub command: CommandLine,
    /// `--interval`.
    pub interval: Duration,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--start-period`.
    pub start_period: Duration,
    /// `--start-interval`.
    pub start_interval: Duration,
    /// `--retries`.
    pub retries: u32,
}

impl HealthcheckInstruction {
    /// The image config's `Healthcheck.Test`: `["NONE"]`, `["CMD", argv…]` or
    /// `["CMD-SHELL", command]`.
    pub fn test(&self) -> Vec<String> {
        match self {
            HealthcheckInstruction::Disable => vec!["NONE".into()],
            HealthcheckInstruction::Check(c) => match &c.command {
                CommandLine::Exec(argv) => std::iter::once("CMD".to_string())
                    .chain(argv.iter().cloned())
                    .collect(),
                CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            },
        }
    }
}

/// One Dockerfile instruction, typed. Values are as written until [`Instruction::expand`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Instruction {
    /// `FROM`.
    From(FromInstruction),
    /// `RUN`.
    Run(RunInstruction),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `COPY`.
    Copy(CopyInstruction),
    /// `ADD`.
    Add(AddInstruction),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `ARG`.
    Arg(Vec<ArgDefinition>),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `MAINTAINER` (deprecated; sets the `author` field).
    Maintainer(String),
    /// `WORKDIR`.
    Workdir(String),
    /// `USER`.
    User(String),
    /// `EXPOSE`: the port words, sorted as BuildKit sorts them.
    Expose(Vec<String>),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `SHELL` (exec form only).
    Shell(Vec<String>),
    /// `HEALTHCHECK`.
    Healthcheck(HealthcheckInstruction),
    /// `ONBUILD`: the trigger's source text, stored in the image config's `OnBuild`.
    Onbuild(OnbuildInstruction),
}

/// `ONBUILD <instruction>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OnbuildInstruction {
    /// The trigger as it goes into the image config (`RUN echo hi`, heredocs appended).
    pub expression: String,
}

impl OnbuildInstruction {
    /// Parses the trigger (as a child build will when it runs it).
    pub fn parse_trigger(&self) -> Result<Spanned<Instruction>, ParseOrInstructionError> {
        let parsed = crate::parse(&self.expression).map_err(ParseOrInstructionError::Parse)?;
        let node = parsed.nodes.first().ok_or_else(|| {
            ParseOrInstructionError::Parse(crate::ParseError::at(
                &self.expression,
                1,
                1,
                1,
                "empty ONBUILD trigger",
            ))
        })?;
        parse_instruction(node).map_err(ParseOrInstructionError::Instruction)
    }
}

/// Either error of parsing text into a typed instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseOrInstructionError {
    /// The text does not parse.
    #[error(transparent)]
    Parse(crate::ParseError),
    /// The instruction is not valid.
    #[error(transparent)]
    Instruction(InstructionError),
}

/// A value with the source location and text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it is in the Dockerfile.
    pub span: Span,
    /// The logical source line (continuations joined), e.g. `RUN apt-get update && …`;
    /// what docker shows as a history entry's `created_by`.
    pub original: String,
    /// The keyword as written (`RUN`, `run`, ...).
    pub keyword: String,
}

/// An instruction that is not valid: message, location and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {}:{}: {message}", .position.line, .position.column)]
pub struct InstructionError {
    /// What is wrong.
    pub message: String,
    /// Where (the instruction start, or the offending flag or word when known).
    pub position: Position,
    /// Characters to underline.
    pub width: usize,
    /// The instruction's span.
    pub span: Span,
    /// What to write instead.
    pub hint: Option<String>,
}

impl InstructionError {
    pub(crate) fn new(node_span: Span, message: impl Into<String>) -> Self {
        InstructionError {
            message: message.into(),
            position: node_span.start,
            width: 1,
            span: node_span,
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Points the caret at the first occurrence of `needle` in the instruction's text.
    pub(crate) fn at_text_in(mut self, node: &Node, needle: &str) -> Self {
        if needle.is_empty() {
            return self;
        }
        for (i, text) in node.source.split('\n').enumerate() {
            if let Some(pos) = text.find(needle) {
                self.position = Position {
                    line: node.span.start.line + i,
                    column: text[..pos].chars().count() + 1,
                };
                self.width = needle.chars().count();
                return self;
            }
        }
        self
    }

    /// The full diagnostic: file:line:column, the source line, a caret and the hint.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let line = crate::error::nth_line(source, self.position.line);
        let mut err = self.clone();
        if err.position.line == self.span.start.line
            && err.width == 1
            && err.position == self.span.start
        {
            // Underline the keyword.
            err.width = line
                .chars()
                .skip(err.position.column.saturating_sub(1))
                .take_while(|c| !c.is_whitespace())
                .count()
                .max(1);
        }
        render_diagnostic(
            file_name,
            &err.message,
            err.position,
            err.width,
            line,
            err.hint.as_deref(),
        )
    }
}

/// Every instruction name, for "did you mean" hints.
pub const INSTRUCTION_NAMES: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Converts one AST node to its typed instruction.
pub fn parse_instruction(node: &Node) -> Result<Spanned<Instruction>, InstructionError> {
    let cx = Cx { node };
    let value = cx.parse()?;
    Ok(Spanned {
        value,
        span: node.span,
        original: node.original.clone(),
        keyword: node.keyword.clone(),
    })
}

struct Cx<'a> {
    node: &'a Node,
}

impl Cx<'_> {
    fn err(&self, message: impl Into<String>) -> InstructionError {
        InstructionError::new(self.node.span, message)
    }

    fn keyword_upper(&self) -> String {
        to_upper(&self.node.keyword)
    }

    fn flags(&self, flags: Flags) -> Result<Flags, InstructionError> {
        flags
            .parse(&self.node.flags, &self.keyword_upper())
            .map_err(|e: FlagError| {
                let flag_name = e.flag.split('=').next().unwrap_or_default();
                let mut err = self.err(e.message).at_text_in(self.node, flag_name);
                err.hint = e.hint;
                err
            })
    }

    fn parse(&self) -> Result<Instruction, InstructionError> {
        let args = self.node.words();
        let keyword = self.keyword_upper();
        let lower = self.node.instruction().unwrap_or("");
        match lower {
            "env" | "label" => {
                self.flags(Flags::new())?;
                let pairs = self.key_values(&args, &keyword)?;
                Ok(if lower == "env" {
                    Instruction::Env(pairs)
                } else {
                    Instruction::Label(pairs)
                })
            }
            "maintainer" => {
                if args.len() != 1 {
                    return Err(
                        self.exactly_one("MAINTAINER", "MAINTAINER Jane Doe <jane@example.com>")
                    );
                }
                self.flags(Flags::new())?;
                Ok(Instruction::Maintainer(args[0].clone()))
            }
            "add" => self.parse_add(&args),
            "copy" => self.parse_copy(&args),
            "from" => self.parse_from(&args),
            "onbuild" => self.parse_onbuild(&args),
            "workdir" => {
                if args.len() != 1 {
                    return Err(self.exactly_one("WORKDIR", "WORKDIR /app"));
                }
                self.flags(Flags::new())?;
                Ok(Instruction::Workdir(args[0].clone()))
            }
            "run" => self.parse_run(&args),
            "cmd" => {
                self.flags(Flags::new())?;
                Ok(Instruction::Cmd(CommandLine::from_node(self.node, &args)))
            }
            "entrypoint" => {
                self.flags(Flags::new())?;
                Ok(Instruction::Entrypoint(CommandLine::from_node(
                    self.node, &args,
                )))
            }
            "healthcheck" => self.parse_healthcheck(&args),
            "expose" => {
                if args.is_empty() {
                    return Err(self.at_least_one("EXPOSE", "EXPOSE 80/tcp"));
                }
                self.flags(Flags::new())?;
                let mut ports = args.clone();
                ports.sort();
                Ok(Instruction::Expose(ports))
            }
            "user" => {
                if args.len() != 1 {
                    return Err(self.exactly_one("USER", "USER app:app"));
                }
                self.flags(Flags::new())?;
                Ok(Instruction::User(args[0].clone()))
            }
            "volume" => {
                if args.is_empty() {
                    return Err(self.at_least_one("VOLUME", "VOLUME /data"));
                }
                self.flags(Flags::new())?;
                let mut volumes = Vec::with_capacity(args.len());
                for v in &args {
                    let v = trim_space(v);
                    if v.is_empty() {
                        return Err(self
                            .err("VOLUME specified can not be an empty string")
                            .hint("remove the empty entry from the list"));
                    }
                    volumes.push(v.to_string());
                }
                Ok(Instruction::Volume(volumes))
            }
            "stopsignal" => {
                if args.len() != 1 {
                    return Err(self.exactly_one("STOPSIGNAL", "STOPSIGNAL SIGTERM"));
                }
                Ok(Instruction::StopSignal(args[0].clone()))
            }
            "arg" => self.parse_arg(&args),
            "shell" => {
                self.flags(Flags::new())?;
                if args.is_empty() {
                    return Err(self.at_least_one("SHELL", "SHELL [\"/bin/bash\", \"-c\"]"));
                }
                if !self.node.json {
                    return Err(self
                        .err(format!(
                            "SHELL requires the arguments to be in JSON form: {}",
                            self.node.original
                        ))
                        .hint(format!(
                            "write SHELL [{}]",
                            args.join(" ")
                                .split_whitespace()
                                .map(|w| format!("\"{w}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                }
                Ok(Instruction::Shell(args))
            }
            _ => {
                let mut e = self.err(format!("unknown instruction: {}", self.node.keyword));
                e.width = self.node.keyword.chars().count().max(1);
                Err(match suggest(&self.node.keyword, &INSTRUCTION_NAMES) {
                    Some(s) => e.hint(format!("did you mean {s}?")),
                    None => e.hint(format!("instructions are {}", INSTRUCTION_NAMES.join(", "))),
                })
            }
        }
    }

    fn exactly_one(&self, kw: &str, example: &str) -> InstructionError {
        self.err(format!("{kw} requires exactly one argument"))
            .hint(format!(
                "write e.g. `{example}`; quote a value that contains spaces"
            ))
    }

    fn at_least_one(&self, kw: &str, example: &str) -> InstructionError {
        self.err(format!("{kw} requires at least one argument"))
            .hint(format!("write e.g. `{example}`"))
    }

    fn key_values(
        &self,
        args: &[String],
        keyword: &str,
    ) -> Result<Vec<KeyValue>, InstructionError> {
        if args.is_empty() {
            return Err(self.at_least_one(keyword, &format!("{keyword} key=value")));
        }
        if !args.len().is_multiple_of(3) {
            return Err(self
                .err(format!("Bad input to {keyword}, too many arguments"))
                .hint(format!("write `{keyword} key=value …`")));
        }
        let mut out = Vec::with_capacity(args.len() / 3);
        for chunk in args.chunks(3) {
            if chunk[0].is_empty() {
                return Err(self
                    .err(format!("{keyword} names can not be blank"))
                    .hint(format!("write `{keyword} name=value`")));
            }
            out.push(KeyValue {
                key: chunk[0].clone(),
                value: chunk[1].clone(),
                legacy: chunk[2].is_empty(),
            });
        }
        Ok(out)
    }

    /// Splits sources/destination and turns heredoc sources into inline files.
    fn sources_and_dest(
        &self,
        args: &[String],
        keyword: &str,
    ) -> Result<(Vec<String>, Vec<InlineSource>, String), InstructionError> {
        let (dest, srcs) = match args.split_last() {
            Some((d, s)) => (d.clone(), s),
            None => return Err(self.no_destination(keyword)),
        };
        if matches!(parse_heredoc(&dest), Ok(Some(_))) {
            return Err(self
                .err(format!(
                    "{keyword} cannot accept a heredoc as a destination"
                ))
                .hint(format!(
                    "write the destination path last: `{keyword} <<EOF /path/file`"
                )));
        }
        let mut sources = Vec::new();
        let mut inline = Vec::new();
        for src in srcs {
            match parse_heredoc(src) {
                Ok(Some(h)) => {
                    let content = self
                        .node
                        .heredocs
                        .iter()
                        .find(|d| d.name == h.name)
                        .map(|d| d.content.clone())
                        .unwrap_or_default();
                    let data = if h.chomp {
                        chomp_leading_tabs(&content)
                    } else {
                        content
                    };
                    inline.push(InlineSource {
                        name: h.name,
                        data,
                        expand: h.expand,
                    });
                }
                _ => sources.push(src.clone()),
            }
        }
        Ok((sources, inline, dest))
    }

    fn no_destination(&self, keyword: &str) -> InstructionError {
        self.err(format!(
            "{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"
        ))
        .hint(format!("write `{keyword} <source>... <destination>`, e.g. `{keyword} . /app/`"))
    }

    fn parse_add(&self, args: &[String]) -> Result<Instruction, InstructionError> {
        if args.len() < 2 {
            return Err(self.no_destination("ADD"));
        }
        let f = self.flags(
            Flags::new()
                .string("chown")
                .string("chmod")
                .bool("link")
                .bool("keep-git-dir")
                .string("checksum")
                .bool("unpack")
                .strings("exclude"),
        )?;
        let (sources, inline_sources, dest) = self.sources_and_dest(args, "ADD")?;
        Ok(Instruction::Add(AddInstruction {
            sources,
            inline_sources,
            dest,
            chown: f.get("chown").filter(|s| !s.is_empty()),
            chmod: f.get("chmod").filter(|s| !s.is_empty()),
            link: f.get_bool("link").unwrap_or(false),
            keep_git_dir: f.get_bool("keep-git-dir"),
            checksum: f.get("checksum").filter(|s| !s.is_empty()),
            unpack: f.get_bool("unpack"),
            exclude: f.get_all("exclude"),
        }))
    }

    fn parse_copy(&self, args: &[String]) -> Result<Instruction, InstructionError> {
        if args.len() < 2 {
            return Err(self.no_destination("COPY"));
        }
        let f = self.flags(
            Flags::new()
                .string("chown")
                .string("from")
                .string("chmod")
                .bool("link")
                .strings("exclude")
                .bool("parents"),
        )?;
        let (sources, inline_sources, dest) = self.sources_and_dest(args, "COPY")?;
        Ok(Instruction::Copy(CopyInstruction {
            sources,
            inline_sources,
            dest,
            from: f.get("from").filter(|s| !s.is_empty()),
            chown: f.get("chown").filter(|s| !s.is_empty()),
            chmod: f.get("chmod").filter(|s| !s.is_empty()),
            link: f.get_bool("link").unwrap_or(false),
            parents: f.get_bool("parents").unwrap_or(false),
            exclude: f.get_all("exclude"),
        }))
    }

    fn parse_from(&self, args: &[String]) -> Result<Instruction, InstructionError> {
        let stage_name = match args {
            [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                let lower = to_lower(name);
                if !is_valid_stage_name(&lower) {
                    return Err(self
                        .err(format!(
                            "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                        ))
                        .hint("use a name of lower-case letters, digits, '-', '_' and '.', starting with a letter")
                        .at_text_in(self.node, name));
                }
                Some(lower)
            }
            [_] => None,
            _ => {
                return Err(self
                    .err("FROM requires either one or three arguments")
                    .hint("write `FROM <image>` or `FROM <image> AS <name>`"));
            }
        };
        let f = self.flags(Flags::new().string("platform"))?;
        Ok(Instruction::From(FromInstruction {
            base: args[0].clone(),
            stage_name,
            platform: f.get("platform").filter(|s| !s.is_empty()),
        }))
    }

    fn parse_onbuild(&self, args: &[String]) -> Result<Instruction, InstructionError> {
        if args.is_empty() {
            return Err(self.at_least_one("ONBUILD", "ONBUILD RUN make"));
        }
        self.flags(Flags::new())?;
        let trigger = to_upper(trim_space(&args[0]));
        match trigger.as_str() {
            "ONBUILD" => {
                return Err(self
                    .err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
                    .hint("write the trigger instruction directly after one ONBUILD"));
            }
            "MAINTAINER" | "FROM" => {
                return Err(self
                    .err(format!("{trigger} isn't allowed as an ONBUILD trigger"))
                    .hint(
                        "ONBUILD accepts RUN, COPY, ADD, ENV, and the other build instructions",
                    ));
            }
            _ => {}
        }
        let mut expression = strip_onbuild_prefix(&self.node.original).to_string();
        for h in &self.node.heredocs {
            expression.push('\n');
            expression.push_str(&h.content);
            expression.push_str(&h.name);
        }
        Ok(Instruction::Onbuild(OnbuildInstruction { expression }))
    }

    fn parse_run(&self, args: &[String]) -> Result<Instruction, InstructionError> {
        let f = self.flags(
            Flags::new()
                .strings("mount")
                .string("network")
                .string("security")
                .strings("device"),
        )?;
        let mount_specs = f.get_all("mount");
        let mut mounts = Vec::with_capacity(mount_specs.len());
        for spec in &mount_specs {
            let to_err = |e: mount::MountError| {
                let mut err = self.err(e.message).at_text_in(self.node, spec);
                err.hint = Some(e.hint.unwrap_or_else(|| mount::SYNTAX_HINT.to_string()));
                err
            };
            mount::check_unexpanded(spec).map_err(to_err)?;
            // Values may still hold variables; a literal parse that fails because of a
            // variable is retried after expansion, so only keep it when it succeeds.
            match mount::parse_mount(spec, &mut |v| Ok(v.to_string())) {
                Ok(m) => mounts.push(m),
                Err(e) if !spec.contains('$') => return Err(to_err(e)),
                Err(_) => {}
            }
        }
        let network = f.get("network");
        if let Some(n) = &network
            && !matches!(n.as_str(), "default" | "none" | "host")
        {
            return Err(self
                .err(format!("invalid network mode {n:?}"))
                .hint("use --network=default, --network=none or --network=host"));
        }
        let security = f.get("security");
        if let Some(s) = &security
            && !matches!(s.as_str(), "sandbox" | "insecure")
        {
            return Err(self
                .err(format!("security {s:?} is not valid"))
                .hint("use --security=sandbox or --security=insecure"));
        }
        Ok(Instruction::Run(RunInstruction {
            command: CommandLine::from_node(self.node, args),
            heredocs: self.node.heredocs.clone(),
            mounts,
            mount_specs,
            network,
            security,
            devices: f.get_all("device"),
        }))
    }

    fn parse_healthcheck(&self, args: &[String]) -> Result<Instruction, InstructionError> {
        let Some(first) = args.first() else {
            return Err(
                self.at_least_one("HEALTHCHECK", "HEALTHCHECK CMD curl -f http://localhost/")
            );
        };
        let typ = to_upper(first);
        let rest = &args[1..];
        if typ == "NONE" {
            if !rest.is_empty() {
                return Err(self
                    .err("HEALTHCHECK NONE takes no arguments")
                    .hint("write just `HEALTHCHECK NONE`"));
            }
            return Ok(Instruction::Healthcheck(HealthcheckInstruction::Disable));
        }
        let f = self.flags(
            Flags::new()
                .string("interval")
                .string("timeout")
                .string("start-period")
                .string("start-interval")
                .string("retries"),
        )?;
        if typ != "CMD" {
            return Err(self
                .err(format!("Unknown type \"{typ}\" in HEALTHCHECK (try CMD)"))
                .hint("write `HEALTHCHECK [options] CMD <command>` or `HEALTHCHECK NONE`")
                .at_text_in(self.node, first));
        }
        let command = CommandLine::from_node(self.node, rest);
        if command.is_empty() {
            return Err(self
                .err("Missing command after HEALTHCHECK CMD")
                .hint("write e.g. `HEALTHCHECK CMD curl -f http://localhost/`"));
        }
        let duration = |name: &'static str| -> Result<Duration, InstructionError> {
            let v = f.get(name).unwrap_or_default();
            values::parse_interval(name, &v)
                .map(|d| d.unwrap_or(Duration::ZERO))
                .map_err(|m| {
                    self.err(m)
                        .hint(format!(
                            "write e.g. --{name}=30s (units: ns, us, ms, s, m, h)"
                        ))
                        .at_text_in(self.node, &format!("--{name}"))
                })
        };
        let interval = duration("interval")?;
        let timeout = duration("timeout")?;
        let start_period = duration("start-period")?;
        let start_interval = duration("start-interval")?;
        let retries = match f.get("retries").filter(|s| !s.is_empty()) {
            None => 0,
            Some(v) => {
                let n: i64 = parse_go_int32(&v).ok_or_else(|| {
                    self.err(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))
                        .hint("write --retries=<number>")
                        .at_text_in(self.node, "--retries")
                })?;
                if n < 0 {
                    return Err(self
                        .err(format!("--retries cannot be negative ({n})"))
                        .hint("write --retries=0 or more"));
                }
                n as u32
            }
        };
        Ok(Instruction::Healthcheck(HealthcheckInstruction::Check(
            HealthcheckConfig {
                command,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            },
        )))
    }

    fn parse_arg(&self, args: &[String]) -> Result<Instruction, InstructionError> {
        if args.is_empty() {
            return Err(self.at_least_one("ARG", "ARG VERSION=1.0"));
        }
        let mut defs = Vec::with_capacity(args.len());
        for arg in args {
            let def = match arg.split_once('=') {
                Some((k, v)) => {
                    if k.is_empty() {
                        return Err(self
                            .err("ARG names can not be blank")
                            .hint("write `ARG name=value`"));
                    }
                    ArgDefinition {
                        key: k.to_string(),
                        default: Some(v.to_string()),
                    }
                }
                None => ArgDefinition {
                    key: arg.clone(),
                    default: None,
                },
            };
            defs.push(def);
        }
        Ok(Instruction::Arg(defs))
    }
}

/// Go's `strconv.ParseInt(s, 10, 32)`.
fn parse_go_int32(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    (i64::from(i32::MIN)..=i64::from(i32::MAX))
        .contains(&n)
        .then_some(n)
}

/// BuildKit's `^[a-z][a-z0-9-_.]*$` for stage names.
pub fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// `(?i)^\s*ONBUILD\s*` removed from the original line.
fn strip_onbuild_prefix(original: &str) -> &str {
    let is_re_space = |c: char| matches!(c, '\t' | '\n' | '\u{0c}' | '\r' | ' ');
    let s = original.trim_start_matches(is_re_space);
    if s.len() >= 7 && s.is_char_boundary(7) && s[..7].eq_ignore_ascii_case("onbuild") {
        return s[7..].trim_start_matches(is_re_space);
    }
    original
}
