//! BuildKit's build checks around `kiln build`: warnings before the build, `error=true`
//! failing it before any step runs, and `kiln build --check`, which only checks.

use std::process::ExitCode;

use kiln_build::{Event, Reporter as _};
use kiln_lint::buildkit::{self, CHECK_BUILD_ARG, CheckConfig};

use super::progress::BuildView;

/// BuildKit's short form of a violation: `RULE: message (line N)`.
fn short(finding: &kiln_lint::Finding) -> String {
    format!(
        "{}: {} (line {})",
        finding.rule.id, finding.message, finding.location.line
    )
}

/// BuildKit's `--check` excerpt: the file and line, then the lines around it with `>>>` at
/// the one the check is about.
fn excerpt(file: &str, text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first = line.saturating_sub(2).max(1);
    let last = (line + 1).min(lines.len());
    let rule = "-".repeat(20);
    let mut out = format!("{file}:{line}\n{rule}");
    for n in first..=last {
        let marker = if n == line { ">>>" } else { "   " };
        let text = lines.get(n - 1).copied().unwrap_or("");
        out.push_str(&format!("\n{n:>4} | {marker} {text}"));
    }
    out.push('\n');
    out.push_str(&rule);
    out
}

/// Runs the checks for a build. Returns `Some(exit code)` when the command is over (`--check`),
/// `None` when the build goes on; an error when `error=true` and a check was violated, or
/// when the check options are invalid.
#[allow(clippy::too_many_arguments)]
pub(crate) fn before_build(
    store: &kiln_image::Store,
    platform: Option<&kiln_image::Platform>,
    reporter: &BuildView,
    dockerfile: &str,
    dockerfile_name: &str,
    build_args: &[(String, String)],
    context: &kiln_build::context::Context,
    check_only: bool,
) -> anyhow::Result<Option<ExitCode>> {
    // A Dockerfile that does not parse is reported by the build itself.
    let Ok(parsed) = kiln_dockerfile::parse(dockerfile) else {
        anyhow::ensure!(
            !check_only,
            "--check: {dockerfile_name} does not parse; `kiln build` without --check shows why"
        );
        return Ok(None);
    };
    let from_arg = build_args
        .iter()
        .rev()
        .find(|(k, _)| k == CHECK_BUILD_ARG)
        .map(|(_, v)| v.as_str());
    let config = CheckConfig::for_build(&parsed, from_arg)
        .map_err(|e| anyhow::anyhow!("{dockerfile_name}: {e}"))?;
    // UndefinedVar needs the base images' environment: the store's copy, when it has one
    // (nothing is pulled for the checks).
    let base_env = |name: &str| {
        let image = store.resolve_platform(name, platform).ok()?;
        let env = image.config.config.and_then(|c| c.env).unwrap_or_default();
        Some(
            env.iter()
                .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_string())
                .collect(),
        )
    };
    // InvalidBaseImagePlatform: a single image's platform (an index gives each platform
    // its own image, or fails the build for a missing one).
    let base_platform = |name: &str| {
        let descriptor = store.descriptor_of(name).ok()?;
        match store.platform_images(&descriptor).ok()?.as_slice() {
            [(None, image)] => {
                let p = image.config.platform();
                Some(kiln_dockerfile::Platform::new(
                    &p.os,
                    &p.architecture,
                    p.variant.as_deref().unwrap_or_default(),
                ))
            }
            _ => None,
        }
    };
    let target = platform.map(|p| {
        kiln_dockerfile::Platform::new(
            &p.os,
            &p.architecture,
            p.variant.as_deref().unwrap_or_default(),
        )
    });
    let is_image_reference = |name: &str| name.parse::<kiln_image::Reference>().is_ok();
    // CopyIgnoredFile: only a build with a context has a .dockerignore.
    let copy_ignored = |source: &str| context.ignore.copy_source_ignored(source);
    let facts = buildkit::BuildFacts {
        build_args,
        platform: target.as_ref(),
        base_env: Some(&base_env),
        is_image_reference: Some(&is_image_reference),
        copy_ignored: context.root.is_some().then_some(&copy_ignored as _),
        base_platform: Some(&base_platform),
    };
    let findings = buildkit::build_checks_with(&parsed, &config, &facts)
        .map_err(|e| anyhow::anyhow!("{dockerfile_name}: {e}"))?;
    if check_only {
        for finding in &findings {
            // A check without a page of its own (InvalidBaseImagePlatform) has no such line.
            let more = finding
                .rule
                .doc
                .lines()
                .find(|l| l.starts_with("More info: "))
                .map(|l| format!("{l}\n"))
                .unwrap_or_default();
            // buildx's verbose form: the violation, the rule, its page, the lines.
            reporter.line(&format!(
                "{}\n{}\n{more}{}",
                short(finding),
                finding.rule.summary,
                excerpt(dockerfile_name, dockerfile, finding.location.line)
            ));
        }
        if let Some(error) = config
            .error
            .then(|| buildkit::violation_error(&findings))
            .flatten()
        {
            anyhow::bail!("{dockerfile_name}: {error}");
        }
        if findings.is_empty() {
            reporter.line("Check complete, no warnings found.");
            return Ok(Some(ExitCode::SUCCESS));
        }
        reporter.line(&format!(
            "Check complete, {} warning{} found!",
            findings.len(),
            if findings.len() == 1 {
                " has been"
            } else {
                "s have been"
            }
        ));
        return Ok(Some(ExitCode::FAILURE));
    }
    for finding in &findings {
        reporter.report(Event::Warning {
            text: short(finding),
        });
    }
    if config.error
        && let Some(error) = buildkit::violation_error(&findings)
    {
        anyhow::bail!("{dockerfile_name}: {error}");
    }
    Ok(None)
}
