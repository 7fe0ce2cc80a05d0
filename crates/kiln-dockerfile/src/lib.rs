//! Dockerfile parser, directives, heredocs and shell-word expansion, conformant with BuildKit.
//! No I/O: everything works on the text it is handed.
#![deny(missing_docs)]

mod ast;
mod directives;
mod error;
mod heredoc;
mod json;
mod line_parsers;
mod parser;
pub mod shell;
mod text;

pub use ast::{Arg, Heredoc, Node, Parsed, Warning, chomp_leading_tabs};
pub use directives::Directive;
pub use error::{ParseError, Position, Span};
pub use parser::MAX_LINE_LENGTH;

/// Parses Dockerfile text into its syntax tree.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    parser::parse(text)
}
