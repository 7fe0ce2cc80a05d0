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
        .map(|c| c.to_lowercase().next().unwrap_or(c))
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
        .map(|c| c.to_uppercase().next().unwrap_or(c))
        .collect()
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
