//! The syntax tree of a Dockerfile, with BuildKit's S-expression dump.
//!
//! The tree mirrors BuildKit's `parser.Node`: one [`Node`] per instruction holding the
//! keyword as written, the `--flags`, the arguments as the per-instruction line parser split
//! them, and for `ONBUILD` the nested instruction. [`Parsed::dump`] prints it byte-for-byte
//! like BuildKit's `Node.Dump`, the format of the conformance `result` files.

use crate::directives::Directive;
use crate::error::Span;
use crate::text::{quote_into, quote_list, to_lower, trim_space};

/// One element of an instruction's argument list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A plain argument.
    Word(String),
    /// The instruction nested in `ONBUILD`.
    Instruction(Box<Node>),
}

/// A heredoc attached to `RUN`, `COPY` or `ADD` (`<<EOF … EOF`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (`EOF` for `<<'EOF'`); for `COPY`/`ADD` also the
    /// name of the file it creates.
    pub name: String,
    /// The file descriptor prefix (`3<<EOF` → 3; 0 when absent).
    pub fd: u64,
    /// False when the delimiter was quoted: the body is then not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are removed from each body line (see [`Heredoc::chomped`]).
    pub chomp: bool,
    /// The body, raw, every line with its newline, without the delimiter line.
    pub content: String,
}

impl Heredoc {
    /// The body with leading tabs removed from every line when `chomp` is set.
    pub fn chomped(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        chomp_leading_tabs(&self.content)
    }
}

/// Removes leading tabs from every line (BuildKit's `ChompHeredocContent`).
pub fn chomp_leading_tabs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

/// One instruction of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword exactly as written (`RUN`, `run`, `Copy`, or anything for an
    /// unknown instruction).
    pub keyword: String,
    /// The `--flag[=value]` words before the arguments, quotes removed.
    pub flags: Vec<String>,
    /// The arguments as the instruction's line parser split them (see the crate docs).
    pub args: Vec<Arg>,
    /// True when the arguments were written in exec (JSON array) form.
    pub json: bool,
    /// Heredocs, in the order of their `<<` on the line.
    pub heredocs: Vec<Heredoc>,
    /// The logical line after joining continuations (what BuildKit calls `Original`).
    pub original: String,
    /// The instruction's physical lines as written (first to last line of `span`).
    pub source: String,
    /// Comment lines directly above the instruction (without `#`).
    pub comments: Vec<String>,
    /// Where the instruction is: first line and column to its last line (heredocs included).
    pub span: Span,
}

impl Node {
    /// The keyword in lower case, e.g. `"run"`.
    pub fn keyword_lower(&self) -> String {
        to_lower(&self.keyword)
    }

    /// The instruction this node is (`"run"`, `"copy"`, ...), or `None` for an unknown keyword.
    pub fn instruction(&self) -> Option<&'static str> {
        crate::text::instruction_name(&self.keyword)
    }

    /// The plain arguments (for `ONBUILD`, the nested keyword and its arguments, flattened the
    /// way BuildKit's `nodeArgs` does).
    pub fn words(&self) -> Vec<String> {
        let mut out = Vec::new();
        for arg in &self.args {
            match arg {
                Arg::Word(w) => out.push(w.clone()),
                Arg::Instruction(sub) => {
                    out.push(sub.keyword.clone());
                    out.extend(sub.words());
                }
            }
        }
        out
    }

    /// The nested instruction of `ONBUILD`.
    pub fn sub_instruction(&self) -> Option<&Node> {
        self.args.iter().find_map(|a| match a {
            Arg::Instruction(n) => Some(n.as_ref()),
            Arg::Word(_) => None,
        })
    }

    /// BuildKit's S-expression dump of this instruction, without the surrounding parentheses.
    pub fn dump(&self) -> String {
        let mut s = to_lower(&self.keyword);
        if !self.flags.is_empty() {
            s.push(' ');
            s.push_str(&quote_list(&self.flags));
        }
        for arg in &self.args {
            s.push(' ');
            match arg {
                Arg::Word(w) => quote_into(&mut s, w),
                Arg::Instruction(sub) => {
                    let inner = format!("({})\n", sub.dump());
                    s.push_str(trim_space(&inner));
                }
            }
        }
        trim_space(&s).to_string()
    }
}

/// A non-fatal finding, kept as data (BuildKit's `parser.Warning`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Stable rule name, e.g. `NoEmptyContinuation`.
    pub rule: &'static str,
    /// One-line description.
    pub message: String,
    /// Documentation page of the rule.
    pub url: &'static str,
    /// 1-based line the warning is about.
    pub line: usize,
}

/// The result of [`crate::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The instructions in order.
    pub nodes: Vec<Node>,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// The parser directives found at the top.
    pub directives: Vec<Directive>,
    /// Warnings, e.g. empty continuation lines.
    pub warnings: Vec<Warning>,
    /// First and last line covered by instructions.
    pub span: Span,
}

impl Parsed {
    /// BuildKit's AST dump: one `(instruction …)` line per instruction, newline-terminated
    /// (byte-for-byte the conformance `result` format).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for node in &self.nodes {
            s.push('(');
            s.push_str(&node.dump());
            s.push_str(")\n");
        }
        let mut out = trim_space(&s).to_string();
        out.push('\n');
        out
    }

    /// The value of a directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}
