//! Dockerfile front end of kiln: parser, parser directives, heredocs, typed instructions,
//! build stages and shell-word expansion, conformant with BuildKit. No I/O: everything works
//! on the text it is handed, so it can be fuzzed and tested on text alone.
//!
//! # The pipeline
//!
//! 1. [`parse`]: text → [`Parsed`]: one [`Node`] per instruction (keyword, `--flags`,
//!    arguments, heredocs, [`Span`]), the escape character, the [`Directive`]s and
//!    [`Warning`]s. [`Parsed::dump`] prints BuildKit's AST dump (the `result` format of its
//!    parser tests). Errors are [`ParseError`]s with line, column, source line and hint
//!    ([`ParseError::render`]).
//! 2. [`parse_stages`]: nodes → [`Instruction`]s (flags parsed, mounts, heredoc sources,
//!    healthcheck durations, shell vs exec [`CommandLine`]) grouped into the meta ARGs and
//!    [`Stage`]s. Errors are [`InstructionError`]s (unknown instruction → "did you mean").
//! 3. [`Variables`]: ARG/ENV scoping while a builder walks a stage; [`Instruction::expand`]
//!    (or [`Variables::expand_and_apply`]) substitutes variables exactly where BuildKit does.
//!    The lexer itself is in [`shell`].
//!
//! ```
//! use kiln_dockerfile::{parse, parse_stages, CommandLine, Instruction, Platform, PlatformArgs, Variables};
//!
//! let text = "ARG PY=3.12\nFROM python:${PY}-slim AS base\n\
//!             ENV APP=/app\nWORKDIR $APP\nRUN pip install \\\n    flask\nCMD [\"python3\"]\n";
//! let parsed = parse(text)?;
//! assert_eq!(parsed.dump().lines().next(), Some(r#"(arg "PY=3.12")"#));
//!
//! let (meta_args, stages) = parse_stages(&parsed)?;
//! let mut global = Variables::new(&PlatformArgs::same(Platform::new("linux", "amd64", "")), [("PY", "3.13")]);
//! global.declare_meta_args(&meta_args, parsed.escape)?;
//!
//! let stage = &stages[0];
//! let from = global.expand_and_apply(&stage.from, parsed.escape)?;
//! assert!(matches!(&from.value, Instruction::From(f) if f.base == "python:3.13-slim"));
//!
//! let mut vars = global.for_stage();
//! vars.set_base_env(["PATH=/usr/local/bin:/usr/bin"]); // from the base image config
//! let steps: Vec<_> = stage
//!     .instructions
//!     .iter()
//!     .map(|i| vars.expand_and_apply(i, parsed.escape))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(steps[1].value, Instruction::Workdir("/app".into()));
//! assert!(matches!(&steps[2].value, Instruction::Run(r) if r.command == CommandLine::Shell("pip install     flask".into())));
//! assert_eq!((steps[2].span.start.line, steps[2].span.end.line), (5, 6));
//! assert_eq!(steps[2].original, "RUN pip install     flask");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Conformance, fuzzing, benchmark
//!
//! - `cargo test -p kiln-dockerfile` runs BuildKit's parser and lexer suites from
//!   `../shared/conformance/buildkit` (set `KILN_CONFORMANCE_DIR` to use another copy). A
//!   clone without that directory skips them with a notice naming the path, unless `CI=true`:
//!   there, and for a missing file, the test fails.
//! - `fuzz/README.md` (repository root) runs the `parse` and `shell_word` fuzz targets.
//! - `bench/parse.sh` (or `cargo bench -p kiln-dockerfile --bench parse`) prints MB/s for the
//!   seed Dockerfile and generated 10k/20k/40k-instruction files.
//!
//! Text that is not valid UTF-8 (BuildKit reads bytes) can be brought in with
//! [`decode_lossless`]: each invalid byte becomes a private-use character that the dump prints
//! as `\xNN`, exactly as BuildKit's dump prints the byte; [`encode_lossless`] gives the bytes
//! back (for heredoc bodies written to files).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod ast;
mod directives;
mod error;
mod heredoc;
pub mod instructions;
mod json;
mod line_parsers;
mod parser;
pub mod shell;
mod stages;
mod text;
mod variables;

pub use ast::{Arg, Heredoc, Node, Parsed, Warning, chomp_leading_tabs};
pub use directives::Directive;
pub use error::{ParseError, Position, Span, render_at_line, suggest};
pub use instructions::{
    AddInstruction, ArgDefinition, CacheSharing, CommandLine, CopyInstruction, FromInstruction,
    HealthcheckConfig, HealthcheckInstruction, InlineSource, Instruction, InstructionError,
    InstructionExpandError, KeyValue, MOUNT_KEYS, Mount, MountType, OnbuildInstruction,
    RunInstruction, Spanned, exposed_ports, parse_instruction,
};
pub use parser::MAX_LINE_LENGTH;
pub use stages::{MetaArg, Stage, parse_stages};
pub use text::{decode_lossless, encode_lossless};
pub use variables::{Platform, PlatformArgs, Variables};

/// Parses Dockerfile text into its syntax tree, exactly as BuildKit's parser does: parser
/// directives at the top, continuation lines, comments and blank lines inside them, heredoc
/// bodies, the exec (JSON) form with its fall-back to the shell form. Unknown instructions are
/// kept (they are rejected by [`parse_stages`]). The text may start with a byte-order mark.
///
/// Errors: no instruction at all, `ENV`/`LABEL` key without value, an exec-form array with a
/// non-string element, an unterminated heredoc, a repeated or invalid directive, a line
/// longer than [`MAX_LINE_LENGTH`] bytes.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    parser::parse(text)
}
