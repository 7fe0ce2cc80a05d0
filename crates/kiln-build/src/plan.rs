//! The build plan: a Dockerfile, its build args and target become the stages to build, each
//! with its base resolved, its steps expanded, and the stages it depends on.
//!
//! Planning is pure: it reads no file and runs nothing. What it must know about the world (an
//! image's config, whether the context has a file) it asks a [`Resolver`], which the executor
//! implements over the store and the registry and the tests fake. Every error a user can make
//! in the Dockerfile (an unknown target or stage, a missing context file, a flag kiln does not
//! implement, a base image that cannot be found) is found here, before the first step runs.
//!
//! The shape follows BuildKit's `dockerfile2llb`: one state per stage, with the stages it
//! reaches through `FROM`, `COPY --from` and `RUN --mount=from=`, the base's ONBUILD triggers
//! included, so that a trigger's `COPY --from=stage` plans that stage too.

use std::collections::BTreeSet;

use kiln_dockerfile::{
    Instruction, MetaArg, MountType, Parsed, PlatformArgs, Spanned, Stage, Variables,
};
use kiln_image::{Digest, Platform};
use serde::Serialize;

use crate::Error;

/// What the plan needs to know about an image.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    /// The manifest digest: what the stage's cache keys start from.
    pub digest: Digest,
    /// The config's `Env`, which later instructions expand against.
    pub env: Vec<String>,
    /// The config's `OnBuild` triggers, which run first in a stage built on it.
    pub on_build: Vec<String>,
}

/// The plan's window on the world.
pub trait Resolver {
    /// The image of that name for a platform (from the store, or pulled), or why there is
    /// none.
    fn image(&self, name: &str, platform: &Platform) -> Result<ImageFacts, Error>;
    /// Checks that `RUN` steps for a platform other than the host's can run (an emulator is
    /// registered with binfmt_misc).
    fn check_run_platform(&self, platform: &Platform) -> Result<(), Error>;
    /// Checks that the context has what a `COPY`/`ADD` names (`keyword` for the message;
    /// `parents`: `COPY --parents`, whose patterns may hold a `/./` pivot).
    fn check_context(&self, keyword: &str, patterns: &[String], parents: bool)
    -> Result<(), Error>;
    /// The kind of the `--build-context` of that name, if there is one. It is read instead of
    /// a stage or an image of that name; an image context is then resolved by [`image`].
    ///
    /// [`image`]: Resolver::image
    fn named_context(&self, _name: &str) -> Option<crate::named::NamedKind> {
        None
    }
}

/// What to plan.
#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    /// The Dockerfile's name, for messages.
    pub dockerfile_name: &'a str,
    /// Its text, for diagnostics with source lines.
    pub dockerfile: &'a str,
    /// `--build-arg`.
    pub build_args: &'a [(String, String)],
    /// `--target`.
    pub target: Option<&'a str>,
    /// The platform built for (`TARGETPLATFORM`); the host's is `BUILDPLATFORM`.
    pub platform: kiln_dockerfile::Platform,
    /// `--allow security.insecure`: `RUN --security=insecure` may run.
    pub allow_security_insecure: bool,
    /// `--allow network.host` or `--network host`: `RUN --network=host` may run.
    pub allow_network_host: bool,
    /// `--no-cache-filter`: stage names, each of which must be in the Dockerfile.
    pub no_cache_filter: &'a [String],
}

/// Where a stage starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// `FROM <earlier stage>`.
    Stage(usize),
    /// `FROM <image>`.
    Image {
        /// The name as expanded.
        name: String,
        /// Its manifest digest.
        digest: Digest,
    },
}

/// One step of a stage.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// The instruction with its variables expanded.
    #[serde(serialize_with = "text_of")]
    pub instruction: Spanned<Instruction>,
    /// The variables after the step (an `ARG` or `ENV` changes them).
    #[serde(skip)]
    pub vars: Variables,
    /// An ONBUILD trigger of the base, not a line of this Dockerfile.
    pub trigger: bool,
    /// Earlier stages the step reads (`COPY --from`, `RUN --mount=from=`).
    pub reads: Vec<usize>,
}

fn platform_text<S: serde::Serializer>(
    platform: &Platform,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&platform.to_string())
}

/// An instruction in JSON: the line as written, and its typed value with variables expanded.
fn text_of<S: serde::Serializer>(
    instruction: &Spanned<Instruction>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Shown<'a> {
        text: &'a str,
        line: usize,
        expanded: &'a Instruction,
    }
    Shown {
        text: &instruction.original,
        line: instruction.span.start_line(),
        expanded: &instruction.value,
    }
    .serialize(serializer)
}

/// What expansion made of an instruction, where it differs from the text (RUN commands are
/// expanded by the shell at run time, not by the plan).
fn expanded_text(inst: &Instruction) -> Option<String> {
    let pairs = |kvs: &[kiln_dockerfile::KeyValue]| {
        kvs.iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match inst {
        Instruction::Env(kvs) => Some(format!("ENV {}", pairs(kvs))),
        Instruction::Label(kvs) => Some(format!("LABEL {}", pairs(kvs))),
        Instruction::Workdir(dir) => Some(format!("WORKDIR {dir}")),
        Instruction::User(user) => Some(format!("USER {user}")),
        Instruction::Copy(c) => Some(format!("COPY {} {}", c.sources.join(" "), c.dest)),
        Instruction::Add(a) => Some(format!("ADD {} {}", a.sources.join(" "), a.dest)),
        _ => None,
    }
}

/// One stage to build.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStage {
    /// Its position in the Dockerfile (`COPY --from=<index>`).
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// BuildKit's label in progress lines: the name, or `stage-<index>`.
    pub label: String,
    /// The `FROM` line with its variables expanded.
    #[serde(serialize_with = "text_of")]
    pub from: Spanned<Instruction>,
    /// Where it starts.
    pub base: Base,
    /// The platform its steps run for: `FROM --platform=…`, its base stage's, or the target.
    #[serde(serialize_with = "platform_text")]
    pub platform: Platform,
    /// The variables when the stage starts.
    #[serde(skip)]
    pub base_vars: Variables,
    /// The base's ONBUILD triggers first, then the stage's own instructions.
    pub steps: Vec<PlannedStep>,
    /// Stages that must be built first, in file order.
    pub deps: Vec<usize>,
    /// The ONBUILD triggers this stage's image passes on to a stage built on it.
    pub on_build: Vec<String>,
}

/// The stages a build runs, in file order (which is a topological order: a stage only reads
/// stages before it).
#[derive(Debug, Clone, Serialize)]
pub struct BuildPlan {
    /// The needed stages, by file order.
    pub stages: Vec<PlannedStage>,
    /// The Dockerfile index of the target stage.
    pub target: usize,
    /// The platform built for (`linux/amd64`).
    pub platform: String,
}

impl BuildPlan {
    /// The planned stage of a Dockerfile index.
    pub fn stage(&self, index: usize) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.index == index)
    }

    /// Images the plan reads, each once (for resolving them concurrently).
    pub fn images(&self) -> BTreeSet<&str> {
        self.stages
            .iter()
            .filter_map(|s| match &s.base {
                Base::Image { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The plan as text: one block per stage with its dependencies and steps.
    pub fn to_text(&self) -> String {
        let mut out = format!("platform {}\n", self.platform);
        for stage in &self.stages {
            let target = if stage.index == self.target {
                " (target)"
            } else {
                ""
            };
            out.push_str(&format!(
                "stage {} [{}]{target}\n",
                stage.index, stage.label
            ));
            let base = match &stage.base {
                Base::Scratch => "scratch".to_owned(),
                Base::Stage(i) => format!("stage {i}"),
                Base::Image { name, digest } => format!("image {name} @ {digest}"),
            };
            out.push_str(&format!("  from {base}\n"));
            if !stage.deps.is_empty() {
                let deps: Vec<String> = stage.deps.iter().map(|d| d.to_string()).collect();
                out.push_str(&format!("  needs stages {}\n", deps.join(", ")));
            }
            for (n, step) in stage.steps.iter().enumerate() {
                let trigger = if step.trigger {
                    "ONBUILD trigger: "
                } else {
                    ""
                };
                let first = step.instruction.original.lines().next().unwrap_or_default();
                out.push_str(&format!("  {}. {trigger}{first}\n", n + 1));
                if let Some(expanded) = expanded_text(&step.instruction.value)
                    && !first.ends_with(expanded.split_once(' ').map_or("", |(_, rest)| rest))
                {
                    out.push_str(&format!("       = {expanded}\n"));
                }
            }
        }
        out
    }

    /// The plan as a Graphviz graph: stages as nodes, `needs` as edges.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph plan {\n  rankdir=LR;\n");
        for stage in &self.stages {
            let shape = if stage.index == self.target {
                "doubleoctagon"
            } else {
                "box"
            };
            let label = format!("{} ({} steps)", stage.label, stage.steps.len());
            out.push_str(&format!(
                "  s{} [shape={shape}, label={}];\n",
                stage.index,
                dot_quote(&label)
            ));
            if let Base::Image { name, .. } = &stage.base {
                out.push_str(&format!(
                    "  {} [shape=ellipse];\n  {} -> s{};\n",
                    dot_quote(name),
                    dot_quote(name),
                    stage.index
                ));
            }
            for dep in &stage.deps {
                out.push_str(&format!("  s{dep} -> s{};\n", stage.index));
            }
        }
        out.push_str("}\n");
        out
    }
}

fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Plans a parsed Dockerfile.
pub fn plan(
    parsed: &Parsed,
    request: &PlanRequest<'_>,
    resolver: &dyn Resolver,
) -> Result<BuildPlan, Error> {
    let (meta_args, stages) = kiln_dockerfile::parse_stages(parsed)
        .map_err(|e| Error::Dockerfile(e.render(request.dockerfile_name, request.dockerfile)))?;
    crate::support::check_directives(&parsed.directives).map_err(|(line, e)| {
        Error::Dockerfile(format!("{}:{line}: {e}", request.dockerfile_name))
    })?;
    for inst in stages.iter().flat_map(|s| &s.instructions) {
        crate::support::check_instruction(&inst.value)
            .and_then(|()| {
                crate::support::check_entitlements(
                    &inst.value,
                    request.allow_security_insecure,
                    request.allow_network_host,
                )
            })
            .map_err(|e| {
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
    let target = target_index(&stages, request.target)?;
    for name in request.no_cache_filter {
        target_index(&stages, Some(name)).map_err(|_| {
            Error::BadInput(format!(
                "--no-cache-filter {name}: the Dockerfile has no stage named {name:?}"
            ))
        })?;
    }
    if let Some(name) = &stages[target].name
        && resolver.named_context(name).is_some()
    {
        return Err(Error::BadInput(format!(
            "--build-context {name} replaces the stage {name}, which is the build's target: \
             kiln does not make a context the result; build another target or rename the \
             context"
        )));
    }
    let mut planner = Planner::new(parsed, request, resolver, &meta_args, &stages, target)?;
    planner.plan_stage(target)?;
    Ok(BuildPlan {
        stages: planner.planned.into_iter().flatten().collect(),
        target,
        platform: request.platform.format(),
    })
}

/// The images a build will most likely read, found without asking for any: the bases and
/// `--from` images of the stages the target reaches through its own lines (ONBUILD triggers
/// can add more; the plan resolves those when it meets them). For pulling them concurrently
/// before planning; any error here is left for [`plan`] to report.
pub fn likely_images(parsed: &Parsed, request: &PlanRequest<'_>) -> Vec<String> {
    let Ok((meta_args, stages)) = kiln_dockerfile::parse_stages(parsed) else {
        return Vec::new();
    };
    let Ok(target) = target_index(&stages, request.target) else {
        return Vec::new();
    };
    let Ok(global) = global_variables(parsed, request, &meta_args, &stages, target) else {
        return Vec::new();
    };
    let mut images = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(index) = todo.pop() {
        if !seen.insert(index) {
            continue;
        }
        let stage = &stages[index];
        let mut names = Vec::new();
        if let Ok(from) = global.clone().expand_and_apply(&stage.from, parsed.escape)
            && let Instruction::From(from) = from.value
        {
            names.push((from.base, false));
        }
        for inst in &stage.instructions {
            names.extend(
                references(&inst.value)
                    .into_iter()
                    .map(|(_, n)| (n.to_owned(), true)),
            );
        }
        // A FROM may name an image like its own stage; a --from naming a later stage is an
        // error the plan reports, not an image to pull.
        for (name, reference) in names {
            match stage_by_name(&stages, &name, index) {
                Some(dep) => todo.push(dep),
                None if name != "scratch"
                    && !name.contains('$')
                    && !(reference && names_later_stage(&stages, &name, index)) =>
                {
                    images.insert(name);
                }
                None => {}
            }
        }
    }
    images.into_iter().collect()
}

/// The global scope: build args, the platform args and the meta ARGs before the first FROM.
fn global_variables(
    parsed: &Parsed,
    request: &PlanRequest<'_>,
    meta_args: &[MetaArg],
    stages: &[Stage],
    target: usize,
) -> Result<Variables, Error> {
    let mut platforms = PlatformArgs::same(request.platform.clone());
    platforms.build = kiln_dockerfile::Platform::host();
    // BuildKit: the target's name, the last stage's when no --target is given; "default"
    // only for an unnamed last stage.
    platforms.target_stage = match &stages[target].name {
        Some(name) => name.clone(),
        None if target + 1 == stages.len() => "default".into(),
        None => target.to_string(),
    };
    let mut global = Variables::new(&platforms, request.build_args.iter().cloned());
    global
        .declare_meta_args(meta_args, parsed.escape)
        .map_err(|e| Error::Dockerfile(e.render(request.dockerfile_name, request.dockerfile)))?;
    Ok(global)
}

fn target_index(stages: &[Stage], target: Option<&str>) -> Result<usize, Error> {
    let Some(name) = target else {
        return stages
            .len()
            .checked_sub(1)
            .ok_or_else(|| Error::BadInput("the Dockerfile has no stage".into()));
    };
    let lower = name.to_lowercase();
    stages
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
        .ok_or_else(|| {
            let known: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
            // BuildKit's wording, which scripts match; the hint is theirs too.
            let hint = match kiln_dockerfile::suggest(name, &known) {
                Some(close) => format!("did you mean {close}?"),
                None if known.is_empty() => "the Dockerfile names no stage".to_owned(),
                None => format!("its named stages: {}", known.join(", ")),
            };
            Error::BadInput(format!("target stage {name:?} could not be found ({hint})"))
        })
}

/// The stage a name refers to: a stage name (`AS name`) or an index, among stages before
/// `before`. Anything else names an image.
pub(crate) fn stage_by_name(stages: &[Stage], name: &str, before: usize) -> Option<usize> {
    let lower = name.to_lowercase();
    stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

/// Whether `name` names this stage or a later one (`stage_by_name` looks only before): BuildKit
/// refuses such a reference rather than taking it for an image.
fn names_later_stage(stages: &[Stage], name: &str, current: usize) -> bool {
    let lower = name.to_lowercase();
    stages[current..]
        .iter()
        .any(|s| s.name.as_deref() == Some(lower.as_str()))
        || name
            .parse::<usize>()
            .is_ok_and(|i| i >= current && i < stages.len())
}

/// The label BuildKit gives a stage in progress lines.
pub fn stage_label(stage: &Stage) -> String {
    match &stage.name {
        Some(name) => name.clone(),
        None => format!("stage-{}", stage.index),
    }
}

struct Planner<'a> {
    parsed: &'a Parsed,
    request: &'a PlanRequest<'a>,
    resolver: &'a dyn Resolver,
    stages: &'a [Stage],
    global: Variables,
    planned: Vec<Option<PlannedStage>>,
    /// Stages being planned, to report a cycle instead of overflowing the stack.
    planning: BTreeSet<usize>,
}

impl<'a> Planner<'a> {
    fn new(
        parsed: &'a Parsed,
        request: &'a PlanRequest<'a>,
        resolver: &'a dyn Resolver,
        meta_args: &[MetaArg],
        stages: &'a [Stage],
        target: usize,
    ) -> Result<Planner<'a>, Error> {
        let global = global_variables(parsed, request, meta_args, stages, target)?;
        Ok(Planner {
            parsed,
            request,
            resolver,
            stages,
            global,
            planned: vec![None; stages.len()],
            planning: BTreeSet::new(),
        })
    }

    fn dockerfile_error(&self, e: kiln_dockerfile::InstructionError) -> Error {
        Error::Dockerfile(e.render(self.request.dockerfile_name, self.request.dockerfile))
    }

    /// Plans stage `index` and, first, every stage it reads.
    fn plan_stage(&mut self, index: usize) -> Result<(), Error> {
        if self.planned[index].is_some() {
            return Ok(());
        }
        if !self.planning.insert(index) {
            return Err(Error::BadInput(format!(
                "stage {} depends on itself",
                stage_label(&self.stages[index])
            )));
        }
        let stage = &self.stages[index];
        // A copy: expanding FROM applies nothing the stage's own build needs.
        let from = self
            .global
            .clone()
            .expand_and_apply(&stage.from, self.parsed.escape)
            .map_err(|e| self.dockerfile_error(e))?;
        let Instruction::From(from_inst) = &from.value else {
            return Err(Error::BadInput(format!(
                "stage {} does not start with FROM",
                stage_label(stage)
            )));
        };
        let name = from_inst.base.clone();
        let mut deps = BTreeSet::new();
        let target = kiln_image::Platform::new(
            &self.request.platform.os,
            &self.request.platform.architecture,
            Some(self.request.platform.variant.as_str()).filter(|v| !v.is_empty()),
        );
        let asked = match &from_inst.platform {
            Some(text) => Some(text.parse::<Platform>().map_err(|why| {
                Error::Dockerfile(format!(
                    "{}:{}: FROM --platform={text}: {why}",
                    self.request.dockerfile_name,
                    from.span.start_line()
                ))
            })?),
            None => None,
        };
        // A named context comes before a stage or an image of its name (BuildKit's order).
        let named = self.resolver.named_context(&name);
        // `FROM DIR` of a directory context: the stage starts from its files, as BuildKit's
        // local source as a base, here an empty base and a copy of the directory onto it.
        let from_dir = (named == Some(crate::named::NamedKind::Dir)).then(|| Spanned {
            value: Instruction::Copy(kiln_dockerfile::CopyInstruction {
                sources: vec!["/".to_owned()],
                inline_sources: Vec::new(),
                dest: "/".to_owned(),
                from: Some(name.clone()),
                chown: None,
                chmod: None,
                link: false,
                parents: false,
                exclude: Vec::new(),
            }),
            span: from.span,
            original: format!("COPY --from={name} / /"),
            keyword: "COPY".to_owned(),
        });
        let named = if from_dir.is_some() {
            Some(crate::named::NamedKind::Scratch)
        } else {
            named
        };
        let stage_dep = named
            .is_none()
            .then(|| stage_by_name(self.stages, &name, index))
            .flatten();
        let scratch = match named {
            None => name == "scratch",
            Some(kind) => kind == crate::named::NamedKind::Scratch,
        };
        let (base, mut vars, triggers, platform) = if scratch {
            let mut vars = self.global.for_stage();
            vars.set_base_env([format!("PATH={}", crate::steps::DEFAULT_PATH)]);
            (Base::Scratch, vars, Vec::new(), asked.unwrap_or(target))
        } else if let Some(dep) = stage_dep {
            self.plan_stage(dep)?;
            deps.insert(dep);
            let parent = self.planned[dep]
                .as_ref()
                .ok_or_else(|| Error::BadInput(format!("stage {name:?} could not be planned")))?;
            // The stage keeps the parent's variables: its ENV and the ARGs it declared.
            let vars = parent
                .steps
                .last()
                .map_or_else(|| parent.base_vars.clone(), |s| s.vars.clone());
            let platform = asked.unwrap_or_else(|| parent.platform.clone());
            (Base::Stage(dep), vars, parent.on_build.clone(), platform)
        } else {
            let platform = asked.unwrap_or(target);
            let facts = self.resolver.image(&name, &platform).map_err(|e| match e {
                Error::Store(kiln_image::Error::ImageNotFound(name)) => Error::BaseNotFound {
                    name,
                    line: from.span.start_line(),
                },
                other => other,
            })?;
            let mut vars = self.global.for_stage();
            vars.set_base_env(&facts.env);
            let base = Base::Image {
                name: name.clone(),
                digest: facts.digest,
            };
            (base, vars, facts.on_build, platform)
        };
        let base_vars = vars.clone();
        let mut steps = Vec::new();
        if let Some(copy) = &from_dir {
            steps.push(self.plan_step(index, &platform, &mut vars, copy, false, &mut deps)?);
        }
        for trigger in &triggers {
            for inst in parse_trigger(trigger)? {
                let step = self.plan_step(index, &platform, &mut vars, &inst, true, &mut deps)?;
                steps.push(step);
            }
        }
        let mut on_build = Vec::new();
        for inst in &stage.instructions {
            let step = self.plan_step(index, &platform, &mut vars, inst, false, &mut deps)?;
            if let Instruction::Onbuild(trigger) = &step.instruction.value {
                on_build.push(trigger.expression.clone());
            }
            steps.push(step);
        }
        let runs = steps
            .iter()
            .any(|s| matches!(s.instruction.value, Instruction::Run(_)));
        if runs && !platform.matches(&Platform::host()) {
            self.resolver.check_run_platform(&platform)?;
        }
        self.planning.remove(&index);
        self.planned[index] = Some(PlannedStage {
            index,
            name: stage.name.clone(),
            label: stage_label(stage),
            from,
            base,
            platform: platform.clone(),
            base_vars,
            steps,
            deps: deps.into_iter().collect(),
            on_build,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_step(
        &mut self,
        index: usize,
        platform: &Platform,
        vars: &mut Variables,
        inst: &Spanned<Instruction>,
        trigger: bool,
        deps: &mut BTreeSet<usize>,
    ) -> Result<PlannedStep, Error> {
        let expanded = vars
            .expand_and_apply(inst, self.parsed.escape)
            .map_err(|e| self.dockerfile_error(e))?;
        crate::support::check_expanded(&expanded.value).map_err(|e| {
            Error::Dockerfile(format!(
                "{}:{}: {e}",
                self.request.dockerfile_name,
                expanded.span.start_line()
            ))
        })?;
        if trigger {
            // The Dockerfile's own instructions were checked up front; a base image's
            // triggers are met only here.
            crate::support::check_instruction(&expanded.value)
                .and_then(|()| {
                    crate::support::check_entitlements(
                        &expanded.value,
                        self.request.allow_security_insecure,
                        self.request.allow_network_host,
                    )
                })
                .map_err(|e| {
                    Error::Dockerfile(format!("ONBUILD trigger {:?}: {e}", expanded.original))
                })?;
        }
        let mut reads = Vec::new();
        // A base image's trigger has no line of this Dockerfile.
        let at = if trigger {
            String::new()
        } else {
            format!(
                "{}:{}: ",
                self.request.dockerfile_name,
                expanded.span.start_line()
            )
        };
        for (what, from) in references(&expanded.value) {
            let named = self.resolver.named_context(from);
            match named
                .is_none()
                .then(|| stage_by_name(self.stages, from, index))
                .flatten()
            {
                // A directory context has its files, nothing to resolve.
                None if named == Some(crate::named::NamedKind::Dir) => {}
                Some(dep) => {
                    self.plan_stage(dep)?;
                    deps.insert(dep);
                    reads.push(dep);
                }
                None if named.is_none() && names_later_stage(self.stages, from, index) => {
                    let stage = stage_label(&self.stages[index]);
                    return Err(Error::BadInput(format!(
                        "{at}{}",
                        if what == "COPY --from" {
                            format!(
                                "cannot copy from stage {from:?}, it needs to be defined before \
                             current stage {stage:?}"
                            )
                        } else {
                            format!(
                                "{what}={from}: cannot mount from stage {from:?} in stage \
                             {stage:?}, stage needs to be defined before current command"
                            )
                        }
                    )));
                }
                None => {
                    self.resolver.image(from, platform).map_err(|e| {
                        Error::BadInput(format!(
                            "{at}{what}={from}: no stage of that name before this one, and \
                             the image cannot be found ({e})"
                        ))
                    })?;
                }
            }
        }
        if let Some((keyword, patterns, parents)) = context_sources(&expanded.value) {
            self.resolver
                .check_context(keyword, patterns, parents)
                .map_err(|e| match e {
                    Error::BadInput(why) => Error::BadInput(format!(
                        "{}:{}: {why}",
                        self.request.dockerfile_name,
                        expanded.span.start_line()
                    )),
                    other => other,
                })?;
        }
        Ok(PlannedStep {
            instruction: expanded,
            vars: vars.clone(),
            trigger,
            reads,
        })
    }
}

/// The `--from` names an instruction reads, with the flag for messages.
fn references(inst: &Instruction) -> Vec<(&'static str, &str)> {
    match inst {
        Instruction::Copy(copy) => copy
            .from
            .as_deref()
            .map(|f| ("COPY --from", f))
            .into_iter()
            .collect(),
        Instruction::Run(run) => run
            .mounts
            .iter()
            .filter(|m| matches!(m.kind, MountType::Bind | MountType::Cache))
            .filter_map(|m| m.from.as_deref())
            .map(|f| ("RUN --mount=from", f))
            .collect(),
        _ => Vec::new(),
    }
}

/// The context paths a `COPY`/`ADD` reads, if it reads the context.
fn context_sources(inst: &Instruction) -> Option<(&'static str, &[String], bool)> {
    // Downloads and git sources are fetched when the step runs.
    let is_url = |s: &String| {
        s.starts_with("http://")
            || s.starts_with("https://")
            || matches!(crate::git::Remote::parse(s), Ok(Some(_)))
    };
    match inst {
        Instruction::Copy(c) if c.from.is_none() && c.inline_sources.is_empty() => {
            Some(("COPY", &c.sources, c.parents))
        }
        Instruction::Add(a) if a.inline_sources.is_empty() && !a.sources.iter().any(is_url) => {
            Some(("ADD", &a.sources, false))
        }
        _ => None,
    }
}

/// An ONBUILD trigger, parsed as the child build meets it.
fn parse_trigger(trigger: &str) -> Result<Vec<Spanned<Instruction>>, Error> {
    let parsed = kiln_dockerfile::parse(trigger).map_err(|e| {
        Error::Dockerfile(format!(
            "ONBUILD trigger {trigger:?} of the base image: {}",
            e.render("ONBUILD")
        ))
    })?;
    parsed
        .nodes
        .iter()
        .map(|node| {
            kiln_dockerfile::parse_instruction(node).map_err(|e| {
                Error::Dockerfile(format!(
                    "ONBUILD trigger of the base image: {}",
                    e.render("ONBUILD", trigger)
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// Images and context files of a made-up world; it counts lookups.
    #[derive(Default)]
    struct World {
        images: BTreeMap<String, ImageFacts>,
        files: Vec<String>,
        lookups: Mutex<Vec<String>>,
        emulates: Vec<String>,
    }

    impl World {
        fn with_image(mut self, name: &str, env: &[&str], on_build: &[&str]) -> World {
            self.images.insert(
                name.to_owned(),
                ImageFacts {
                    digest: Digest::of(name.as_bytes()),
                    env: env.iter().map(|s| s.to_string()).collect(),
                    on_build: on_build.iter().map(|s| s.to_string()).collect(),
                },
            );
            self
        }

        fn with_files(mut self, files: &[&str]) -> World {
            self.files = files.iter().map(|s| s.to_string()).collect();
            self
        }
    }

    impl Resolver for World {
        fn image(&self, name: &str, platform: &Platform) -> Result<ImageFacts, Error> {
            self.lookups
                .lock()
                .unwrap()
                .push(format!("{name} {platform}"));
            self.images
                .get(name)
                .cloned()
                .ok_or_else(|| Error::Store(kiln_image::Error::ImageNotFound(name.to_owned())))
        }

        fn check_run_platform(&self, platform: &Platform) -> Result<(), Error> {
            if self.emulates.contains(&platform.to_string()) {
                Ok(())
            } else {
                Err(Error::BadInput(format!("no emulator for {platform}")))
            }
        }

        fn check_context(
            &self,
            keyword: &str,
            patterns: &[String],
            _parents: bool,
        ) -> Result<(), Error> {
            match patterns.iter().find(|p| !self.files.contains(p)) {
                Some(missing) => Err(Error::BadInput(format!(
                    "{keyword} {missing}: not found in the build context"
                ))),
                None => Ok(()),
            }
        }
    }

    fn plan_of(dockerfile: &str, target: Option<&str>, world: &World) -> Result<BuildPlan, Error> {
        plan_with_args(dockerfile, target, &[], world)
    }

    fn plan_with_args(
        dockerfile: &str,
        target: Option<&str>,
        build_args: &[(String, String)],
        world: &World,
    ) -> Result<BuildPlan, Error> {
        let parsed = kiln_dockerfile::parse(dockerfile).unwrap();
        plan(&parsed, &request_for(dockerfile, target, build_args), world)
    }

    fn request_for<'a>(
        dockerfile: &'a str,
        target: Option<&'a str>,
        build_args: &'a [(String, String)],
    ) -> PlanRequest<'a> {
        PlanRequest {
            dockerfile_name: "Dockerfile",
            dockerfile,
            build_args,
            target,
            platform: kiln_dockerfile::Platform::new("linux", "amd64", ""),
            allow_security_insecure: false,
            allow_network_host: false,
            no_cache_filter: &[],
        }
    }

    fn indexes(plan: &BuildPlan) -> Vec<usize> {
        plan.stages.iter().map(|s| s.index).collect()
    }

    const THREE_STAGES: &str = "FROM base AS a\nRUN a\nFROM base AS b\nRUN b\n\
        FROM base AS c\nCOPY --from=a /a /a\nRUN --mount=from=b,target=/b cat /b/b\n";

    #[test]
    fn only_the_stages_the_target_reads_are_planned() {
        let world = World::default().with_image("base", &[], &[]);
        let plan = plan_of(
            &format!("FROM base AS unused\nRUN x\n{THREE_STAGES}"),
            None,
            &world,
        )
        .unwrap();
        assert_eq!(indexes(&plan), vec![1, 2, 3]);
        assert_eq!(plan.target, 3);
        assert_eq!(plan.stage(3).unwrap().deps, vec![1, 2]);
        assert_eq!(plan.stage(3).unwrap().steps[1].reads, vec![2]);
        let plan = plan_of(THREE_STAGES, Some("B"), &world).unwrap();
        assert_eq!(indexes(&plan), vec![1]);
        assert_eq!(plan.stage(1).unwrap().label, "b");
    }

    #[test]
    fn a_base_used_by_many_stages_is_in_the_image_set_once() {
        let world = World::default().with_image("base", &[], &[]);
        let plan = plan_of(THREE_STAGES, None, &world).unwrap();
        assert_eq!(plan.images().into_iter().collect::<Vec<_>>(), vec!["base"]);
    }

    #[test]
    fn a_dockerfile_without_stages_has_no_images_to_pull() {
        let dockerfile = "ARG x=1\n";
        let parsed = kiln_dockerfile::parse(dockerfile).unwrap();
        assert!(likely_images(&parsed, &request_for(dockerfile, None, &[])).is_empty());
    }

    #[test]
    fn the_images_to_pull_first_are_those_the_target_reaches() {
        let dockerfile = "ARG V=3\nFROM other AS unused\nFROM python:$V AS a\n\
            FROM scratch AS b\nCOPY --from=tools:1 /t /t\nFROM a\nCOPY --from=b /t /t\n";
        let parsed = kiln_dockerfile::parse(dockerfile).unwrap();
        let request = request_for(dockerfile, None, &[]);
        assert_eq!(
            likely_images(&parsed, &request),
            vec!["python:3", "tools:1"]
        );
    }

    #[test]
    fn onbuild_copy_from_plans_the_stage_it_reads() {
        let world = World::default().with_image("app-base", &[], &["COPY --from=src /out /out"]);
        let dockerfile = "FROM busybox AS src\nRUN mkdir /out\nFROM app-base\nRUN ls /out\n";
        let world = World {
            images: {
                let mut images = world.images;
                images.insert(
                    "busybox".into(),
                    ImageFacts {
                        digest: Digest::of(b"busybox"),
                        env: Vec::new(),
                        on_build: Vec::new(),
                    },
                );
                images
            },
            ..World::default()
        };
        let plan = plan_of(dockerfile, None, &world).unwrap();
        assert_eq!(indexes(&plan), vec![0, 1]);
        let app = plan.stage(1).unwrap();
        assert_eq!(app.deps, vec![0]);
        assert!(app.steps[0].trigger);
        assert_eq!(
            app.steps[0].instruction.original,
            "COPY --from=src /out /out"
        );
        assert_eq!(app.steps[0].reads, vec![0]);
        assert!(!app.steps[1].trigger);
    }

    #[test]
    fn a_stage_passes_its_onbuild_triggers_to_a_stage_built_on_it() {
        let world = World::default()
            .with_image("base", &[], &[])
            .with_files(&["app.py"]);
        let dockerfile = "FROM base AS parent\nONBUILD COPY app.py /app/\nFROM parent\nRUN true\n";
        let plan = plan_of(dockerfile, None, &world).unwrap();
        let child = plan.stage(1).unwrap();
        assert_eq!(child.base, Base::Stage(0));
        assert_eq!(child.steps[0].instruction.original, "COPY app.py /app/");
        assert!(child.steps[0].trigger);
    }

    #[test]
    fn variables_are_expanded_with_the_base_env_and_build_args() {
        let world = World::default().with_image("python:3", &["PYVER=3.11"], &[]);
        let dockerfile = "ARG TAG=3\nFROM python:${TAG}\nARG APP=x\nENV DIR=/srv/$APP\n\
            RUN echo $PYVER $DIR\n";
        let args = [("APP".to_owned(), "web".to_owned())];
        let plan = plan_with_args(dockerfile, None, &args, &world).unwrap();
        let stage = &plan.stages[0];
        assert_eq!(
            stage.base,
            Base::Image {
                name: "python:3".into(),
                digest: Digest::of(b"python:3")
            }
        );
        let Instruction::Env(env) = &stage.steps[1].instruction.value else {
            panic!("ENV expected");
        };
        assert_eq!(env[0].value, "/srv/web");
        assert!(
            stage.steps[2]
                .vars
                .run_env()
                .contains(&"PYVER=3.11".to_owned())
        );
    }

    #[test]
    fn from_a_stage_named_by_global_args() {
        let world = World::default().with_image("base", &[], &[]);
        let dockerfile = "FROM base AS stage-linux\nRUN x\nFROM stage-$TARGETOS\nRUN y\n";
        let plan = plan_of(dockerfile, None, &world).unwrap();
        assert_eq!(plan.stage(1).unwrap().base, Base::Stage(0));
    }

    #[test]
    fn errors_are_found_before_anything_runs() {
        let world = World::default()
            .with_image("base", &[], &[])
            .with_files(&["a"]);
        let unknown_target = plan_of("FROM base\n", Some("nope"), &world).unwrap_err();
        assert!(
            unknown_target.to_string().contains("target stage \"nope\""),
            "{unknown_target}"
        );
        let missing_file = plan_of("FROM base\nRUN x\nCOPY a b /\n", None, &world).unwrap_err();
        assert!(
            missing_file.to_string().contains("COPY b: not found"),
            "{missing_file}"
        );
        assert!(
            missing_file.to_string().starts_with("Dockerfile:3:"),
            "{missing_file}"
        );
        let unknown_stage =
            plan_of("FROM base\nCOPY --from=nowhere /x /x\n", None, &world).unwrap_err();
        assert!(
            unknown_stage.to_string().contains("COPY --from=nowhere"),
            "{unknown_stage}"
        );
        let missing_base = plan_of("FROM base\nFROM gone\n", None, &world).unwrap_err();
        assert!(
            matches!(missing_base, Error::BaseNotFound { line: 2, .. }),
            "{missing_base}"
        );
        let bad_flag = plan_of("FROM base\nRUN --device=/dev/kvm x\n", None, &world).unwrap_err();
        assert!(bad_flag.to_string().contains("--device"), "{bad_flag}");
        let no_from = plan_of("ARG x=1\n", None, &world).unwrap_err();
        assert!(
            no_from.to_string().contains("no stages to build"),
            "{no_from}"
        );
        let bad_trigger = World::default().with_image("base", &[], &["RUN --device=/dev/kvm x"]);
        let err = plan_of("FROM base\n", None, &bad_trigger).unwrap_err();
        assert!(err.to_string().contains("ONBUILD trigger"), "{err}");
    }

    #[test]
    fn the_plan_prints_as_text_json_and_dot() {
        let world = World::default().with_image("base", &[], &[]);
        let plan = plan_of(THREE_STAGES, None, &world).unwrap();
        let text = plan.to_text();
        assert!(
            text.contains("stage 2 [c] (target)\n  from image base @ sha256:"),
            "{text}"
        );
        assert!(text.contains("  needs stages 0, 1\n"), "{text}");
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["stages"][2]["deps"], serde_json::json!([0, 1]));
        let copy = &json["stages"][2]["steps"][0]["instruction"];
        assert_eq!(copy["text"], "COPY --from=a /a /a");
        assert_eq!(copy["expanded"]["Copy"]["from"], "a");
        let dot = plan.to_dot();
        assert!(
            dot.contains("s0 -> s2;") && dot.contains("s1 -> s2;"),
            "{dot}"
        );
    }
}
