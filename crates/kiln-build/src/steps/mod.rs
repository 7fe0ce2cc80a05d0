//! A Dockerfile becomes an image: stages in order, each instruction a step, each step keyed
//! for the cache.
//!
//! The cache key of a step is the key of the step before it, plus the instruction with its
//! variables expanded, plus what else it reads: the environment and shell of a `RUN`, the
//! content digest of `COPY`/`ADD` sources. A hit reuses the recorded config and layers without
//! touching a file system; only a miss unpacks snapshots and mounts anything.

mod files;
mod meta;
mod run;
mod stage;

use std::collections::BTreeSet;

use kiln_dockerfile::{Instruction, Stage};
use kiln_image::{Image, Reference, Store};

pub use stage::StageState;

use crate::Error;
use crate::context::Context;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The Dockerfile text.
    pub dockerfile: String,
    /// Its name, for diagnostics (`Dockerfile`, `-`).
    pub dockerfile_name: String,
    /// The build context.
    pub context: Context,
    /// Names to tag the result with.
    pub tags: Vec<Reference>,
    /// `--build-arg K=V`.
    pub build_args: Vec<(String, String)>,
    /// `--target STAGE`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--sync`: RUN steps' syncs reach the disk (by default the sandbox makes them no-ops,
    /// see [`kiln_sandbox::RunSpec::skip_syncs`]).
    pub sync: bool,
    /// `--label K=V`, added to the final image.
    pub labels: Vec<(String, String)>,
    /// `--secret id=ID,src=PATH`: files that `RUN --mount=type=secret` binds.
    pub secrets: Vec<(String, std::path::PathBuf)>,
    /// Stops a running step when the user presses Ctrl-C.
    pub interrupt: kiln_sandbox::Interrupt,
    /// The network of RUN steps without `--network` (`kiln build --network`).
    pub network: kiln_sandbox::Network,
    /// `--allow network.host`: `RUN --network=host` may share the host's network.
    pub allow_network_host: bool,
    /// `--allow security.insecure`: `RUN --security=insecure` may run without the sandbox.
    pub allow_security_insecure: bool,
    /// `--memory` and `--pids-limit` of every RUN step.
    pub limits: kiln_sandbox::Limits,
    /// Registry access: pulling bases, `--pull`, `--cache-from`/`--cache-to` (none: the
    /// store only).
    pub registry: Option<std::sync::Arc<crate::registry::BuildRegistry>>,
}

/// What a build reports as it goes. The library never prints; the binary draws these.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step starts: `[stage index/total] INSTRUCTION …`.
    Step {
        /// Running number of the step in this build.
        id: usize,
        /// The stage name or index.
        stage: &'a str,
        /// 1-based position in the stage (0 for FROM).
        index: usize,
        /// Instructions in the stage.
        total: usize,
        /// The instruction as written.
        text: &'a str,
    },
    /// The step was found in the cache.
    Cached {
        /// The step.
        id: usize,
    },
    /// A line of a `RUN`'s output.
    Output {
        /// The step.
        id: usize,
        /// The line, without its newline.
        line: &'a str,
    },
    /// A step's file-system change became a layer.
    Committed {
        /// The step.
        id: usize,
        /// Size of the uncompressed layer.
        bytes: u64,
        /// Time to walk the upper dir, write and hash the layer, and keep the snapshot.
        seconds: f64,
    },
    /// The step finished.
    Done {
        /// The step.
        id: usize,
        /// Wall time.
        seconds: f64,
    },
    /// A parser or build warning.
    Warning {
        /// `file:line: rule: message`.
        text: String,
    },
}

/// Receives [`Event`]s.
pub trait Reporter {
    /// Called for each event, in order.
    fn report(&self, event: Event<'_>);
}

/// A reporter that drops everything.
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event<'_>) {}
}

/// Runs a build and tags the result.
pub fn build(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
) -> Result<Image, Error> {
    let parsed = kiln_dockerfile::parse(&request.dockerfile)
        .map_err(|e| Error::Dockerfile(e.render(&request.dockerfile_name)))?;
    for warning in &parsed.warnings {
        reporter.report(Event::Warning {
            text: format!(
                "{}:{}: {}: {}",
                request.dockerfile_name, warning.line, warning.rule, warning.message
            ),
        });
    }
    let (meta_args, stages) = kiln_dockerfile::parse_stages(&parsed)
        .map_err(|e| Error::Dockerfile(e.render(&request.dockerfile_name, &request.dockerfile)))?;
    let notes = crate::support::check_directives(&parsed.directives)
        .map_err(|e| Error::Dockerfile(format!("{}: {e}", request.dockerfile_name)))?;
    for text in notes {
        reporter.report(Event::Warning { text });
    }
    for inst in stages.iter().flat_map(|s| &s.instructions) {
        crate::support::check_instruction(&inst.value).map_err(|e| {
            Error::Dockerfile(format!(
                "{}:{}: {e}",
                request.dockerfile_name,
                inst.span.start_line()
            ))
        })?;
    }
    if stages.is_empty() {
        // BuildKit's words for a Dockerfile of only ARGs and comments.
        return Err(Error::Dockerfile(format!(
            "{}: dockerfile contains no stages to build (it needs a FROM)",
            request.dockerfile_name
        )));
    }
    let target = match &request.target {
        Some(name) => stages
            .iter()
            .position(|s| s.name.as_deref() == Some(name.to_lowercase().as_str()))
            .ok_or_else(|| {
                let known: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
                Error::BadInput(format!(
                    "target stage {name:?} is not in the Dockerfile (its named stages: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ))
            })?,
        None => stages.len() - 1,
    };
    let mut builder = stage::Builder::new(
        store, request, reporter, &parsed, &meta_args, &stages, target,
    )?;
    let bases = (0..stages.len())
        .map(|i| builder.expanded_base(i))
        .collect::<Result<Vec<_>, _>>()?;
    let needed = needed_stages(&stages, &bases, target);
    for index in needed {
        builder.build_stage(index)?;
    }
    let image = builder.finish(target)?;
    crate::registry::after_build(store, request, reporter, builder.step_id())?;
    Ok(image)
}

/// The stages the target depends on (through `FROM`, `COPY --from` and `RUN --mount from=`),
/// in file order. BuildKit skips the others, and so does kiln.
fn needed_stages(stages: &[Stage], bases: &[String], target: usize) -> BTreeSet<usize> {
    let find = |name: &str| -> Option<usize> {
        let lower = name.to_lowercase();
        stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < stages.len()))
    };
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(index) = todo.pop() {
        if !needed.insert(index) {
            continue;
        }
        let stage = &stages[index];
        let mut refs: Vec<&str> = vec![bases[index].as_str()];
        for inst in &stage.instructions {
            match &inst.value {
                Instruction::Copy(copy) => refs.extend(copy.from.as_deref()),
                Instruction::Run(run) => {
                    refs.extend(run.mounts.iter().filter_map(|m| m.from.as_deref()))
                }
                _ => {}
            }
        }
        for name in refs {
            if let Some(dep) = find(name).filter(|d| *d < index) {
                todo.push(dep);
            }
        }
    }
    needed
}

/// The stage a name refers to: a stage name (`AS name`) or an index, among stages before `before`.
pub(crate) fn stage_by_name(stages: &[Stage], name: &str, before: usize) -> Option<usize> {
    let lower = name.to_lowercase();
    stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

/// Applies `--change` instructions (`CMD …`, `ENV …`) to a config, as `docker import` does.
pub fn apply_changes(
    config: &mut kiln_image::ImageConfig,
    changes: &[String],
) -> Result<(), Error> {
    let platforms = kiln_dockerfile::PlatformArgs::same(kiln_dockerfile::Platform::host());
    let mut vars =
        kiln_dockerfile::Variables::new(&platforms, Vec::<(String, String)>::new()).for_stage();
    vars.set_base_env(config.env_pairs().iter().map(|(k, v)| format!("{k}={v}")));
    let mut state = StageState {
        config: config.clone(),
        layers: Vec::new(),
        key: kiln_image::Digest::of(b""),
        vars,
        cmd_set: false,
    };
    for change in changes {
        let bad = |why: String| Error::BadInput(format!("--change {change:?}: {why}"));
        let parsed = kiln_dockerfile::parse(change).map_err(|e| bad(e.render("--change")))?;
        for node in &parsed.nodes {
            let inst = kiln_dockerfile::parse_instruction(node)
                .map_err(|e| bad(e.render("--change", change)))?;
            let expanded = state
                .vars
                .expand_and_apply(&inst, parsed.escape)
                .map_err(|e| bad(e.render("--change", change)))?;
            match &expanded.value {
                Instruction::Workdir(dir) => state.config.container().working_dir = dir.clone(),
                Instruction::Cmd(_)
                | Instruction::Entrypoint(_)
                | Instruction::Env(_)
                | Instruction::Expose(_)
                | Instruction::Label(_)
                | Instruction::Onbuild(_)
                | Instruction::User(_)
                | Instruction::Volume(_)
                | Instruction::StopSignal(_)
                | Instruction::Healthcheck(_)
                | Instruction::Shell(_) => {
                    // docker import records no history entry per change.
                    let entries = state.config.history.len();
                    meta::apply(&mut state, &expanded.value, &expanded.original)?;
                    state.config.history.truncate(entries);
                }
                _ => {
                    return Err(bad(format!(
                        "{} cannot be applied to an imported image",
                        expanded.keyword.to_uppercase()
                    )));
                }
            }
        }
    }
    *config = state.config;
    Ok(())
}
