//! `kiln bake`: the targets of a bake file, built in one process.
//!
//! The targets run as the stages of one build run: on the solver ([`kiln_build::solve`]), each
//! once the targets its `target:` contexts name are built, independent ones at once, all in
//! one [`kiln_build::Session`]. So they share the job slots, the resolved base images and the
//! per-cache-key locks: a step two targets have in common runs once, and the other target
//! waits for it and finds it in the cache. A `target:` context is the built image itself,
//! handed to the dependent build as a named context (no registry round trip).
//!
//! Every target is prepared (files read, flags checked) before anything builds; tags and
//! outputs are written once every target is built, so a failure leaves no target half-tagged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::Context as _;
use clap::Args;
use kiln_bake::{BakeFile, Target};
use kiln_build::named::NamedContext;
use kiln_build::solve::{Node, Slots, StageRunner};
use kiln_build::{BuildRequest, Event, Reporter, Session};
use kiln_image::{Image, Platform, Reference, Store};

use super::progress::BuildView;
use super::{Output, Progress};

/// `kiln bake`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln bake                                   (docker-bake.hcl etc. here, group \"default\")\n  kiln bake -f examples/python-family/docker-bake.hcl app\n  kiln bake --print                           (the resolved targets, as buildx prints them)\n  kiln bake --set '*.platform=linux/arm64' --set app.args.V=2"
)]
pub struct BakeArgs {
    /// Targets or groups to build (default: `default`); a pattern such as `app-*` matches
    /// target and group names.
    #[arg(value_name = "TARGET|GROUP")]
    pub targets: Vec<String>,
    /// A bake file (repeatable; later files override earlier ones; `-` is stdin). Default:
    /// whichever of docker-bake.json, docker-bake.hcl, docker-bake.override.json and
    /// docker-bake.override.hcl exist here, in that order.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Override a target's attribute: `TARGET.KEY=VALUE`, TARGET a name or pattern (`*`);
    /// `KEY+=VALUE` appends to a list (repeatable).
    #[arg(long = "set", value_name = "TARGET.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print the resolved targets as JSON (as `docker buildx bake --print`) and build nothing.
    #[arg(long)]
    pub print: bool,
    /// Push every target's image to its registry under its tags (`--set '*.push=true'`).
    #[arg(long)]
    pub push: bool,
    /// Run every step, ignoring the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Check the registry for newer base images even when the store has them.
    #[arg(long)]
    pub pull: bool,
    /// Run at most N steps at once, over all targets. Default: the number of cores.
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Do not show `kiln lint` findings before the build.
    #[arg(long)]
    pub no_lint: bool,
    #[command(flatten)]
    pub limits: super::LimitFlags,
    #[command(flatten)]
    pub registry: super::registry::RegistryFlags,
}

/// Reads the bake files: those given, or buildx's default names here.
fn read_files(given: &[PathBuf]) -> anyhow::Result<Vec<BakeFile>> {
    let mut files = Vec::new();
    if given.is_empty() {
        if let Some(compose) = kiln_bake::COMPOSE_FILES
            .iter()
            .find(|f| Path::new(f).exists())
        {
            anyhow::bail!(
                "{compose}: kiln reads no compose file, and buildx would read this one as part \
                 of the bake definition; name the bake files with -f"
            );
        }
        for name in kiln_bake::DEFAULT_FILES {
            if Path::new(name).exists() {
                let text = std::fs::read_to_string(name).with_context(|| format!("read {name}"))?;
                files.push(BakeFile {
                    name: (*name).to_owned(),
                    text,
                });
            }
        }
        anyhow::ensure!(
            !files.is_empty(),
            "no bake file here (looked for {}); give one with -f",
            kiln_bake::DEFAULT_FILES.join(", ")
        );
        return Ok(files);
    }
    for path in given {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin().lock())
                .context("read the bake file from stdin")?
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("read the bake file {}", path.display()))?
        };
        files.push(BakeFile {
            name: path.display().to_string(),
            text,
        });
    }
    Ok(files)
}

/// One target, ready to build.
struct Prepared {
    name: String,
    request: BuildRequest,
    platforms: Vec<Platform>,
    /// `NAME = "target:OTHER"` contexts: the name and OTHER's index.
    links: Vec<(String, usize)>,
    tags: Vec<String>,
    outputs: Option<super::output::Plan>,
    /// Every `contexts` name: a `FROM` of one is no moving `:latest` (lint's KL011).
    context_names: Vec<String>,
    /// `attest`: the SBOM and provenance attestations to attach, as `kiln build --sbom
    /// --provenance` attaches them.
    attest: super::sbom::Attest,
    /// Where URL contexts were fetched, `env=` secrets written, and the `ssh` entries' agents
    /// of key files: kept until the build ends.
    _staged: (
        super::input::Named,
        Option<tempfile::TempDir>,
        kiln_build::ssh::SshAgents,
    ),
}

/// A target's `attest` entries as `kiln build --sbom --provenance` takes them: `type=sbom`,
/// `type=provenance` (`mode=min`, what kiln records), each with `disabled=true|false`; any
/// other key or value is an error naming it.
fn attest_of(target: &Target) -> anyhow::Result<super::sbom::Attest> {
    let name = &target.name;
    let mut attest = super::sbom::Attest {
        sbom: false,
        provenance: false,
    };
    for entry in &target.attest {
        let kind = entry.get("type").map_or("", String::as_str);
        let enabled = match entry.get("disabled").map(String::as_str) {
            None | Some("false") => true,
            Some("true") => false,
            Some(other) => {
                anyhow::bail!("target {name:?}: attest disabled={other}: expected true or false")
            }
        };
        for (key, value) in entry {
            let known = match (kind, key.as_str()) {
                (_, "type" | "disabled") => true,
                ("provenance", "mode") => value == "min",
                _ => false,
            };
            anyhow::ensure!(
                known,
                "target {name:?}: attest type={kind}: {key}={value} is not supported by kiln \
                 (it takes type=sbom and type=provenance with mode=min, and disabled=)"
            );
        }
        match kind {
            "sbom" => attest.sbom = enabled,
            "provenance" => attest.provenance = enabled,
            other => anyhow::bail!(
                "target {name:?}: attest type={other}: kiln attaches type=sbom and type=provenance"
            ),
        }
    }
    Ok(attest)
}

/// An output entry back as the `-o` text `kiln build` reads.
fn entry_text(entry: &kiln_bake::Entry) -> String {
    let mut parts = vec![format!(
        "type={}",
        entry.get("type").map_or("", String::as_str)
    )];
    parts.extend(
        entry
            .iter()
            .filter(|(k, _)| k.as_str() != "type")
            .map(|(k, v)| format!("{k}={v}")),
    );
    parts.join(",")
}

fn prepare(
    store: &Store,
    args: &BakeArgs,
    target: &Target,
    index_of: &dyn Fn(&str) -> Option<usize>,
    interrupt: &kiln_sandbox::Interrupt,
    jobs: usize,
) -> anyhow::Result<Prepared> {
    let name = &target.name;
    let context_dir = target.context.as_deref().unwrap_or(".");
    anyhow::ensure!(
        !context_dir.contains("://") && !context_dir.starts_with("git@") && context_dir != "-",
        "target {name:?}: context {context_dir:?}: kiln builds directory contexts only"
    );
    let (context, dockerfile, dockerfile_name) = match &target.dockerfile_inline {
        Some(text) => (
            kiln_build::context::Context::open(Path::new(context_dir), None)
                .with_context(|| format!("target {name:?}: context {context_dir}"))?,
            text.clone(),
            "dockerfile-inline".to_owned(),
        ),
        None => {
            let file = target.dockerfile.as_deref().unwrap_or("Dockerfile");
            // buildx reads `dockerfile` relative to the context.
            let path = Path::new(context_dir).join(file);
            let input = super::input::read_input(store, context_dir, Some(&path), &args.registry)
                .with_context(|| format!("target {name:?}"))?;
            (input.context, input.dockerfile, input.dockerfile_name)
        }
    };
    let mut links = Vec::new();
    let mut plain = Vec::new();
    for (context_name, value) in &target.contexts {
        match value.strip_prefix("target:") {
            Some(other) => {
                let index = index_of(other).ok_or_else(|| {
                    anyhow::anyhow!("target {name:?}: contexts: {context_name} names no target")
                })?;
                links.push((context_name.clone(), index));
            }
            None => plain.push(format!("{context_name}={value}")),
        }
    }
    let named = super::input::named_contexts(store, &plain, &args.registry)
        .with_context(|| format!("target {name:?}"))?;
    let contexts = named.contexts.clone();
    let mut secrets = Vec::new();
    for secret in &target.secret {
        let mut text = format!("id={}", secret.id);
        if let Some(src) = &secret.src {
            text.push_str(&format!(",src={src}"));
        }
        if let Some(env) = &secret.env {
            text.push_str(&format!(",env={env}"));
        }
        secrets.push(super::build::secret(&text).with_context(|| format!("target {name:?}"))?);
    }
    let (secrets, staged_secrets) = super::build::secret_files(store, secrets)?;
    // The same agents `kiln build --ssh` starts, from the same values.
    let ssh_specs: Vec<String> = target.ssh.iter().map(kiln_bake::Ssh::spec).collect();
    let ssh_agents = kiln_build::ssh::SshAgents::start(
        store,
        &ssh_specs,
        std::env::var_os("SSH_AUTH_SOCK")
            .as_deref()
            .map(std::path::Path::new),
    )
    .with_context(|| format!("target {name:?}: ssh"))?;
    let mut platforms = Vec::new();
    for text in &target.platforms {
        let platform = super::platform_flag(Some(text))
            .with_context(|| format!("target {name:?}"))?
            .unwrap_or_else(Platform::host);
        platforms.push(platform);
    }
    if platforms.is_empty() {
        platforms.push(Platform::host());
    }
    let cache_from: Vec<String> = target.cache_from.iter().map(entry_text).collect();
    anyhow::ensure!(
        target.cache_to.len() <= 1,
        "target {name:?}: cache-to: kiln exports the cache to one place; give one entry"
    );
    let cache_to = target.cache_to.first().map(entry_text);
    let cacheonly = target
        .output
        .iter()
        .any(|o| o.get("type").map(String::as_str) == Some("cacheonly"));
    let outputs = if cacheonly {
        anyhow::ensure!(
            target.output.len() == 1,
            "target {name:?}: output type=cacheonly goes alone"
        );
        None
    } else {
        let texts: Vec<String> = target.output.iter().map(entry_text).collect();
        let plan = super::output::Plan::new(super::output::Flags {
            outputs: &texts,
            push: false,
            load: false,
            tags: &target.tags,
            iidfile: false,
            quiet: false,
        })
        .with_context(|| format!("target {name:?}"))?;
        if platforms.len() > 1 {
            anyhow::ensure!(
                plan.exporters
                    .iter()
                    .all(|e| e.kind == super::output::Kind::Image && e.push),
                "target {name:?}: several platforms with outputs other than a push are not \
                 supported yet: push the multi-platform image (--push) or build one platform"
            );
        }
        Some(plan)
    };
    for tag in &target.tags {
        tag.parse::<Reference>()
            .with_context(|| format!("target {name:?}: tags"))?;
    }
    let attest = attest_of(target)?;
    if attest.any()
        && let Some(plan) = &outputs
    {
        anyhow::ensure!(
            plan.exporters
                .iter()
                .all(|e| e.kind == super::output::Kind::Image),
            "target {name:?}: attest with outputs other than the store and a push is not \
             supported yet"
        );
    }
    // The strongest mode that works here, as `kiln build`'s default (`auto`) picks it.
    let (isolation, _) = kiln_build::isolation::choose(None)?;
    let request = BuildRequest {
        dockerfile,
        dockerfile_name,
        context,
        contexts,
        // Tags are written once every target is built.
        tags: Vec::new(),
        build_args: target
            .args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        target: target.target.clone(),
        no_cache: args.no_cache || target.no_cache == Some(true),
        jobs,
        platform: None,
        sync: false,
        labels: target
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        secrets,
        ssh: ssh_agents.agents(),
        interrupt: interrupt.clone(),
        // A chroot run has no network namespace: RUN steps share the container's network.
        network: if isolation == kiln_build::isolation::Isolation::Chroot {
            kiln_sandbox::Network::Host
        } else {
            kiln_sandbox::Network::default()
        },
        allow_network_host: false,
        allow_security_insecure: false,
        limits: args.limits.limits()?,
        run_options: kiln_build::RunOptions::default(),
        annotations: Vec::new(),
        no_cache_filter: Vec::new(),
        isolation,
        registry: Some(super::registry::build_registry(
            &args.registry,
            args.pull || target.pull == Some(true),
            &cache_from,
            cache_to.as_deref(),
        )?),
    };
    Ok(Prepared {
        name: name.clone(),
        request,
        platforms,
        links,
        tags: target.tags.clone(),
        outputs,
        context_names: target.contexts.keys().cloned().collect(),
        attest,
        _staged: (named, staged_secrets, ssh_agents),
    })
}

/// A target's events, named: `#3 [app stage-0 2/4] RUN …`, as buildx bake prefixes vertices.
struct Prefixed<'a> {
    name: &'a str,
    view: &'a BuildView,
}

impl Reporter for Prefixed<'_> {
    fn report(&self, event: Event<'_>) {
        match event {
            Event::Step {
                id,
                stage,
                index,
                total,
                text,
            } => self.view.report(Event::Step {
                id,
                stage: &format!("{} {stage}", self.name),
                index,
                total,
                text,
            }),
            Event::Warning { text } => self.view.report(Event::Warning {
                text: format!("[{}] {text}", self.name),
            }),
            other => self.view.report(other),
        }
    }
}

impl Prefixed<'_> {
    fn line(&self, text: &str) {
        self.view.line(&format!("[{}] {text}", self.name));
    }
}

/// Runs the targets on the solver: a "stage" here is a target.
struct Targets<'a> {
    store: &'a Store,
    session: &'a Session,
    view: &'a BuildView,
    prepared: &'a [Prepared],
    built: Vec<OnceLock<Vec<(Platform, Image)>>>,
    interrupt: kiln_sandbox::Interrupt,
}

/// The image of a built target for `platform`: the one of that platform, or its only one.
fn image_for<'i>(images: &'i [(Platform, Image)], platform: &Platform) -> Option<&'i Image> {
    images
        .iter()
        .find(|(p, _)| p.matches(platform) && platform.matches(p))
        .or_else(|| (images.len() == 1).then(|| &images[0]))
        .map(|(_, image)| image)
}

impl Targets<'_> {
    fn build_one(
        &self,
        target: &Prepared,
        platform: &Platform,
    ) -> Result<Image, kiln_build::Error> {
        let mut request = target.request.clone();
        request.platform = Some(platform.clone());
        for (context_name, dep) in &target.links {
            let dep_name = &self.prepared[*dep].name;
            let image = self.built[*dep]
                .get()
                .and_then(|images| image_for(images, platform))
                .ok_or_else(|| {
                    kiln_build::Error::BadInput(format!(
                        "target {:?}: contexts: {context_name} = \"target:{dep_name}\": \
                         {dep_name} was not built for {platform}",
                        target.name
                    ))
                })?;
            request
                .contexts
                .insert(context_name, NamedContext::Loaded(Box::new(image.clone())))?;
        }
        let reporter = Prefixed {
            name: &target.name,
            view: self.view,
        };
        self.session
            .build(self.store, &request, &reporter, platform)
    }
}

impl StageRunner for Targets<'_> {
    fn run_stage(&self, index: usize, _slots: &Slots) -> Result<(), kiln_build::Error> {
        let target = &self.prepared[index];
        let results: Vec<Result<Image, kiln_build::Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = target
                .platforms
                .iter()
                .map(|platform| scope.spawn(move || self.build_one(target, platform)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(kiln_build::Error::BadInput(format!(
                            "target {:?}: a platform's build panicked",
                            target.name
                        )))
                    })
                })
                .collect()
        });
        let mut images = Vec::new();
        for (platform, result) in target.platforms.iter().zip(results) {
            images.push((platform.clone(), result?));
        }
        self.built[index].set(images).map_err(|_| {
            kiln_build::Error::BadInput(format!("target {:?} was built twice", target.name))
        })
    }

    fn cancel(&self) {
        self.interrupt.interrupt();
    }
}

/// Reads, resolves, and prints or builds.
pub fn bake(
    open: impl FnOnce() -> anyhow::Result<(Store, kiln_image::StoreLock)>,
    out: &mut Output,
    progress: Progress,
    args: BakeArgs,
) -> anyhow::Result<ExitCode> {
    let files = read_files(&args.files)?;
    let mut sets = args.sets.clone();
    if args.push {
        sets.push("*.push=true".to_owned());
    }
    let env = |name: &str| std::env::var(name).ok();
    let bake = kiln_bake::load(&files, &args.targets, &sets, &env)?;
    if args.print {
        out.line(bake.print().trim_end())?;
        return Ok(ExitCode::SUCCESS);
    }
    let (store, _lock) = open()?;
    let started = super::sbom::started();
    let order = bake.build_order()?;
    let jobs = super::build::jobs(args.jobs)?;
    let interrupt = kiln_sandbox::Interrupt::new();
    super::on_interrupt(interrupt.clone());
    let view = BuildView::new(progress);
    let index_of = |name: &str| order.iter().position(|n| n == name);
    let mut prepared = Vec::new();
    for name in &order {
        let target = &bake.targets[name];
        prepared.push(prepare(&store, &args, target, &index_of, &interrupt, jobs)?);
    }
    if !args.no_lint {
        for target in &prepared {
            let reporter = Prefixed {
                name: &target.name,
                view: &view,
            };
            let request = &target.request;
            if let Ok(findings) =
                super::lint::lint_text(&request.dockerfile, &request.dockerfile_name)
            {
                let names_a_context = |message: &str| {
                    target.context_names.iter().any(|n| {
                        message.starts_with(&format!("FROM {n} "))
                            || message.starts_with(&format!("FROM {n}:"))
                    })
                };
                for finding in &findings {
                    if finding.rule.id == "KL011" && names_a_context(&finding.message) {
                        continue;
                    }
                    let text = super::lint::render_text(&request.dockerfile_name, finding);
                    reporter.report(Event::Warning { text });
                }
            }
        }
    }
    let show_platform = prepared.iter().any(|p| p.platforms.len() > 1);
    let session = Session::new(jobs, show_platform);
    let runner = Targets {
        store: &store,
        session: &session,
        view: &view,
        prepared: &prepared,
        built: prepared.iter().map(|_| OnceLock::new()).collect(),
        interrupt: interrupt.clone(),
    };
    let nodes: Vec<Node> = prepared
        .iter()
        .enumerate()
        .map(|(stage, p)| Node {
            stage,
            deps: p.links.iter().map(|(_, dep)| *dep).collect(),
        })
        .collect();
    kiln_build::solve::solve(&nodes, &Slots::new(jobs), &runner)?;
    let mut results = Vec::new();
    for (target, built) in prepared.iter().zip(&runner.built) {
        let images = built
            .get()
            .ok_or_else(|| anyhow::anyhow!("target {:?} was not built", target.name))?;
        let reporter = Prefixed {
            name: &target.name,
            view: &view,
        };
        let cx = Finishing {
            store: &store,
            args: &args,
            progress,
            view: &view,
            started: &started,
        };
        let id = finish(&cx, &reporter, target, images)?;
        results.push(format!("{} {id}", target.name));
    }
    for line in results {
        out.line(&line)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What finishing every target shares.
#[derive(Clone, Copy)]
struct Finishing<'a> {
    store: &'a Store,
    args: &'a BakeArgs,
    progress: Progress,
    view: &'a BuildView,
    /// When the bake started, for provenance.
    started: &'a str,
}

/// Tags a built target and writes its outputs, as `kiln build` does; returns its image id (or
/// index digest).
fn finish(
    cx: &Finishing<'_>,
    reporter: &Prefixed<'_>,
    target: &Prepared,
    images: &[(Platform, Image)],
) -> anyhow::Result<String> {
    let Finishing {
        store,
        args,
        progress,
        view,
        started,
    } = *cx;
    let Some(outputs) = &target.outputs else {
        let ids: Vec<String> = images.iter().map(|(_, i)| i.id().to_string()).collect();
        reporter.line(&format!("cache only: image {}", ids.join(", ")));
        return Ok(ids.join(","));
    };
    let tags = target
        .tags
        .iter()
        .map(|t| t.parse::<Reference>())
        .collect::<Result<Vec<_>, _>>()?;
    if target.attest.any() {
        // As `kiln build --sbom --provenance`: the images and their attestations in one index,
        // which the tags name and a push sends whole.
        let mut request = target.request.clone();
        request.tags.clone_from(&tags);
        let index = super::sbom::attach(store, &request, images, target.attest, started)?;
        for (platform, image) in images {
            reporter.line(&format!("{platform}: image {}", image.id()));
        }
        reporter.line(&format!(
            "writing attestations: index {} done",
            index.digest
        ));
        for tag in &tags {
            reporter.line(&format!("naming to {}", tag.store_name()));
        }
        if outputs.exporters.iter().any(|e| e.push) {
            let registry = super::registry::client(&args.registry)?;
            super::registry::push_tags(
                store,
                &images[0].1,
                Some((images, &index)),
                &tags,
                &registry,
                progress,
            )
            .with_context(|| format!("target {:?}", target.name))?;
        }
        kiln_build::export_cache(store, &target.request, reporter)
            .with_context(|| format!("target {:?}: cache-to", target.name))?;
        return Ok(index.digest.to_string());
    }
    if let [(_, image)] = images {
        for tag in &tags {
            store.tag(&tag.store_name(), &image.descriptor)?;
        }
        reporter.line(&format!("writing image {} done", image.id()));
        for tag in &tags {
            reporter.line(&format!("naming to {}", tag.store_name()));
        }
        super::output::export(
            &super::output::ExportContext {
                store,
                view,
                progress,
                registry: &args.registry,
            },
            outputs,
            image,
            &target.tags,
        )
        .with_context(|| format!("target {:?}", target.name))?;
        kiln_build::export_cache(store, &target.request, reporter)
            .with_context(|| format!("target {:?}: cache-to", target.name))?;
        return Ok(image.id().to_string());
    }
    let index = store.put_index(images)?;
    for tag in &tags {
        store.tag(&tag.store_name(), &index)?;
    }
    for (platform, image) in images {
        reporter.line(&format!("{platform}: image {}", image.id()));
    }
    reporter.line(&format!("writing index {} done", index.digest));
    for tag in &tags {
        reporter.line(&format!("naming to {}", tag.store_name()));
    }
    if !outputs.exporters.is_empty() {
        let registry = super::registry::client(&args.registry)?;
        super::registry::push_tags(
            store,
            &images[0].1,
            Some((images, &index)),
            &tags,
            &registry,
            progress,
        )
        .with_context(|| format!("target {:?}", target.name))?;
    }
    kiln_build::export_cache(store, &target.request, reporter)
        .with_context(|| format!("target {:?}: cache-to", target.name))?;
    Ok(index.digest.to_string())
}
