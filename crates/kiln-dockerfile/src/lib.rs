//! Dockerfile parser, directives, heredocs and shell-word expansion, conformant with BuildKit.
//! No I/O: everything works on the text it is handed.
#![deny(missing_docs)]

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
pub use error::{ParseError, Position, Span};
pub use instructions::{
    AddInstruction, ArgDefinition, CommandLine, CopyInstruction, FromInstruction,
    HealthcheckConfig, HealthcheckInstruction, InlineSource, Instruction, InstructionError,
    InstructionExpandError, KeyValue, Mount, MountType, OnbuildInstruction, RunInstruction,
    Spanned, parse_instruction,
};
pub use parser::MAX_LINE_LENGTH;
pub use stages::{MetaArg, Stage, parse_stages};
pub use variables::{Platform, PlatformArgs, Variables};

/// Parses Dockerfile text into its syntax tree.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    parser::parse(text)
}
