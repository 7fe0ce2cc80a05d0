//! Heredoc detection on `RUN`, `COPY` and `ADD` lines (`<<EOF`, `<<-EOF`, `<<'EOF'`,
//! `3<<EOF`, several per line), following BuildKit's `heredocsFromLine`.

use crate::ast::Heredoc;
use crate::shell::{ExpandError, Lexer, NoEnv};

/// The start of a heredoc found on an instruction line (its body is read later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocStart {
    pub(crate) name: String,
    pub(crate) fd: u64,
    pub(crate) expand: bool,
    pub(crate) chomp: bool,
}

impl HeredocStart {
    pub(crate) fn with_content(self, content: String) -> Heredoc {
        Heredoc {
            name: self.name,
            fd: self.fd,
            expand: self.expand,
            chomp: self.chomp,
            content,
        }
    }
}

/// Finds every heredoc start on `line`. The line is split into words with the shell lexer
/// (always with `\` as escape, quotes and escapes kept, unset variables left as written);
/// every word that looks like `[fd]<<[-]NAME` starts a heredoc.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<HeredocStart>, ExpandError> {
    let lexer = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    // A line the lexer cannot split has no heredocs (BuildKit ignores this error).
    let words = lexer.expand_words(line, &NoEnv).unwrap_or_default();
    let mut out = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc(&word)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// Parses one word as a heredoc start (BuildKit's `ParseHeredoc`, regex
/// `^(\d*)<<(-?)\s*([^<]*)$`).
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<HeredocStart>, ExpandError> {
    let digits_end = word
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(word.len());
    let Some(after) = word[digits_end..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(['\t', '\n', '\u{0c}', '\r', ' ']);
    if rest.contains('<') {
        return Ok(None);
    }
    // Go's ParseUint: empty → 0 (error ignored); overflow → the maximum value.
    let fd_digits = &word[..digits_end];
    let fd = if fd_digits.is_empty() {
        0
    } else {
        fd_digits.parse::<u64>().unwrap_or(u64::MAX)
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let mut lexer = Lexer {
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let words = lexer.expand_words(rest, &NoEnv)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    lexer.raw_quotes = true;
    let raw_words = lexer.expand_words(rest, &NoEnv)?;
    let [raw_name] = raw_words.as_slice() else {
        // BuildKit reports "internal lexing of heredoc produced inconsistent results"; the
        // word is not treated as a heredoc here.
        return Ok(None);
    };
    // Any quote anywhere in the delimiter turns expansion of the body off.
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(HeredocStart {
        name: name.clone(),
        fd,
        expand: quotes(name) == quotes(raw_name),
        chomp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::ExpandErrorKind;

    #[test]
    fn helpers_like_buildkit() {
        for valid in [
            "<<EOF",
            "<<'EOF'",
            r#"<<"EOF""#,
            "<<-EOF",
            "<<-'EOF'",
            r#"<<-"EOF""#,
            r#"<<EO"F""#,
            "<< EOF",
            "<<- EOF",
        ] {
            let h = parse_heredoc(valid)
                .unwrap()
                .unwrap_or_else(|| panic!("{valid}"));
            assert_eq!(h.name, "EOF", "{valid}");
        }
        for (invalid, kind) in [
            ("<<'EOF", ExpandErrorKind::UnterminatedSingleQuote),
            ("<<\"EOF", ExpandErrorKind::UnterminatedDoubleQuote),
            ("<<EOF'", ExpandErrorKind::UnterminatedSingleQuote),
            ("<<EOF\"", ExpandErrorKind::UnterminatedDoubleQuote),
        ] {
            assert_eq!(parse_heredoc(invalid).unwrap_err().kind, kind, "{invalid}");
        }
        for not in [
            "", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh", "<<EOF<", "EOF<<",
        ] {
            assert_eq!(parse_heredoc(not).unwrap(), None, "{not}");
        }
        let h = parse_heredoc("3<<-'E'O\\'F").unwrap().unwrap();
        assert_eq!(
            (h.fd, h.chomp, h.expand, h.name.as_str()),
            (3, true, false, "EO'F")
        );
    }

    #[test]
    fn several_on_one_line() {
        let hs = heredocs_from_line("COPY <<FILE1 <<-\"FILE2\" /dest").unwrap();
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[0].name, "FILE1");
        assert!(hs[1].chomp && !hs[1].expand);
        assert!(
            heredocs_from_line("RUN \"<<NOHEREDOC\"")
                .unwrap()
                .is_empty()
        );
    }
}
