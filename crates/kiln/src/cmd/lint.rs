//! `kiln lint`: the seed's lessons checked on a Dockerfile, as text, JSON or SARIF 2.1.0.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_lint::{BUILDKIT_RULES, Finding, RULES, Rule, Severity};
use serde_json::json;

use super::Output;

/// `kiln lint`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln lint                       (./Dockerfile)\n  kiln lint -f sarif examples/python-base/Dockerfile > lint.sarif\n  kiln lint --explain KL002\n  kiln lint --explain JSONArgsRecommended\n\nBuildKit's build checks run beside kiln's KL rules, under BuildKit's names; `# check=skip=NAME` at the top skips them.\nSilence a rule for one instruction with a comment above it (or inside it):\n  # kiln-ignore=KL003,consecutive-run\nand for the whole file with `# kiln-ignore-file=KL006`.\nExit code: 1 when a finding reaches --failure-threshold, and on errors."
)]
pub struct LintArgs {
    /// The Dockerfile (`-` for stdin).
    #[arg(default_value = "Dockerfile")]
    pub file: PathBuf,
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = LintFormat::Text)]
    pub format: LintFormat,
    /// Print the documentation of a rule (ID or name) and exit.
    #[arg(long, value_name = "ID")]
    pub explain: Option<String>,
    /// Leave out a rule (ID or name; repeatable).
    #[arg(long, value_name = "ID")]
    pub ignore: Vec<String>,
    /// Exit with 1 only when a finding has at least this severity.
    #[arg(long, value_enum, default_value_t = Threshold::Info)]
    pub failure_threshold: Threshold,
    /// List the rules and exit.
    #[arg(long)]
    pub rules: bool,
}

/// Output formats of `kiln lint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LintFormat {
    /// `FILE:LINE:COL: severity[ID] name: message`.
    Text,
    /// A JSON array of findings.
    Json,
    /// SARIF 2.1.0, for code-scanning dashboards.
    Sarif,
}

/// The lowest severity that fails the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Threshold {
    /// Only errors fail.
    Error,
    /// Warnings and errors fail.
    Warning,
    /// Any finding fails.
    Info,
    /// Never fail on findings.
    None,
}

impl Threshold {
    fn fails(self, severity: Severity) -> bool {
        match self {
            Threshold::Error => severity <= Severity::Error,
            Threshold::Warning => severity <= Severity::Warning,
            Threshold::Info => true,
            Threshold::None => false,
        }
    }
}

/// Reads and lints a Dockerfile; the text form of a parse error says where.
pub fn lint_text(text: &str, file_name: &str) -> anyhow::Result<Vec<Finding>> {
    kiln_lint::lint(text).map_err(|e| match e {
        kiln_lint::Error::Parse(p) => anyhow::anyhow!("{}", p.render(file_name)),
        kiln_lint::Error::Instruction(i) => anyhow::anyhow!("{}", i.render(file_name, text)),
        other => anyhow::anyhow!("{file_name}: {other}"),
    })
}

/// kiln's KL findings and BuildKit's build checks (as the file's `# check=` directive sets
/// them), sorted by place.
fn lint_all(text: &str, file_name: &str) -> anyhow::Result<Vec<Finding>> {
    let mut findings = lint_text(text, file_name)?;
    let parsed =
        kiln_dockerfile::parse(text).map_err(|p| anyhow::anyhow!("{}", p.render(file_name)))?;
    let config = kiln_lint::CheckConfig::for_build(&parsed, None)
        .map_err(|e| anyhow::anyhow!("{file_name}: {e}"))?;
    // The Dockerfile alone: the checks that need a context, a store or the base images'
    // environment are `kiln build --check`'s.
    let is_image_reference = |name: &str| name.parse::<kiln_image::Reference>().is_ok();
    let facts = kiln_lint::buildkit::BuildFacts {
        is_image_reference: Some(&is_image_reference),
        ..Default::default()
    };
    findings.extend(
        kiln_lint::buildkit::build_checks_with(&parsed, &config, &facts)
            .map_err(|e| anyhow::anyhow!("{file_name}: {e}"))?,
    );
    findings.sort_by(|a, b| (a.location, a.rule.id).cmp(&(b.location, b.rule.id)));
    Ok(findings)
}

/// Every rule: kiln's, then BuildKit's checks.
fn all_rules() -> impl Iterator<Item = &'static Rule> {
    RULES.iter().chain(BUILDKIT_RULES)
}

/// One finding as `FILE:LINE:COL: warning[KL002] late-cleanup: …` (and its related lines).
pub fn render_text(file: &str, finding: &Finding) -> String {
    let mut out = format!(
        "{file}:{}:{}: {}[{}] {}: {}",
        finding.location.line,
        finding.location.column,
        finding.rule.severity,
        finding.rule.id,
        finding.rule.name,
        finding.message
    );
    for related in &finding.related {
        out.push_str(&format!(
            "\n    {file}:{}:{}: note: {}",
            related.location.line, related.location.column, related.message
        ));
    }
    out
}

/// Runs `kiln lint`.
pub fn lint(out: &mut Output, args: LintArgs) -> anyhow::Result<ExitCode> {
    if args.rules {
        let mut table = vec![[
            "ID".to_owned(),
            "NAME".into(),
            "SEVERITY".into(),
            "SUMMARY".into(),
        ]];
        for r in all_rules() {
            table.push([
                r.id.to_owned(),
                r.name.to_owned(),
                r.severity.to_string(),
                r.summary.to_owned(),
            ]);
        }
        out.table(&table)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = &args.explain {
        let Some(rule) = kiln_lint::rule(id) else {
            anyhow::bail!("no rule {id:?}; `kiln lint --rules` lists them");
        };
        out.line(&format!(
            "{} {} ({})\n{}\n\n{}",
            rule.id, rule.name, rule.severity, rule.summary, rule.doc
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    for id in &args.ignore {
        anyhow::ensure!(
            kiln_lint::rule(id).is_some(),
            "--ignore {id}: no such rule; `kiln lint --rules` lists them"
        );
    }
    let (text, file) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the Dockerfile from stdin")?;
        (text, "-".to_owned())
    } else {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("read {}", args.file.display()))?;
        (text, args.file.display().to_string())
    };
    let mut findings = lint_all(&text, &file)?;
    findings.retain(|f| {
        !args
            .ignore
            .iter()
            .any(|i| kiln_lint::rule(i).is_some_and(|r| r.id == f.rule.id))
    });
    match args.format {
        LintFormat::Text => {
            for f in &findings {
                out.line(&render_text(&file, f))?;
            }
        }
        LintFormat::Json => {
            let list: Vec<_> = findings.iter().map(|f| finding_json(&file, f)).collect();
            out.line(&serde_json::to_string_pretty(&list)?)?;
        }
        LintFormat::Sarif => out.line(&serde_json::to_string_pretty(&sarif(&file, &findings))?)?,
    }
    let failed = findings
        .iter()
        .any(|f| args.failure_threshold.fails(f.rule.severity));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn finding_json(file: &str, f: &Finding) -> serde_json::Value {
    json!({
        "file": file,
        "line": f.location.line,
        "column": f.location.column,
        "rule": f.rule.id,
        "name": f.rule.name,
        "severity": f.rule.severity.as_str(),
        "message": f.message,
        "related": f.related.iter().map(|r| json!({
            "line": r.location.line, "column": r.location.column, "message": r.message,
        })).collect::<Vec<_>>(),
        "help": format!("kiln lint --explain {}", f.rule.id),
    })
}

fn sarif_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// A SARIF 2.1.0 log with one run: every rule in the driver, one result per finding.
fn sarif(file: &str, findings: &[Finding]) -> serde_json::Value {
    let uri = file.trim_start_matches("./");
    let region = |line: usize, column: usize| json!({ "startLine": line, "startColumn": column });
    let location = |line: usize, column: usize| {
        json!({ "physicalLocation": {
            "artifactLocation": { "uri": uri },
            "region": region(line, column),
        }})
    };
    let rules: Vec<_> = all_rules()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "shortDescription": { "text": r.summary },
                "fullDescription": { "text": r.doc },
                "help": { "text": format!("{}\n\nkiln lint --explain {}", r.doc, r.id) },
                "defaultConfiguration": { "level": sarif_level(r.severity) },
            })
        })
        .collect();
    let results: Vec<_> = findings
        .iter()
        .map(|f| {
            let index = all_rules().position(|r| r.id == f.rule.id).unwrap_or(0);
            let related: Vec<_> = f
                .related
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut loc = location(r.location.line, r.location.column);
                    loc["id"] = json!(i);
                    loc["message"] = json!({ "text": r.message });
                    loc
                })
                .collect();
            let mut result = json!({
                "ruleId": f.rule.id,
                "ruleIndex": index,
                "level": sarif_level(f.rule.severity),
                "message": { "text": f.message },
                "locations": [location(f.location.line, f.location.column)],
            });
            if !related.is_empty() {
                result["relatedLocations"] = json!(related);
            }
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "kiln-lint",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "artifacts": [{ "location": { "uri": uri } }],
            "results": results,
        }],
    })
}
