//! Character classes and string helpers with the exact semantics of the Go standard library
//! functions BuildKit calls (`unicode.IsSpace`, `strings.ToLower`, `strconv.Quote`, ...).
//!
//! Conformance depends on these details: the AST dump quotes with Go's rules, and the word
//! splitters treat U+0085 and U+00A0 as spaces because Go does.

use unicode_general_category::{GeneralCategory, get_general_category};

/// Go's `unicode.IsSpace`.
pub(crate) fn is_space(c: char) -> bool {
    match c {
        '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r' | ' ' | '\u{85}' | '\u{a0}' => true,
        c if (c as u32) < 0x100 => false,
        c => c.is_whitespace(),
    }
}

/// The class `[\t\v\f\r ]` of BuildKit's `reWhitespace` regular expression.
pub(crate) fn is_ascii_blank(c: char) -> bool {
    matches!(c, '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' ')
}

/// Go's `unicode.IsLetter` (general category L).
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    use GeneralCategory::*;
    matches!(
        get_general_category(c),
        UppercaseLetter | LowercaseLetter | TitlecaseLetter | ModifierLetter | OtherLetter
    )
}

/// Go's `unicode.IsDigit` (general category Nd).
pub(crate) fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    get_general_category(c) == GeneralCategory::DecimalNumber
}

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
pub(crate) fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    use GeneralCategory::*;
    !matches!(
        get_general_category(c),
        SpaceSeparator
            | LineSeparator
            | ParagraphSeparator
            | Control
            | Format
            | Surrogate
            | PrivateUse
            | Unassigned
    )
}

/// Go's `strings.TrimSpace`.
pub(crate) fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Go's `strings.TrimLeftFunc(s, unicode.IsSpace)`.
pub(crate) fn trim_left_space(s: &str) -> &str {
    s.trim_start_matches(is_space)
}

/// Go's `strings.ToLower`: rune by rune, each rune to its single lower-case rune.
pub(crate) fn to_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .map(|c| {
            if is_raw_byte(c) {
                // Go decodes an invalid byte as U+FFFD and writes that.
                '\u{fffd}'
            } else {
                c.to_lowercase().next().unwrap_or(c)
            }
        })
        .collect()
}

/// The 18 Dockerfile instructions, lower case.
pub(crate) const INSTRUCTIONS_LOWER: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// The instruction a keyword names (lower case), compared as BuildKit does after
/// `strings.ToLower`; without allocating for the usual ASCII keywords.
pub(crate) fn instruction_name(keyword: &str) -> Option<&'static str> {
    if keyword.is_ascii() {
        return INSTRUCTIONS_LOWER
            .iter()
            .copied()
            .find(|name| name.eq_ignore_ascii_case(keyword));
    }
    // Non-ASCII keywords can still lower-case to an instruction (KELVIN SIGN → `k`).
    let lower = to_lower(keyword);
    INSTRUCTIONS_LOWER
        .iter()
        .copied()
        .find(|name| *name == lower)
}

/// Go's `strings.ToUpper`, rune by rune.
pub(crate) fn to_upper(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_uppercase();
    }
    s.chars()
        .map(|c| {
            if is_raw_byte(c) {
                '\u{fffd}'
            } else {
                c.to_uppercase().next().unwrap_or(c)
            }
        })
        .collect()
}

/// Where a byte of invalid UTF-8 is kept: U+10FF00 + byte, at the end of the last private use
/// plane. BuildKit splits some lines byte-wise and can cut a character in two; Go keeps the
/// bytes and its dump prints them as `\xNN`. We keep them as these characters and
/// [`quote_into`] prints them the same way.
const RAW_BYTE_BASE: u32 = 0x10_FF00;

/// The raw byte a character stands for, if it is one of [`RAW_BYTE_BASE`]'s.
fn raw_byte(c: char) -> Option<u8> {
    let v = c as u32;
    (RAW_BYTE_BASE + 0x80..=RAW_BYTE_BASE + 0xFF)
        .contains(&v)
        .then(|| (v - RAW_BYTE_BASE) as u8)
}

/// The bytes Go would see for `s`: characters kept by [`decode_lossless`] turn back into their
/// single invalid byte.
pub(crate) fn go_bytes(s: &str) -> std::borrow::Cow<'_, [u8]> {
    if !s.chars().any(is_raw_byte) {
        return std::borrow::Cow::Borrowed(s.as_bytes());
    }
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match raw_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The inverse of [`decode_lossless`]: the original bytes (e.g. to write a heredoc body of a
/// non-UTF-8 Dockerfile to a file unchanged).
pub fn encode_lossless(s: &str) -> Vec<u8> {
    go_bytes(s).into_owned()
}

/// Go's rune decoding of a character kept by [`decode_lossless`]: U+FFFD for an invalid byte.
pub(crate) fn as_go_rune(c: char) -> char {
    if is_raw_byte(c) { '\u{fffd}' } else { c }
}

/// True for a character that stands for an invalid UTF-8 byte (see [`decode_lossless`]).
pub(crate) fn is_raw_byte(c: char) -> bool {
    raw_byte(c).is_some()
}

/// Decodes bytes that may not be valid UTF-8, keeping each invalid byte as a character
/// (see [`RAW_BYTE_BASE`]) so that nothing is lost.
pub fn decode_lossless(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(char::from_u32(RAW_BYTE_BASE + u32::from(b)).unwrap_or('\u{fffd}'));
        }
    }
    out
}

/// Go's `strconv.Quote`: a double-quoted string literal with Go escapes.
#[cfg(test)]
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    quote_into(&mut out, s);
    out
}

/// Appends Go's `strconv.Quote(s)` to `out`.
pub(crate) fn quote_into(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        if let Some(b) = raw_byte(c) {
            let _ = write!(out, "\\x{b:02x}");
            continue;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_print(c) => out.push(c),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Go's `fmt.Sprintf("%q", []string{...})`: `["a" "b"]`.
pub(crate) fn quote_list(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        quote_into(&mut out, item);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("\t\n\u{7}"), r#""\t\n\a""#);
        assert_eq!(quote("\u{1}"), r#""\x01""#);
        assert_eq!(quote("\u{a0}x"), r#""\u00a0x""#);
        assert_eq!(quote("한국어 é"), "\"한국어 é\"");
        assert_eq!(quote("\u{e000}"), r#""\ue000""#);
        assert_eq!(quote("\u{f0000}"), r#""\U000f0000""#);
        assert_eq!(quote(&decode_lossless(b"a\xf0\x9f")), r#""a\xf0\x9f""#);
        assert_eq!(decode_lossless("é".as_bytes()), "é");
        let raw = b"a\xff\xc3\xa9b\xf0";
        assert_eq!(encode_lossless(&decode_lossless(raw)), raw);
    }

    #[test]
    fn spaces_match_go() {
        assert!(is_space('\u{85}') && is_space('\u{a0}') && is_space('\u{3000}'));
        assert!(!is_space('x') && !is_space('\u{200b}'));
    }

    #[test]
    fn instruction_names() {
        assert_eq!(instruction_name("RuN"), Some("run"));
        assert_eq!(instruction_name("HEALTHCHEC\u{212a}"), Some("healthcheck"));
        assert_eq!(instruction_name("RUNX"), None);
    }

    #[test]
    fn lower_is_rune_by_rune() {
        assert_eq!(to_lower("RUN"), "run");
        assert_eq!(to_lower("İ"), "i");
    }
}
