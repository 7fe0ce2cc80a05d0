//! One stage of the plan: the base, then each planned step (the base's ONBUILD triggers first)
//! as a cached step. Stages run concurrently (see [`crate::solve`]), so a [`Builder`] is shared
//! between threads: what it learns (built stages, resolved images) sits behind locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use kiln_dockerfile::{Instruction, Spanned, Stage, Variables};
use kiln_image::{CacheRecord, Descriptor, Digest, History, Image, ImageConfig, Platform, Store};

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
    /// Set, and waiters woken, when a stage is built or the build is cancelled.
    finished: Mutex<bool>,
    finished_changed: Condvar,
    images: &'a ResolvedImages,
    /// Cache mounts a step that ignores the cache has emptied in this build: once each, so
    /// that the build's later steps share what its first one left.
    pub emptied_cache_mounts: Mutex<std::collections::BTreeSet<std::path::PathBuf>>,
}

/// Images resolved so far, by name: each is pulled or read once per build, by the plan and the
/// stages alike. `Err(())`: the pull failed and was reported.
#[derive(Default)]
pub(crate) struct ResolvedImages {
    pub by_name: Mutex<HashMap<String, Arc<OneImage>>>,
    /// Step numbers, shared by the plans of a multi-platform build.
    pub step_ids: AtomicUsize,
    /// Progress labels name the platform (`linux/arm64 stage-1`) when several are built.
    pub show_platform: bool,
}

/// One image's resolution: none yet, the image, or a failed pull.
type OneImage = Mutex<Option<Result<Image, ()>>>;

impl<'a> Builder<'a> {
    pub fn new(
        store: &'a Store,
        request: &'a BuildRequest,
        reporter: &'a dyn Reporter,
        stages: &'a [Stage],
        plan: &'a BuildPlan,
        images: &'a ResolvedImages,
    ) -> Builder<'a> {
        Builder {
            store,
            request,
            reporter,
            plan,
            stages,
            built: (0..stages.len()).map(|_| OnceLock::new()).collect(),
            finished: Mutex::new(false),
            finished_changed: Condvar::new(),
            images,
            emptied_cache_mounts: Mutex::default(),
        }
    }

    fn planned(&self, index: usize) -> Result<&'a PlannedStage, Error> {
        self.plan
            .stage(index)
            .ok_or_else(|| Error::BadInput(format!("stage {index} is not in the build plan")))
    }

    pub fn build_stage(&self, index: usize, slots: &Slots) -> Result<(), Error> {
        let planned = self.planned(index)?;
        let label = if self.images.show_platform {
            format!("{} {}", planned.platform, planned.label)
        } else {
            planned.label.clone()
        };
        let label = label.as_str();
        // BuildKit counts the FROM as the stage's first step: `[stage-1 1/3] FROM …`; but
        // `FROM scratch` is no step of its graph, so a scratch stage's steps start at 1.
        let from_steps = usize::from(!matches!(planned.base, Base::Scratch));
        let total = planned.steps.len() + from_steps;
        let id = (from_steps == 1).then(|| self.next_step(label, 1, total, &planned.from.original));
        let started = Instant::now();
        let mut state = self.base_state(planned, slots)?;
        // The base's ONBUILD triggers are steps of the plan; the new image does not keep them.
        if let Some(config) = state.config.config.as_mut() {
            config.on_build = None;
        }
        if let Some(id) = id {
            self.reporter.report(Event::Done {
                id,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        // `--isolation chroot`: the stage's plain rootfs, carried from step to step.
        let root = Mutex::new(None);
        for (i, step) in planned.steps.iter().enumerate() {
            if self.request.interrupt.is_interrupted() {
                return Err(Error::Interrupted);
            }
            let number = i + 1 + from_steps;
            self.step(label, number, total, &mut state, step, index, slots, &root)?;
        }
        self.built[index]
            .set(state)
            .map_err(|_| Error::BadInput(format!("stage {label} was built twice")))?;
        let _lock = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        self.finished_changed.notify_all();
        Ok(())
    }

    /// Waits until stage `index` is built: a step that reads another stage (`COPY --from`)
    /// waits there, not at the start of its own stage, so that the steps before it run
    /// meanwhile, as BuildKit's graph of steps allows.
    fn wait_for_stage(&self, index: usize) -> Result<&StageState, Error> {
        let mut cancelled = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(state) = self.built[index].get() {
                return Ok(state);
            }
            if *cancelled {
                return Err(Error::Interrupted);
            }
            cancelled = self
                .finished_changed
                .wait(cancelled)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn next_step(&self, stage: &str, index: usize, total: usize, text: &str) -> usize {
        let id = self.images.step_ids.fetch_add(1, Ordering::SeqCst) + 1;
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
                // BuildKit's empty image: `/` as the working dir and the default PATH, for the
                // stage's platform.
                let mut config = ImageConfig::scratch();
                config.os = planned.platform.os.clone();
                config.architecture = planned.platform.architecture.clone();
                config.variant = planned.platform.variant.clone();
                let container = config.container();
                container.working_dir = "/".into();
                container.env = Some(vec![format!("PATH={DEFAULT_PATH}")]);
                Ok(StageState {
                    config,
                    layers: Vec::new(),
                    key: crate::key::base_key(&planned.platform.to_string(), None),
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
                    self.resolve_image(name, &planned.platform)?
                };
                let mut config = image.config.clone();
                // A base's inline cache is about the base's steps, not this image's.
                config
                    .extra
                    .remove(kiln_registry::cache::inline::INLINE_CACHE_KEY);
                Ok(StageState {
                    config,
                    layers: image.manifest.layers.clone(),
                    key: crate::key::base_key(
                        &planned.platform.to_string(),
                        Some(image.manifest_digest()),
                    ),
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

    /// The image of that name for a platform, resolved once per build however many stages
    /// ask at once: from the store, or pulled (then as a step of its own, `[internal] load
    /// metadata for NAME`). A `--build-context` of that name comes first: its image, or an
    /// error for a directory.
    pub fn resolve_image(&self, name: &str, platform: &Platform) -> Result<Image, Error> {
        let name = match self.request.contexts.get(name) {
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
            let mut images = self
                .images
                .by_name
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            images
                .entry(format!("{name} {platform}"))
                .or_default()
                .clone()
        };
        // Held while resolving, so that a second asker waits instead of pulling again.
        let mut resolved = cell.lock().unwrap_or_else(PoisonError::into_inner);
        match &*resolved {
            Some(Ok(image)) => return Ok(image.clone()),
            // The pull failed and said why once; the store's answer is the error now.
            Some(Err(())) => return Ok(self.store.resolve_platform(name, Some(platform))?),
            None => {}
        }
        let pulls = self.request.registry.as_ref().is_some_and(|r| r.pull);
        let result = match self.store.resolve_platform(name, Some(platform)) {
            Ok(image) if !pulls => Ok(image),
            _ => {
                let text = format!("load metadata for {name}");
                let id = self.next_step("internal", 1, 1, &text);
                let started = Instant::now();
                let result = crate::registry::resolve_image(
                    self.store,
                    self.request,
                    name,
                    platform,
                    self.reporter,
                    id,
                );
                if result.is_ok() {
                    self.reporter.report(Event::Done {
                        id,
                        seconds: started.elapsed().as_secs_f64(),
                    });
                }
                result
            }
        };
        *resolved = Some(result.as_ref().map(Image::clone).map_err(drop));
        result
    }

    /// Resolves images at once, each on a thread: a plan's bases are pulled concurrently.
    /// Errors wait for the plan, which asks again and reports them with their line.
    pub fn prefetch(&self, names: &[String], platform: &Platform) {
        std::thread::scope(|scope| {
            for name in names {
                scope.spawn(move || {
                    let _ = self.resolve_image(name, platform);
                });
            }
        });
    }

    /// Whether `--no-cache-filter` names stage `index`.
    pub fn ignores_cache(&self, index: usize) -> bool {
        let name = self.plan.stage(index).and_then(|s| s.name.as_deref());
        name.is_some_and(|name| {
            self.request
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(name))
        })
    }

    /// The platform stage `index` builds for (the host's when it is not planned).
    pub fn stage_platform(&self, index: usize) -> Platform {
        self.plan
            .stage(index)
            .map_or_else(Platform::host, |s| s.platform.clone())
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
        root: &Mutex<Option<crate::snapshot::WorkingRoot>>,
    ) -> Result<(), Error> {
        for dep in &step.reads {
            self.wait_for_stage(*dep)?;
        }
        let expanded = &step.instruction;
        let id = self.next_step(label, index, total, &expanded.original);
        let started = Instant::now();
        state.vars = step.vars.clone();
        let ctx = StepContext {
            builder: self,
            inst: expanded,
            id,
            stage_index,
            root,
        };
        let platform = self.stage_platform(stage_index).to_string();
        // A --link step's parent: the empty image, onto which its copy is made.
        let empty_image = crate::key::base_key(&platform, None);
        let link_dest: Option<String>;
        // ADD --checksum only checks what the key already holds (the fetched files' digest):
        // with it or without, the same source is the same step, as in BuildKit.
        let unchecked = match &expanded.value {
            Instruction::Add(add) if add.checksum.is_some() => {
                Some(Instruction::Add(kiln_dockerfile::AddInstruction {
                    checksum: None,
                    ..add.clone()
                }))
            }
            _ => None,
        };
        let mut input = KeyInput {
            format: crate::key::KEY_FORMAT,
            parent: &state.key,
            platform: &platform,
            source_date_epoch: crate::source_date_epoch(),
            instruction: unchecked.as_ref().unwrap_or(&expanded.value),
            run: None,
            args: None,
            inputs: Vec::new(),
            link_dest: None,
        };
        let (shell, workdir, user) = (state.shell(), state.workdir(), state.user());
        let ulimit_texts: Vec<String> = (self.request.run_options.ulimits.iter())
            .map(|(text, _)| text.clone())
            .collect();
        // Whether the work loads the machine, and so takes a job slot.
        let mut heavy = true;
        let work: StepWork<'_> = match &expanded.value {
            Instruction::Run(run) => {
                let options = &self.request.run_options;
                input.run = Some(RunInput {
                    env: state.vars.run_env(),
                    shell,
                    workdir: &workdir,
                    user: &user,
                    extra_hosts: &options.extra_hosts,
                    shm_size: options.shm_size,
                    ulimits: &ulimit_texts,
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
                link_dest = plan.link_dest().map(str::to_owned);
                if link_dest.is_some() {
                    input.parent = &empty_image;
                    input.link_dest = link_dest.as_deref();
                }
                Box::new(move |state| files::apply(&ctx, state, plan))
            }
            Instruction::Workdir(dir) => {
                let dir = dir.clone();
                Box::new(move |state| files::workdir(&ctx, state, &dir))
            }
            Instruction::Arg(defs) => {
                heavy = false;
                // Declared by the plan, whose expansion gives each ARG the value it took; the
                // history records those, as BuildKit's dispatchArg does.
                input.args = Some(state.vars.declared_args().to_vec());
                let words: Vec<String> = defs
                    .iter()
                    .map(|def| match &def.default {
                        Some(value) => format!("{}={value}", def.key),
                        None => def.key.clone(),
                    })
                    .collect();
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
        // --no-cache-filter: this stage runs again, the others may take the cache.
        let filtered = !self.request.no_cache && self.ignores_cache(stage_index);
        let ignore_cache = self.request.no_cache || filtered;
        let mut cached = crate::registry::cache_get(
            self.store,
            self.request,
            &key,
            &state.key,
            ignore_cache,
            self.reporter,
            id,
        )?;
        let key_lock = slots.key_lock(&key);
        let _same_key = crate::solve::hold(&key_lock);
        if cached.is_none() && slots.was_built(&key) {
            // Another stage ran this very step while this one waited for the key.
            cached = self.store.cache_get(&key);
        }
        let linked = input.link_dest.is_some();
        // The key the step's result is known by: its own, or, for a step of a filtered stage
        // run again, one of the new result too. A step of another stage that reads this one
        // (COPY --from, FROM) is then keyed on what it reads, as BuildKit keys a copy on its
        // content, and the record under the step's own key stays the one its readers saw.
        let mut key_of_result = key.clone();
        match cached {
            Some(record) if linked => {
                let layer_config = self.store.config(&record.config)?;
                lay_link_layer(state, &layer_config, &record.layers)?;
                self.reporter.report(Event::Cached { id });
            }
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
                // A --link copy is made onto the empty image: its record keeps that one
                // layer, which any parent can take as it is.
                let mut alone = linked.then(|| empty_state(state, empty_image.clone()));
                {
                    let _slot = heavy.then(|| slots.acquire());
                    work(alone.as_mut().unwrap_or(state))?;
                }
                let made = alone.as_ref().unwrap_or(state);
                let config_digest = self.store.write_blob(&made.config.to_bytes())?;
                if filtered {
                    key_of_result = crate::key::merge_key(&key, &config_digest);
                }
                self.store.cache_put(
                    &key_of_result,
                    &CacheRecord {
                        config: config_digest,
                        layers: made.layers.clone(),
                    },
                )?;
                if let Some(alone) = &alone {
                    lay_link_layer(state, &alone.config, &alone.layers)?;
                }
                if !filtered {
                    slots.mark_built(&key);
                }
                self.reporter.report(Event::Done {
                    id,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
        }
        state.key = if linked {
            let merged = crate::key::merge_key(&state.key, &key_of_result);
            // mode=min walks the parents back from the image's last key: past a --link step
            // (keyed without its parent) through the merged key to the step's own.
            crate::registry::remember_key(self.request, &merged, &key_of_result);
            merged
        } else {
            key_of_result
        };
        Ok(())
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
        crate::registry::note_result(self.request, &state.key);
        let inline =
            crate::registry::inline_cache(self.store, self.request, &state.key, &state.layers)?;
        if let Some((value, count)) = inline {
            state
                .config
                .extra
                .insert(kiln_registry::cache::inline::INLINE_CACHE_KEY.into(), value);
            self.reporter.report(Event::Output {
                id: 0,
                line: &format!("inline cache: {count} records"),
            });
        }
        Ok(self.store.put_image(&state.config, state.layers.clone())?)
    }
}

impl crate::plan::Resolver for Builder<'_> {
    fn image(&self, name: &str, platform: &Platform) -> Result<ImageFacts, Error> {
        let image = self.resolve_image(name, platform)?;
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

    fn check_run_platform(&self, platform: &Platform) -> Result<(), Error> {
        if platform.os != "linux" {
            return Err(Error::BadInput(format!(
                "RUN steps for {platform} cannot run here: kiln runs linux steps only (a stage \
                 for another OS may copy, not run)"
            )));
        }
        kiln_sandbox::check_emulation(&platform.architecture).map_err(|why| {
            Error::BadInput(format!("RUN steps for {platform} cannot run here: {why}"))
        })
    }

    fn named_context(&self, name: &str) -> Option<crate::named::NamedKind> {
        self.request.contexts.kind(name)
    }

    fn check_context(
        &self,
        keyword: &str,
        patterns: &[String],
        parents: bool,
    ) -> Result<(), Error> {
        let root = self.request.context.root.as_deref().ok_or_else(|| {
            Error::BadInput(format!(
                "{keyword} needs a build context, and none was given (the Dockerfile came on \
                 stdin): pass a directory instead of `-`"
            ))
        })?;
        let src = crate::copy::SourceRoot {
            root,
            ignore: Some(&self.request.context.ignore),
            of: None,
        };
        files::match_all(src, patterns, parents).map(drop)
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
        *self.finished.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.finished_changed.notify_all();
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
    /// The stage's working rootfs in `--isolation chroot`.
    pub root: &'b Mutex<Option<crate::snapshot::WorkingRoot>>,
}

impl StepContext<'_, '_> {
    /// Whether steps run chrooted in a plain rootfs, without overlays.
    pub fn chroot(&self) -> bool {
        self.builder.request.isolation == crate::isolation::Isolation::Chroot
    }

    /// The stage's working rootfs, holding `state`'s layers (see
    /// [`crate::snapshot::WorkingRoot::take`]); give it back with its `commit`.
    pub fn take_root(&self, state: &StageState) -> Result<crate::snapshot::WorkingRoot, Error> {
        let mut slot = self.root.lock().unwrap_or_else(PoisonError::into_inner);
        crate::snapshot::WorkingRoot::take(
            &mut slot,
            self.builder.store,
            &state.layers,
            &state.config.rootfs.diff_ids,
        )
    }

    /// Commits the changes in `root` as `state`'s next layer and keeps the root for the
    /// stage's next step.
    pub fn commit_root(
        &self,
        root: crate::snapshot::WorkingRoot,
        state: &mut StageState,
        created_by: String,
    ) -> Result<(), Error> {
        let mut slot = self.root.lock().unwrap_or_else(PoisonError::into_inner);
        root.commit(&mut slot, self.builder.store, state, created_by)
    }
}

/// The empty image a `--link` copy is made onto: no layers, no history, the stage's platform.
fn empty_state(stage: &StageState, key: Digest) -> StageState {
    let mut config = ImageConfig::scratch();
    config.os = stage.config.os.clone();
    config.architecture = stage.config.architecture.clone();
    config.variant = stage.config.variant.clone();
    StageState {
        config,
        layers: Vec::new(),
        key,
        vars: stage.vars.clone(),
        cmd_set: false,
    }
}

/// Lays the layer of a `--link` step (made onto the empty image, or found in the cache) on
/// the stage as it is: the same blob and diff id, and its history entry; the stage's config
/// is otherwise its own.
fn lay_link_layer(
    state: &mut StageState,
    layer_config: &ImageConfig,
    layers: &[Descriptor],
) -> Result<(), Error> {
    let (Some(history), [layer], [diff_id]) = (
        layer_config.history.last(),
        layers,
        &layer_config.rootfs.diff_ids[..],
    ) else {
        return Err(Error::BadInput(format!(
            "the cache record of a --link step holds {} layers, not the one it made; \
             rebuild with --no-cache",
            layers.len()
        )));
    };
    state.layers.push(layer.clone());
    state.config.rootfs.diff_ids.push(diff_id.clone());
    state.config.history.push(history.clone());
    Ok(())
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
    let layer = kiln_layer::store_layer_from_upper(
        store,
        upper,
        kiln_layer::DiffOptions {
            source_date_epoch: crate::source_date_epoch(),
        },
    )?;
    state.config.rootfs.diff_ids.push(layer.diff_id.clone());
    state.layers.push(Descriptor::new(
        kiln_image::media_type::OCI_LAYER_TAR,
        layer.diff_id,
        layer.size,
    ));
    if let Some(chain) = kiln_image::chain_id(&state.config.rootfs.diff_ids) {
        store.commit_snapshot(upper, &chain)?;
    }
    push_history(&mut state.config, created_by, false);
    Ok(())
}
