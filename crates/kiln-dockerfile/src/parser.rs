//! The line reader: physical lines → logical instructions (BuildKit's `parser.Parse`).
//!
//! It strips a byte-order mark, reads parser directives at the top, joins continuation lines
//! (the escape character at the end of a line, blanks after it allowed), drops comment lines
//! and blank lines inside a continuation (warning about the blank ones), reads heredoc
//! bodies, and records for every instruction the lines it spans.

use crate::ast::{Node, Parsed, Warning};
use crate::directives::{DirectiveError, DirectiveParser};
use crate::error::{ParseError, Position, Span};
use crate::heredoc::heredocs_from_line;
use crate::line_parsers::{LineError, node_from_line};
use crate::text::{is_space, trim_left_space};

/// Longest physical line BuildKit's scanner accepts (bytes, without the newline).
pub const MAX_LINE_LENGTH: usize = 65_535;

const KEYWORDS_WITH_HEREDOCS: [&str; 3] = ["add", "copy", "run"];

/// Physical lines with their line endings, like BuildKit's `scanLines`.
struct Lines<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(line)
    }
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_left_space(line).starts_with('#')
}

/// Removes a trailing escape character (and blanks after it) that continues the line.
/// Returns the line and whether the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    // An escaped escape character (`\\` at the end) does not continue the line.
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

struct Reader<'a> {
    source: &'a str,
    lines: Lines<'a>,
    /// Lines consumed so far (the 1-based number of the last line read).
    current_line: usize,
    directives: DirectiveParser,
    escape: char,
}

impl<'a> Reader<'a> {
    /// Byte offset of the next unread line.
    fn offset(&self) -> usize {
        self.source.len() - self.lines.rest.len()
    }

    /// The next physical line, checked for BuildKit's maximum length.
    fn next_line(&mut self) -> Result<Option<&'a str>, ParseError> {
        let Some(mut line) = self.lines.next() else {
            return Ok(None);
        };
        if self.current_line == 0 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.strip_suffix('\n').unwrap_or(line).len() > MAX_LINE_LENGTH {
            let n = self.current_line + 1;
            return Err(ParseError::at(
                self.source,
                n,
                MAX_LINE_LENGTH + 1,
                1,
                format!("dockerfile line greater than max allowed size of {MAX_LINE_LENGTH}"),
            )
            .with_hint("split the line with the escape character at the end of each part"));
        }
        Ok(Some(line))
    }

    /// BuildKit's `processLine`: newline trimmed, optionally left-trimmed, checked for a
    /// directive, and emptied if it is a comment.
    fn process_line(
        &mut self,
        raw: &'a str,
        strip_left: bool,
    ) -> Result<(&'a str, bool), ParseError> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = trim_left_space(token);
        }
        let line_no = self.current_line + 1;
        let directive = match self.directives.parse_line(token) {
            Ok(d) => d.cloned(),
            Err(e) => return Err(self.directive_error(e, line_no, token)),
        };
        let is_directive = directive.is_some();
        if let Some(d) = directive
            && d.name == "escape"
        {
            // Validated by the directive parser: `\` or a backtick.
            self.escape = d.value.chars().next().unwrap_or('\\');
        }
        if is_comment(token) {
            token = "";
        }
        Ok((token, is_directive))
    }

    fn directive_error(&self, e: DirectiveError, line: usize, token: &str) -> ParseError {
        let col = column_of(
            self.source,
            line,
            token.find('=').map_or(0, |i| i + 1) + leading_len(self.source, line, token),
        );
        match e {
            DirectiveError::Duplicate(name) => ParseError::at(
                self.source,
                line,
                1,
                token.chars().count(),
                format!("only one {name} parser directive can be used"),
            )
            .with_hint(format!("remove this second `# {name}=` line")),
            DirectiveError::InvalidEscape(v) => ParseError::at(
                self.source,
                line,
                col,
                v.chars().count(),
                format!("invalid escape token '{v}' does not match ` or \\"),
            )
            .with_hint("write `# escape=\\` or `# escape=`` (a backtick)"),
        }
    }
}

/// Byte length of the leading part of physical line `line` that `token` no longer has.
fn leading_len(source: &str, line: usize, token: &str) -> usize {
    let raw = crate::error::nth_line(source, line);
    raw.len().saturating_sub(token.len().min(raw.len()))
}

/// 1-based character column of byte offset `byte` in physical line `line`.
fn column_of(source: &str, line: usize, byte: usize) -> usize {
    let raw = crate::error::nth_line(source, line);
    let byte = byte.min(raw.len());
    let mut b = byte;
    while !raw.is_char_boundary(b) {
        b -= 1;
    }
    raw[..b].chars().count() + 1
}

/// The first column of non-blank text on a physical line.
fn first_text_column(source: &str, line: usize) -> usize {
    let raw = crate::error::nth_line(source, line);
    raw.chars().take_while(|&c| is_space(c)).count() + 1
}

/// Parses Dockerfile text into its syntax tree. See [`crate::parse`].
pub(crate) fn parse(source: &str) -> Result<Parsed, ParseError> {
    let mut r = Reader {
        source,
        lines: Lines { rest: source },
        current_line: 0,
        directives: DirectiveParser::default(),
        escape: '\\',
    };
    // One node per line at most; reserving avoids repeated large reallocations (and glibc
    // consolidating its free lists at each of them) on long files.
    let lines = source.bytes().filter(|&b| b == b'\n').count();
    let mut nodes: Vec<Node> = Vec::with_capacity((lines / 2 + 1).min(1 << 16));
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();

    loop {
        let instruction_start = r.offset();
        let Some(raw) = r.next_line()? else { break };
        if is_comment(raw) {
            let text = trim_left_space(raw);
            let comment = crate::text::trim_space(&text[1..]);
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_string());
            }
        }
        let (first, is_directive) = r.process_line(raw, true)?;
        if is_directive {
            comments.pop();
        }
        r.current_line += 1;
        let start_line = r.current_line;
        let (part, mut end_of_line) = trim_continuation(first, r.escape);
        if end_of_line && part.is_empty() {
            continue;
        }
        let mut line = String::from(part);
        let mut has_empty_continuation = false;
        while !end_of_line {
            let Some(raw) = r.next_line()? else { break };
            let (processed, _) = r.process_line(raw, false)?;
            r.current_line += 1;
            if is_comment(raw) {
                continue;
            }
            if trim_left_space(trim_newline(processed)).is_empty() {
                has_empty_continuation = true;
                continue;
            }
            let (part, eol) = trim_continuation(processed, r.escape);
            end_of_line = eol;
            line.push_str(part);
        }

        // Invalid bytes kept by `decode_lossless` at the end of one physical line and the start
        // of the next may form a valid character once joined, as they do in BuildKit.
        if line.as_bytes().contains(&0xF4) {
            line = crate::text::decode_lossless(&crate::text::go_bytes(&line));
        }

        if has_empty_continuation {
            warnings.push(Warning {
                rule: "NoEmptyContinuation",
                message: format!("Empty continuation line found in: {line}"),
                url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
                line: r.current_line,
            });
        }

        let mut node = node_from_line(&line, r.escape)
            .map_err(|e| line_error(source, e, start_line, r.current_line, &line))?;
        node.comments = std::mem::take(&mut comments);

        if can_contain_heredoc(&node) && line.contains("<<") {
            let starts = heredocs_from_line(&line).map_err(|e| {
                ParseError::at(
                    source,
                    start_line,
                    first_text_column(source, start_line),
                    1,
                    e.to_string(),
                )
                .with_end_line(r.current_line)
                .with_hint(e.hint())
            })?;
            for start in starts {
                let mut content = String::new();
                let mut terminated = false;
                while let Some(raw) = r.next_line()? {
                    r.current_line += 1;
                    let mut candidate = trim_newline(raw);
                    if start.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == start.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(raw);
                }
                if !terminated {
                    let col = find_heredoc_column(source, start_line, &start.name);
                    return Err(ParseError::at(
                        source,
                        start_line,
                        col,
                        start.name.chars().count() + 2,
                        format!("unterminated heredoc {}", start.name),
                    )
                    .with_end_line(r.current_line)
                    .with_hint(format!(
                        "end the heredoc with a line that holds only `{}`",
                        start.name
                    )));
                }
                node.heredocs.push(start.with_content(content));
            }
        }

        // The instruction's own text; positions are computed from it so that parsing stays
        // linear in the size of the file.
        let text = source[instruction_start..r.offset()].trim_end_matches(['\n', '\r']);
        let first_line = text.split('\n').next().unwrap_or("");
        let start_col = first_line.chars().take_while(|&c| is_space(c)).count() + 1;
        let last_line = text.rsplit('\n').next().unwrap_or("");
        let end_col = last_line.trim_end_matches('\r').chars().count() + 1;
        node.source = text.to_string();
        node.span = Span {
            start: Position {
                line: start_line,
                column: start_col,
            },
            end: Position {
                line: r.current_line,
                column: end_col,
            },
        };
        set_sub_span(&mut node);
        nodes.push(node);
    }

    let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else {
        let line = r.current_line.max(1);
        return Err(
            ParseError::at(source, line, 1, 1, "file with no instructions")
                .with_hint("add at least a FROM instruction, e.g. `FROM alpine:3.20`"),
        );
    };
    let span = Span {
        start: first.span.start,
        end: last.span.end,
    };
    Ok(Parsed {
        nodes,
        escape: r.escape,
        directives: r.directives.into_directives(),
        warnings,
        span,
    })
}

/// The ONBUILD child gets its parent's span (it is on the same lines).
fn set_sub_span(node: &mut Node) {
    let span = node.span;
    let heredocs = node.heredocs.clone();
    for arg in &mut node.args {
        if let crate::ast::Arg::Instruction(sub) = arg {
            sub.span = span;
            sub.heredocs = heredocs.clone();
            sub.source = node.source.clone();
            set_sub_span(sub);
        }
    }
}

/// BuildKit's `canContainHeredoc`: RUN/COPY/ADD in shell form, also behind ONBUILD.
fn can_contain_heredoc(node: &Node) -> bool {
    let mut n = node;
    if n.instruction() == Some("onbuild")
        && let Some(sub) = n.sub_instruction()
    {
        n = sub;
    }
    n.instruction()
        .is_some_and(|i| KEYWORDS_WITH_HEREDOCS.contains(&i))
        && !n.json
}

fn find_heredoc_column(source: &str, line: usize, name: &str) -> usize {
    let raw = crate::error::nth_line(source, line);
    match raw.find("<<") {
        Some(i) if !name.is_empty() => column_of(source, line, i),
        _ => first_text_column(source, line),
    }
}

fn line_error(source: &str, e: LineError, start: usize, end: usize, logical: &str) -> ParseError {
    let col = first_text_column(source, start);
    let keyword_width = logical
        .split(is_space)
        .find(|s| !s.is_empty())
        .map_or(1, |k| k.chars().count());
    let err = match e {
        LineError::TooDeep => ParseError::at(
            source,
            start,
            col,
            keyword_width,
            format!(
                "ONBUILD nested more than {} levels deep",
                crate::line_parsers::MAX_ONBUILD_NESTING
            ),
        )
        .with_hint("write a single ONBUILD followed by the trigger instruction"),
        LineError::MissingValue { keyword, key } => {
            let raw = crate::error::nth_line(source, start);
            let key_col = raw
                .find(key.as_str())
                .filter(|_| !key.is_empty())
                .map_or(col, |i| column_of(source, start, i));
            ParseError::at(
                source,
                start,
                key_col,
                key.chars().count(),
                format!("{keyword} must have two arguments"),
            )
            .with_hint(format!(
                "write `{keyword} {key}=<value>` (an empty value is `{key}=\"\"`)"
            ))
        }
        LineError::MissingEquals { keyword, word } => {
            let raw = crate::error::nth_line(source, start);
            let word_col = raw
                .find(word.as_str())
                .map_or(col, |i| column_of(source, start, i));
            ParseError::at(
                source,
                start,
                word_col,
                word.chars().count(),
                format!("Syntax error - can't find = in {word:?}. Must be of the form: name=value"),
            )
            .with_hint(format!(
                "write `{word}=<value>`, or quote the value if it contains spaces: `{keyword} key=\"a b\"`"
            ))
        }
        LineError::NotStringArray => {
            let raw = crate::error::nth_line(source, start);
            let c = raw.find('[').map_or(col, |i| column_of(source, start, i));
            ParseError::at(
                source,
                start,
                c,
                1,
                "when using JSON array syntax, arrays must be comprised of strings only",
            )
            .with_hint("write every element as a string, e.g. [\"echo\", \"nested json\"], or use the shell form")
        }
    };
    err.with_end_line(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\  \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }

    #[test]
    fn empty_continuation_warnings() {
        let src = "\nFROM alpine:3.6\n\nRUN valid \\\n    continuation\n\nRUN something \\\n\n    following \\\n\n    more\n\nRUN another \\\n\n    thing\n\nRUN non-indented \\\n# this is a comment\n   after-comment\n\nRUN indented \\\n    # this is an indented comment\n    comment\n\t";
        let p = parse(src).unwrap();
        assert_eq!(p.warnings.len(), 2);
        assert!(
            p.warnings[0]
                .message
                .contains("RUN something     following     more")
        );
        assert!(p.warnings[1].message.contains("RUN another     thing"));
    }

    #[test]
    fn too_long_line() {
        let src = format!("\n\t\tFROM image\n\t\tLABEL test={}\n", "a".repeat(65_536));
        let e = parse(&src).unwrap_err();
        assert_eq!(
            e.message,
            "dockerfile line greater than max allowed size of 65535"
        );
        assert_eq!(e.position.line, 3);
    }

    #[test]
    fn deep_onbuild_nesting_is_an_error_not_a_crash() {
        let ok = format!("{}RUN x\n", "ONBUILD ".repeat(10));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}RUN x\n", "ONBUILD \\\n".repeat(20_000));
        assert_eq!(
            parse(&deep).unwrap_err().message,
            "ONBUILD nested more than 64 levels deep"
        );
    }

    #[test]
    fn heredoc_bodies_and_lines() {
        let src = "FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY <<-X <<Y /d\n\tx\n\tX\ny\nY\n";
        let p = parse(src).unwrap();
        assert_eq!(p.nodes[1].heredocs[0].content, "echo hi\n");
        assert_eq!(
            (p.nodes[1].span.start.line, p.nodes[1].span.end.line),
            (2, 4)
        );
        assert_eq!(p.nodes[2].heredocs[0].content, "\tx\n");
        assert_eq!(p.nodes[2].heredocs[0].chomped(), "x\n");
        assert_eq!(p.nodes[2].heredocs[1].content, "y\n");
        assert_eq!(
            parse("FROM a\nRUN <<EOF\necho\n").unwrap_err().message,
            "unterminated heredoc EOF"
        );
    }
}
