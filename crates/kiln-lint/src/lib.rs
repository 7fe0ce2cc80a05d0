//! Dockerfile lint rules that teach the seed tutorial's lessons where the Dockerfile is
//! written: clean up in the same `RUN` as the install, skip recommended packages and caches,
//! put stable steps first, use `LABEL`, exec-form `CMD` and `WORKDIR`, keep secrets out of
//! `ENV`/`ARG`.
//!
//! [`lint`] parses the text with `kiln-dockerfile` and returns [`Finding`]s, each with its
//! [`Rule`] (stable ID like `KL002`, name, [`Severity`], summary and the doc text of
//! `kiln lint --explain`), a [`Location`] (line and column) and, for rules that involve two
//! instructions, related locations. [`RULES`] lists every rule.
//!
//! `RUN` commands are read with [`shell::commands`]: split on `&&`, `||`, `;`, `|`, `&` and
//! newlines, `sh -c '…'` unwrapped, heredoc scripts included, `NAME=value`, `sudo` and `env`
//! peeled off; so `DEBIAN_FRONTEND=noninteractive apt-get -y -q install …` is an install, and
//! `rm -rf "/var/lib/apt/lists/"*` is a clean-up.
//!
//! Findings are silenced with a comment on the line above the instruction (or inside it):
//! `# kiln-ignore=KL003` or `# kiln-ignore=KL003,consecutive-run`; and for the whole file with
//! `# kiln-ignore-file=KL006`.
//!
//! Size rules (KL001, KL002, KL003, KL005, KL006, KL014, KL015) look only at the stages that end up
//! in the final image: the last stage and the stages it is built `FROM`, not builder stages
//! that are only copied from.
//!
//! ```
//! let text = "FROM debian:bookworm\n\
//!             RUN apt-get update && \\\n    apt-get install -y python3\n\
//!             RUN rm -rf /var/lib/apt/lists/*\n\
//!             CMD [\"bash\"]\n";
//! let findings = kiln_lint::lint(text)?;
//! let late = findings.iter().find(|f| f.rule.id == "KL002").expect("late clean-up");
//! assert_eq!(late.location.line, 4);            // the clean-up
//! assert_eq!(late.related[0].location.line, 3); // the install whose layer keeps the lists
//! # Ok::<(), kiln_lint::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod buildkit;
mod check;
mod rules;
pub mod shell;

pub use buildkit::{BUILDKIT_RULES, CheckConfig, build_checks};
pub use rules::{RULES, Rule, Severity, rule};

/// A line and column in the Dockerfile (both 1-based; the column counts characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Another place a finding refers to (the install of a late clean-up, the first of
/// consecutive RUNs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    /// Where.
    pub location: Location,
    /// What is there.
    pub message: String,
}

/// One rule violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: &'static Rule,
    /// Where the finding points.
    pub location: Location,
    /// Why, in one line, with the specifics of this case.
    pub message: String,
    /// Other lines that the finding involves.
    pub related: Vec<Related>,
}

/// A Dockerfile that cannot be linted because it cannot be parsed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not a Dockerfile.
    #[error(transparent)]
    Parse(#[from] kiln_dockerfile::ParseError),
    /// An instruction is not valid.
    #[error("line {}:{}: {}", .0.position.line, .0.position.column, .0.message)]
    Instruction(#[from] kiln_dockerfile::InstructionError),
    /// A `# check=` directive or `BUILDKIT_DOCKERFILE_CHECK` value that is not valid.
    #[error("check option {value:?}: {message}")]
    CheckOption {
        /// The whole value as given.
        value: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Lints Dockerfile text. Findings are sorted by line, then column, then rule ID; those
/// silenced by `# kiln-ignore=` comments are left out.
pub fn lint(text: &str) -> Result<Vec<Finding>, Error> {
    let parsed = kiln_dockerfile::parse(text)?;
    check::run(text, &parsed)
}

#[cfg(test)]
mod tests;
