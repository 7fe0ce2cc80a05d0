//! One stage of the plan: the base, then each planned step (the base's ONBUILD triggers first)
//! as a cached step. Stages run concurrently (see [`crate::solve`]), so a [`Builder`] is shared
//! between threads: what it learns (built stages, resolved images) sits behind locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use kiln_dockerfile::{Instruction, Spanned, Stage, Variables};
use kiln_image::{CacheRecord, Descriptor, Digest, History, Image, ImageConfig, Store};

use super::{BuildRequest, DEFAULT_PATH, Event, Reporter, files, meta, run};
use crate::Error;
use crate::key::{KeyInput, RunInput};
use crate::named::NamedContext;
use crate::plan::{Base, BuildPlan, ImageFacts, PlannedStage, PlannedStep};
use crate::solve::{Slots, StageRunner};

/// The image state of a stage after some steps.
#[derive(Debug, Clone)]
pub struct StageState {
    /// The config so far.
    pub config: ImageConfig,
    /// The layers so far, bottom first.
    pub layers: Vec<Descriptor>,
    /// The cache key of the last step.
    pub key: Digest,
    /// Variables in scope.
    pub vars: Variables,
    /// `CMD` was set in this stage (an `ENTRYPOINT` then keeps it).
    pub cmd_set: bool,
}

impl StageState {
    /// The shell of shell-form commands.
    pub fn shell(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    /// The working directory, `/` when unset.
    pub fn workdir(&self) -> String {
        let dir = self
            .config
            .config
            .as_ref()
            .map(|c| c.working_dir.clone())
            .unwrap_or_default();
        if dir.is_empty() { "/".into() } else { dir }
    }

    /// The user, root when unset.
    pub fn user(&self) -> String {
        self.config
            .config
            .as_ref()
            .map(|c| c.user.clone())
            .unwrap_or_default()
    }
}

/// Runs the stages of a plan: one [`Builder`] per build, shared by the stage threads.
pub(crate) struct Builder<'a> {
    pub store: &'a Store,
    pub request: &'a BuildRequest,
    pub reporter: &'a dyn Reporter,
    plan: &'a BuildPlan,
    stages: &'a [Stage],
    /// Final states of the stages built so far.
    pub built: Vec<OnceLock<StageState>>,
    step_id: AtomicUsize,
    escape_char: char,
    images: &'a ResolvedImages,
}

/// Images resolved so far, by name: each is pulled or read once per build, by the plan and the
/// stages alike.
#[derive(Default)]
pub(crate) struct ResolvedImages(Mutex<HashMap<String, Arc<OnceLock<Image>>>>);

impl<'a> Builder<'a> {
    pub fn new(
        store: &'a Store,
        request: &'a BuildRequest,
        reporter: &'a dyn Reporter,
        stages: &'a [Stage],
        plan: &'a BuildPlan,
        escape: char,
        images: &'a ResolvedImages,
    ) -> Builder<'a> {
        Builder {
            escape_char: escape,
            store,
            request,
            reporter,
            plan,
            stages,
            built: (0..stages.len()).map(|_| OnceLock::new()).collect(),
            step_id: AtomicUsize::new(0),
            images,
        }
    }

    fn planned(&self, index: usize) -> Result<&'a PlannedStage, Error> {
        self.plan
            .stage(index)
            .ok_or_else(|| Error::BadInput(format!("stage {index} is not in the build plan")))
    }

    pub fn build_stage(&self, index: usize, slots: &Slots) -> Result<(), Error> {
        let planned = self.planned(index)?;
        let label = planned.label.as_str();
        // BuildKit counts the FROM as the stage's first step: `[stage-1 1/3] FROM …`.
        let total = planned.steps.len() + 1;
        let id = self.next_step(label, 1, total, &planned.from.original);
        let started = Instant::now();
        let mut state = self.base_state(planned, slots)?;
        // The base's ONBUILD triggers are steps of the plan; the new image does not keep them.
        if let Some(config) = state.config.config.as_mut() {
            config.on_build = None;
        }
        self.reporter.report(Event::Done {
            id,
            seconds: started.elapsed().as_secs_f64(),
        });
        for (i, step) in planned.steps.iter().enumerate() {
            if self.request.interrupt.is_interrupted() {
                return Err(Error::Interrupted);
            }
            self.step(label, i + 2, total, &mut state, step, index, slots)?;
        }
        self.built[index]
            .set(state)
            .map_err(|_| Error::BadInput(format!("stage {label} was built twice")))?;
        Ok(())
    }

    fn next_step(&self, stage: &str, index: usize, total: usize, text: &str) -> usize {
        let id = self.step_id.fetch_add(1, Ordering::SeqCst) + 1;
        self.reporter.report(Event::Step {
            id,
            stage,
            index,
            total,
            text,
        });
        id
    }

    fn base_state(&self, planned: &PlannedStage, slots: &Slots) -> Result<StageState, Error> {
        let vars = planned.base_vars.clone();
        match &planned.base {
            Base::Scratch => {
                // BuildKit's empty image: `/` as the working dir and the default PATH.
                let mut config = ImageConfig::scratch();
                let container = config.container();
                container.working_dir = "/".into();
                container.env = Some(vec![format!("PATH={DEFAULT_PATH}")]);
                Ok(StageState {
                    config,
                    layers: Vec::new(),
                    key: crate::key::base_key(&self.plan.platform, None),
                    vars,
                    cmd_set: false,
                })
            }
            Base::Stage(dep) => {
                let mut state = self.built[*dep].get().cloned().ok_or_else(|| {
                    Error::BadInput(format!("stage {dep} was not built before its dependent"))
                })?;
                state.vars = vars;
                state.cmd_set = false;
                Ok(state)
            }
            Base::Image { name, .. } => {
                let image = {
                    let _slot = slots.acquire();
                    self.resolve_image(name)?
                };
                Ok(StageState {
                    config: image.config.clone(),
                    layers: image.manifest.layers.clone(),
                    key: crate::key::base_key(&self.plan.platform, Some(image.manifest_digest())),
                    vars,
                    cmd_set: false,
                })
            }
        }
    }

    pub fn stages(&self) -> &'a [Stage] {
        self.stages
    }

    /// The stage a `--from` name reads, unless a `--build-context` of that name comes first.
    pub fn stage_for(&self, name: &str, before: usize) -> Option<usize> {
        if self.request.contexts.get(name).is_some() {
            return None;
        }
        crate::plan::stage_by_name(self.stages(), name, before)
    }

    /// The directory `--build-context` of that name, if there is one.
    pub fn dir_context(&self, name: &str) -> Option<&'a crate::context::Context> {
        match self.request.contexts.get(name) {
            Some(NamedContext::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    /// The image of that name, resolved once per build however many stages ask at once. A
    /// `--build-context` of that name comes first: its image, or an error for a directory.
    pub fn resolve_image(&self, name: &str) -> Result<Image, Error> {
        let target = match self.request.contexts.get(name) {
            Some(NamedContext::Loaded(image)) => return Ok((**image).clone()),
            Some(NamedContext::Image(target)) => target.as_str(),
            Some(NamedContext::Dir(_)) => {
                return Err(Error::BadInput(format!(
                    "--build-context {name} is a directory, not an image"
                )));
            }
            None => name,
        };
        let cell = {
            let mut images = self.images.0.lock().unwrap_or_else(PoisonError::into_inner);
            images.entry(name.to_owned()).or_default().clone()
        };
        if let Some(image) = cell.get() {
            return Ok(image.clone());
        }
        // Two threads may race here; the store and the registry client are safe for it, and
        // the second simply finds the image the first pulled.
        let id = self.step_id.load(Ordering::SeqCst);
        let image =
            crate::registry::resolve_image(self.store, self.request, target, self.reporter, id)?;
        Ok(cell.get_or_init(|| image).clone())
    }

    pub fn step_id(&self) -> usize {
        self.step_id.load(Ordering::SeqCst)
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        label: &str,
        index: usize,
        total: usize,
        state: &mut StageState,
        step: &PlannedStep,
        stage_index: usize,
        slots: &Slots,
    ) -> Result<(), Error> {
        let expanded = &step.instruction;
        let id = self.next_step(label, index, total, &expanded.original);
        let started = Instant::now();
        state.vars = step.vars.clone();
        let ctx = StepContext {
            builder: self,
            inst: expanded,
            id,
            stage_index,
        };
        let platform = self.plan.platform.as_str();
        let mut input = KeyInput {
            format: crate::key::KEY_FORMAT,
            parent: &state.key,
            platform,
            instruction: &expanded.value,
            run: None,
            args: None,
            inputs: Vec::new(),
        };
        let (shell, workdir, user) = (state.shell(), state.workdir(), state.user());
        // Whether the work loads the machine, and so takes a job slot.
        let mut heavy = true;
        let work: StepWork<'_> = match &expanded.value {
            Instruction::Run(run) => {
                input.run = Some(RunInput {
                    env: state.vars.run_env(),
                    shell,
                    workdir: &workdir,
                    user: &user,
                });
                input.inputs = run::bind_inputs(&ctx, run)?;
                Box::new(|state| run::run(&ctx, state, run))
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                // Finding and digesting the sources (or downloading them) is work too.
                let plan = {
                    let _slot = slots.acquire();
                    files::plan(&ctx, state)?
                };
                input.inputs = vec![("sources".to_owned(), plan.key().clone())];
                Box::new(move |state| files::apply(&ctx, state, plan))
            }
            Instruction::Workdir(dir) => {
                let dir = dir.clone();
                Box::new(move |state| files::workdir(&ctx, state, &dir))
            }
            Instruction::Arg(defs) => {
                heavy = false;
                // Declared by the plan; only the history records it, with the Dockerfile's
                // default (not a --build-arg value), as BuildKit does.
                input.args = Some(state.vars.declared_args().to_vec());
                let mut words = Vec::new();
                for def in defs {
                    match &def.default {
                        Some(default) => {
                            let value = kiln_dockerfile::shell::expand_word(
                                default,
                                &state.vars,
                                self.escape(),
                            )
                            .map_err(|e| Error::BadInput(format!("ARG {}: {e}", def.key)))?;
                            words.push(format!("{}={value}", def.key));
                        }
                        None => words.push(def.key.clone()),
                    }
                }
                let created_by = format!("ARG {}", words.join(" "));
                Box::new(move |state| {
                    push_history(&mut state.config, created_by, true);
                    Ok(())
                })
            }
            other => {
                heavy = false;
                let other = other.clone();
                Box::new(move |state| meta::apply(state, &other, &ctx.inst.original))
            }
        };
        let key = input.digest();
        tracing::debug!(step = id, key = %key, input = %input.canonical(), "cache key");
        let mut cached =
            crate::registry::cache_get(self.store, self.request, &key, self.reporter, id)?;
        let key_lock = slots.key_lock(&key);
        let _same_key = crate::solve::hold(&key_lock);
        if cached.is_none() && slots.was_built(&key) {
            // Another stage ran this very step while this one waited for the key.
            cached = self.store.cache_get(&key);
        }
        match cached {
            Some(record) => {
                state.config = self.store.config(&record.config)?;
                state.layers = record.layers;
                if let Instruction::Cmd(_) = &expanded.value {
                    state.cmd_set = true;
                }
                self.reporter.report(Event::Cached { id });
            }
            None => {
                tracing::debug!(step = id, key = %key, "cache miss: no record of this key");
                {
                    let _slot = heavy.then(|| slots.acquire());
                    work(state)?;
                }
                let config_digest = self.store.write_blob(&state.config.to_bytes())?;
                self.store.cache_put(
                    &key,
                    &CacheRecord {
                        config: config_digest,
                        layers: state.layers.clone(),
                    },
                )?;
                slots.mark_built(&key);
                self.reporter.report(Event::Done {
                    id,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
        }
        state.key = key;
        Ok(())
    }

    fn escape(&self) -> char {
        self.escape_char
    }

    pub fn finish(&self, target: usize) -> Result<Image, Error> {
        let mut state = self.built[target]
            .get()
            .cloned()
            .ok_or_else(|| Error::BadInput("the target stage was not built".into()))?;

        if !self.request.labels.is_empty() {
            let labels = state
                .config
                .container()
                .labels
                .get_or_insert_with(Default::default);
            for (k, v) in &self.request.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        // The image's time is its last step's, so that a fully cached rebuild is the same image.
        state.config.created = state
            .config
            .history
            .iter()
            .rev()
            .find_map(|h| h.created.clone())
            .or_else(|| Some(crate::created_timestamp()));
        let image = self.store.put_image(&state.config, state.layers.clone())?;
        for tag in &self.request.tags {
            self.store.tag(&tag.store_name(), &image.descriptor)?;
        }
        Ok(image)
    }
}

impl crate::plan::Resolver for Builder<'_> {
    fn image(&self, name: &str) -> Result<ImageFacts, Error> {
        let image = self.resolve_image(name)?;
        let on_build = image
            .config
            .config
            .as_ref()
            .and_then(|c| c.on_build.clone())
            .unwrap_or_default();
        Ok(ImageFacts {
            digest: image.manifest_digest().clone(),
            env: image
                .config
                .env_pairs()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            on_build,
        })
    }

    fn named_context(&self, name: &str) -> Option<crate::named::NamedKind> {
        self.request.contexts.kind(name)
    }

    fn check_context(&self, keyword: &str, patterns: &[String]) -> Result<(), Error> {
        let root = self.request.context.root.as_deref().ok_or_else(|| {
            Error::BadInput(format!(
                "{keyword} needs a build context, and none was given (the Dockerfile came on \
                 stdin): pass a directory instead of `-`"
            ))
        })?;
        let src = crate::copy::SourceRoot {
            root,
            ignore: Some(&self.request.context.ignore),
        };
        files::match_all(src, patterns).map(drop)
    }
}

impl StageRunner for Builder<'_> {
    fn run_stage(&self, stage: usize, slots: &Slots) -> Result<(), Error> {
        self.build_stage(stage, slots)
    }

    fn cancel(&self) {
        // Twice: a failed build need not wait for steps to end gracefully (SIGKILL).
        self.request.interrupt.interrupt();
        self.request.interrupt.interrupt();
    }
}

/// The work of a step on a cache miss.
type StepWork<'w> = Box<dyn FnOnce(&mut StageState) -> Result<(), Error> + 'w>;

/// What a step's work needs to know.
pub(crate) struct StepContext<'b, 'a> {
    pub builder: &'b Builder<'a>,
    pub inst: &'b Spanned<Instruction>,
    pub id: usize,
    pub stage_index: usize,
}

/// Appends a history entry, docker-style.
pub(crate) fn push_history(config: &mut ImageConfig, created_by: String, empty_layer: bool) {
    config.history.push(History {
        created: Some(crate::created_timestamp()),
        created_by: Some(created_by),
        comment: Some("buildkit.dockerfile.v0".into()),
        empty_layer,
        ..History::default()
    });
}

/// Turns an upper dir into a layer: the tar goes into the store uncompressed (its digest is its
/// diff id), and the upper dir itself becomes the snapshot, so nothing is copied.
pub(crate) fn commit_upper(
    store: &Store,
    state: &mut StageState,
    upper: &std::path::Path,
    created_by: String,
) -> Result<(), Error> {
    let mut writer = store.blob_writer()?;
    let summary = kiln_layer::write_layer_from_upper(
        upper,
        &mut writer,
        kiln_layer::DiffOptions {
            source_date_epoch: crate::source_date_epoch(),
        },
    )?;
    let (digest, size) = writer.commit(None)?;
    if summary.diff_id != digest.as_str() {
        return Err(Error::BadInput(format!(
            "layer digest {digest} differs from its diff id {}",
            summary.diff_id
        )));
    }
    state.config.rootfs.diff_ids.push(digest.clone());
    state.layers.push(Descriptor::new(
        kiln_image::media_type::OCI_LAYER_TAR,
        digest,
        size,
    ));
    if let Some(chain) = kiln_image::chain_id(&state.config.rootfs.diff_ids) {
        store.commit_snapshot(upper, &chain)?;
    }
    push_history(&mut state.config, created_by, false);
    Ok(())
}
