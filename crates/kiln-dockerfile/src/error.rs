//! Parse errors: what went wrong, where (line and column), the source line, and a hint.

use std::fmt;

/// A position in the Dockerfile: 1-based line and 1-based column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

/// The lines an instruction spans, from its first to its last line (heredoc bodies
/// included), and the column where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Where the instruction starts.
    pub start: Position,
    /// The last line of the instruction and the column just after its last character.
    pub end: Position,
}

impl Span {
    /// The first line (1-based).
    pub fn start_line(&self) -> usize {
        self.start.line
    }

    /// The last line (1-based).
    pub fn end_line(&self) -> usize {
        self.end.line
    }
}

/// A Dockerfile that cannot be parsed.
///
/// `Display` gives a one-line message with `line:column`; [`ParseError::render`] gives the
/// full diagnostic with the file name, the source line, a caret and the hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {}:{}: {message}", .position.line, .position.column)]
pub struct ParseError {
    /// What went wrong.
    pub message: String,
    /// Where: 1-based line and column.
    pub position: Position,
    /// The last line of the offending instruction (same as `position.line` for one line).
    pub end_line: usize,
    /// How many characters the caret underlines (at least 1).
    pub width: usize,
    /// The physical source line at `position.line` (without its newline).
    pub source_line: String,
    /// What to write instead.
    pub hint: Option<String>,
}

impl ParseError {
    /// Builds an error at `line:column` of `source`, underlining `width` characters.
    pub(crate) fn at(
        source: &str,
        line: usize,
        column: usize,
        width: usize,
        message: impl Into<String>,
    ) -> Self {
        let source_line = nth_line(source, line).to_string();
        ParseError {
            message: message.into(),
            position: Position {
                line,
                column: column.max(1),
            },
            end_line: line,
            width: width.max(1),
            source_line,
            hint: None,
        }
    }

    /// Adds a hint.
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the last line of the instruction the error belongs to.
    pub(crate) fn with_end_line(mut self, end_line: usize) -> Self {
        self.end_line = end_line.max(self.position.line);
        self
    }

    /// The diagnostic as a user sees it, e.g.
    ///
    /// ```text
    /// error: unknown instruction: COPPY
    ///  --> Dockerfile:3:1
    ///   |
    /// 3 | COPPY . /app
    ///   | ^^^^^
    ///   = hint: did you mean COPY?
    /// ```
    pub fn render(&self, file_name: &str) -> String {
        render_diagnostic(
            file_name,
            &self.message,
            self.position,
            self.width,
            &self.source_line,
            self.hint.as_deref(),
        )
    }
}

/// Formats a diagnostic in the house style (shared by parse, instruction and expansion errors).
pub(crate) fn render_diagnostic(
    file_name: &str,
    message: &str,
    position: Position,
    width: usize,
    source_line: &str,
    hint: Option<&str>,
) -> String {
    use fmt::Write as _;
    let mut out = String::new();
    let line_no = position.line.to_string();
    let pad = " ".repeat(line_no.len());
    let _ = writeln!(out, "error: {message}");
    let _ = writeln!(
        out,
        "{pad}--> {file_name}:{}:{}",
        position.line, position.column
    );
    let _ = writeln!(out, "{pad} |");
    let shown: String = source_line
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect();
    let _ = writeln!(out, "{line_no} | {shown}");
    let caret_pad = " ".repeat(position.column.saturating_sub(1));
    let _ = writeln!(out, "{pad} | {caret_pad}{}", "^".repeat(width.max(1)));
    if let Some(hint) = hint {
        let _ = writeln!(out, "{pad} = hint: {hint}");
    }
    out
}

/// An error found while building, at the instruction that starts on `line` of `source`, in the
/// house style of [`ParseError::render`]: the instruction's lines (those its trailing
/// backslashes join, at most eight) with the first one underlined.
///
/// ```text
/// error: RUN --mount=type=ssh is not supported by kiln
///  --> Dockerfile:3
///   |
/// 3 | RUN --mount=type=ssh \
///   | ^^^^^^^^^^^^^^^^^^^^^^
/// 4 |   true
/// ```
pub fn render_at_line(file_name: &str, source: &str, line: usize, message: &str) -> String {
    use fmt::Write as _;
    let mut lines = vec![nth_line(source, line)];
    while lines.len() < 8 && lines.last().is_some_and(|l| l.trim_end().ends_with('\\')) {
        lines.push(nth_line(source, line + lines.len()));
    }
    let last_no = (line + lines.len() - 1).to_string();
    let pad = " ".repeat(last_no.len());
    let mut out = String::new();
    let _ = writeln!(out, "error: {message}");
    let _ = writeln!(out, "{pad}--> {file_name}:{line}");
    let _ = writeln!(out, "{pad} |");
    for (i, text) in lines.iter().enumerate() {
        let shown: String = text
            .chars()
            .map(|c| if c == '\t' { ' ' } else { c })
            .collect();
        let no = format!("{:>width$}", line + i, width = pad.len());
        let _ = writeln!(out, "{no} | {shown}");
        if i == 0 {
            let indent = shown.len() - shown.trim_start().len();
            let width = shown.trim().chars().count().max(1);
            let _ = writeln!(out, "{pad} | {}{}", " ".repeat(indent), "^".repeat(width));
        }
    }
    out
}

/// The 1-based `line` of `source` without its line ending ("" past the end).
pub(crate) fn nth_line(source: &str, line: usize) -> &str {
    if line == 0 {
        return "";
    }
    source
        .split('\n')
        .nth(line - 1)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or("")
}

/// The closest candidate to `word` (case-insensitive edit distance, transpositions counting
/// as one edit, of at most 1 for short words and 2 or a third of the length otherwise), for
/// "did you mean" hints.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    let len = word.chars().count();
    let max = if len <= 3 { 1 } else { (len / 3).max(2) };
    candidates
        .iter()
        .map(|c| (levenshtein(&word, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions).
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j - 1] + cost)
                .min(d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instruction_is_shown_with_its_continuation_lines() {
        let source = "FROM busybox\nRUN echo a\nRUN --mount=type=ssh \\\n  true\nRUN echo c\n";
        assert_eq!(
            render_at_line("Dockerfile", source, 3, "not supported"),
            "error: not supported\n --> Dockerfile:3\n  |\n3 | RUN --mount=type=ssh \\\n  \
             | ^^^^^^^^^^^^^^^^^^^^^^\n4 |   true\n"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("COPPY", &["COPY", "CMD", "ADD"]), Some("COPY"));
        assert_eq!(suggest("xyzzy", &["COPY", "CMD"]), None);
        assert_eq!(suggest("from", &["FROM"]), Some("FROM"));
    }

    #[test]
    fn render_has_caret_and_hint() {
        let e = ParseError::at("FROM a\nCOPPY . /\n", 2, 1, 5, "unknown instruction: COPPY")
            .with_hint("did you mean COPY?");
        let r = e.render("Dockerfile");
        assert!(r.contains("--> Dockerfile:2:1"), "{r}");
        assert!(r.contains("2 | COPPY . /"), "{r}");
        assert!(r.contains("  | ^^^^^"), "{r}");
        assert!(r.contains("hint: did you mean COPY?"), "{r}");
    }
}
