//! Shell-word expansion and word splitting, as BuildKit's `shell.Lex` does them.
//!
//! Dockerfile instructions that "expand" (`ENV`, `COPY`, `WORKDIR`, ...) run each word through
//! this lexer: quotes are removed, escapes resolved, and `$name`, `${name}` and the
//! `${name<op>word}` forms substituted from an [`Env`]. [`expand_word`] gives one string,
//! [`expand_words`] also splits the result into words the way BuildKit does.
//!
//! ```
//! use kiln_dockerfile::shell::{expand_word, expand_words, EnvList};
//!
//! let env = EnvList::from_pairs([("NAME", "kiln"), ("SPACE", "a  b")]);
//! assert_eq!(expand_word(r#"hello-${NAME:-x}"#, &env, '\\').unwrap(), "hello-kiln");
//! assert_eq!(expand_words("x${SPACE}y", &env, '\\').unwrap(), ["xa", "by"]);
//! assert!(expand_word("${NAME", &env, '\\').is_err());
//! ```

mod pattern;

use std::collections::HashMap;

use crate::text::{is_digit, is_letter, is_space};

/// Where the lexer looks variables up.
///
/// Implemented for [`EnvList`], [`crate::Variables`], `HashMap<String, String>`, and any
/// `Fn(&str) -> Option<String>`.
pub trait Env {
    /// The value of `name`, or `None` when it is not set (which differs from set-but-empty
    /// for `${v-x}`, `${v+x}` and `${v?x}`).
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// An environment with no variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _name: &str) -> Option<String> {
        None
    }
}

/// An ordered list of `KEY=value` pairs where a later key replaces an earlier one in place
/// (the order of first definition is kept, as in an image config's `Env`). Lookups and
/// updates are O(1), so long Dockerfiles stay linear.
#[derive(Debug, Clone, Default)]
pub struct EnvList {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl PartialEq for EnvList {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for EnvList {}

impl EnvList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from key/value pairs; later duplicates replace earlier ones.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut list = Self::new();
        for (k, v) in pairs {
            list.set(k, v);
        }
        list
    }

    /// Builds a list from `KEY=value` strings (an image config's `Env`); a string without
    /// `=` sets the key to the empty string, as Go's `EnvsFromSlice` does.
    pub fn from_env_strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Self {
        let mut list = Self::new();
        for item in items {
            let item = item.as_ref();
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            list.set(k, v);
        }
        list
    }

    /// Sets `key` to `value`, replacing an earlier value in place.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) {
        if self.index.remove(key).is_some() {
            self.entries.retain(|(k, _)| k != key);
            self.index = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
        }
    }

    /// The value of `key`.
    pub fn lookup(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.entries[i].1.as_str())
    }

    /// The pairs in order of first definition.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `KEY=value` strings, in order (the shape of an image config's `Env`).
    pub fn to_env_strings(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no variable is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<String> {
        self.lookup(name).map(str::to_string)
    }
}

/// An expansion failure: what went wrong and at which character of the word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind}")]
pub struct ExpandError {
    /// The word that was being expanded.
    pub word: String,
    /// Character offset (0-based, in chars) in `word` where the problem was found.
    pub offset: usize,
    /// What went wrong.
    pub kind: ExpandErrorKind,
}

impl ExpandError {
    /// The diagnostic for a word shown on its own (as `kiln debug expand` does): `origin`
    /// names where the word came from, then the word with a caret at the problem and a hint.
    pub fn render(&self, origin: &str) -> String {
        let before: String = self.word.chars().take(self.offset).collect();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let source_line = self.word.split('\n').nth(line - 1).unwrap_or("");
        crate::error::render_diagnostic(
            origin,
            &self.to_string(),
            crate::Position { line, column },
            1,
            source_line,
            Some(self.hint()),
        )
    }

    /// A hint telling the user what to write instead.
    pub fn hint(&self) -> &'static str {
        match self.kind {
            ExpandErrorKind::UnterminatedSingleQuote | ExpandErrorKind::UnterminatedDoubleQuote => {
                "close the quote, or escape it with the escape character to use it literally"
            }
            ExpandErrorKind::MissingBrace
            | ExpandErrorKind::MissingSlash
            | ExpandErrorKind::BadSubstitution
            | ExpandErrorKind::UnsupportedModifier(_) => {
                "write ${NAME}, ${NAME:-default}, ${NAME:+alt}, ${NAME:?message}, ${NAME#pat}, \
                 ${NAME%pat} or ${NAME/pat/repl}; write \\$ for a literal dollar"
            }
            ExpandErrorKind::Required { .. } => "set the variable with ARG or ENV (or --build-arg)",
            ExpandErrorKind::InvalidPattern(_) => {
                "in patterns only \\*, \\? and \\\\ may be escaped"
            }
            ExpandErrorKind::TooDeep => "nest ${...} substitutions less deeply",
            ExpandErrorKind::UnexpectedEnd(_) => "close the ${...} substitution",
        }
    }
}

/// The kinds of [`ExpandError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    /// `'abc` without the closing quote.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// `"abc` without the closing quote.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// `${abc` without `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${abc/pat` without the second `/`.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:x}`, `${{x}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${v:=x}` and other modifiers the Dockerfile lexer does not support.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${v?msg}` or `${v:?msg}` with `v` unset (or empty).
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message given after `?`, or the default one.
        message: String,
    },
    /// A `#`, `%` or `/` pattern with an invalid escape.
    #[error("invalid pattern in substitution: {0}")]
    InvalidPattern(String),
    /// Substitutions nested more deeply than the lexer allows.
    #[error("substitutions nested too deeply")]
    TooDeep,
    /// The word ended while looking for `c`.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnexpectedEnd(char),
}

/// Options of the lexer. The defaults are those of Dockerfile word expansion.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    /// The escape character (`\` or the `# escape=` directive's `` ` ``).
    pub escape: char,
    /// Keep quote characters in the output (used to detect quoted heredoc delimiters).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (heredoc bodies are expanded this way).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written instead of expanding them to "".
    pub skip_unset_env: bool,
}

/// Deepest `${...}` nesting accepted; deeper input is rejected instead of exhausting the stack.
const MAX_DEPTH: usize = 200;

/// The result of one expansion: the single string and its word split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word (as `expand_word` returns it).
    pub word: String,
    /// The word split into words (as `expand_words` returns them).
    pub words: Vec<String>,
}

impl Lexer {
    /// A lexer with the given escape character and all options off.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` and splits it into words.
    pub fn process(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        // Go's text/scanner reads an invalid UTF-8 byte as U+FFFD.
        let mut chars: Vec<char> = word.chars().map(crate::text::as_go_rune).collect();
        // Go's text/scanner drops a byte-order mark at the very start.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        let mut state = WordLexer {
            lex: self,
            chars: &chars,
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            words_buffer: String::new(),
            depth: 0,
        };
        match state.process_stop_on(None, self.raw_escapes) {
            Ok((word, words)) => Ok(Expansion { word, words }),
            Err(kind) => Err(ExpandError {
                word: word.to_string(),
                offset: state.pos,
                kind,
            }),
        }
    }

    /// Expands `word` to one string.
    pub fn expand_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        self.process(word, env).map(|e| e.word)
    }

    /// Expands `word` and splits it into words.
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        self.process(word, env).map(|e| e.words)
    }
}

/// Expands one word with the given escape character (`\` unless the Dockerfile's `escape`
/// directive says otherwise).
pub fn expand_word(word: &str, env: &dyn Env, escape: char) -> Result<String, ExpandError> {
    Lexer::new(escape).expand_word(word, env)
}

/// Expands one word and splits the result into words, as BuildKit does for `EXPOSE` and for
/// `kiln debug words`.
pub fn expand_words(word: &str, env: &dyn Env, escape: char) -> Result<Vec<String>, ExpandError> {
    Lexer::new(escape).expand_words(word, env)
}

/// Accumulates split words. The buffer lives in [`WordLexer`] and is shared with nested
/// `${...}` readers, exactly like BuildKit's (which makes a nested modifier drop the text
/// gathered before it from the split words; we reproduce that).
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn new() -> Self {
        Words {
            words: Vec::new(),
            in_word: false,
        }
    }

    fn add_char(&mut self, buf: &mut String, c: char) {
        if is_space(c) {
            if self.in_word && !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(buf, c);
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, c: char) {
        buf.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, buf: &mut String, s: &str) {
        for c in s.chars() {
            self.add_char(buf, c);
        }
    }

    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

struct WordLexer<'a> {
    lex: &'a Lexer,
    chars: &'a [char],
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    words_buffer: String,
    depth: usize,
}

type LexResult<T> = Result<T, ExpandErrorKind>;

impl WordLexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> LexResult<(String, Vec<String>)> {
        if self.depth >= MAX_DEPTH {
            return Err(ExpandErrorKind::TooDeep);
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        result
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> LexResult<(String, Vec<String>)> {
        let mut result = String::new();
        self.words_buffer.clear();
        let mut words = Words::new();

        while let Some(c) = self.peek() {
            if stop == Some(c) {
                self.next();
                let mut buf = std::mem::take(&mut self.words_buffer);
                let split = words.finish(&mut buf);
                self.words_buffer = buf;
                return Ok((result, split));
            }
            let special = match c {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' if !self.lex.skip_process_quotes => Some(self.process_single_quote()?),
                '"' if !self.lex.skip_process_quotes => Some(self.process_double_quote()?),
                _ => None,
            };
            if let Some(text) = special {
                result.push_str(&text);
                let mut buf = std::mem::take(&mut self.words_buffer);
                if c == '$' {
                    words.add_string(&mut buf, &text);
                } else {
                    words.add_raw_string(&mut buf, &text);
                }
                self.words_buffer = buf;
                continue;
            }
            self.next();
            let mut buf = std::mem::take(&mut self.words_buffer);
            if c == self.lex.escape {
                if self.raw_escapes {
                    words.add_raw_char(&mut buf, c);
                    result.push(c);
                }
                // The escape character escapes the next one; at the very end it vanishes.
                match self.next() {
                    Some(escaped) => {
                        words.add_raw_char(&mut buf, escaped);
                        result.push(escaped);
                    }
                    None => {
                        self.words_buffer = buf;
                        break;
                    }
                }
            } else {
                words.add_char(&mut buf, c);
                result.push(c);
            }
            self.words_buffer = buf;
        }
        if let Some(stop) = stop {
            return Err(ExpandErrorKind::UnexpectedEnd(stop));
        }
        let mut buf = std::mem::take(&mut self.words_buffer);
        let split = words.finish(&mut buf);
        self.words_buffer = buf;
        Ok((result, split))
    }

    fn process_single_quote(&mut self) -> LexResult<String> {
        // Everything up to the next single quote is literal; a single quote cannot be escaped.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> LexResult<String> {
        // Literal except `$` substitutions; the escape character escapes only `"`, `$` and
        // itself, and stays literal before anything else.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(_) => {
                    let Some(mut c) = self.next() else { continue };
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            result.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.next();
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(c);
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.env.get(name)
    }

    fn process_dollar(&mut self) -> LexResult<String> {
        self.next(); // the `$`
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // the `{`
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(op) = self.next() else {
            return Err(ExpandErrorKind::MissingBrace);
        };
        match op {
            '}' => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = op == ':';
                let mut modifier = String::from(op);
                let op = if null_is_unset {
                    match self.next() {
                        Some(c) => {
                            modifier.push(c);
                            c
                        }
                        None => return Err(ExpandErrorKind::MissingBrace),
                    }
                } else {
                    op
                };
                let raw_escapes = op == '#' || op == '%';
                if null_is_unset && raw_escapes {
                    return Err(ExpandErrorKind::UnsupportedModifier(modifier));
                }
                let word = match self.process_stop_on(Some('}'), raw_escapes) {
                    Ok((word, _)) => word,
                    Err(e) => {
                        return Err(if self.peek().is_none() {
                            match e {
                                ExpandErrorKind::TooDeep => e,
                                _ => ExpandErrorKind::MissingBrace,
                            }
                        } else {
                            e
                        });
                    }
                };
                let value = self.lookup(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset_or_null = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match op {
                    '-' => Ok(if unset_or_null {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if unset_or_null { String::new() } else { word }),
                    '?' => match value {
                        None => Err(ExpandErrorKind::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => {
                            Err(ExpandErrorKind::Required {
                                name,
                                message: if word.is_empty() {
                                    "is not allowed to be empty".into()
                                } else {
                                    word
                                },
                            })
                        }
                        Some(v) => Ok(v),
                    },
                    '#' | '%' => {
                        let (greedy, pat) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let value = value.unwrap_or_default();
                        let trimmed = if op == '%' {
                            pattern::trim_suffix(pat, &value, greedy)
                        } else {
                            pattern::trim_prefix(pat, &value, greedy)
                        };
                        trimmed.map_err(|e| ExpandErrorKind::InvalidPattern(e.to_string()))
                    }
                    _ => Err(ExpandErrorKind::UnsupportedModifier(modifier)),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pat = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(ExpandErrorKind::TooDeep) => return Err(ExpandErrorKind::TooDeep),
                    Err(_) if self.peek().is_none() => return Err(ExpandErrorKind::MissingSlash),
                    Err(e) => return Err(e),
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(ExpandErrorKind::TooDeep) => return Err(ExpandErrorKind::TooDeep),
                    Err(_) if self.peek().is_none() => return Err(ExpandErrorKind::MissingBrace),
                    Err(e) => return Err(e),
                };
                let value = self.lookup(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pat}/{replacement}}}"));
                }
                pattern::replace(&pat, &value.unwrap_or_default(), &replacement, all)
                    .map_err(|e| ExpandErrorKind::InvalidPattern(e.to_string()))
            }
            other => Err(ExpandErrorKind::UnsupportedModifier(other.to_string())),
        }
    }

    /// Reads a variable name: a run of digits (positional parameter), one special parameter
    /// character, or letters, digits and `_`.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_digit(c) {
                while let Some(d) = self.peek().filter(|&d| is_digit(d)) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(c) {
                self.next();
                return c.to_string();
            }
            if !is_letter(c) && !is_digit(c) && c != '_' {
                break;
            }
            self.next();
            name.push(c);
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next(); // the first `<`
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut result = String::from("<<");
        // The delimiter may be separated from `<<` by blanks; keep them in the same word.
        while let Some(c) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            result.push(c);
            self.next();
        }
        result
    }
}

/// POSIX special parameters (`$@`, `$*`, `$#`, `$?`, `$-`, `$$`, `$!`, `$0`); never set here.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvList {
        EnvList::from_pairs([("PWD", "/home"), ("SHELL", "bash"), ("NULL", "")])
    }

    #[test]
    fn mandatory_vars() {
        let lex = Lexer::new('\\');
        let set = EnvList::from_pairs([("VAR", "plain"), ("ARG", "x")]);
        let empty = EnvList::from_pairs([("VAR", ""), ("ARG", "x")]);
        let unset = EnvList::from_pairs([("ARG", "x")]);
        let no_empty = "${VAR:?message here$ARG}";
        let no_unset = "${VAR?message here$ARG}";
        assert_eq!(lex.expand_word(no_empty, &set).unwrap(), "plain");
        let e = lex.expand_word(no_empty, &empty).unwrap_err();
        assert!(e.to_string().contains("message herex"), "{e}");
        let required = ExpandErrorKind::Required {
            name: "VAR".into(),
            message: "message herex".into(),
        };
        assert_eq!(
            lex.expand_word(no_empty, &unset).unwrap_err().kind,
            required
        );
        assert_eq!(lex.expand_word(no_unset, &set).unwrap(), "plain");
        assert_eq!(lex.expand_word(no_unset, &empty).unwrap(), "");
        assert_eq!(
            lex.expand_word(no_unset, &unset).unwrap_err().kind,
            required
        );
    }

    #[test]
    fn patterns_in_substitution() {
        let e = EnvList::from_pairs([("V", "a/b/c.tar.gz")]);
        let x = |w: &str| expand_word(w, &e, '\\').unwrap();
        assert_eq!(x("${V#*/}"), "b/c.tar.gz");
        assert_eq!(x("${V##*/}"), "c.tar.gz");
        assert_eq!(x("${V%.*}"), "a/b/c.tar");
        assert_eq!(x("${V%%.*}"), "a/b/c");
        assert_eq!(x("${V/\\//-}"), "a-b/c.tar.gz");
        assert_eq!(x("${V//\\//-}"), "a-b-c.tar.gz");
        assert_eq!(
            expand_word("${V:#x}", &e, '\\').unwrap_err().kind,
            ExpandErrorKind::UnsupportedModifier(":#".into())
        );
    }

    #[test]
    fn backtick_escape() {
        assert_eq!(expand_word("a`$PWD", &env(), '`').unwrap(), "a$PWD");
        assert_eq!(expand_word("a\\b", &env(), '`').unwrap(), "a\\b");
    }

    #[test]
    fn render_points_at_the_problem() {
        let e = expand_word("ab${x", &env(), '\\').unwrap_err();
        let r = e.render("<word>");
        assert!(r.contains("<word>:1:6"), "{r}");
        assert!(r.contains("1 | ab${x"), "{r}");
        assert!(r.contains("hint:"), "{r}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let word = "${a:-".repeat(10_000);
        assert_eq!(
            expand_word(&word, &env(), '\\').unwrap_err().kind,
            ExpandErrorKind::TooDeep
        );
    }

    #[test]
    fn skip_unset_keeps_references() {
        let mut lex = Lexer::new('\\');
        lex.skip_unset_env = true;
        lex.raw_quotes = true;
        assert_eq!(
            lex.expand_word("$X ${Y} ${Z:-q}", &NoEnv).unwrap(),
            "$X ${Y} ${Z:-q}"
        );
    }
}
