//! A Dockerfile becomes an image: stages in order, each instruction a step, each step keyed
//! for the cache.
//!
//! The cache key of a step is the key of the step before it, plus the instruction with its
//! variables expanded, plus what else it reads: the environment and shell of a `RUN`, the
//! content digest of `COPY`/`ADD` sources. A hit reuses the recorded config and layers without
//! touching a file system; only a miss unpacks snapshots and mounts anything.

mod files;
pub use files::http_date;
mod meta;
mod run;
mod stage;

use std::collections::BTreeMap;

use kiln_dockerfile::Instruction;
use kiln_image::{Descriptor, Image, Platform, Reference, Store};

pub use stage::StageState;
pub(crate) use stage::push_history;

use crate::Error;
use crate::context::Context;
use crate::plan::{BuildPlan, PlanRequest};
use crate::solve::{Node, Slots};

/// The PATH of an image that has none (docker's and BuildKit's default).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The Dockerfile text.
    pub dockerfile: String,
    /// Its name, for diagnostics (`Dockerfile`, `-`).
    pub dockerfile_name: String,
    /// The build context.
    pub context: Context,
    /// `--build-context NAME=…`: what `FROM NAME` and `--from=NAME` read instead of a stage
    /// or an image of that name.
    pub contexts: crate::named::NamedContexts,
    /// Names to tag the result with.
    pub tags: Vec<Reference>,
    /// `--build-arg K=V`.
    pub build_args: Vec<(String, String)>,
    /// `--target STAGE`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`: the stages (by name, case-insensitive as BuildKit compares them)
    /// whose steps run even when cached.
    pub no_cache_filter: Vec<String>,
    /// `--jobs`: units of work (RUN steps, copies, pulls) at once.
    pub jobs: usize,
    /// `--platform` of a single-platform build (default: the host's). It sets `TARGETPLATFORM`
    /// and chooses bases from multi-platform images.
    pub platform: Option<Platform>,
    /// `--sync`: RUN steps' syncs reach the disk (by default the sandbox makes them no-ops,
    /// see [`kiln_sandbox::RunSpec::skip_syncs`]).
    pub sync: bool,
    /// `--label K=V`, added to the final image.
    pub labels: Vec<(String, String)>,
    /// `--secret id=ID,src=PATH`: files that `RUN --mount=type=secret` binds.
    pub secrets: Vec<(String, std::path::PathBuf)>,
    /// `--ssh`: the agents that `RUN --mount=type=ssh` forwards, by id.
    pub ssh: Vec<crate::ssh::SshAgent>,
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
    /// `--add-host`, `--shm-size` and `--ulimit` of every RUN step.
    pub run_options: RunOptions,
    /// `--annotation`: what the target's manifest of each platform is annotated with.
    pub annotations: Vec<Annotation>,
    /// Registry access: pulling bases, `--pull`, `--cache-from`/`--cache-to` (none: the
    /// store only).
    pub registry: Option<std::sync::Arc<crate::registry::BuildRegistry>>,
    /// `--isolation`, as chosen ([`crate::isolation::choose`]).
    pub isolation: crate::isolation::Isolation,
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
    /// Bytes of a registry transfer (a base pull, a cache import) moved so far.
    Transfer {
        /// The step that waits for it.
        id: usize,
        /// The blob, short.
        blob: &'a str,
        /// Bytes moved.
        done: u64,
        /// The blob's size, when the transfer starts.
        total: Option<u64>,
    },
    /// A parser or build warning.
    Warning {
        /// `file:line: rule: message`.
        text: String,
    },
}

/// Receives [`Event`]s, from the threads of concurrent stages: events of one step come in
/// order, events of different steps interleave.
pub trait Reporter: Send + Sync {
    /// Called for each event.
    fn report(&self, event: Event<'_>);
}

/// A reporter that drops everything.
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event<'_>) {}
}

/// Where an `--annotation` goes, as BuildKit's exporter types name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationKind {
    /// `manifest:` (the default): the image manifest.
    Manifest,
    /// `manifest-descriptor:`: the index's entry for the manifest.
    ManifestDescriptor,
    /// `index:`: the image index.
    Index,
}

/// `--annotation [TYPE[PLATFORM]:]KEY=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// Where it goes.
    pub kind: AnnotationKind,
    /// Only this platform's manifest (or entry); every one when `None`.
    pub platform: Option<Platform>,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl BuildRequest {
    /// The annotations of `kind` for `platform`'s image (every platform's when `None`), as a
    /// map: a later flag for a key wins, as in BuildKit.
    pub fn annotations_of(
        &self,
        kind: AnnotationKind,
        platform: Option<&Platform>,
    ) -> BTreeMap<String, String> {
        self.annotations
            .iter()
            .filter(|a| a.kind == kind)
            .filter(|a| match (&a.platform, platform) {
                (None, _) => true,
                (Some(want), Some(platform)) => want.matches(platform),
                (Some(_), None) => false,
            })
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect()
    }
}

/// What every RUN step of a build gets, and is keyed on, as BuildKit's exec ops are.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--add-host NAME:ADDRESS`: `/etc/hosts` lines.
    pub extra_hosts: Vec<(String, String)>,
    /// `--shm-size`: bytes of `/dev/shm` (docker's 64 MiB when `None`).
    pub shm_size: Option<u64>,
    /// `--ulimit`: as given (the key), and as read.
    pub ulimits: Vec<(String, kiln_sandbox::Ulimit)>,
}

/// Runs a build for `request.platform` (the host's when unset) and tags the result: parse,
/// plan (every error is found there), solve.
pub fn build(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
) -> Result<Image, Error> {
    let session = Session::new(request.jobs, false);
    let platform = request.platform.clone().unwrap_or_else(Platform::host);
    let image = session.build(store, request, reporter, &platform)?;
    for tag in &request.tags {
        store.tag(&tag.store_name(), &image.descriptor)?;
    }
    export_cache(store, request, reporter)?;
    Ok(image)
}

/// What a multi-platform build made: an index in the store, over one image per platform.
#[derive(Debug)]
pub struct MultiPlatform {
    /// The index.
    pub index: Descriptor,
    /// Each platform's image, in the order asked.
    pub images: Vec<(Platform, Image)>,
}

/// Builds for several platforms at once, one plan each, sharing the job slots, the resolved
/// images and the cache (a `FROM --platform=$BUILDPLATFORM` stage is built once), and tags an
/// index over the results.
pub fn build_platforms(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
    platforms: &[Platform],
) -> Result<MultiPlatform, Error> {
    let session = Session::new(request.jobs, true);
    let results: Vec<Result<Image, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = platforms
            .iter()
            .map(|platform| {
                let session = &session;
                scope.spawn(move || session.build(store, request, reporter, platform))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::BadInput("a platform's build panicked".into())))
            })
            .collect()
    });
    let mut built = Vec::new();
    for (platform, result) in platforms.iter().zip(results) {
        built.push((platform.clone(), result?));
    }
    let index = store.put_attested_index(
        &built,
        &[],
        &request.annotations_of(AnnotationKind::Index, None),
    )?;
    for tag in &request.tags {
        store.tag(&tag.store_name(), &index)?;
    }
    export_cache(store, request, reporter)?;
    Ok(MultiPlatform {
        index,
        images: built,
    })
}

/// What several builds in one process share (the platforms of `--platform a,b`, the targets
/// of `kiln bake`): the job slots, the per-cache-key locks (a step that two builds reach at
/// once runs once; the other waits and finds it in the cache), the images resolved (each base
/// pulled once) and the step numbers of the progress output.
pub struct Session {
    images: stage::ResolvedImages,
    slots: Slots,
}

impl Session {
    /// `jobs` units of work at once; `show_platform` names the platform in progress labels.
    pub fn new(jobs: usize, show_platform: bool) -> Session {
        Session {
            images: stage::ResolvedImages {
                show_platform,
                ..Default::default()
            },
            slots: Slots::new(jobs),
        }
    }

    /// One platform's build of `request`: its image in the store, untagged. Builds on other
    /// threads with the same session share its slots, locks and images.
    pub fn build(
        &self,
        store: &Store,
        request: &BuildRequest,
        reporter: &dyn Reporter,
        platform: &Platform,
    ) -> Result<Image, Error> {
        build_for(
            store,
            request,
            reporter,
            &self.images,
            &self.slots,
            platform,
        )
    }
}

/// `--cache-to`: exports the cache keys `request`'s builds went through, if it asks to.
pub fn export_cache(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    crate::registry::after_build(store, request, reporter, 0)
}

/// One platform's build: plan, solve, and the target's image in the store (untagged).
fn build_for(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
    images: &stage::ResolvedImages,
    slots: &Slots,
    platform: &Platform,
) -> Result<Image, Error> {
    let (stages, build_plan) = prepare(store, request, reporter, images, platform)?;
    let builder = stage::Builder::new(store, request, reporter, &stages, &build_plan, images);
    let nodes: Vec<Node> = build_plan
        .stages
        .iter()
        .map(|s| Node {
            stage: s.index,
            // Only the base is waited for before the stage starts; a step that reads another
            // stage waits for it when it comes to it.
            deps: match s.base {
                crate::plan::Base::Stage(base) => vec![base],
                _ => Vec::new(),
            },
        })
        .collect();
    crate::solve::solve(&nodes, slots, &builder)?;
    let mut image = builder.finish(build_plan.target)?;
    let annotations = request.annotations_of(AnnotationKind::Manifest, Some(platform));
    if !annotations.is_empty() {
        image = store.annotate_manifest(&image, annotations)?;
    }
    // The entry an index gets for this image is its descriptor.
    let entry_annotations =
        request.annotations_of(AnnotationKind::ManifestDescriptor, Some(platform));
    if !entry_annotations.is_empty() {
        image.descriptor.annotations = Some(entry_annotations);
    }
    Ok(image)
}

/// The plan of a build, without building: what `kiln debug plan` prints. Base images are
/// resolved (pulled if need be), since their ONBUILD triggers and ENV are part of the plan.
pub fn plan_only(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
) -> Result<BuildPlan, Error> {
    let platform = request.platform.clone().unwrap_or_else(Platform::host);
    prepare(
        store,
        request,
        reporter,
        &stage::ResolvedImages::default(),
        &platform,
    )
    .map(|(_, plan)| plan)
}

fn prepare(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
    images: &stage::ResolvedImages,
    platform: &Platform,
) -> Result<(Vec<kiln_dockerfile::Stage>, BuildPlan), Error> {
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
    if let Ok(notes) = crate::support::check_directives(&parsed.directives) {
        for text in notes {
            reporter.report(Event::Warning { text });
        }
    }
    let (_, stages) = kiln_dockerfile::parse_stages(&parsed)
        .map_err(|e| Error::Dockerfile(e.render(&request.dockerfile_name, &request.dockerfile)))?;
    let plan_request = PlanRequest {
        dockerfile_name: &request.dockerfile_name,
        dockerfile: &request.dockerfile,
        build_args: &request.build_args,
        target: request.target.as_deref(),
        platform: kiln_dockerfile::Platform::new(
            &platform.os,
            &platform.architecture,
            platform.variant.as_deref().unwrap_or_default(),
        ),
        allow_security_insecure: request.allow_security_insecure,
        allow_network_host: request.allow_network_host
            || request.network == kiln_sandbox::Network::Host,
        no_cache_filter: &request.no_cache_filter,
    };
    // The plan asks the executor for images; it has no stages to read yet.
    let nothing_built = BuildPlan {
        stages: Vec::new(),
        target: 0,
        platform: String::new(),
    };
    let resolver = stage::Builder::new(store, request, reporter, &stages, &nothing_built, images);
    resolver.prefetch(
        &crate::plan::likely_images(&parsed, &plan_request),
        platform,
    );
    let build_plan = crate::plan::plan(&parsed, &plan_request, &resolver)?;
    Ok((stages, build_plan))
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
