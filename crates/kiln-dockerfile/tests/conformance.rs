//! BuildKit's parser and lexer conformance suites, read from `../shared/conformance/buildkit`
//! (or `KILN_CONFORMANCE_DIR`).
//!
//! Without that directory the tests skip with a notice outside CI (see `shared/mod.rs`); with
//! it, a missing file fails the test with its path.

mod shared;

use std::path::{Path, PathBuf};

use kiln_dockerfile::shell::{EnvList, Lexer};

fn conformance_root() -> Option<PathBuf> {
    shared::dir("KILN_CONFORMANCE_DIR", "conformance/buildkit")
}

fn read(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => panic!("conformance file missing: {}: {e}", path.display()),
    }
}

fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("conformance directory missing: {}: {e}", dir.display()));
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no conformance cases in {}",
        dir.display()
    );
    dirs
}

#[test]
fn parser_testfiles_match_results_byte_for_byte() {
    let Some(root) = conformance_root() else {
        return;
    };
    let mut failures = Vec::new();
    let dirs = case_dirs(&root.join("parser/testfiles"));
    for dir in &dirs {
        let dockerfile = read(&dir.join("Dockerfile"));
        let expected = read(&dir.join("result"));
        match kiln_dockerfile::parse(&dockerfile) {
            Ok(parsed) => {
                let got = parsed.dump();
                if got != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- got\n{got}",
                        dir.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: rejected: {e}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn parser_negative_testfiles_are_rejected() {
    let Some(root) = conformance_root() else {
        return;
    };
    let dirs = case_dirs(&root.join("parser/testfiles-negative"));
    for dir in &dirs {
        let dockerfile = read(&dir.join("Dockerfile"));
        let result = kiln_dockerfile::parse(&dockerfile);
        assert!(
            result.is_err(),
            "{} was accepted: {:?}",
            dir.display(),
            result.map(|p| p.dump())
        );
    }
}

#[test]
fn parser_line_numbers() {
    let Some(root) = conformance_root() else {
        return;
    };
    let path = root.join("parser/testfile-line/Dockerfile");
    let parsed =
        kiln_dockerfile::parse(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(parsed.span.start.line, 5);
    assert_eq!(parsed.span.end.line, 31);
    let lines: Vec<(usize, usize)> = parsed
        .nodes
        .iter()
        .map(|n| (n.span.start.line, n.span.end.line))
        .collect();
    assert_eq!(lines, [(5, 5), (11, 12), (17, 31)]);
}

#[test]
fn shell_env_var_test() {
    let Some(root) = conformance_root() else {
        return;
    };
    let path = root.join("shell/envVarTest");
    let text = read(&path);
    let env = EnvList::from_env_strings(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let lexer = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(
            parts.len(),
            3,
            "{}:{}: malformed line {line:?}",
            path.display(),
            i + 1
        );
        let platform = parts[0].trim();
        if platform != "A" && platform != "U" {
            continue;
        }
        let source = parts[1].trim();
        let expected = parts[2].trim();
        checked += 1;
        let got = lexer.expand_word(source, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(w), e) => e != "error" && w == e,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {source:?}: expected {expected:?}, got {got:?}",
                i + 1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 100, "only {checked} cases in {}", path.display());
}

#[test]
fn shell_words_test() {
    let Some(root) = conformance_root() else {
        return;
    };
    let path = root.join("shell/wordsTest");
    let text = read(&path);
    let mut checked = 0;
    let mut env_lines: Vec<String> = Vec::new();
    let lexer = Lexer::new('\\');
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            env_lines.push(rest.trim_start_matches(' ').to_string());
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(
            parts.len(),
            2,
            "{}:{}: malformed line {line:?}",
            path.display(),
            i + 1
        );
        let input = parts[0].trim();
        let expected: Vec<&str> = parts[1].trim_start_matches(' ').split(',').collect();
        let env = EnvList::from_env_strings(&env_lines);
        let got = lexer
            .expand_words(input, &env)
            .unwrap_or_else(|_| vec!["error".into()]);
        checked += 1;
        assert_eq!(got, expected, "{}:{}: {input:?}", path.display(), i + 1);
    }
    assert!(checked > 20, "only {checked} cases in {}", path.display());
}
