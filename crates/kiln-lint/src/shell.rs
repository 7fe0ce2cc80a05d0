//! Enough of a POSIX shell reader to see which commands a `RUN` runs: the script is split into
//! simple commands on `&&`, `||`, `;`, `|`, `&`, newlines and parentheses; quotes and
//! backslashes are removed; redirections are dropped; nested heredoc bodies are skipped;
//! compound-statement keywords (`if`, `then`, `do`, ...), leading `NAME=value` assignments and
//! wrappers (`sudo`, `env`, `exec`, `command`, `nohup`, `time`) are peeled off; and
//! `sh -c '…'` / `bash -ec "…"` scripts are read recursively.
//!
//! It never runs or expands anything: `$VAR` stays as written.

/// One simple command of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The words, quotes removed, wrappers and assignments peeled off. Never empty.
    pub words: Vec<String>,
    /// `NAME=value` assignments written before the command (and those given to `env`).
    pub env: Vec<(String, String)>,
    /// The program word as written in the source (for locating the command in the file).
    pub anchor: String,
}

impl Command {
    /// The program's base name: `/usr/bin/apt-get` → `apt-get`.
    pub fn program(&self) -> &str {
        let first = self.words.first().map(String::as_str).unwrap_or("");
        first.rsplit('/').next().unwrap_or(first)
    }

    /// The words after the program.
    pub fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or(&[])
    }

    /// True when one of the arguments is exactly `word`.
    pub fn has_arg(&self, word: &str) -> bool {
        self.args().iter().any(|a| a == word)
    }
}

/// Splits a shell script into its simple commands, in order.
///
/// ```
/// let cmds = kiln_lint::shell::commands("set -e; DEBIAN_FRONTEND=noninteractive apt-get -y install \\\n  curl && sh -c 'rm -rf /var/lib/apt/lists/*'");
/// let programs: Vec<_> = cmds.iter().map(|c| c.program()).collect();
/// assert_eq!(programs, ["set", "apt-get", "rm"]);
/// assert_eq!(cmds[1].env, [("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned())]);
/// ```
pub fn commands(script: &str) -> Vec<Command> {
    let mut out = Vec::new();
    commands_into(script, 0, &mut out);
    out
}

/// Reads an exec-form argv (`["sh", "-c", "…"]` or `["apt-get", "install", …]`).
pub fn commands_of_argv(argv: &[String]) -> Vec<Command> {
    let mut out = Vec::new();
    let raw: Vec<Word> = argv
        .iter()
        .map(|w| Word {
            text: w.clone(),
            raw: w.clone(),
        })
        .collect();
    finish_command(raw, 0, &mut out);
    out
}

#[derive(Debug, Clone)]
struct Word {
    text: String,
    raw: String,
}

const MAX_DEPTH: usize = 8;

fn commands_into(script: &str, depth: usize, out: &mut Vec<Command>) {
    for words in split(script) {
        finish_command(words, depth, out);
    }
}

fn is_assignment(word: &str) -> bool {
    let Some((name, _)) = word.split_once('=') else {
        return false;
    };
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

const KEYWORDS: [&str; 12] = [
    "if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "fi", "done",
];

fn finish_command(mut words: Vec<Word>, depth: usize, out: &mut Vec<Command>) {
    let mut env = Vec::new();
    loop {
        let Some(first) = words.first() else {
            return;
        };
        let text = first.text.as_str();
        if KEYWORDS.contains(&text) || text == "time" || text == "exec" || text == "nohup" {
            words.remove(0);
        } else if is_assignment(text) {
            if let Some((k, v)) = text.split_once('=') {
                env.push((k.to_owned(), v.to_owned()));
            }
            words.remove(0);
        } else if matches!(
            text,
            "sudo" | "env" | "command" | "xargs" | "nice" | "timeout"
        ) {
            let takes_value: &[&str] = match text {
                "xargs" => &["-n", "-I", "-L", "-P", "-d", "-a", "-E", "-s"],
                "nice" => &["-n"],
                "timeout" => &["-s", "-k"],
                _ => &["-u", "-g"],
            };
            let positional_first = text == "timeout";
            words.remove(0);
            // Options of the wrapper (`sudo -E -u root`, `env -i`, `xargs -r -n 1`): drop
            // them, with the value of those that take one; `timeout` also has its duration.
            while let Some(w) = words.first() {
                if takes_value.contains(&w.text.as_str()) {
                    words.drain(..words.len().min(2));
                } else if w.text.starts_with('-') && w.text.len() > 1 {
                    words.remove(0);
                } else {
                    break;
                }
            }
            if positional_first && !words.is_empty() {
                words.remove(0);
            }
        } else {
            break;
        }
    }
    // `for x in a b; do` and `case`: the header is not a command that matters here.
    if matches!(
        words.first().map(|w| w.text.as_str()),
        Some("for" | "case" | "esac" | "in")
    ) {
        return;
    }
    let program = words[0]
        .text
        .rsplit('/')
        .next()
        .unwrap_or(&words[0].text)
        .to_owned();
    if depth < MAX_DEPTH && matches!(program.as_str(), "sh" | "bash" | "dash" | "ash" | "zsh") {
        // `sh -c SCRIPT`, `bash -euxo pipefail -c SCRIPT`, `sh -ec SCRIPT`.
        let mut i = 1;
        let mut has_c = false;
        while i < words.len() {
            let w = &words[i].text;
            if w == "-o" || w == "+o" {
                i += 2;
                continue;
            }
            if (w.starts_with('-') || w.starts_with('+')) && w.len() > 1 && !w.starts_with("--") {
                if w.contains('c') {
                    has_c = true;
                    i += 1;
                    break;
                }
                // `-euxo pipefail`: a trailing `o` takes the next word.
                i += if w.ends_with('o') { 2 } else { 1 };
                continue;
            }
            if w.starts_with("--") {
                i += 1;
                continue;
            }
            break;
        }
        if has_c && let Some(script) = words.get(i) {
            let before = out.len();
            commands_into(&script.text, depth + 1, out);
            for cmd in &mut out[before..] {
                let mut merged = env.clone();
                merged.append(&mut cmd.env);
                cmd.env = merged;
            }
            return;
        }
    }
    let anchor = words[0].raw.clone();
    out.push(Command {
        words: words.into_iter().map(|w| w.text).collect(),
        env,
        anchor,
    });
}

#[derive(Default)]
struct Tok {
    commands: Vec<Vec<Word>>,
    words: Vec<Word>,
    text: String,
    raw: String,
    in_word: bool,
    skip_next_word: bool,
}

impl Tok {
    fn end_word(&mut self) {
        if self.in_word {
            if self.skip_next_word {
                self.skip_next_word = false;
            } else {
                self.words.push(Word {
                    text: std::mem::take(&mut self.text),
                    raw: std::mem::take(&mut self.raw),
                });
            }
            self.text.clear();
            self.raw.clear();
            self.in_word = false;
        }
    }

    fn end_command(&mut self) {
        self.end_word();
        if !self.words.is_empty() {
            self.commands.push(std::mem::take(&mut self.words));
        }
    }
}

/// The tokenizer: script → commands → words.
fn split(script: &str) -> Vec<Vec<Word>> {
    let chars: Vec<char> = script.chars().collect();
    let mut t = Tok::default();
    let mut pending_heredocs: Vec<(String, bool)> = Vec::new();
    let mut i = 0;

    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                if chars.get(i + 1) == Some(&'\n') {
                    i += 2;
                    continue;
                }
                if let Some(&next) = chars.get(i + 1) {
                    t.text.push(next);
                    t.raw.push(c);
                    t.raw.push(next);
                    t.in_word = true;
                }
                i += 2;
            }
            '\'' => {
                t.in_word = true;
                t.raw.push(c);
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    t.text.push(chars[i]);
                    t.raw.push(chars[i]);
                    i += 1;
                }
                t.raw.push('\'');
                i += 1;
            }
            '"' => {
                t.in_word = true;
                t.raw.push(c);
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\'
                        && matches!(chars.get(i + 1), Some('"' | '\\' | '$' | '`' | '\n'))
                    {
                        if chars[i + 1] != '\n' {
                            t.text.push(chars[i + 1]);
                        }
                        t.raw.push(chars[i]);
                        t.raw.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    t.text.push(chars[i]);
                    t.raw.push(chars[i]);
                    i += 1;
                }
                t.raw.push('"');
                i += 1;
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                // Command or arithmetic substitution: kept in the word, parentheses balanced.
                t.in_word = true;
                let mut level = 0usize;
                while i < chars.len() {
                    let ch = chars[i];
                    t.text.push(ch);
                    t.raw.push(ch);
                    i += 1;
                    if ch == '(' {
                        level += 1;
                    } else if ch == ')' {
                        level = level.saturating_sub(1);
                        if level == 0 {
                            break;
                        }
                    }
                }
            }
            '`' => {
                t.in_word = true;
                t.text.push(c);
                t.raw.push(c);
                i += 1;
                while i < chars.len() && chars[i] != '`' {
                    t.text.push(chars[i]);
                    t.raw.push(chars[i]);
                    i += 1;
                }
                t.text.push('`');
                t.raw.push('`');
                i += 1;
            }
            '#' if !t.in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ' ' | '\t' | '\r' => {
                t.end_word();
                i += 1;
            }
            '\n' => {
                t.end_command();
                i += 1;
                // Bodies of heredocs started on this line.
                for (delim, strip_tabs) in std::mem::take(&mut pending_heredocs) {
                    while i < chars.len() {
                        let start = i;
                        while i < chars.len() && chars[i] != '\n' {
                            i += 1;
                        }
                        let line: String = chars[start..i].iter().collect();
                        i += 1;
                        let line = if strip_tabs {
                            line.trim_start_matches('\t')
                        } else {
                            line.as_str()
                        };
                        if line == delim {
                            break;
                        }
                    }
                }
            }
            ';' | '|' | '(' | ')' => {
                t.end_command();
                i += 1;
                while i < chars.len() && matches!(chars[i], ';' | '|' | '&') && c != '(' {
                    i += 1;
                }
            }
            '&' => {
                if chars.get(i + 1) == Some(&'>') {
                    // `&>file`, `&>>file`.
                    t.end_word();
                    i += 2;
                    if chars.get(i) == Some(&'>') {
                        i += 1;
                    }
                    t.skip_next_word = true;
                    continue;
                }
                t.end_command();
                i += 1;
                if chars.get(i) == Some(&'&') {
                    i += 1;
                }
            }
            '>' | '<' => {
                // A redirection: a leading fd number belongs to it, and so does the next word.
                if t.in_word && t.text.chars().all(|ch| ch.is_ascii_digit()) && !t.text.is_empty() {
                    t.text.clear();
                    t.raw.clear();
                    t.in_word = false;
                } else {
                    t.end_word();
                }
                let heredoc = c == '<' && chars.get(i + 1) == Some(&'<');
                let mut strip_tabs = false;
                i += 1;
                if heredoc {
                    i += 1;
                    if chars.get(i) == Some(&'-') {
                        strip_tabs = true;
                        i += 1;
                    } else if chars.get(i) == Some(&'<') {
                        // `<<<word`: a here-string.
                        i += 1;
                        t.skip_next_word = true;
                        continue;
                    }
                }
                while i < chars.len() && matches!(chars[i], '>' | '&' | '|') {
                    i += 1;
                }
                if chars.get(i - 1) == Some(&'&')
                    && chars
                        .get(i)
                        .is_some_and(|ch| ch.is_ascii_digit() || *ch == '-')
                {
                    // `2>&1`, `>&-`.
                    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '-') {
                        i += 1;
                    }
                    continue;
                }
                while i < chars.len() && matches!(chars[i], ' ' | '\t') {
                    i += 1;
                }
                if heredoc {
                    let start = i;
                    while i < chars.len()
                        && !matches!(chars[i], ' ' | '\t' | '\n' | ';' | '&' | '|')
                    {
                        i += 1;
                    }
                    let delim: String = chars[start..i]
                        .iter()
                        .filter(|ch| !matches!(ch, '\'' | '"' | '\\'))
                        .collect();
                    pending_heredocs.push((delim, strip_tabs));
                    continue;
                }
                t.skip_next_word = true;
            }
            _ => {
                t.text.push(c);
                t.raw.push(c);
                t.in_word = true;
                i += 1;
            }
        }
    }
    t.end_command();
    t.commands
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progs(script: &str) -> Vec<Vec<String>> {
        commands(script).into_iter().map(|c| c.words).collect()
    }

    #[test]
    fn splits_on_every_operator() {
        let got = progs("a 1 && b 2; c || d | e & f\ng (h) {\n i; }");
        let firsts: Vec<_> = got.iter().map(|w| w[0].as_str()).collect();
        assert_eq!(firsts, ["a", "b", "c", "d", "e", "f", "g", "h", "i"]);
    }

    #[test]
    fn quotes_and_escapes_are_removed() {
        let got = progs(r#"rm -rf '/var/lib/apt/lists/'* "/tmp/a b" c\ d"#);
        assert_eq!(
            got[0],
            ["rm", "-rf", "/var/lib/apt/lists/*", "/tmp/a b", "c d"]
        );
    }

    #[test]
    fn redirections_and_their_targets_are_dropped() {
        let got = progs("apt-get update >/dev/null 2>&1 && echo x > /f 2> /e &>/g");
        assert_eq!(got[0], ["apt-get", "update"]);
        assert_eq!(got[1], ["echo", "x"]);
    }

    #[test]
    fn sh_c_is_unwrapped_with_env() {
        let cmds = commands("X=1 bash -euxo pipefail -c \"apt-get install -y a && rm -rf /x\"");
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].program(), "apt-get");
        assert_eq!(cmds[0].env, [("X".to_owned(), "1".to_owned())]);
        assert_eq!(cmds[1].program(), "rm");
    }

    #[test]
    fn wrappers_keywords_and_comments_are_peeled() {
        let got = progs(
            "if [ -f x ]; then sudo -E env A=b apt-get install y; fi # apt-get upgrade\nfor p in a b; do pip install $p; done",
        );
        assert_eq!(got[0][0], "[");
        assert_eq!(got[1], ["apt-get", "install", "y"]);
        assert_eq!(got[2], ["pip", "install", "$p"]);
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn xargs_timeout_and_nice_are_wrappers() {
        let got = progs(
            "xargs -r -n 1 apt-get install -y < pkgs; timeout -s KILL 60 pip install x; nice -n 5 make",
        );
        assert_eq!(got[0], ["apt-get", "install", "-y"]);
        assert_eq!(got[1], ["pip", "install", "x"]);
        assert_eq!(got[2], ["make"]);
    }

    #[test]
    fn nested_heredoc_bodies_are_skipped() {
        let got = progs("cat <<-EOT > /etc/x\n\tapt-get upgrade\n\tEOT\nrm -f /y");
        assert_eq!(got, [vec!["cat"], vec!["rm", "-f", "/y"]]);
    }

    #[test]
    fn substitutions_stay_in_one_word() {
        let got = progs("echo $(dpkg --print-architecture && x) `uname -m`; y");
        assert_eq!(got[0].len(), 3);
        assert_eq!(got[1], ["y"]);
    }

    #[test]
    fn exec_form_argv() {
        let argv: Vec<String> = ["/bin/sh", "-c", "apt-get update && apt-get install -y a"]
            .map(String::from)
            .to_vec();
        let cmds = commands_of_argv(&argv);
        assert_eq!(cmds.len(), 2);
        let plain: Vec<String> = ["pip3", "install", "x"].map(String::from).to_vec();
        assert_eq!(commands_of_argv(&plain)[0].program(), "pip3");
    }
}
