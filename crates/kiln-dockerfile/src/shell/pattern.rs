//! Shell glob patterns of `${var#pat}`, `${var%pat}` and `${var/pat/repl}`.
//!
//! BuildKit turns the pattern into a Go regular expression (`*` → `.*` or `.*?`, `?` → `.`)
//! and lets RE2 find the leftmost-first match. We match the same tokens directly with a
//! backtracking search in the same preference order, memoising failed states so that the
//! cost stays O(pattern × value) on any input (the fuzzer relies on that).

use std::fmt;

/// One token of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters except newline (Go's `.` does not match `\n`).
    Star,
    /// `?`: one character except newline.
    AnyChar,
    /// Any other character, matched literally.
    Literal(char),
}

/// Why a pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError(String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A compiled pattern plus its greediness (`##`/`%%`/`/` are greedy, `#`/`%` are not).
pub(crate) struct Pattern {
    tokens: Vec<Token>,
    greedy: bool,
}

impl Pattern {
    /// Compiles a pattern as it was read with raw escapes: `\*`, `\?` and `\\` are literals,
    /// `\}` and `\/` lose their backslash, any other escape is an error.
    pub(crate) fn compile(pattern: &str, greedy: bool) -> Result<Self, PatternError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::AnyChar),
                '\\' => {
                    if matches!(chars.get(i), Some('}') | Some('/')) {
                        // `}` and `/` are escaped only to get them past the `${...}` reader.
                        continue;
                    }
                    match chars.get(i) {
                        Some(&e @ ('*' | '?' | '\\')) => {
                            i += 1;
                            tokens.push(Token::Literal(e));
                        }
                        Some(&e) => return Err(PatternError(format!("invalid escape '\\{e}'"))),
                        None => {
                            return Err(PatternError("invalid escape at end of pattern".into()));
                        }
                    }
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Pattern { tokens, greedy })
    }

    /// Length (in chars) of the match anchored at `start`, if any, using `failed` as the
    /// shared memo of states known not to lead to a match.
    fn match_at(&self, text: &[char], start: usize, failed: &mut Memo) -> Option<usize> {
        let m = self.tokens.len();
        let mut stack = vec![(0usize, start)];
        while let Some((ti, si)) = stack.pop() {
            if ti == m {
                return Some(si);
            }
            if !failed.insert(ti, si) {
                continue;
            }
            let here = text.get(si).copied();
            match self.tokens[ti] {
                Token::Literal(c) => {
                    if here == Some(c) {
                        stack.push((ti + 1, si + 1));
                    }
                }
                Token::AnyChar => {
                    if here.is_some_and(|c| c != '\n') {
                        stack.push((ti + 1, si + 1));
                    }
                }
                Token::Star => {
                    let can_take = here.is_some_and(|c| c != '\n');
                    // The stack pops last-pushed first: push the preferred branch last.
                    if self.greedy {
                        stack.push((ti + 1, si));
                        if can_take {
                            stack.push((ti, si + 1));
                        }
                    } else {
                        if can_take {
                            stack.push((ti, si + 1));
                        }
                        stack.push((ti + 1, si));
                    }
                }
            }
        }
        None
    }

    /// Leftmost match at or after `from`: (start, end) in chars.
    fn find_from(&self, text: &[char], from: usize, memo: &mut Memo) -> Option<(usize, usize)> {
        (from..=text.len()).find_map(|s| self.match_at(text, s, memo).map(|e| (s, e)))
    }
}

/// States (token index, text index) already explored without success. A state's outcome does
/// not depend on how it was reached, so the memo is valid across start positions. Small
/// searches use a dense bit set; huge ones (long pattern × long value) a hash set, so memory
/// stays proportional to the states actually visited.
enum Memo {
    Dense { width: usize, bits: Vec<u64> },
    Sparse(std::collections::HashSet<(usize, usize)>),
}

/// Above this many states the dense bit set would be too large (16 Mi states = 2 MiB).
const DENSE_LIMIT: usize = 1 << 24;

impl Memo {
    fn new(tokens: usize, text: usize) -> Self {
        let width = text + 1;
        match (tokens + 1).checked_mul(width) {
            Some(n) if n <= DENSE_LIMIT => Memo::Dense {
                width,
                bits: vec![0; n.div_ceil(64)],
            },
            _ => Memo::Sparse(Default::default()),
        }
    }

    /// Marks the state; false if it was marked already.
    fn insert(&mut self, ti: usize, si: usize) -> bool {
        match self {
            Memo::Dense { width, bits } => {
                let idx = ti * *width + si;
                let (word, bit) = (idx / 64, 1u64 << (idx % 64));
                let fresh = bits[word] & bit == 0;
                bits[word] |= bit;
                fresh
            }
            Memo::Sparse(set) => set.insert((ti, si)),
        }
    }
}

/// `${value#pattern}` / `${value##pattern}`: removes the matching prefix.
pub(crate) fn trim_prefix(
    pattern: &str,
    value: &str,
    greedy: bool,
) -> Result<String, PatternError> {
    let pat = Pattern::compile(pattern, greedy)?;
    let text: Vec<char> = value.chars().collect();
    let mut memo = Memo::new(pat.tokens.len(), text.len());
    Ok(match pat.match_at(&text, 0, &mut memo) {
        Some(end) => text[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// `${value%pattern}` / `${value%%pattern}`: removes the matching suffix. Like BuildKit, it
/// reverses both strings (keeping escape pairs in order) and trims a prefix.
pub(crate) fn trim_suffix(
    pattern: &str,
    value: &str,
    greedy: bool,
) -> Result<String, PatternError> {
    let reversed_pattern = reverse_pattern(pattern);
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reversed_pattern, &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern but keeps each `\x` escape pair as `\x`.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let n = chars.len();
    let mut out = vec!['\0'; n];
    let mut i = 0;
    while i < n {
        let out_idx = n - 1 - i;
        if chars[i] == '\\' && i + 1 < n {
            out[out_idx - 1] = '\\';
            out[out_idx] = chars[i + 1];
            i += 2;
        } else {
            out[out_idx] = chars[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// `${value/pattern/replacement}` (first match) or `${value//pattern/replacement}` (all).
///
/// BuildKit calls Go's `Regexp.ReplaceAllString` for the "all" form, which expands `$0`,
/// `${0}` (the match) and `$name` (empty: there are no groups) in the replacement, and `$$`
/// to `$`; the single form inserts the replacement verbatim. Both quirks are kept.
pub(crate) fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
) -> Result<String, PatternError> {
    let pat = Pattern::compile(pattern, true)?;
    let text: Vec<char> = value.chars().collect();
    let mut memo = Memo::new(pat.tokens.len(), text.len());
    if !all {
        return Ok(match pat.find_from(&text, 0, &mut memo) {
            Some((s, e)) => {
                let mut out: String = text[..s].iter().collect();
                out.push_str(replacement);
                out.extend(&text[e..]);
                out
            }
            None => value.to_string(),
        });
    }
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((s, e)) = pat.find_from(&text, search, &mut memo) else {
            break;
        };
        out.extend(&text[last_end..s]);
        // An empty match right after the previous match is not replaced again.
        if e > last_end || s == 0 {
            let matched: String = text[s..e].iter().collect();
            expand_template(&mut out, replacement, &matched);
        }
        last_end = e;
        search = if search + 1 > e { search + 1 } else { e };
    }
    out.extend(&text[last_end.min(text.len())..]);
    Ok(out)
}

/// Go's `Regexp.expand` for a regexp without capture groups.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match extract_group_name(rest) {
            Some((name, after)) => {
                if name == "0" {
                    out.push_str(matched);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// Reads `name` or `{name}` after a `$`; None if malformed.
fn extract_group_name(s: &str) -> Option<(&str, &str)> {
    let (body, braced) = match s.strip_prefix('{') {
        Some(b) => (b, true),
        None => (s, false),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !(crate::text::is_letter(c) || crate::text::is_digit(c) || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    let after = &body[end..];
    if braced {
        let after = after.strip_prefix('}')?;
        return Some((name, after));
    }
    Some((name, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_suffix() {
        assert_eq!(trim_prefix("*/", "a/b/c", false).unwrap(), "b/c");
        assert_eq!(trim_prefix("*/", "a/b/c", true).unwrap(), "c");
        assert_eq!(trim_suffix("/*", "a/b/c", false).unwrap(), "a/b");
        assert_eq!(trim_suffix("/*", "a/b/c", true).unwrap(), "a");
        assert_eq!(trim_prefix("x", "abc", false).unwrap(), "abc");
        assert_eq!(trim_prefix("?b", "abc", false).unwrap(), "c");
    }

    #[test]
    fn reverse_keeps_escapes() {
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
        assert_eq!(reverse_pattern("\\\\\\ab"), "b\\a\\\\");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
        assert_eq!(reverse_pattern("\\\\b"), "b\\\\");
    }

    #[test]
    fn invalid_escapes() {
        for (p, why) in [
            ("\\", "invalid escape at end of pattern"),
            ("\\x", "invalid escape '\\x'"),
            ("\\\\\\", "invalid escape at end of pattern"),
        ] {
            let Err(PatternError(got)) = Pattern::compile(p, true) else {
                panic!("{p} compiled")
            };
            assert_eq!(got, why, "{p}");
        }
    }

    #[test]
    fn replace_first_and_all() {
        assert_eq!(replace("o", "foo", "0", false).unwrap(), "f0o");
        assert_eq!(replace("o", "foo", "0", true).unwrap(), "f00");
        assert_eq!(replace("x*", "abc", "-", true).unwrap(), "abc");
        assert_eq!(replace("*", "abc", "-", true).unwrap(), "-");
        assert_eq!(replace("b", "abc", "[$0]", true).unwrap(), "a[b]c");
        assert_eq!(replace("b", "abc", "$$", true).unwrap(), "a$c");
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let value = "a".repeat(2000);
        let pattern = "*a".repeat(50) + "b";
        assert_eq!(trim_prefix(&pattern, &value, true).unwrap(), value);
    }
}
