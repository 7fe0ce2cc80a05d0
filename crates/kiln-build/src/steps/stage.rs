//! One stage at a time: the base, the ONBUILD triggers, then each instruction as a cached step.

use std::time::Instant;

use kiln_dockerfile::{Instruction, MetaArg, Parsed, PlatformArgs, Spanned, Stage, Variables};
use kiln_image::{CacheRecord, Descriptor, Digest, History, Image, ImageConfig, Store};
use sha2::{Digest as _, Sha256};

use super::{BuildRequest, Event, Reporter, files, meta, run, stage_by_name};
use crate::Error;

/// The PATH of an image that has none (docker's and BuildKit's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

pub(crate) struct Builder<'a> {
    pub store: &'a Store,
    pub request: &'a BuildRequest,
    pub reporter: &'a dyn Reporter,
    parsed: &'a Parsed,
    stages: &'a [Stage],
    global: Variables,
    /// Final states of the stages built so far.
    pub built: Vec<Option<StageState>>,
    step_id: usize,
}

impl<'a> Builder<'a> {
    pub fn new(
        store: &'a Store,
        request: &'a BuildRequest,
        reporter: &'a dyn Reporter,
        parsed: &'a Parsed,
        meta_args: &[MetaArg],
        stages: &'a [Stage],
        target: usize,
    ) -> Result<Builder<'a>, Error> {
        let mut platforms = PlatformArgs::same(kiln_dockerfile::Platform::host());
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
            .map_err(|e| {
                Error::Dockerfile(e.render(&request.dockerfile_name, &request.dockerfile))
            })?;
        Ok(Builder {
            store,
            request,
            reporter,
            parsed,
            stages,
            global,
            built: vec![None; stages.len()],
            step_id: 0,
        })
    }

    fn dockerfile_error(&self, e: kiln_dockerfile::InstructionError) -> Error {
        Error::Dockerfile(e.render(&self.request.dockerfile_name, &self.request.dockerfile))
    }

    /// The base of stage `index` with the global ARGs expanded (`FROM stage-$TARGETOS`).
    pub fn expanded_base(&self, index: usize) -> Result<String, Error> {
        let stage = &self.stages[index];
        // A copy: expanding a FROM applies nothing the stage's own build needs.
        let from = self
            .global
            .clone()
            .expand_and_apply(&stage.from, self.parsed.escape)
            .map_err(|e| self.dockerfile_error(e))?;
        match from.value {
            Instruction::From(from_inst) => Ok(from_inst.base),
            _ => Ok(stage.base.clone()),
        }
    }

    pub fn build_stage(&mut self, index: usize) -> Result<(), Error> {
        let stage = &self.stages[index];
        let label = stage.name.clone().unwrap_or_else(|| index.to_string());
        let total = stage.instructions.len();
        let from = self
            .global
            .expand_and_apply(&stage.from, self.parsed.escape)
            .map_err(|e| self.dockerfile_error(e))?;
        let Instruction::From(from_inst) = &from.value else {
            return Err(Error::BadInput(format!(
                "stage {label} does not start with FROM"
            )));
        };
        let id = self.next_step(&label, 0, total, &stage.from.original);
        let started = Instant::now();
        let mut state = self.base_state(index, &from_inst.base, &from)?;
        self.reporter.report(Event::Done {
            id,
            seconds: started.elapsed().as_secs_f64(),
        });

        // ONBUILD triggers of the base run first, then are dropped from the new image.
        let triggers = state
            .config
            .config
            .as_mut()
            .and_then(|c| c.on_build.take())
            .unwrap_or_default();
        for trigger in triggers {
            let parsed = kiln_dockerfile::parse(&trigger).map_err(|e| {
                Error::Dockerfile(format!(
                    "ONBUILD trigger {trigger:?} of the base image: {}",
                    e.render("ONBUILD")
                ))
            })?;
            for node in &parsed.nodes {
                let inst = kiln_dockerfile::parse_instruction(node).map_err(|e| {
                    Error::Dockerfile(format!(
                        "ONBUILD trigger of the base image: {}",
                        e.render("ONBUILD", &trigger)
                    ))
                })?;
                self.step(&label, 0, total, &mut state, &inst, index)?;
            }
        }
        for (i, inst) in stage.instructions.iter().enumerate() {
            self.step(&label, i + 1, total, &mut state, inst, index)?;
        }
        self.built[index] = Some(state);
        Ok(())
    }

    fn next_step(&mut self, stage: &str, index: usize, total: usize, text: &str) -> usize {
        self.step_id += 1;
        self.reporter.report(Event::Step {
            id: self.step_id,
            stage,
            index,
            total,
            text,
        });
        self.step_id
    }

    fn base_state(
        &mut self,
        index: usize,
        base: &str,
        from: &Spanned<Instruction>,
    ) -> Result<StageState, Error> {
        let mut vars = self.global.for_stage();
        if base == "scratch" {
            // BuildKit's empty image: `/` as the working dir and the default PATH.
            let mut config = ImageConfig::scratch();
            let container = config.container();
            container.working_dir = "/".into();
            container.env = Some(vec![format!("PATH={DEFAULT_PATH}")]);
            vars.set_base_env([format!("PATH={DEFAULT_PATH}")]);
            return Ok(StageState {
                config,
                layers: Vec::new(),
                key: Digest::of(b"scratch"),
                vars,
                cmd_set: false,
            });
        }
        if let Some(dep) = stage_by_name(self.stages, base, index) {
            let mut state = self.built[dep]
                .clone()
                .ok_or_else(|| Error::BadInput(format!("stage {base:?} was not built")))?;
            // The stage keeps the parent's variables: its ENV and the ARGs it declared (BuildKit).
            state.cmd_set = false;
            return Ok(state);
        }
        let image = self.resolve_image(base).map_err(|e| match e {
            Error::Store(kiln_image::Error::ImageNotFound(name)) => Error::BaseNotFound {
                name,
                line: from.span.start_line(),
            },
            other => other,
        })?;
        vars.set_base_env(
            image
                .config
                .env_pairs()
                .iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        let key = Digest::of(format!("from {}", image.manifest_digest()).as_bytes());
        Ok(StageState {
            config: image.config.clone(),
            layers: image.manifest.layers.clone(),
            key,
            vars,
            cmd_set: false,
        })
    }

    pub fn stages(&self) -> &'a [Stage] {
        self.stages
    }

    pub fn resolve_image(&self, name: &str) -> Result<Image, Error> {
        crate::registry::resolve_image(self.store, self.request, name, self.reporter, self.step_id)
    }

    pub fn step_id(&self) -> usize {
        self.step_id
    }

    fn step(
        &mut self,
        label: &str,
        index: usize,
        total: usize,
        state: &mut StageState,
        inst: &Spanned<Instruction>,
        stage_index: usize,
    ) -> Result<(), Error> {
        let id = self.next_step(label, index, total, &inst.original);
        let started = Instant::now();
        let expanded = state
            .vars
            .expand_and_apply(inst, self.parsed.escape)
            .map_err(|e| self.dockerfile_error(e))?;
        // The Dockerfile's own instructions were checked before the build; a base image's
        // ONBUILD triggers are met only here.
        crate::support::check_instruction(&expanded.value)
            .map_err(|e| Error::Dockerfile(format!("{}: {e}", expanded.original)))?;
        let ctx = StepContext {
            builder: self,
            inst: &expanded,
            id,
            stage_index,
        };
        let mut key = Sha256::new();
        key.update(state.key.as_str().as_bytes());
        key.update(format!("{:?}", expanded.value).as_bytes());
        let work: StepWork<'_> = match &expanded.value {
            Instruction::Run(run) => {
                key.update(run::key_material(&ctx, state, run)?.as_bytes());
                Box::new(|state| run::run(&ctx, state, run))
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                let plan = files::plan(&ctx, state)?;
                key.update(plan.key().as_str().as_bytes());
                Box::new(move |state| files::apply(&ctx, state, plan))
            }
            Instruction::Workdir(dir) => {
                let dir = dir.clone();
                Box::new(move |state| files::workdir(&ctx, state, &dir))
            }
            Instruction::Arg(defs) => {
                // Declared by expand_and_apply; only the history records it, with the
                // Dockerfile's default (not a --build-arg value), as BuildKit does.
                key.update(format!("{:?}", state.vars.declared_args()).as_bytes());
                let mut words = Vec::new();
                for def in defs {
                    match &def.default {
                        Some(default) => {
                            let value = kiln_dockerfile::shell::expand_word(
                                default,
                                &state.vars,
                                self.parsed.escape,
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
                let other = other.clone();
                Box::new(move |state| meta::apply(state, &other, &ctx.inst.original))
            }
        };
        let key = Digest::from_hasher(key);
        let cached = crate::registry::cache_get(self.store, self.request, &key, self.reporter, id)?;
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
                work(state)?;
                let config_digest = self.store.write_blob(&state.config.to_bytes())?;
                self.store.cache_put(
                    &key,
                    &CacheRecord {
                        config: config_digest,
                        layers: state.layers.clone(),
                    },
                )?;
                self.reporter.report(Event::Done {
                    id,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
        }
        state.key = key;
        Ok(())
    }

    pub fn finish(&mut self, target: usize) -> Result<Image, Error> {
        let mut state = self.built[target]
            .clone()
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
