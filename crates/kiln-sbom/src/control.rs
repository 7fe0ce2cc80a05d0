//! Deb822 / RFC 822 style paragraphs: `Field: value` lines, continuation lines that start
//! with a space or tab, paragraphs separated by blank lines. dpkg's status file, DEP-5
//! copyright files and Python's METADATA headers all use it.

/// One paragraph's fields in order; a field may repeat (METADATA's `Classifier`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Paragraph {
    fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The first value of a field (names compare case-insensitively, as Debian's do).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Paragraphs of a text; `stop_after_first` reads only the header block (METADATA, whose
/// body after the first blank line is the long description).
pub fn paragraphs(text: &str, stop_after_first: bool) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut current = Paragraph::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
                if stop_after_first {
                    return out;
                }
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim_start());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) => current
                .fields
                .push((name.trim().to_owned(), value.trim().to_owned())),
            // Not a field: the text is not deb822; keep what came before.
            None => continue,
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_continuations_and_paragraphs() {
        let text = "Package: a\nDescription: short\n long line\n .\n more\n\n\nPackage: b\nclassifier: x\nClassifier: y\n";
        let ps = paragraphs(text, false);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("package"), Some("a"));
        assert_eq!(ps[0].get("Description"), Some("short\nlong line\n.\nmore"));
        assert_eq!(ps[1].all("Classifier").collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(paragraphs(text, true).len(), 1);
    }
}
