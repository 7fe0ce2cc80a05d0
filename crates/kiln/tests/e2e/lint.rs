//! `kiln lint`: the seed's wrong practice caught with both line numbers, the right one left
//! alone on that rule, real-world shapes, JSON, SARIF 2.1.0, `--explain`, ignores, and the
//! findings shown by `kiln build` unless `--no-lint`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-lint/tests/data")
        .join(name)
}

fn seed_right() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-base/Dockerfile")
}

/// Runs `kiln lint` with args; returns (exit code, stdout).
fn lint(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let out = env.kiln().arg("lint").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn json_findings(env: &Env, file: &Path) -> Vec<Value> {
    let (_, out) = lint(env, &["--format", "json", file.to_str().unwrap()]);
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn late_cleanup_points_at_the_cleanup_and_the_install() {
    let env = Env::new();
    let wrong = data("seed-wrong.Dockerfile");
    let (code, text) = lint(&env, &[wrong.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("[KL002]"))
        .unwrap_or_else(|| panic!("no KL002 in:\n{text}"));
    assert!(line.contains("seed-wrong.Dockerfile:11:5:"), "{line}");
    assert!(
        line.contains("line 11") && line.contains("line 8"),
        "{line}"
    );
    assert!(text.contains("seed-wrong.Dockerfile:8:4: note:"), "{text}");

    let findings = json_findings(&env, &wrong);
    let late: Vec<_> = findings.iter().filter(|f| f["rule"] == "KL002").collect();
    assert_eq!(late.len(), 1, "{findings:#?}");
    assert_eq!(late[0]["line"], 11);
    assert_eq!(late[0]["related"][0]["line"], 8);
    assert_eq!(late[0]["severity"], "warning");

    for right in [seed_right(), data("seed-original.Dockerfile")] {
        let findings = json_findings(&env, &right);
        assert!(
            findings
                .iter()
                .all(|f| f["rule"] != "KL002" && f["rule"] != "KL001"),
            "{}: {findings:#?}",
            right.display()
        );
        // The seed's MAINTAINER is still flagged.
        assert!(findings.iter().any(|f| f["rule"] == "KL007"));
    }
}

#[test]
fn real_world_shapes_give_the_expected_rules() {
    let env = Env::new();
    // kiln's KL rules and BuildKit's build checks (by BuildKit's names) side by side.
    let cases: &[(&str, &[&str])] = &[
        ("heredoc-late.Dockerfile", &["KL002", "KL006"]),
        ("heredoc-good.Dockerfile", &[]),
        ("sh-c-wrapper.Dockerfile", &["KL001", "KL003", "KL006"]),
        (
            "chains.Dockerfile",
            &["JSONArgsRecommended", "KL004", "KL006", "KL008"],
        ),
        ("multistage.Dockerfile", &[]),
        ("pip-cache.Dockerfile", &["KL002", "KL005", "KL006"]),
        (
            "volatile.Dockerfile",
            &[
                "JSONArgsRecommended",
                "KL008",
                "KL009",
                "KL010",
                "KL011",
                "KL013",
            ],
        ),
        (
            "secrets.Dockerfile",
            &["KL006", "KL012", "KL014", "SecretsUsedInArgOrEnv"],
        ),
        ("ignores.Dockerfile", &["KL006"]),
        ("cache-mount.Dockerfile", &[]),
        ("update-alone.Dockerfile", &["KL002", "KL006", "KL015"]),
        ("conditional.Dockerfile", &["KL001", "KL006"]),
        ("wrappers.Dockerfile", &["KL006"]),
    ];
    for (name, want) in cases {
        let mut got: Vec<String> = json_findings(&env, &data(name))
            .iter()
            .map(|f| f["rule"].as_str().unwrap().to_owned())
            .collect();
        got.sort();
        got.dedup();
        assert_eq!(got, *want, "{name}");
        let (code, _) = lint(&env, &[data(name).to_str().unwrap()]);
        assert_eq!(code, Some(if want.is_empty() { 0 } else { 1 }), "{name}");
    }
}

#[test]
fn sarif_is_2_1_0_with_rules_and_related_locations() {
    let env = Env::new();
    let wrong = data("seed-wrong.Dockerfile");
    let (_, out) = lint(&env, &["--format", "sarif", wrong.to_str().unwrap()]);
    let sarif: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.len() >= 13);
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), json_findings(&env, &wrong).len());
    let late = results.iter().find(|r| r["ruleId"] == "KL002").unwrap();
    let index = late["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[index]["id"], "KL002");
    let region = &late["locations"][0]["physicalLocation"]["region"];
    assert_eq!(region["startLine"], 11);
    assert_eq!(
        late["relatedLocations"][0]["physicalLocation"]["region"]["startLine"],
        8
    );
    assert_eq!(late["level"], "warning");
}

#[test]
fn every_rule_explains_itself_and_unknown_ids_fail() {
    let env = Env::new();
    let list = env.ok(&["lint", "--rules"]);
    let ids: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(ids.len() >= 13, "{list}");
    for id in ids {
        let doc = env.ok(&["lint", "--explain", id]);
        assert!(
            doc.starts_with(id) && doc.contains("Wrong:") && doc.contains("Right:"),
            "{doc}"
        );
    }
    assert_eq!(
        env.ok(&["lint", "--explain", "late-cleanup"])
            .lines()
            .next(),
        Some("KL002 late-cleanup (warning)")
    );
    let err = env.fails(&["lint", "--explain", "KL999"]);
    assert!(err.contains("KL999"), "{err}");
}

#[test]
fn ignores_thresholds_stdin_and_parse_errors() {
    let env = Env::new();
    let file = env.path("Dockerfile");
    std::fs::write(
        &file,
        "FROM debian:bookworm\n# kiln-ignore=KL007\nMAINTAINER me\nCMD bash\n",
    )
    .unwrap();
    let (code, out) = lint(&env, &[file.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(!out.contains("KL007") && out.contains("KL008"), "{out}");
    let (code, out) = lint(
        &env,
        &[
            "--ignore",
            "shell-form-cmd",
            // BuildKit's checks on the same lines are ignored by their names.
            "--ignore",
            "JSONArgsRecommended",
            "--ignore",
            "MaintainerDeprecated",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), ""));
    let (code, _) = lint(
        &env,
        &["--failure-threshold", "error", file.to_str().unwrap()],
    );
    assert_eq!(code, Some(0));

    // stdin
    let out = env.with_stdin(&["lint", "-"], "FROM ubuntu\nCMD [\"bash\"]\n");
    assert!(String::from_utf8_lossy(&out.stdout).contains("-:1:1: warning[KL011]"));

    std::fs::write(&file, "FROM debian:bookworm\nFROBNICATE x\n").unwrap();
    let err = env.fails(&["lint", file.to_str().unwrap()]);
    assert!(err.contains(":2"), "{err}");
}

#[test]
fn build_shows_findings_unless_no_lint() {
    let env = Env::new();
    env.busybox_base("bb:1");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nMAINTAINER Captain Dao <support@daocloud.io>\nCMD sh\n",
    )
    .unwrap();
    let (_, stderr) = env.build(&["-t", "linted", ctx.to_str().unwrap()]);
    assert!(
        stderr.contains("WARN: Dockerfile:2:1: warning[KL007]")
            && stderr.contains("warning[KL008]"),
        "{stderr}"
    );
    let (_, stderr) = env.build(&["--no-lint", "-t", "linted", ctx.to_str().unwrap()]);
    assert!(!stderr.contains("[KL0"), "{stderr}");
}
