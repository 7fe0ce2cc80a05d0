//! `--flag[=value]` handling of instructions, with BuildKit's rules (`BFlags`).
//!
//! Each instruction declares the flags it knows; the words are then checked: unknown flags
//! get a "did you mean", a flag other than a list flag may not repeat, a string flag needs
//! `=value`, a bool flag takes nothing or `=true`/`=false`, and `--` ends the flags.

use std::collections::BTreeMap;

use crate::error::suggest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    String,
    Strings,
}

/// A flag problem, with the flag word it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlagError {
    pub(crate) message: String,
    pub(crate) flag: String,
    pub(crate) hint: Option<String>,
}

/// The flags an instruction accepts and, after [`Flags::parse`], their values.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    kinds: BTreeMap<&'static str, FlagKind>,
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn bool(mut self, name: &'static str) -> Self {
        self.kinds.insert(name, FlagKind::Bool);
        self
    }

    pub(crate) fn string(mut self, name: &'static str) -> Self {
        self.kinds.insert(name, FlagKind::String);
        self
    }

    pub(crate) fn strings(mut self, name: &'static str) -> Self {
        self.kinds.insert(name, FlagKind::Strings);
        self
    }

    /// Checks `words` (the node's flags) against the declared flags and records values.
    pub(crate) fn parse(mut self, words: &[String], keyword: &str) -> Result<Self, FlagError> {
        for word in words {
            if word == "--" {
                break;
            }
            let Some(body) = word.strip_prefix("--") else {
                return Err(FlagError {
                    message: format!("arg should start with -- : {word}"),
                    flag: word.clone(),
                    hint: Some(format!("write flags as --name=value, e.g. --{word}")),
                });
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some((&static_name, &kind)) = self.kinds.get_key_value(name) else {
                let known: Vec<&str> = self.kinds.keys().copied().collect();
                let hint = match suggest(name, &known) {
                    Some(s) => format!("did you mean {s}?"),
                    None if known.is_empty() => format!("{keyword} takes no flags"),
                    None => format!(
                        "{keyword} accepts {}",
                        known
                            .iter()
                            .map(|k| format!("--{k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(FlagError {
                    message: format!("unknown flag: --{name}"),
                    flag: word.clone(),
                    hint: Some(hint),
                });
            };
            if kind != FlagKind::Strings && self.values.contains_key(static_name) {
                return Err(FlagError {
                    message: format!("duplicate flag specified: --{name}"),
                    flag: word.clone(),
                    hint: Some(format!("give --{name} only once")),
                });
            }
            let value = match kind {
                FlagKind::Bool => match value {
                    Some("") => {
                        return Err(FlagError {
                            message: format!("missing a value on flag: --{name}"),
                            flag: word.clone(),
                            hint: Some(format!(
                                "write --{name} or --{name}=true or --{name}=false"
                            )),
                        });
                    }
                    None => "true".to_string(),
                    Some(v) => match v.to_lowercase().as_str() {
                        "true" => "true".to_string(),
                        "false" => "false".to_string(),
                        _ => {
                            return Err(FlagError {
                                message: format!(
                                    "expecting boolean value for flag --{name}, not: {v}"
                                ),
                                flag: word.clone(),
                                hint: Some(format!("write --{name}=true or --{name}=false")),
                            });
                        }
                    },
                },
                FlagKind::String | FlagKind::Strings => match value {
                    Some(v) => v.to_string(),
                    None => {
                        return Err(FlagError {
                            message: format!("missing a value on flag: --{name}"),
                            flag: word.clone(),
                            hint: Some(format!("write --{name}=<value>")),
                        });
                    }
                },
            };
            self.values.entry(static_name).or_default().push(value);
        }
        Ok(self)
    }

    /// The value of a string flag, if given.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }

    /// All values of a list flag.
    pub(crate) fn get_all(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// A bool flag: `Some(value)` if given.
    pub(crate) fn get_bool(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| v == "true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rules() {
        let f = Flags::new().bool("link").string("from").strings("exclude");
        let f = f
            .parse(
                &words(&["--link", "--from=a", "--exclude=x", "--exclude=y"]),
                "COPY",
            )
            .unwrap();
        assert_eq!(f.get_bool("link"), Some(true));
        assert_eq!(f.get("from").as_deref(), Some("a"));
        assert_eq!(f.get_all("exclude"), ["x", "y"]);

        let e = Flags::new()
            .string("from")
            .parse(&words(&["--form=a"]), "COPY")
            .unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean from?"));
        let from = |args: &[&str]| {
            Flags::new()
                .string("from")
                .parse(&words(args), "COPY")
                .unwrap_err()
                .message
        };
        let link = |args: &[&str]| {
            Flags::new()
                .bool("link")
                .parse(&words(args), "COPY")
                .unwrap_err()
                .message
        };
        assert_eq!(from(&["--from"]), "missing a value on flag: --from");
        assert_eq!(
            from(&["--from=a", "--from=b"]),
            "duplicate flag specified: --from"
        );
        assert_eq!(link(&["--link="]), "missing a value on flag: --link");
        assert_eq!(
            link(&["--link=yes"]),
            "expecting boolean value for flag --link, not: yes"
        );
        assert_eq!(
            Flags::new()
                .bool("link")
                .parse(&words(&["--link=FALSE"]), "COPY")
                .unwrap()
                .get_bool("link"),
            Some(false)
        );
        assert_eq!(
            Flags::new()
                .parse(&words(&["-x"]), "COPY")
                .unwrap_err()
                .message,
            "arg should start with -- : -x"
        );
        assert!(Flags::new().parse(&words(&["--", "--x"]), "COPY").is_ok());
    }
}
