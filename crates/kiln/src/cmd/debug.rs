//! `kiln debug`: the parser's and the shell lexer's view of the input.
//!
//! This surface is stable: tests and users drive it to see exactly how kiln reads a
//! Dockerfile. `parse` prints BuildKit's AST dump byte-for-byte; `expand` and `words` run
//! BuildKit's shell-word lexer on one word.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kiln_dockerfile::shell::{EnvList, Lexer};

/// Arguments of `kiln debug`.
#[derive(Debug, Args)]
#[command(
    about = "Show how kiln reads Dockerfiles and shell words (stable, for tests and users)",
    after_help = "This is a stable, documented surface: its output formats do not change between \
releases. `parse` prints BuildKit's AST dump of a Dockerfile, byte-for-byte the format of \
BuildKit's parser `result` test files. `expand` and `words` run the shell-word lexer that \
Dockerfile instructions such as ENV, COPY and WORKDIR use to substitute variables. \
`instructions` shows the typed instructions a build uses.\n\n\
Exit status: 0 on success; 1 when the input is rejected (the error goes to stderr with the \
file, line and column, the source line with a caret, and a hint); 2 on a usage error.\n\n\
Examples:\n  \
kiln debug parse Dockerfile\n  \
kiln debug parse --check Dockerfile\n  \
kiln debug expand --env NAME=kiln 'hello-${NAME:-world}'     # hello-kiln\n  \
kiln debug words --env 'SPACE=a  b' 'x${SPACE}y'             # xa,by\n  \
kiln debug instructions Dockerfile"
)]
pub struct DebugArgs {
    #[command(subcommand)]
    command: DebugCommand,
}

#[derive(Debug, Subcommand)]
enum DebugCommand {
    /// Print the AST dump of a Dockerfile, one S-expression per instruction.
    #[command(
        long_about = "Print the AST dump of a Dockerfile: one S-expression per instruction, in\n\
the exact format of BuildKit's parser test `result` files, e.g.\n\n  \
(from \"ubuntu\")\n  \
(run \"apt-get update && apt-get install -y python3\")\n  \
(copy [\"--chown=app\"] \"src\" \"/app/\")\n  \
(onbuild (run \"echo\" \"hi\"))\n\n\
The keyword is lower-cased, flags are shown as a quoted list, and every argument is a\n\
Go-quoted string. The parser reads exactly what BuildKit's parser reads: directives,\n\
continuation lines, comments inside continuations, heredocs and the JSON exec form.\n\
An unknown instruction is rejected (exit 1, with a \"did you mean\") as `docker build`\n\
rejects it; --allow-unknown prints it the way BuildKit's parser alone would.\n\n\
A file the parser rejects (no instructions, `ENV key` without a value, a JSON array with\n\
non-string elements, an unterminated heredoc, a duplicate or invalid directive) exits 1\n\
with the error on stderr.",
        after_help = "Examples:\n  \
kiln debug parse Dockerfile\n  \
kiln debug parse - < Dockerfile\n  \
kiln debug parse --check Dockerfile    # also reject unknown instructions and bad flags"
    )]
    Parse {
        /// The Dockerfile to read; `-` reads standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also convert every instruction to its typed form and group stages, rejecting what
        /// `docker build` rejects at that stage (unknown instructions, unknown flags, ...).
        #[arg(long)]
        check: bool,
        /// Print parser warnings (e.g. empty continuation lines) to stderr.
        #[arg(long)]
        warnings: bool,
        /// Accept unknown instructions, as BuildKit's parser alone does (they dump as
        /// `(keyword "")`); by default they are rejected with a "did you mean", as
        /// `docker build` rejects them.
        #[arg(long, conflicts_with = "check")]
        allow_unknown: bool,
    },
    /// Expand one shell word ($VAR, ${VAR:-default}, quotes, escapes) and print the result.
    #[command(
        long_about = "Expand one shell word the way Dockerfile instructions do and print the\n\
result followed by a newline. Quotes are removed, escapes resolved, and $NAME, ${NAME},\n\
${NAME:-default}, ${NAME-default}, ${NAME:+alt}, ${NAME+alt}, ${NAME:?message},\n\
${NAME?message}, ${NAME#pattern}, ${NAME##pattern}, ${NAME%pattern}, ${NAME%%pattern},\n\
${NAME/pattern/replacement} and ${NAME//pattern/replacement} substituted. Variables not\n\
given with --env are unset. An expansion error (unterminated quote, missing `}`, bad\n\
substitution, ${NAME:?...} on an unset variable) exits 1 with the error on stderr.",
        after_help = "Examples:\n  \
kiln debug expand --env PWD=/home 'he$PWD'             # he/home\n  \
kiln debug expand 'he${XXX:-000}xx'                    # he000xx\n  \
kiln debug expand --env V=a/b/c '${V##*/}'             # c\n  \
kiln debug expand --escape '`' 'a`$b'                  # a$b\n  \
kiln debug expand \"'single \\$quoted'\"                 # single \\$quoted"
    )]
    Expand(WordArgs),
    /// Expand one shell word and print the resulting words joined by `,`.
    #[command(
        long_about = "Expand one shell word and split the result into words the way BuildKit\n\
does, then print the words joined by `,` followed by a newline. Unquoted whitespace\n\
(also whitespace coming from an unquoted variable) separates words; quoted text stays\n\
in one word. Exits 1 on an expansion error.",
        after_help = "Examples:\n  \
kiln debug words 'hello there'                         # hello,there\n  \
kiln debug words --env 'space=abc  def' 'hello${space}bye'   # helloabc,defbye\n  \
kiln debug words --env 'space=abc  def' 'hello\"${space}\"bye' # helloabc  defbye"
    )]
    Words(WordArgs),
    /// Print every instruction in its typed form (flags parsed, stages grouped).
    #[command(
        long_about = "Parse a Dockerfile, convert every instruction to its typed form (flags,\n\
mounts, heredocs, exec or shell form) and print the meta ARGs and the stages, one\n\
instruction per line, in a human-readable debug format. This format is for people and may\n\
change; use `parse` for a stable format.",
        after_help = "Example:\n  kiln debug instructions Dockerfile"
    )]
    Instructions {
        /// The Dockerfile to read; `-` reads standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the build plan: the stages a build runs, their bases, dependencies and steps.
    #[command(
        long_about = "Plan a build without running it and print the plan: the stages the target\n\
needs (others are skipped, as BuildKit skips them), each with its base, the stages it\n\
waits for, and its steps with their variables expanded, the base image's ONBUILD triggers\n\
first. Stages that do not wait for each other build concurrently. Every error a build\n\
would meet in the Dockerfile (an unknown stage or target, a missing context file, a flag\n\
kiln does not implement) is reported here. Base images come from the local store; none is\n\
pulled.",
        after_help = "Examples:\n  \
kiln debug plan examples/python-base\n  \
kiln debug plan --target builder --format json .\n  \
kiln debug plan --format dot . | dot -Tsvg > plan.svg"
    )]
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The build context directory, or `-` to read the Dockerfile from stdin.
    #[arg(value_name = "CONTEXT")]
    context: String,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Plan up to this stage.
    #[arg(long)]
    target: Option<String>,
    /// Set a build-time variable (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    format: PlanFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PlanFormat {
    /// One block per stage.
    Text,
    /// The plan as JSON.
    Json,
    /// A Graphviz graph of the stages.
    Dot,
}

#[derive(Debug, Args)]
struct WordArgs {
    /// Set a variable, `KEY=VALUE` (`KEY` alone sets it to the empty string). Repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The escape character: `\` (default) or a backtick, as set by `# escape=`.
    #[arg(long, default_value = "\\", value_name = "CHAR", value_parser = parse_escape)]
    escape: char,
    /// The word to expand (quote it for your shell). Use `--` before a word starting with `-`.
    #[arg(value_name = "WORD", allow_hyphen_values = true)]
    word: String,
}

fn parse_escape(s: &str) -> Result<char, String> {
    match s {
        "\\" | "`" => Ok(s.chars().next().unwrap_or('\\')),
        _ => Err(format!("the escape character must be \\ or ` (got {s:?})")),
    }
}

/// Runs `kiln debug`; `root` is the store that `plan` reads base images from.
pub fn run(args: DebugArgs, root: &std::path::Path) -> anyhow::Result<ExitCode> {
    match args.command {
        DebugCommand::Parse {
            file,
            check,
            warnings,
            allow_unknown,
        } => parse(&file, check, warnings, allow_unknown),
        DebugCommand::Expand(w) => expand(&w, false),
        DebugCommand::Words(w) => expand(&w, true),
        DebugCommand::Instructions { file } => instructions(&file),
        DebugCommand::Plan(plan_args) => plan(&plan_args, root),
    }
}

fn plan(args: &PlanArgs, root: &std::path::Path) -> anyhow::Result<ExitCode> {
    let store = kiln_image::Store::open(root)
        .with_context(|| format!("open the store at {}", root.display()))?;
    let _lock = store.lock_shared()?;
    let input = super::input::read_input(
        &store,
        &args.context,
        args.file.as_deref(),
        &super::registry::RegistryFlags::default(),
    )?;
    let build_args = args
        .build_args
        .iter()
        .map(|a| super::build::key_value("--build-arg", a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = kiln_build::BuildRequest {
        dockerfile: input.dockerfile.clone(),
        dockerfile_name: input.dockerfile_name.clone(),
        context: input.context.clone(),
        contexts: kiln_build::named::NamedContexts::default(),
        tags: Vec::new(),
        build_args,
        target: args.target.clone(),
        no_cache: false,
        no_cache_filter: Vec::new(),
        jobs: 1,
        platform: None,
        sync: false,
        labels: Vec::new(),
        secrets: Vec::new(),
        ssh: Vec::new(),
        interrupt: kiln_sandbox::Interrupt::new(),
        network: kiln_sandbox::Network::default(),
        allow_network_host: false,
        allow_security_insecure: false,
        limits: kiln_sandbox::Limits::default(),
        run_options: kiln_build::RunOptions::default(),
        annotations: Vec::new(),
        registry: None,
        isolation: Default::default(),
    };
    let reporter = super::build::StepPrinter::new(super::Progress::Plain);
    let plan = kiln_build::plan_only(&store, &request, &reporter)?;
    let text = match args.format {
        PlanFormat::Text => plan.to_text(),
        PlanFormat::Json => format!("{}\n", serde_json::to_string_pretty(&plan)?),
        PlanFormat::Dot => plan.to_dot(),
    };
    io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a Dockerfile (or stdin for `-`).
fn read_dockerfile(file: &PathBuf) -> anyhow::Result<(String, String)> {
    let mut bytes = Vec::new();
    let name = if file.as_os_str() == "-" {
        io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the Dockerfile from standard input")?;
        "<stdin>".to_string()
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        file.display().to_string()
    };
    // Invalid UTF-8 bytes are kept (as BuildKit keeps them) and dumped as `\xNN`.
    Ok((name, kiln_dockerfile::decode_lossless(&bytes)))
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn write_stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

fn parse(
    file: &PathBuf,
    check: bool,
    show_warnings: bool,
    allow_unknown: bool,
) -> anyhow::Result<ExitCode> {
    let (name, text) = read_dockerfile(file)?;
    let parsed = match kiln_dockerfile::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            write_stderr(&e.render(&name));
            return Ok(ExitCode::FAILURE);
        }
    };
    if show_warnings {
        for w in &parsed.warnings {
            write_stderr(&format!(
                "warning: {name}:{}: {} ({})\n",
                w.line, w.message, w.url
            ));
        }
    }
    if check {
        if let Err(e) = kiln_dockerfile::parse_stages(&parsed) {
            write_stderr(&e.render(&name, &text));
            return Ok(ExitCode::FAILURE);
        }
    } else if !allow_unknown {
        for node in parsed.nodes.iter().filter(|n| n.instruction().is_none()) {
            if let Err(e) = kiln_dockerfile::parse_instruction(node) {
                write_stderr(&e.render(&name, &text));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    write_stdout(&parsed.dump())?;
    Ok(ExitCode::SUCCESS)
}

fn expand(args: &WordArgs, split: bool) -> anyhow::Result<ExitCode> {
    let env = EnvList::from_env_strings(&args.env);
    let lexer = Lexer::new(args.escape);
    let result = if split {
        lexer.expand_words(&args.word, &env).map(|w| w.join(","))
    } else {
        lexer.expand_word(&args.word, &env)
    };
    match result {
        Ok(text) => {
            write_stdout(&format!("{text}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            write_stderr(&e.render("<word>"));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn instructions(file: &PathBuf) -> anyhow::Result<ExitCode> {
    let (name, text) = read_dockerfile(file)?;
    let parsed = match kiln_dockerfile::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            write_stderr(&e.render(&name));
            return Ok(ExitCode::FAILURE);
        }
    };
    let (meta_args, stages) = match kiln_dockerfile::parse_stages(&parsed) {
        Ok(s) => s,
        Err(e) => {
            write_stderr(&e.render(&name, &text));
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = String::new();
    for arg in &meta_args {
        let d = &arg.definition;
        match &d.default {
            Some(v) => out.push_str(&format!(
                "{}:{} meta ARG {}={v:?}\n",
                arg.span.start.line, arg.span.start.column, d.key
            )),
            None => out.push_str(&format!(
                "{}:{} meta ARG {}\n",
                arg.span.start.line, arg.span.start.column, d.key
            )),
        }
    }
    for (i, stage) in stages.iter().enumerate() {
        out.push_str(&format!(
            "stage {i} name={:?} base={:?} platform={:?} lines {}-{}\n",
            stage.name, stage.base, stage.platform, stage.span.start.line, stage.span.end.line
        ));
        for inst in &stage.instructions {
            out.push_str(&format!(
                "  {}:{} {:?}\n",
                inst.span.start.line, inst.span.start.column, inst.value
            ));
        }
    }
    write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        debug: DebugArgs,
    }

    fn parse(args: &[&str]) -> DebugCommand {
        let mut argv = vec!["kiln-debug"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .debug
            .command
    }

    #[test]
    fn word_commands_take_env_escape_and_hyphen_words() {
        let DebugCommand::Expand(w) =
            parse(&["expand", "--env", "A=1", "-e", "B", "--escape", "`", "-x$A"])
        else {
            panic!()
        };
        assert_eq!(w.env, ["A=1", "B"]);
        assert_eq!(w.escape, '`');
        assert_eq!(w.word, "-x$A");
        let DebugCommand::Words(w) = parse(&["words", "--", "--"]) else {
            panic!()
        };
        assert_eq!(w.word, "--");
        let err = Cli::try_parse_from(["kiln-debug", "expand", "--escape", "x", "w"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{err}");
        assert!(
            err.to_string()
                .contains("the escape character must be \\ or ` (got \"x\")"),
            "{err}"
        );
    }

    #[test]
    fn parse_takes_a_file_and_options() {
        let DebugCommand::Parse {
            file,
            check,
            warnings,
            allow_unknown,
        } = parse(&["parse", "--check", "Dockerfile"])
        else {
            panic!()
        };
        assert_eq!(file, PathBuf::from("Dockerfile"));
        assert!(check && !warnings && !allow_unknown);
        let err = Cli::try_parse_from(["kiln-debug", "parse", "--check", "--allow-unknown", "f"])
            .unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{err}"
        );
    }
}
