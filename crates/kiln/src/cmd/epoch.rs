//! `SOURCE_DATE_EPOCH` as BuildKit's Dockerfile frontend resolves it (dockerfile2llb
//! `epoch.go`): from `--build-arg`, the environment (buildx passes it as a build arg), or the
//! default of a meta `ARG SOURCE_DATE_EPOCH=…`. A number is the epoch; `context` takes it from
//! the build context: a git context's commit time, a URL's Last-Modified (or its archive's
//! newest file); a local directory gives none (the epoch stays unset); any other
//! word names a named context or a source-only stage whose remote file or commit gives it.

use kiln_dockerfile::{Instruction, Parsed, Platform, PlatformArgs, Stage, Variables};

const NAME: &str = "SOURCE_DATE_EPOCH";

/// Where the epoch is read from, once resolved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Epoch {
    /// No epoch: timestamps are the build's.
    Unset,
    /// Seconds since 1970.
    Seconds(String),
}

/// The build context, as `context` reads it.
pub(crate) enum ContextSource {
    /// A directory (or stdin): no time of its own.
    Local,
    /// A git checkout, whose files all have the commit's time.
    Git(i64),
    /// A download: its Last-Modified, or an archive's newest file.
    Http(Option<i64>),
}

/// Resolves the epoch of a build. `build_args` gets `SOURCE_DATE_EPOCH=` when BuildKit would
/// blank it (`context` on a local directory), so that a stage's `ARG SOURCE_DATE_EPOCH` sees
/// what BuildKit's sees. `url_time` gives a URL's time (see `input::url_source_time`), for a
/// named context or a source stage that names a download.
pub(crate) fn resolve(
    build_args: &mut Vec<(String, String)>,
    dockerfile: &str,
    context: ContextSource,
    named_contexts: &[String],
    url_time: &dyn Fn(&str) -> anyhow::Result<Option<i64>>,
) -> anyhow::Result<Epoch> {
    let from_arg = build_args
        .iter()
        .rev()
        .find(|(k, _)| k == NAME)
        .map(|(_, v)| v.clone());
    let parsed = kiln_dockerfile::parse(dockerfile).ok();
    let stages = parsed
        .as_ref()
        .and_then(|p| kiln_dockerfile::parse_stages(p).ok());
    let value = from_arg.or_else(|| std::env::var(NAME).ok()).or_else(|| {
        let (parsed, (meta_args, _)) = (parsed.as_ref()?, stages.as_ref()?);
        let mut global = Variables::new(
            &PlatformArgs::same(Platform::host()),
            build_args.iter().cloned(),
        );
        // A meta ARG that does not expand is reported by the build itself, with its line.
        global.declare_meta_args(meta_args, parsed.escape).ok()?;
        global.global().lookup(NAME).map(str::to_owned)
    });
    let Some(value) = value else {
        return Ok(Epoch::Unset);
    };
    if value.is_empty() {
        return Ok(Epoch::Unset);
    }
    if value.parse::<i64>().is_ok() {
        return Ok(Epoch::Seconds(value));
    }
    if value == "context" {
        let (epoch, text) = match context {
            ContextSource::Git(seconds) | ContextSource::Http(Some(seconds)) => {
                (Epoch::Seconds(seconds.to_string()), seconds.to_string())
            }
            ContextSource::Local | ContextSource::Http(None) => (Epoch::Unset, String::new()),
        };
        // What a stage's `ARG SOURCE_DATE_EPOCH` sees, as BuildKit sets it.
        build_args.retain(|(k, _)| k != NAME);
        build_args.push((NAME.to_owned(), text));
        return Ok(epoch);
    }
    let not_supported = |what: &str| {
        anyhow::anyhow!(
            "{NAME}={value}: taking the epoch from {what} is not supported by kiln: pass \
             --build-arg {NAME}=<seconds>"
        )
    };
    let is_http = |s: &str| s.starts_with("http://") || s.starts_with("https://");
    // What the epoch is then, and what a stage's `ARG SOURCE_DATE_EPOCH` sees.
    let mut from_source = |time: Option<i64>| {
        let text = time.map(|t| t.to_string()).unwrap_or_default();
        build_args.retain(|(k, _)| k != NAME);
        build_args.push((NAME.to_owned(), text.clone()));
        if text.is_empty() {
            Epoch::Unset
        } else {
            Epoch::Seconds(text)
        }
    };
    if let Some((_, source)) = named_contexts
        .iter()
        .filter_map(|c| c.split_once('='))
        .find(|(name, _)| *name == value)
    {
        if is_http(source) && !source.contains(".git") {
            return Ok(from_source(url_time(source)?));
        }
        return Err(not_supported(
            "a named context other than an HTTP(S) download",
        ));
    }
    if let (Some(parsed), Some((_, stages))) = (&parsed, &stages)
        && let Some(stage) = Stage::find_by_name(stages, &value)
    {
        let source = source_only(parsed, stage)?;
        if is_http(&source) && !source.contains('$') && !source.contains(".git") {
            return Ok(from_source(url_time(&source)?));
        }
        return Err(not_supported(
            "a source stage's git commit or a source with variables",
        ));
    }
    anyhow::bail!("invalid {NAME}: {value}")
}

/// BuildKit's checks of a stage named by `SOURCE_DATE_EPOCH`: `FROM scratch`, ARGs and one ADD
/// of one remote source, nothing else. Returns that source, unexpanded.
fn source_only(parsed: &Parsed, stage: &Stage) -> anyhow::Result<String> {
    let at = |text: &str| format!("{text} (Dockerfile line {})", stage.span.start.line);
    let base = kiln_dockerfile::shell::expand_word(
        &stage.base,
        &kiln_dockerfile::shell::EnvList::new(),
        parsed.escape,
    )
    .unwrap_or_else(|_| stage.base.clone());
    anyhow::ensure!(
        base == "scratch",
        at(&format!("{NAME} stage must use FROM scratch"))
    );
    let mut adds = 0;
    let mut source = String::new();
    for inst in &stage.instructions {
        match &inst.value {
            Instruction::Arg(_) => {}
            Instruction::Add(add) => {
                adds += 1;
                anyhow::ensure!(
                    adds == 1,
                    at(&format!("{NAME} stage must contain exactly one remote ADD"))
                );
                anyhow::ensure!(
                    add.inline_sources.is_empty() && add.sources.len() == 1,
                    at(&format!(
                        "{NAME} stage must contain exactly one remote ADD source"
                    ))
                );
                source = add.sources[0].clone();
            }
            _ => anyhow::bail!(at(&format!(
                "{NAME} stage does not meet source-only requirements: unsupported {} \
                 instruction",
                inst.keyword.to_lowercase()
            ))),
        }
    }
    anyhow::ensure!(
        adds == 1,
        at(&format!("{NAME} stage must contain exactly one remote ADD"))
    );
    Ok(source)
}
