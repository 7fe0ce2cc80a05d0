//! The build context: a directory, filtered by `.dockerignore` with docker's pattern rules.
//!
//! Docker's rules, as its CLI applies them: one pattern a line, `#` comments, blank lines
//! skipped, each pattern cleaned (`./a/../b` is `b`) with leading `/` dropped, `**` matching any
//! number of directories, `!` re-including, and the last matching pattern winning. A pattern
//! that matches a directory excludes everything below it.

use std::path::{Path, PathBuf};

use globset::GlobMatcher;

use crate::Error;

/// One `.dockerignore` line.
#[derive(Debug, Clone)]
struct Pattern {
    matcher: GlobMatcher,
    exclusion: bool,
    /// The pattern, cleaned, as BuildKit's `Pattern.String()` gives it.
    text: String,
}

/// The compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

impl IgnoreRules {
    /// Parses `.dockerignore` text.
    pub fn parse(text: &str) -> Result<IgnoreRules, Error> {
        let mut rules = IgnoreRules::default();
        for (number, line) in text.lines().enumerate() {
            if line.trim().starts_with('#') {
                continue;
            }
            rules.push(line, || format!(".dockerignore line {}", number + 1))?;
        }
        Ok(rules)
    }

    /// Rules from patterns given one by one, as `COPY --exclude=PATTERN` gives them (BuildKit's
    /// patternmatcher): `.dockerignore`'s syntax, without comments.
    pub fn from_patterns<'p>(
        patterns: impl IntoIterator<Item = &'p str>,
        flag: &str,
    ) -> Result<IgnoreRules, Error> {
        let mut rules = IgnoreRules::default();
        for pattern in patterns {
            rules.push(pattern, || format!("{flag}={pattern}"))?;
        }
        Ok(rules)
    }

    /// Adds one pattern; `origin` names it in errors.
    fn push(&mut self, line: &str, origin: impl Fn() -> String) -> Result<(), Error> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        let (exclusion, raw) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if exclusion && raw.is_empty() {
            // BuildKit's words for a lone `!`.
            return Err(Error::BadInput(format!(
                "{}: illegal exclusion pattern: \"!\"",
                origin()
            )));
        }
        let cleaned = clean_path(raw);
        if cleaned.is_empty() {
            return Ok(());
        }
        let glob = globset::GlobBuilder::new(&cleaned)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| {
                Error::BadInput(format!("{}: {raw:?} is not a valid pattern: {e}", origin()))
            })?;
        self.patterns.push(Pattern {
            matcher: glob.compile_matcher(),
            exclusion,
            text: cleaned,
        });
        Ok(())
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Reads the ignore file of a build: `<Dockerfile>.dockerignore` beside the Dockerfile if
    /// there is one, else `<context>/.dockerignore`, else no rules.
    pub fn load(context: &Path, dockerfile: Option<&Path>) -> Result<IgnoreRules, Error> {
        let own = dockerfile.and_then(|f| {
            let name = f.file_name()?.to_string_lossy().into_owned();
            Some(f.with_file_name(format!("{name}.dockerignore")))
        });
        let path = match own {
            Some(own) if own.is_file() => own,
            _ => context.join(".dockerignore"),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => IgnoreRules::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IgnoreRules::default()),
            Err(e) => Err(Error::io("read", path)(e)),
        }
    }

    /// Whether a context-relative path (`a/b/c`) is excluded.
    pub fn is_excluded(&self, relative: &str) -> bool {
        let mut excluded = false;
        for pattern in &self.patterns {
            if pattern.exclusion != excluded {
                continue;
            }
            if matches_self_or_parent(&pattern.matcher, relative) {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// Whether any `!` pattern exists; then an excluded directory must still be walked, since
    /// something below it may be re-included.
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// The build check `CopyIgnoredFile` (BuildKit's `validateCopySourcePath`): the source of
    /// a COPY or ADD from the context, cleaned, when these rules exclude it. Rules with
    /// exclusions are not judged (a directory may be excluded and a file in it not); the
    /// context root only when a pattern ignores every entry of it (`*`, `**`, `**/*`). An
    /// absolute source is never matched, as BuildKit matches it as written.
    pub fn copy_source_ignored(&self, source: &str) -> Option<String> {
        if self.is_empty() || self.has_exclusions() {
            return None;
        }
        let absolute = source.starts_with('/');
        let relative = clean_path(source);
        let cleaned = match (absolute, relative.is_empty()) {
            (true, true) => "/".to_owned(),
            (false, true) => ".".to_owned(),
            (true, false) => return None,
            (false, false) => relative,
        };
        if cleaned == "." || cleaned == "/" {
            let whole_root = self
                .patterns
                .iter()
                .any(|p| matches!(p.text.as_str(), "*" | "**" | "**/*"));
            return whole_root.then_some(cleaned);
        }
        self.is_excluded(&cleaned).then_some(cleaned)
    }
}

fn matches_self_or_parent(matcher: &GlobMatcher, relative: &str) -> bool {
    if matcher.is_match(relative) {
        return true;
    }
    let mut end = relative.len();
    while let Some(slash) = relative[..end].rfind('/') {
        if matcher.is_match(&relative[..slash]) {
            return true;
        }
        end = slash;
    }
    false
}

/// Lexically cleans a slash path as Go's `filepath.Clean` does, without a leading `/`.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// A build context on disk.
#[derive(Debug, Clone)]
pub struct Context {
    /// The context root; `None` for `kiln build -` (no context).
    pub root: Option<PathBuf>,
    /// Its `.dockerignore`.
    pub ignore: IgnoreRules,
}

impl Context {
    /// Opens a context directory and reads its ignore file: the Dockerfile's own
    /// (`Dockerfile.dockerignore`) if there is one, else the context's `.dockerignore`.
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> Result<Context, Error> {
        let meta = std::fs::metadata(root).map_err(Error::io("open build context", root))?;
        if !meta.is_dir() {
            return Err(Error::BadInput(format!(
                "build context {} is not a directory",
                root.display()
            )));
        }
        Ok(Context {
            root: Some(root.to_path_buf()),
            ignore: IgnoreRules::load(root, dockerfile)?,
        })
    }

    /// No context (the Dockerfile came on stdin).
    pub fn none() -> Context {
        Context {
            root: None,
            ignore: IgnoreRules::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_that_the_rules_exclude_as_buildkit_judges_them() {
        let only = rules("\nDockerfile\n");
        assert_eq!(
            only.copy_source_ignored("./Dockerfile").as_deref(),
            Some("Dockerfile")
        );
        assert_eq!(only.copy_source_ignored("/Dockerfile"), None);
        assert_eq!(only.copy_source_ignored("app.py"), None);
        assert_eq!(only.copy_source_ignored("."), None);
        let dir = rules("build\n");
        assert_eq!(
            dir.copy_source_ignored("build/out.bin").as_deref(),
            Some("build/out.bin")
        );
        // Exclusions: not judged.
        assert_eq!(rules("**\n!Dockerfile\n").copy_source_ignored("x"), None);
        // The root: only when every entry of it is ignored.
        assert_eq!(rules(".*\n").copy_source_ignored("."), None);
        assert_eq!(rules("*\n").copy_source_ignored(".").as_deref(), Some("."));
        assert_eq!(rules("**\n").copy_source_ignored("/").as_deref(), Some("/"));
        assert_eq!(
            IgnoreRules::default().copy_source_ignored("Dockerfile"),
            None
        );
    }

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text).unwrap()
    }

    #[test]
    fn docker_pattern_rules() {
        let r = rules("# comment\n*.md\n!README.md\n/build\n**/*.pyc\ntemp?\n");
        assert!(r.is_excluded("notes.md"));
        let lone = IgnoreRules::parse("a\n!\n").err().map(|e| e.to_string());
        assert!(
            lone.as_deref()
                .is_some_and(|e| e.contains("illegal exclusion pattern")),
            "{lone:?}"
        );
        assert!(!r.is_excluded("README.md"));
        assert!(!r.is_excluded("docs/notes.md"), "* does not cross /");
        assert!(r.is_excluded("build"));
        assert!(
            r.is_excluded("build/out/x"),
            "a matched dir excludes its content"
        );
        assert!(r.is_excluded("a/b/c.pyc"));
        assert!(r.is_excluded("c.pyc"), "**/ matches zero dirs");
        assert!(r.is_excluded("temp1"));
        assert!(!r.is_excluded("temp12"));
        assert!(!r.is_excluded("src/main.py"));
    }

    #[test]
    fn last_match_wins_and_exceptions_reinclude() {
        let r = rules("data\n!data/keep\n");
        assert!(r.is_excluded("data/drop"));
        assert!(!r.is_excluded("data/keep"));
        assert!(!r.is_excluded("data/keep/x"));
        let r = rules("!a\na\n");
        assert!(r.is_excluded("a"));
    }

    #[test]
    fn patterns_are_cleaned() {
        let r = rules("./a/../b\n/c/\n");
        assert!(r.is_excluded("b"));
        assert!(r.is_excluded("c/d"));
        assert_eq!(clean_path("/x//y/./z/.."), "x/y");
    }
}
