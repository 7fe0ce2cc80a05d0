//! Parser directives: `# syntax=…`, `# escape=…`, `# check=…` at the top of a Dockerfile.
//!
//! BuildKit's placement rules: directives are comment lines at the very top. The first line
//! that is not a directive (a blank line, an instruction, an ordinary comment, or a comment
//! naming an unknown directive) ends the directive section for good. A directive may not be
//! repeated. Names are case-insensitive; the value is trimmed.

use crate::text::trim_left_space;

/// One parser directive found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower-case name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// 1-based line of the directive.
    pub line: usize,
}

/// The directive names BuildKit knows; any other `# name=value` is an ordinary comment.
const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// Why a directive is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirectiveError {
    /// The same directive appears twice.
    Duplicate(String),
    /// `# escape=` with something other than `` ` `` or `\`.
    InvalidEscape(String),
}

/// Reads directives line by line, enforcing the placement rules.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    line: usize,
    done: bool,
    found: Vec<Directive>,
}

impl DirectiveParser {
    /// Looks at the next line (newline already removed). Returns the directive if the line is
    /// one; after the first non-directive line it never returns one again.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<&Directive>, DirectiveError> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let Some((name, value)) = split_directive(trim_left_space(rest)) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(DirectiveError::Duplicate(name));
        }
        if name == "escape" && value != "`" && value != "\\" {
            return Err(DirectiveError::InvalidEscape(value.to_string()));
        }
        self.found.push(Directive {
            name,
            value: value.to_string(),
            line: self.line,
        });
        Ok(self.found.last())
    }

    /// All directives found.
    pub(crate) fn into_directives(self) -> Vec<Directive> {
        self.found
    }
}

/// Splits `name = value` the way BuildKit's `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` does
/// (where `\s` is `[\t\n\f\r ]`): a value of only blanks keeps its last blank.
fn split_directive(s: &str) -> Option<(&str, &str)> {
    let is_re_space = |c: char| matches!(c, '\t' | '\n' | '\u{0c}' | '\r' | ' ');
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() => {}
        _ => return None,
    }
    let name_end = s
        .char_indices()
        .skip(1)
        .find(|&(_, c)| !c.is_ascii_alphanumeric())
        .map_or(s.len(), |(i, _)| i);
    let name = &s[..name_end];
    let rest = s[name_end..].trim_start_matches(is_re_space);
    let after_eq = rest.strip_prefix('=')?;
    if after_eq.is_empty() {
        return None;
    }
    let trimmed_start = after_eq.trim_start_matches(is_re_space);
    if trimmed_start.is_empty() {
        // All blanks: the lazy `.+?` must take one character, the last one.
        let last = after_eq.char_indices().last().map_or(0, |(i, _)| i);
        return Some((name, &after_eq[last..]));
    }
    Some((name, trimmed_start.trim_end_matches(is_re_space)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Vec<Directive>, DirectiveError> {
        let mut p = DirectiveParser::default();
        for l in lines {
            p.parse_line(l)?;
        }
        Ok(p.into_directives())
    }

    #[test]
    fn placement_rules() {
        let d = parse(&[
            "# syntax = docker/dockerfile:1",
            "#ESCAPE=`",
            "# check=skip=all",
            "FROM x",
        ])
        .unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].name, "escape");
        assert_eq!(d[1].value, "`");
        assert_eq!(d[2].value, "skip=all");
        // A comment ends the section.
        assert_eq!(parse(&["# hello", "# escape=`"]).unwrap().len(), 0);
        // So does an unknown directive and a blank line.
        assert_eq!(parse(&["# foo=bar", "# escape=`"]).unwrap().len(), 0);
        assert_eq!(parse(&["", "# escape=`"]).unwrap().len(), 0);
    }

    #[test]
    fn duplicates_and_bad_escape() {
        assert_eq!(
            parse(&["# escape=`", "# Escape=\\"]).unwrap_err(),
            DirectiveError::Duplicate("escape".into())
        );
        assert!(matches!(
            parse(&["# escape=x"]),
            Err(DirectiveError::InvalidEscape(_))
        ));
        assert!(
            matches!(parse(&["# escape= "]), Err(DirectiveError::InvalidEscape(v)) if v == " ")
        );
    }
}
