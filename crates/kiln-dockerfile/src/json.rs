//! The exec form: a JSON array of strings, read with the rules of Go's `encoding/json`.
//!
//! BuildKit falls back to the shell form whenever `json.Unmarshal` fails (bad syntax, a number
//! out of float64 range, nesting deeper than 10000), and rejects a *valid* array that holds
//! anything but strings. This module reproduces those three outcomes.

/// The outcome of reading an instruction's arguments as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonArgs {
    /// A valid array of strings.
    Strings(Vec<String>),
    /// Valid JSON array, but an element is not a string (e.g. a nested array): an error.
    NotStringArray,
    /// Not a JSON array at all: the arguments are the shell form.
    NotJson,
}

const MAX_DEPTH: usize = 10_000;

/// Reads `rest` (leading whitespace allowed) as a JSON array of strings.
pub(crate) fn parse_json_array(rest: &str) -> JsonArgs {
    let rest = crate::text::trim_left_space(rest);
    if !rest.starts_with('[') {
        return JsonArgs::NotJson;
    }
    let mut r = Reader {
        b: rest.as_bytes(),
        s: rest,
        pos: 0,
        overflow: false,
    };
    let Some(elements) = r.top_level_array() else {
        return JsonArgs::NotJson;
    };
    r.skip_ws();
    if r.pos != r.b.len() || r.overflow {
        return JsonArgs::NotJson;
    }
    let mut strings = Vec::with_capacity(elements.len());
    for e in elements {
        match e {
            Some(s) => strings.push(s),
            None => return JsonArgs::NotStringArray,
        }
    }
    JsonArgs::Strings(strings)
}

/// Appends string-literal text; Go's decoder turns each invalid UTF-8 byte (kept by
/// `text::decode_lossless` as a private-use character) into U+FFFD.
fn push_decoded(out: &mut String, text: &str) {
    if text.is_ascii() {
        out.push_str(text);
        return;
    }
    out.extend(text.chars().map(|c| {
        if crate::text::is_raw_byte(c) {
            '\u{fffd}'
        } else {
            c
        }
    }));
}

struct Reader<'a> {
    b: &'a [u8],
    s: &'a str,
    pos: usize,
    overflow: bool,
}

impl Reader<'_> {
    fn skip_ws(&mut self) {
        while matches!(self.b.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// The elements of the top-level array: `Some(string)` or `None` for a non-string.
    fn top_level_array(&mut self) -> Option<Vec<Option<String>>> {
        self.pos += 1; // `[`
        let mut out = Vec::new();
        self.skip_ws();
        if self.b.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Some(out);
        }
        loop {
            self.skip_ws();
            if self.b.get(self.pos) == Some(&b'"') {
                out.push(Some(self.string()?));
            } else {
                self.value(1)?;
                out.push(None);
            }
            self.skip_ws();
            match self.b.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }

    /// Skips (validates) any value; `depth` is the nesting depth of the enclosing container.
    fn value(&mut self, depth: usize) -> Option<()> {
        // Containers are walked with an explicit stack so that deep nesting cannot overflow ours.
        let mut stack: Vec<u8> = Vec::new();
        loop {
            self.skip_ws();
            // Read one value start.
            match *self.b.get(self.pos)? {
                b'[' | b'{' => {
                    let open = self.b[self.pos];
                    self.pos += 1;
                    stack.push(open);
                    if depth + stack.len() > MAX_DEPTH {
                        return None;
                    }
                    self.skip_ws();
                    let close = if open == b'[' { b']' } else { b'}' };
                    if self.b.get(self.pos) == Some(&close) {
                        self.pos += 1;
                        stack.pop();
                    } else {
                        if open == b'{' {
                            self.object_key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                b'n' => self.literal("null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // After a complete value: close containers or continue with the next element.
            loop {
                let Some(&top) = stack.last() else {
                    return Some(());
                };
                self.skip_ws();
                match (*self.b.get(self.pos)?, top) {
                    (b',', b'[') => {
                        self.pos += 1;
                        break;
                    }
                    (b',', b'{') => {
                        self.pos += 1;
                        self.skip_ws();
                        self.object_key()?;
                        break;
                    }
                    (b']', b'[') | (b'}', b'{') => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key" :` inside an object.
    fn object_key(&mut self) -> Option<()> {
        self.skip_ws();
        if self.b.get(self.pos) != Some(&b'"') {
            return None;
        }
        self.string()?;
        self.skip_ws();
        if self.b.get(self.pos) != Some(&b':') {
            return None;
        }
        self.pos += 1;
        Some(())
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        if self.b[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        if self.b.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.b.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return None,
        }
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !matches!(self.b.get(self.pos), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
        }
        if matches!(self.b.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.b.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.b.get(self.pos), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
        }
        // Go decodes numbers into float64 and fails the whole Unmarshal on overflow.
        match self.s[start..self.pos].parse::<f64>() {
            Ok(f) if f.is_finite() => {}
            _ => self.overflow = true,
        }
        Some(())
    }

    fn digits(&mut self) {
        while matches!(self.b.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    }

    /// A string literal, decoded.
    fn string(&mut self) -> Option<String> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(&b) = self.b.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            push_decoded(&mut out, &self.s[start..self.pos]);
            match *self.b.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.pos += 1;
                    let esc = *self.b.get(self.pos)?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{08}'),
                        b'f' => out.push('\u{0c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let r = self.hex4(self.pos)?;
                            self.pos += 4;
                            if (0xD800..0xE000).contains(&r) {
                                // A high surrogate followed by `\u` low surrogate is one rune;
                                // anything else decodes to U+FFFD.
                                if r < 0xDC00
                                    && self.b[self.pos..].starts_with(b"\\u")
                                    && let Some(lo) = self.hex4(self.pos + 2)
                                    && (0xDC00..0xE000).contains(&lo)
                                {
                                    self.pos += 6;
                                    let c = 0x10000 + ((r - 0xD800) << 10) + (lo - 0xDC00);
                                    out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                                    continue;
                                }
                                out.push('\u{fffd}');
                            } else {
                                out.push(char::from_u32(r).unwrap_or('\u{fffd}'));
                            }
                        }
                        _ => return None,
                    }
                }
                _ => return None, // control character
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArgs {
        JsonArgs::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn arrays() {
        assert_eq!(parse_json_array(r#"["a", "b"]"#), strings(&["a", "b"]));
        assert_eq!(parse_json_array(r#"  [ ] "#), strings(&[]));
        assert_eq!(
            parse_json_array(r#"["\u00e9\ud83d\ude00\ud800x"]"#),
            strings(&["é😀\u{fffd}x"])
        );
        assert_eq!(
            parse_json_array(r#"[ "a", [ "b" ] ]"#),
            JsonArgs::NotStringArray
        );
        assert_eq!(
            parse_json_array(r#"["a", 1, {"k": [null]}]"#),
            JsonArgs::NotStringArray
        );
        assert_eq!(parse_json_array(r#"["a", 1e999]"#), JsonArgs::NotJson);
        assert_eq!(parse_json_array(r#"['a']"#), JsonArgs::NotJson);
        assert_eq!(parse_json_array(r#"["a""#), JsonArgs::NotJson);
        assert_eq!(parse_json_array(r#"["a"] x"#), JsonArgs::NotJson);
        assert_eq!(parse_json_array("[\"a\tb\"]"), JsonArgs::NotJson);
        assert_eq!(parse_json_array("echo"), JsonArgs::NotJson);
        assert_eq!(parse_json_array("[01]"), JsonArgs::NotJson);
    }

    #[test]
    fn deep_nesting() {
        let deep = format!("[{}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(parse_json_array(&deep), JsonArgs::NotJson);
        let ok = format!("[{}{}]", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_json_array(&ok), JsonArgs::NotStringArray);
    }
}
