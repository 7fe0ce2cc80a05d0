//! Golden tests over `tests/data`: real-world shapes (continuations, heredocs, `&&`/`;`/`||`
//! chains, `sh -c` wrappers, exec form, multi-stage, ignores) and the findings they must give.

use crate::lint;

fn data(name: &str) -> String {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `LINE:ID` of every finding, sorted by line and ID.
fn got(name: &str) -> Vec<String> {
    let mut v: Vec<(usize, &str)> = lint(&data(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .iter()
        .map(|f| (f.location.line, f.rule.id))
        .collect();
    v.sort();
    v.into_iter().map(|(l, id)| format!("{l}:{id}")).collect()
}

#[track_caller]
fn expect(name: &str, want: &[&str]) {
    assert_eq!(got(name), want, "{name}");
}

#[test]
fn seed_wrong_practice_points_at_both_lines() {
    expect(
        "seed-wrong.Dockerfile",
        &["5:KL007", "8:KL003", "11:KL002", "11:KL006"],
    );
    let findings = lint(&data("seed-wrong.Dockerfile")).expect("lint");
    let late = findings
        .iter()
        .find(|f| f.rule.id == "KL002")
        .expect("KL002");
    assert_eq!((late.location.line, late.location.column), (11, 5));
    assert_eq!(late.related[0].location.line, 8);
    assert_eq!(late.related[0].location.column, 4);
    assert!(late.message.contains("line 11") && late.message.contains("line 8"));
}

#[test]
fn seed_right_practice_has_no_late_cleanup() {
    expect(
        "seed-right.Dockerfile",
        &["6:KL007", "10:KL003", "20:KL006"],
    );
    expect(
        "seed-original.Dockerfile",
        &["5:KL007", "9:KL003", "19:KL006"],
    );
}

#[test]
fn heredoc_scripts_are_read() {
    expect("heredoc-late.Dockerfile", &["9:KL006", "12:KL002"]);
    expect("heredoc-good.Dockerfile", &[]);
}

#[test]
fn sh_c_and_exec_form_are_unwrapped() {
    expect(
        "sh-c-wrapper.Dockerfile",
        &["3:KL001", "3:KL003", "3:KL006"],
    );
}

#[test]
fn chains_with_semicolons_or_and_quoted_globs() {
    expect("chains.Dockerfile", &["9:KL004", "9:KL006", "10:KL008"]);
}

#[test]
fn builder_stages_do_not_count_for_size_and_env_is_inherited() {
    expect("multistage.Dockerfile", &[]);
}

#[test]
fn pip_cache_rules() {
    expect(
        "pip-cache.Dockerfile",
        &["4:KL005", "5:KL005", "5:KL006", "7:KL002", "7:KL002"],
    );
}

#[test]
fn volatile_add_cd_cmd_and_latest() {
    expect(
        "volatile.Dockerfile",
        &["1:KL011", "3:KL013", "5:KL010", "7:KL009", "8:KL008"],
    );
}

#[test]
fn secrets_in_env_and_arg() {
    expect(
        "secrets.Dockerfile",
        &[
            "1:KL012", "3:KL012", "4:KL012", "4:KL012", "8:KL012", "9:KL014", "10:KL006",
        ],
    );
}

#[test]
fn wrappers_shebang_heredocs_meta_args_and_cache_mounts() {
    // xargs apt-get install, a bash heredoc with timeout pip, FROM with a meta ARG, the
    // BuildKit cache-mount recipe: only the two RUNs of the first stage could merge.
    expect("wrappers.Dockerfile", &["8:KL006"]);
}

#[test]
fn ignore_comments_above_inside_and_file_wide() {
    expect("ignores.Dockerfile", &["5:KL006"]);
}

#[test]
fn cache_mounts_keep_caches_out_of_the_layer() {
    expect("cache-mount.Dockerfile", &[]);
}

#[test]
fn update_alone_and_late_cleanup_of_two_writers() {
    expect(
        "update-alone.Dockerfile",
        &["2:KL015", "3:KL006", "4:KL002", "4:KL002"],
    );
}

#[test]
fn conditionals_sudo_and_pipes() {
    expect("conditional.Dockerfile", &["6:KL001", "6:KL006"]);
}

#[test]
fn options_before_the_subcommand_and_env_prefixes() {
    let text = "FROM debian:12\nRUN DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Acquire::Retries=3 install curl\n";
    let ids: Vec<_> = lint(text)
        .expect("lint")
        .iter()
        .map(|f| f.rule.id)
        .collect();
    assert_eq!(ids, ["KL001", "KL003"]);
}

#[test]
fn unparsable_dockerfiles_are_errors_not_panics() {
    let err = lint("").unwrap_err();
    assert!(
        matches!(&err, crate::Error::Parse(e) if e.message == "file with no instructions"),
        "{err:?}"
    );
    let err = lint("FROM a\nFROBNICATE x\n").unwrap_err();
    assert!(
        matches!(&err, crate::Error::Instruction(e)
            if e.message == "unknown instruction: FROBNICATE" && e.position.line == 2),
        "{err:?}"
    );
}

#[track_caller]
fn expect_text(text: &str, want: &[&str]) {
    let mut got: Vec<String> = lint(text)
        .expect("lint")
        .iter()
        .map(|f| format!("{}:{}", f.location.line, f.rule.id))
        .collect();
    got.sort();
    assert_eq!(got, want, "{text}");
}

#[test]
fn clean_ups_written_various_ways() {
    expect_text(
        "FROM debian:12\nRUN apt update && apt install -y --no-install-recommends x && find /var/lib/apt/lists -type f -delete\n",
        &[],
    );
    expect_text(
        "FROM debian:12\nRUN apt-get update\\\n && apt-get install -y --no-install-recommends x\\\n && rm -rf /var/lib/apt/lists\n",
        &[],
    );
    expect_text(
        "FROM debian:12\nRUN apt-get update && apt-get install -yq --no-install-recommends x; rm -rf /var/lib/apt/lists/*\nRUN apt-get clean\n",
        &["3:KL002", "3:KL006"],
    );
    expect_text(
        "FROM debian:12\nRUN [\"apt-get\", \"install\", \"-y\", \"--no-install-recommends\", \"x\"]\n",
        &["2:KL001"],
    );
}

#[test]
fn python_m_pip_and_versioned_pips() {
    expect_text(
        "FROM python:3.12\nRUN python3.12 -m pip install x\nCMD [\"python\"]\n",
        &["2:KL005"],
    );
    expect_text(
        "FROM python:3.12\nRUN pip3.12 install --no-cache-dir x && pip2 download y\nCMD [\"python\"]\n",
        &[],
    );
}
