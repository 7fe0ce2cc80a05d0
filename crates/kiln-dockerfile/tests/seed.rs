//! The seed tutorial's Dockerfile (`../shared/seeds/python-base-image-tutorial.md`, section
//! "完整 Dockerfile"): tabs inside a continued RUN, a comment line in the continuation,
//! trailing blanks, and MAINTAINER. It must read exactly as docker reads it.
//!
//! Read from `../shared/seeds` (or `KILN_SEEDS_DIR`); skipped with a notice outside CI when
//! that is absent (see `shared/mod.rs`).

mod shared;

use kiln_dockerfile::{CommandLine, Instruction, parse, parse_stages};

fn seed_dockerfile() -> Option<String> {
    let path = shared::dir("KILN_SEEDS_DIR", "seeds")?.join("python-base-image-tutorial.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("seed file missing: {}: {e}", path.display()));
    let start = text
        .find("完整 Dockerfile")
        .unwrap_or_else(|| panic!("no \"完整 Dockerfile\" section in {}", path.display()));
    let rest = &text[start..];
    let open = rest.find("```").expect("code block start");
    let body_start = open + rest[open..].find('\n').expect("code block line") + 1;
    let body_len = rest[body_start..].find("```").expect("code block end");
    Some(rest[body_start..body_start + body_len].to_string())
}

#[test]
fn seed_dockerfile_dumps_like_buildkit() {
    let Some(seed) = seed_dockerfile() else {
        return;
    };
    let parsed = parse(&seed).unwrap();
    let expected = "(from \"ubuntu:trusty\")\n\
(maintainer \"Captain Dao <support@daocloud.io>\")\n\
(run \"apt-get update &&   \\tapt-get install -y python     \\t\\t\\t\\t   python-dev                        python-pip      && apt-get clean     && apt-get autoclean     && rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/*\")\n\
(run \"mkdir -p /app\")\n\
(workdir \"/app\")\n\
(expose \"80\")\n\
(cmd \"bash\")\n";
    assert_eq!(parsed.dump(), expected);
}

#[test]
fn seed_dockerfile_typed() {
    let Some(seed) = seed_dockerfile() else {
        return;
    };
    let parsed = parse(&seed).unwrap();
    let (meta, stages) = parse_stages(&parsed).unwrap();
    assert!(meta.is_empty());
    assert_eq!(stages.len(), 1);
    let stage = &stages[0];
    assert_eq!(stage.base, "ubuntu:trusty");
    let kinds: Vec<&Instruction> = stage.instructions.iter().map(|i| &i.value).collect();
    assert!(
        matches!(kinds[0], Instruction::Maintainer(m) if m == "Captain Dao <support@daocloud.io>")
    );
    let Instruction::Run(run) = kinds[1] else {
        panic!("{:?}", kinds[1])
    };
    let CommandLine::Shell(cmd) = &run.command else {
        panic!()
    };
    assert!(
        cmd.starts_with("apt-get update &&") && cmd.ends_with("/var/tmp/*"),
        "{cmd}"
    );
    assert!(
        !cmd.contains('#'),
        "the comment line inside the continuation is dropped"
    );
    assert_eq!(stage.instructions[1].span.start.line, 8);
    assert_eq!(stage.instructions[1].span.end.line, 15);
    assert_eq!(kinds[3], &Instruction::Workdir("/app".into()));
    assert_eq!(kinds[4], &Instruction::Expose(vec!["80".into()]));
    assert_eq!(
        kinds[5],
        &Instruction::Cmd(CommandLine::Exec(vec!["bash".into()]))
    );
}
