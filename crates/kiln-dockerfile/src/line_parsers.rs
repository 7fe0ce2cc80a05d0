//! Per-instruction argument parsers: they turn the text after the keyword into the argument
//! list of a [`Node`], exactly as BuildKit's `line_parsers.go` and `split_command.go` do.
//!
//! Which parser an instruction uses decides what its arguments look like in the tree:
//!
//! | instructions | arguments |
//! |---|---|
//! | `RUN`, `CMD`, `ENTRYPOINT`, `SHELL` | the JSON array's strings, else the whole text as one |
//! | `ADD`, `COPY`, `VOLUME` | the JSON array's strings, else the whitespace-separated words |
//! | `FROM`, `EXPOSE` | whitespace-separated words |
//! | `ENV`, `LABEL` | triples `key value sep` (`sep` is `=` or `""` for the legacy `k v` form) |
//! | `ARG` | words, quotes kept |
//! | `MAINTAINER`, `USER`, `WORKDIR`, `STOPSIGNAL` | the whole text as one |
//! | `HEALTHCHECK` | the type word, then like `CMD` |
//! | `ONBUILD` | the nested instruction |
//! | anything else | a single empty argument |

use crate::ast::{Arg, Node};
use crate::json::{JsonArgs, parse_json_array};
use crate::text::{is_ascii_blank, is_space, trim_space};

/// Why an instruction line cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineError {
    /// `ENV key` / `LABEL key`: the legacy form needs a value.
    MissingValue {
        /// `ENV` or `LABEL`.
        keyword: &'static str,
        /// The key that has no value.
        key: String,
    },
    /// `ENV a=b c`: in the `k=v` form every word needs `=`.
    MissingEquals {
        /// `ENV` or `LABEL`.
        keyword: &'static str,
        /// The word without `=`.
        word: String,
    },
    /// An exec-form array with a non-string element.
    NotStringArray,
    /// `ONBUILD ONBUILD …` nested deeper than [`MAX_ONBUILD_NESTING`].
    TooDeep,
}

/// Deepest `ONBUILD ONBUILD …` nesting the parser accepts. BuildKit has no limit (and rejects
/// any nesting later, when it converts instructions); we stop early so that a pathological
/// line cannot exhaust the stack.
pub(crate) const MAX_ONBUILD_NESTING: usize = 64;

/// The result of a line parser: arguments and whether they were JSON.
pub(crate) struct ParsedArgs {
    pub(crate) args: Vec<Arg>,
    pub(crate) json: bool,
}

impl ParsedArgs {
    fn words(words: Vec<String>) -> Self {
        ParsedArgs {
            args: words.into_iter().map(Arg::Word).collect(),
            json: false,
        }
    }

    fn none() -> Self {
        ParsedArgs {
            args: Vec::new(),
            json: false,
        }
    }
}

/// Builds the node for one logical line (no spans or heredocs yet).
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, LineError> {
    node_from_line_at_depth(line, escape, 0)
}

fn node_from_line_at_depth(line: &str, escape: char, depth: usize) -> Result<Node, LineError> {
    let (keyword, flags, rest) = split_command(line, escape);
    let parsed = dispatch(&keyword, &rest, escape, depth)?;
    Ok(Node {
        keyword,
        flags,
        args: parsed.args,
        json: parsed.json,
        heredocs: Vec::new(),
        original: line.to_string(),
        source: String::new(),
        comments: Vec::new(),
        span: Default::default(),
    })
}

fn dispatch(
    keyword: &str,
    rest: &str,
    escape: char,
    depth: usize,
) -> Result<ParsedArgs, LineError> {
    match crate::text::instruction_name(keyword).unwrap_or("") {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest),
        "arg" => Ok(ParsedArgs::words(parse_words(rest, escape))),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(rest),
        "env" => parse_name_val(rest, "ENV", escape),
        "label" => parse_name_val(rest, "LABEL", escape),
        "expose" | "from" => Ok(parse_whitespace_delimited(rest)),
        "healthcheck" => parse_health_config(rest),
        "maintainer" | "stopsignal" | "user" | "workdir" => Ok(parse_string(rest)),
        "onbuild" => parse_sub_command(rest, escape, depth),
        // Unknown instructions are kept (the instruction layer rejects them with a hint);
        // BuildKit gives them one empty argument, visible in the dump as `""`.
        _ => Ok(ParsedArgs::words(vec![String::new()])),
    }
}

/// Splits a logical line into keyword, flags and the rest (BuildKit's `splitCommand`).
pub(crate) fn split_command(line: &str, escape: char) -> (String, Vec<String>, String) {
    let trimmed = trim_space(line);
    match trimmed.find(is_ascii_blank) {
        None => (trimmed.to_string(), Vec::new(), String::new()),
        Some(i) => {
            let keyword = trimmed[..i].to_string();
            let after = trimmed[i..].trim_start_matches(is_ascii_blank);
            let (rest, flags) = extract_builder_flags(after, escape);
            let trimmed = trim_space(&rest);
            let rest = if trimmed.len() == rest.len() {
                rest
            } else {
                trimmed.to_string()
            };
            (keyword, flags, rest)
        }
    }
}

/// Reads leading `--flag` words; returns the remaining text and the flags.
///
/// BuildKit walks this part byte by byte, so a byte 0x85 or 0xA0 inside a multi-byte
/// character counts as a space and bytes above 0x7F become Latin-1 characters in flag words.
/// We do the same so that dumps agree even on such input (a character cut in two keeps its
/// bytes, see `text::decode_lossless`).
fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let go_bytes = crate::text::go_bytes(line);
    let bytes: &[u8] = &go_bytes;
    let borrowed = matches!(go_bytes, std::borrow::Cow::Borrowed(_));
    let rest_from = |pos: usize| match line.get(pos..).filter(|_| borrowed) {
        Some(rest) => rest.to_string(),
        None => crate::text::decode_lossless(&bytes[pos..]),
    };
    let escape_byte = escape as u32 as u8;
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= bytes.len() {
        let ch = bytes.get(pos).copied().unwrap_or(0);
        let at_end = pos == bytes.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch as char) {
                pos += 1;
                continue;
            }
            if ch != b'-' || bytes.get(pos + 1) != Some(&b'-') {
                return (rest_from(pos), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(std::mem::take(&mut word));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch as char) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest_from(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == escape_byte {
                if pos + 1 == bytes.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = bytes[pos];
            }
            word.push(c as char);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == escape_byte {
            if pos + 1 == bytes.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = bytes[pos];
        }
        word.push(c as char);
        pos += 1;
    }
    (String::new(), words)
}

/// Splits on blanks, keeping quotes and escapes in the words (BuildKit's `parseWords`).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let n = rest.len();
    // Go decodes runes here, so a kept invalid byte reads as U+FFFD (its width stays that of
    // the stand-in character).
    let char_at = |pos: usize| rest[pos..].chars().next().unwrap_or('\0');
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut pos = 0; // byte offset, always on a char boundary
    while pos <= n {
        let raw = if pos < n { char_at(pos) } else { '\0' };
        let width = raw.len_utf8();
        let ch = crate::text::as_go_rune(raw);
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if is_space(ch) {
                pos += width;
                continue;
            }
            phase = Phase::Word;
        }
        if pos == n {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            break;
        }
        let is_last = pos + width == n;
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += width;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if is_last {
                    pos += width;
                    continue; // an escape at the very end is dropped
                }
                // Unquoted: keep the escape and the escaped character, even a quote.
                word.push(ch);
                pos += width;
                let next = char_at(pos);
                word.push(crate::text::as_go_rune(next));
                pos += next.len_utf8();
                continue;
            }
            word.push(ch);
            pos += width;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if is_last {
                phase = Phase::Word;
                pos += width;
                continue;
            }
            word.push(ch);
            pos += width;
            let next = char_at(pos);
            word.push(crate::text::as_go_rune(next));
            pos += next.len_utf8();
            continue;
        }
        word.push(ch);
        pos += width;
    }
    words
}

/// `ENV`/`LABEL`: `k=v …` or the legacy `k v`.
fn parse_name_val(
    rest: &str,
    keyword: &'static str,
    escape: char,
) -> Result<ParsedArgs, LineError> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(ParsedArgs::none());
    };
    if !first.contains('=') {
        // Legacy form: the first blank-separated word is the key, the rest is the value.
        return match rest.find(is_ascii_blank) {
            Some(i) => {
                let key = &rest[..i];
                let value = rest[i..].trim_start_matches(is_ascii_blank);
                Ok(ParsedArgs::words(vec![
                    key.to_string(),
                    value.to_string(),
                    String::new(),
                ]))
            }
            None => Err(LineError::MissingValue {
                keyword,
                key: rest.to_string(),
            }),
        };
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(LineError::MissingEquals { keyword, word });
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(ParsedArgs::words(out))
}

fn parse_whitespace_delimited(rest: &str) -> ParsedArgs {
    if rest.is_empty() {
        return ParsedArgs::none();
    }
    ParsedArgs::words(
        rest.split(is_ascii_blank)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn parse_string(rest: &str) -> ParsedArgs {
    if rest.is_empty() {
        return ParsedArgs::none();
    }
    ParsedArgs::words(vec![rest.to_string()])
}

fn parse_maybe_json(rest: &str) -> Result<ParsedArgs, LineError> {
    if rest.is_empty() {
        return Ok(ParsedArgs::none());
    }
    match parse_json_array(rest) {
        JsonArgs::Strings(v) => Ok(ParsedArgs {
            args: v.into_iter().map(Arg::Word).collect(),
            json: true,
        }),
        JsonArgs::NotStringArray => Err(LineError::NotStringArray),
        JsonArgs::NotJson => Ok(ParsedArgs::words(vec![rest.to_string()])),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<ParsedArgs, LineError> {
    match parse_json_array(rest) {
        JsonArgs::Strings(v) => Ok(ParsedArgs {
            args: v.into_iter().map(Arg::Word).collect(),
            json: true,
        }),
        JsonArgs::NotStringArray => Err(LineError::NotStringArray),
        JsonArgs::NotJson => Ok(parse_whitespace_delimited(rest)),
    }
}

/// `HEALTHCHECK TYPE …`: BuildKit finds the end of the type byte by byte (see
/// [`extract_builder_flags`] for why that matters).
fn parse_health_config(rest: &str) -> Result<ParsedArgs, LineError> {
    let go_bytes = crate::text::go_bytes(rest);
    let bytes: &[u8] = &go_bytes;
    let sep = bytes
        .iter()
        .position(|&b| is_space(b as char))
        .unwrap_or(bytes.len());
    if sep == 0 {
        return Ok(ParsedArgs::none());
    }
    let next = bytes[sep..]
        .iter()
        .position(|&b| !is_space(b as char))
        .map_or(bytes.len(), |p| sep + p);
    let typ = crate::text::decode_lossless(&bytes[..sep]);
    let cmd_text = crate::text::decode_lossless(&bytes[next..]);
    let cmd = parse_maybe_json(&cmd_text)?;
    let mut args = vec![Arg::Word(typ)];
    args.extend(cmd.args);
    Ok(ParsedArgs {
        args,
        json: cmd.json,
    })
}

fn parse_sub_command(rest: &str, escape: char, depth: usize) -> Result<ParsedArgs, LineError> {
    if rest.is_empty() {
        return Ok(ParsedArgs::none());
    }
    if depth >= MAX_ONBUILD_NESTING {
        return Err(LineError::TooDeep);
    }
    let child = node_from_line_at_depth(rest, escape, depth + 1)?;
    Ok(ParsedArgs {
        args: vec![Arg::Instruction(Box::new(child))],
        json: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_like_buildkit() {
        let cases: &[(&str, &[&str])] = &[
            ("foo", &["foo"]),
            ("foo bar", &["foo", "bar"]),
            ("foo\\ bar", &["foo\\ bar"]),
            ("foo=bar", &["foo=bar"]),
            ("foo bar 'abc xyz'", &["foo", "bar", "'abc xyz'"]),
            (r#"foo bar "abc xyz""#, &["foo", "bar", r#""abc xyz""#]),
            ("àöû", &["àöû"]),
            (r#"föo bàr "âbc xÿz""#, &["föo", "bàr", r#""âbc xÿz""#]),
        ];
        for (input, expect) in cases {
            assert_eq!(parse_words(input, '\\'), *expect, "{input}");
        }
    }

    #[test]
    fn flags_stop_at_double_dash() {
        let (k, f, r) = split_command("COPY --a=1 -- --b x", '\\');
        assert_eq!(
            (k.as_str(), f, r.as_str()),
            ("COPY", vec!["--a=1".to_string()], "--b x")
        );
        let (_, f, r) = split_command("RUN --mount=\"type=cache,target=/x\" echo", '\\');
        assert_eq!(f, ["--mount=type=cache,target=/x"]);
        assert_eq!(r, "echo");
    }
}
