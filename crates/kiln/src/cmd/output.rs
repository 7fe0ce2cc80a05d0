//! Where `kiln build` puts its result besides the store, with `docker buildx build`'s flags:
//! `-o/--output` (local, tar, oci, docker, image, registry), `--load`, `--push`, and the files
//! scripts read afterwards, `--iidfile` and `--metadata-file`.
//!
//! Every output is parsed and checked before the build starts, so a typo costs no build. Files
//! are written beside their destination under a temporary name and renamed into place, so a
//! failed export leaves nothing half-written. An option kiln cannot honour exactly is refused
//! by name, never accepted and ignored.

use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;
use kiln_build::archive::{self, SaveFormat};
use kiln_image::{Descriptor, Image, Reference, Store, media_type};
use kiln_layer::Compression;

use super::Progress;
use super::progress::BuildView;

/// The kind of an `-o` output (`registry` is `image` with `push=true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The final stage's files, as a directory.
    Local,
    /// The final stage's files, as one tarball.
    Tar,
    /// An OCI image layout, as a tarball or a directory.
    Oci,
    /// A `docker save` tarball, or the image loaded into docker.
    Docker,
    /// The image in the store under names, pushed if asked.
    Image,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Tar => "tar",
            Kind::Oci => "oci",
            Kind::Docker => "docker",
            Kind::Image => "image",
        }
    }

    /// The options each kind takes (BuildKit's names).
    fn options(self) -> &'static [&'static str] {
        match self {
            Kind::Local => &["dest", "mode"],
            Kind::Tar => &["dest"],
            Kind::Oci | Kind::Docker => &[
                "dest",
                "tar",
                "name",
                "compression",
                "compression-level",
                "force-compression",
                "oci-mediatypes",
                "rewrite-timestamp",
            ],
            Kind::Image => &[
                "name",
                "push",
                "registry.insecure",
                "compression",
                "compression-level",
                "force-compression",
                "oci-mediatypes",
                "rewrite-timestamp",
            ],
        }
    }
}

/// Where a file output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// `dest=-`: standard output.
    Stdout,
    /// A file or directory.
    Path(PathBuf),
}

/// How an output's layers are compressed (`compression`, `compression-level`,
/// `force-compression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// `None`: the output's default.
    pub compression: Option<Compression>,
    /// `None`: the compressor's default.
    pub level: Option<u32>,
    /// Every layer must end up in `compression`, also those that came compressed otherwise.
    pub force: bool,
}

impl LayerOptions {
    fn given(&self) -> bool {
        *self != LayerOptions::default()
    }
}

/// One output, parsed and checked.
#[derive(Debug, Clone)]
pub struct Exporter {
    /// How the user wrote it (`-o type=oci,dest=x.tar`, `--load`), for messages.
    pub flag: String,
    /// What it writes.
    pub kind: Kind,
    /// Its file or directory, if it has one.
    pub dest: Option<Dest>,
    /// For oci: a tarball (true) or a layout directory.
    pub tar: bool,
    /// Image names (`name=`, or the `-t` tags, which take precedence as in buildx).
    pub names: Vec<String>,
    /// For image: push to each name.
    pub push: bool,
    /// For image with push: allow plain HTTP and unverified TLS to the names' registries.
    pub insecure: bool,
    /// Layer compression.
    pub layers: LayerOptions,
    /// `rewrite-timestamp=true`.
    pub rewrite_timestamp: bool,
}

impl Exporter {
    fn new(flag: &str, kind: Kind) -> Exporter {
        Exporter {
            flag: flag.to_owned(),
            kind,
            dest: None,
            tar: true,
            names: Vec::new(),
            push: false,
            insecure: false,
            layers: LayerOptions::default(),
            rewrite_timestamp: false,
        }
    }

    /// Whether it makes an image (and so has a digest for `--metadata-file`).
    fn makes_image(&self) -> bool {
        matches!(self.kind, Kind::Oci | Kind::Docker | Kind::Image)
    }

    fn writes_stdout(&self) -> bool {
        self.dest == Some(Dest::Stdout)
    }
}

/// Splits `a=1,"b=2,3"` as buildx's CSV reader does: commas separate fields, double quotes
/// protect commas, `""` inside quotes is one quote.
fn csv_fields(text: &str) -> anyhow::Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    anyhow::ensure!(!quoted, "-o {text:?}: a quote is not closed");
    fields.push(field);
    Ok(fields)
}

/// Go's `strconv.ParseBool`, which BuildKit's options use.
fn parse_bool(flag: &str, key: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => anyhow::bail!("-o {flag:?}: {key}={value:?} is not true or false"),
    }
}

/// Parses one `-o` value: `type=TYPE[,KEY=VALUE…]`, or `DIR` (local) or `-` (tar on stdout).
pub fn parse_output(text: &str) -> anyhow::Result<Exporter> {
    let fields = csv_fields(text)?;
    if fields.len() == 1 && fields[0] == text && !text.starts_with("type=") {
        anyhow::ensure!(
            !text.is_empty(),
            "-o \"\": give type=TYPE, a directory or -"
        );
        let mut out = if text == "-" {
            Exporter::new(text, Kind::Tar)
        } else {
            Exporter::new(text, Kind::Local)
        };
        out.dest = Some(if text == "-" {
            Dest::Stdout
        } else {
            Dest::Path(PathBuf::from(text))
        });
        return check_dest(out);
    }
    let mut kind = None;
    let mut options = Vec::new();
    for field in &fields {
        let Some((key, value)) = field.split_once('=') else {
            anyhow::bail!("-o {text:?}: {field:?} is not KEY=VALUE");
        };
        let key = key.trim().to_ascii_lowercase();
        if key == "type" {
            kind = Some(value.to_owned());
        } else {
            options.push((key, value.to_owned()));
        }
    }
    let Some(kind) = kind else {
        anyhow::bail!("-o {text:?}: type is required (local, tar, oci, docker, image or registry)");
    };
    let (kind, push) = match kind.as_str() {
        "local" => (Kind::Local, false),
        "tar" => (Kind::Tar, false),
        "oci" => (Kind::Oci, false),
        "docker" => (Kind::Docker, false),
        "image" => (Kind::Image, false),
        "registry" => (Kind::Image, true),
        "cacheonly" | "moby" => anyhow::bail!(
            "-o {text:?}: type={kind} is not supported by kiln (it writes local, tar, oci, \
             docker, image and registry outputs)"
        ),
        other => anyhow::bail!(
            "-o {text:?}: unknown output type {other:?} (local, tar, oci, docker, image or \
             registry)"
        ),
    };
    let mut out = Exporter::new(text, kind);
    out.push = push;
    let mut oci_mediatypes = None;
    let mut rewrite_timestamp = None;
    for (key, value) in options {
        if !kind.options().contains(&key.as_str()) {
            anyhow::bail!(
                "-o {text:?}: option {key:?} is not supported by kiln for type={} (it takes {})",
                kind.name(),
                kind.options().join(", ")
            );
        }
        match key.as_str() {
            "dest" => {
                out.dest = Some(if value == "-" {
                    Dest::Stdout
                } else {
                    anyhow::ensure!(!value.is_empty(), "-o {text:?}: dest is empty");
                    Dest::Path(PathBuf::from(value))
                })
            }
            "mode" => match value.as_str() {
                "copy" => {}
                "delete" => anyhow::bail!(
                    "-o {text:?}: mode=delete is not supported by kiln: it adds the files to \
                     DIR and removes nothing (mode=copy)"
                ),
                other => anyhow::bail!("-o {text:?}: mode={other:?} is not copy or delete"),
            },
            "tar" => out.tar = value.is_empty() || parse_bool(text, &key, &value)?,
            "push" => out.push = parse_bool(text, &key, &value)?,
            "registry.insecure" => out.insecure = parse_bool(text, &key, &value)?,
            "name" => {
                out.names = value
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect();
                for name in &out.names {
                    name.parse::<Reference>()
                        .with_context(|| format!("-o {text:?}: name {name:?}"))?;
                }
            }
            "compression" => {
                out.layers.compression = Some(match value.as_str() {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" => Compression::None,
                    "estargz" => anyhow::bail!(
                        "-o {text:?}: compression=estargz is not supported by kiln (gzip, zstd \
                         or uncompressed)"
                    ),
                    other => anyhow::bail!(
                        "-o {text:?}: compression={other:?} is not gzip, zstd or uncompressed"
                    ),
                })
            }
            "compression-level" => {
                let level = value.parse::<u32>().map_err(|_| {
                    anyhow::anyhow!("-o {text:?}: compression-level={value:?} is not a number")
                })?;
                out.layers.level = Some(level);
            }
            // BuildKit takes a bare `force-compression` as true.
            "force-compression" => {
                out.layers.force = value.is_empty() || parse_bool(text, &key, &value)?
            }
            "oci-mediatypes" => oci_mediatypes = Some(parse_bool(text, &key, &value)?),
            "rewrite-timestamp" => rewrite_timestamp = Some(parse_bool(text, &key, &value)?),
            _ => unreachable!("every option of Kind::options is handled"),
        }
    }
    check_layer_options(&out)?;
    match (kind, oci_mediatypes) {
        // The docker archive kiln writes is `docker save`'s: manifest.json and no manifest
        // blob, so there is no media type to choose.
        (Kind::Docker, Some(true)) => anyhow::bail!(
            "-o {text:?}: oci-mediatypes=true is not supported for type=docker: kiln writes \
             docker's `save` layout, which has no manifest to carry them (use type=oci)"
        ),
        (Kind::Oci | Kind::Image, Some(false)) => anyhow::bail!(
            "-o {text:?}: oci-mediatypes=false is not supported: kiln writes OCI media types \
             only"
        ),
        _ => {}
    }
    out.rewrite_timestamp = rewrite_timestamp == Some(true);
    // `rewrite-timestamp=true` is what kiln does to the layers it builds when
    // SOURCE_DATE_EPOCH is set: their file times are clamped to it, and base layers are kept,
    // as BuildKit keeps them; the epoch is part of every step's cache key, so a cached layer
    // was made under the same one. Without an epoch there is nothing to rewrite to (BuildKit only
    // warns); with one, not clamping cannot be honoured. `kiln build` has put a --build-arg
    // SOURCE_DATE_EPOCH in the environment by now.
    match (rewrite_timestamp, kiln_build::source_date_epoch()) {
        (Some(true), None) => anyhow::bail!(
            "-o {text:?}: rewrite-timestamp=true needs SOURCE_DATE_EPOCH (in the environment \
             or as --build-arg SOURCE_DATE_EPOCH=…)"
        ),
        (Some(false), Some(_)) => anyhow::bail!(
            "-o {text:?}: rewrite-timestamp=false is not supported with SOURCE_DATE_EPOCH \
             set: kiln always clamps the file times of the layers it builds to it"
        ),
        _ => {}
    }
    check_dest(out)
}

fn check_layer_options(out: &Exporter) -> anyhow::Result<()> {
    let text = &out.flag;
    if out.kind == Kind::Image && !out.push && (out.layers.given() || out.rewrite_timestamp) {
        anyhow::bail!(
            "-o {text:?}: compression and rewrite-timestamp options of type=image apply to the \
             push; add push=true (kiln keeps the layers it builds uncompressed in its store)"
        );
    }
    if let Some(level) = out.layers.level {
        match out.layers.compression.unwrap_or(Compression::Gzip) {
            Compression::Gzip => anyhow::ensure!(
                level <= 9,
                "-o {text:?}: compression-level={level}: gzip levels are 0 to 9"
            ),
            Compression::Zstd => anyhow::ensure!(
                level <= 22,
                "-o {text:?}: compression-level={level}: zstd levels are 0 to 22"
            ),
            Compression::None => anyhow::bail!(
                "-o {text:?}: compression-level does not apply to compression=uncompressed"
            ),
        }
    }
    if out.kind == Kind::Image && out.layers.compression == Some(Compression::None) {
        anyhow::bail!(
            "-o {text:?}: compression=uncompressed is not supported for a push: kiln pushes \
             gzip or zstd layers"
        );
    }
    Ok(())
}

/// Checks the destination as buildx does, before anything is built.
fn check_dest(mut out: Exporter) -> anyhow::Result<Exporter> {
    let text = out.flag.clone();
    let wants_dir = match out.kind {
        Kind::Local => true,
        Kind::Oci => !out.tar,
        Kind::Docker => {
            anyhow::ensure!(
                out.tar,
                "-o {text:?}: type=docker,tar=false is not supported by kiln; type=oci,tar=false \
                 writes an OCI layout directory"
            );
            false
        }
        Kind::Tar => false,
        Kind::Image => {
            anyhow::ensure!(
                out.dest.is_none(),
                "-o {text:?}: type=image takes no dest (it names the image: name=…)"
            );
            return Ok(out);
        }
    };
    if wants_dir {
        let dest = match &out.dest {
            None => anyhow::bail!(
                "-o {text:?}: dest=DIR is required for type={}",
                out.kind.name()
            ),
            Some(Dest::Stdout) => anyhow::bail!(
                "-o {text:?}: dest cannot be stdout for type={} (it writes a directory)",
                out.kind.name()
            ),
            Some(Dest::Path(path)) => path,
        };
        match std::fs::metadata(dest) {
            Ok(meta) if !meta.is_dir() => {
                anyhow::bail!(
                    "-o {text:?}: destination directory {} is a file",
                    dest.display()
                )
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("-o {text:?}: destination {}", dest.display())));
            }
        }
        return Ok(out);
    }
    // A file: stdout when not given, except docker, which then loads into docker.
    if out.dest.is_none() && out.kind != Kind::Docker {
        out.dest = Some(Dest::Stdout);
    }
    if let Some(Dest::Path(path)) = &out.dest {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => anyhow::bail!(
                "-o {text:?}: destination file {} is a directory",
                path.display()
            ),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("-o {text:?}: destination {}", path.display())));
            }
        }
        let parent = parent_dir(path);
        anyhow::ensure!(
            parent.is_dir(),
            "-o {text:?}: the directory of {} does not exist",
            path.display()
        );
    }
    Ok(out)
}

/// The directory a file is written in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The outputs of `kiln build`, with `--push` and `--load` folded in as buildx folds them.
#[derive(Debug, Default)]
pub struct Plan {
    /// In the order given.
    pub exporters: Vec<Exporter>,
}

/// What the build's flags ask for, beyond `-o`.
pub struct Flags<'a> {
    /// `-o` values.
    pub outputs: &'a [String],
    /// `--push`.
    pub push: bool,
    /// `--load`.
    pub load: bool,
    /// `-t` names, as given.
    pub tags: &'a [String],
    /// `--iidfile`.
    pub iidfile: bool,
    /// `-q`.
    pub quiet: bool,
}

impl Plan {
    /// Parses and checks every output before the build.
    pub fn new(flags: Flags<'_>) -> anyhow::Result<Plan> {
        let mut exporters = flags
            .outputs
            .iter()
            .map(|o| parse_output(o))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if flags.push {
            let mut used = false;
            for out in exporters.iter_mut().filter(|o| o.kind == Kind::Image) {
                out.push = true;
                used = true;
            }
            if !used {
                let mut out = Exporter::new("--push", Kind::Image);
                out.push = true;
                exporters.push(out);
            }
        }
        if flags.load
            && !exporters
                .iter()
                .any(|o| o.kind == Kind::Docker && o.dest.is_none())
        {
            exporters.push(Exporter::new("--load", Kind::Docker));
        }
        for out in exporters.iter_mut().filter(|o| o.makes_image()) {
            if !flags.tags.is_empty() {
                out.names = flags.tags.to_vec();
            }
        }
        for out in &exporters {
            if out.kind == Kind::Image && out.push && out.names.is_empty() {
                anyhow::bail!(
                    "{}: a push needs a name: give -t REGISTRY/NAME[:TAG]",
                    flag_words(out)
                );
            }
            if out.kind == Kind::Docker && out.dest.is_none() {
                docker_binary(out)?;
            }
        }
        let stdout_users = exporters.iter().filter(|o| o.writes_stdout()).count();
        anyhow::ensure!(
            stdout_users <= 1,
            "-o: multiple outputs write to stdout; give one of them dest=FILE"
        );
        if let Some(out) = exporters.iter().find(|o| o.writes_stdout()) {
            anyhow::ensure!(
                !io::stdout().is_terminal(),
                "-o {:?}: refusing to write a {} archive to a terminal: give dest=FILE or pipe it",
                out.flag,
                out.kind.name()
            );
            anyhow::ensure!(
                !flags.quiet,
                "-q/--quiet prints the image id on stdout, where -o {:?} writes its archive",
                out.flag
            );
        }
        if flags.iidfile
            && let Some(out) = exporters
                .iter()
                .find(|o| matches!(o.kind, Kind::Local | Kind::Tar))
        {
            anyhow::bail!(
                "--iidfile: -o {:?} has no image id (buildx refuses local and tar outputs with \
                 --iidfile too)",
                out.flag
            );
        }
        Ok(Plan { exporters })
    }

    /// Refuses, before a build of several platforms, the outputs that hold one platform: the
    /// docker exporter, as BuildKit's ("docker exporter does not currently support exporting
    /// manifest lists").
    pub fn check_several_platforms(&self) -> anyhow::Result<()> {
        match self.exporters.iter().find(|o| o.kind == Kind::Docker) {
            Some(out) => anyhow::bail!(
                "{}: docker exporter does not currently support exporting manifest lists: \
                 docker's archive and `docker load` take one platform; build one with \
                 --platform P, or use -o type=oci or --push for all of them",
                flag_words(out)
            ),
            None => Ok(()),
        }
    }

    /// Whether an output writes to stdout (then stdout carries nothing else).
    pub fn uses_stdout(&self) -> bool {
        self.exporters.iter().any(Exporter::writes_stdout)
    }

    /// Whether the result has an image id: no outputs (the store), or one that makes an
    /// image.
    pub fn has_image(&self) -> bool {
        self.exporters.is_empty() || self.exporters.iter().any(Exporter::makes_image)
    }
}

/// `--push`, `--load` or `-o "…"`, as the user wrote it.
fn flag_words(out: &Exporter) -> String {
    if out.flag.starts_with("--") {
        out.flag.clone()
    } else {
        format!("-o {:?}", out.flag)
    }
}

/// The `docker` command that `--load` pipes into.
fn docker_binary(out: &Exporter) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("docker"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: there is no `docker` command on PATH to load the image into; write the \
                 image to a file with -o type=docker,dest=FILE and `docker load -i FILE` where \
                 docker runs",
                flag_words(out)
            )
        })
}

/// The image an output made: what `--metadata-file` describes.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The manifest (an index, for several platforms) as the output wrote it (layers
    /// compressed as it compressed them).
    pub manifest: Descriptor,
    /// `image.name`: the names, comma-joined.
    pub names: String,
}

/// What the exporters need from the build.
pub struct ExportContext<'a> {
    /// The store the image is in.
    pub store: &'a Store,
    /// Progress lines.
    pub view: &'a BuildView,
    /// The progress mode (for push transfers).
    pub progress: Progress,
    /// Registry settings of the build.
    pub registry: &'a super::registry::RegistryFlags,
}

/// Runs every output in order; returns the image the last image output made, or the store's
/// image when there are no outputs.
pub fn export(
    cx: &ExportContext<'_>,
    plan: &Plan,
    image: &Image,
    tags: &[String],
) -> anyhow::Result<Option<Exported>> {
    let mut last = plan.exporters.is_empty().then(|| Exported {
        manifest: image.descriptor.clone(),
        names: tags.join(","),
    });
    for out in &plan.exporters {
        let made = match out.kind {
            Kind::Local => {
                cx.view
                    .line(&format!("exporting to client directory ({})", out.flag));
                export_local(cx.store, image, out)?;
                None
            }
            Kind::Tar => {
                cx.view
                    .line(&format!("exporting to client tarball ({})", out.flag));
                export_tar(cx.store, image, out)?;
                None
            }
            Kind::Oci => Some(export_oci(cx, image, out)?),
            Kind::Docker => Some(export_docker(cx, image, out)?),
            Kind::Image => Some(export_image(cx, image, out)?),
        };
        if made.is_some() {
            last = made;
        }
    }
    Ok(last)
}

/// Runs every output in order for a build of several platforms: the index and its images.
/// Returns the index the last image output made (the store's, when there are no outputs).
/// Directory and tar outputs hold one directory per platform, named as BuildKit names them
/// (`linux_amd64`, `linux_arm_v7`).
pub fn export_index(
    cx: &ExportContext<'_>,
    plan: &Plan,
    index: &Descriptor,
    images: &[(kiln_image::Platform, Image)],
    tags: &[String],
) -> anyhow::Result<Option<Exported>> {
    plan.check_several_platforms()?;
    let mut last = plan.exporters.is_empty().then(|| Exported {
        manifest: index.clone(),
        names: tags.join(","),
    });
    let unpack_all = |root: &Path, keep_owners: bool| -> anyhow::Result<()> {
        for (platform, image) in images {
            let dir = root.join(platform_dir(platform));
            std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
            unpack(cx.store, image, &dir, keep_owners)?;
        }
        Ok(())
    };
    for out in &plan.exporters {
        let made = match out.kind {
            Kind::Local => {
                cx.view
                    .line(&format!("exporting to client directory ({})", out.flag));
                export_local_with(out, |root| unpack_all(root, false))?;
                None
            }
            Kind::Tar => {
                cx.view
                    .line(&format!("exporting to client tarball ({})", out.flag));
                export_tar_with(cx.store, out, |root| unpack_all(root, true))?;
                None
            }
            Kind::Oci => {
                cx.view
                    .line(&format!("exporting to oci image format ({})", out.flag));
                let saved = super::archive::saved_index(
                    cx.store,
                    index,
                    out.names.clone(),
                    out.layers.compression.unwrap_or(Compression::Gzip),
                    out.layers.level,
                )
                .with_context(|| format!("{}: compress the layers", flag_words(out)))?;
                let manifest = saved.index.clone();
                let indexes = [saved];
                match &out.dest {
                    Some(Dest::Path(dir)) if !out.tar => write_dir(dir, |staged| {
                        archive::save_oci_dir(cx.store, &[], &indexes, staged)
                            .with_context(|| format!("{}: write the OCI layout", flag_words(out)))
                    })?,
                    dest => write_file(dest.as_ref(), out, |w| {
                        archive::save_with_indexes(
                            cx.store,
                            &[],
                            &indexes,
                            SaveFormat::OciArchive,
                            w,
                        )
                        .with_context(|| format!("{}: write the OCI archive", flag_words(out)))
                    })?,
                }
                Some(Exported {
                    manifest,
                    names: normalized_names(&out.names)?.join(","),
                })
            }
            Kind::Docker => unreachable!("refused by check_several_platforms"),
            Kind::Image => Some(export_index_image(cx, index, images, out)?),
        };
        if made.is_some() {
            last = made;
        }
    }
    Ok(last)
}

/// BuildKit's directory for one platform's files in a local or tar output of several.
fn platform_dir(platform: &kiln_image::Platform) -> String {
    platform.to_string().replace('/', "_")
}

/// `type=image`/`type=registry` of several platforms: the index tagged in the store under each
/// name and, with push, pushed with its images.
fn export_index_image(
    cx: &ExportContext<'_>,
    index: &Descriptor,
    images: &[(kiln_image::Platform, Image)],
    out: &Exporter,
) -> anyhow::Result<Exported> {
    anyhow::ensure!(
        !out.layers.given(),
        "{}: compression options with several platforms are not supported yet: push with \
         kiln's default gzip (the config's [push] gzip_level), or write -o type=oci with them",
        flag_words(out)
    );
    let names = tag_names(cx, out, index)?;
    if !out.push {
        return Ok(Exported {
            manifest: index.clone(),
            names: out.names.join(","),
        });
    }
    let registry = registry_for(cx, out, &names)?;
    let first = &images.first().context("an index without images")?.1;
    let pushed = super::registry::push_tags(
        cx.store,
        first,
        Some((images, index)),
        &names,
        &registry,
        cx.progress,
    )?;
    let last = pushed.last().context("a push without a name")?;
    Ok(Exported {
        manifest: Descriptor::new(media_type::OCI_INDEX, last.digest.clone(), last.size),
        names: out.names.join(","),
    })
}

/// An image output's names, each tagged in the store with `descriptor`.
fn tag_names(
    cx: &ExportContext<'_>,
    out: &Exporter,
    descriptor: &Descriptor,
) -> anyhow::Result<Vec<Reference>> {
    let names = out
        .names
        .iter()
        .map(|n| n.parse::<Reference>())
        .collect::<Result<Vec<_>, _>>()?;
    for name in &names {
        cx.store.tag(&name.store_name(), descriptor)?;
    }
    Ok(names)
}

/// The registry client of an image output: the build's settings, and `registry.insecure=true`
/// for the output's names.
fn registry_for(
    cx: &ExportContext<'_>,
    out: &Exporter,
    names: &[Reference],
) -> anyhow::Result<kiln_registry::Registry> {
    let mut config = super::registry::load_config(cx.registry)?;
    if out.insecure {
        for name in names {
            config
                .registry
                .entry(name.domain.clone())
                .or_default()
                .insecure = true;
        }
    }
    Ok(kiln_registry::Registry::new(config)?)
}

/// The image with its layers compressed as the output asks (`default` when it does not say).
fn compressed(
    store: &Store,
    image: &Image,
    out: &Exporter,
    default: Compression,
) -> anyhow::Result<Image> {
    let wanted = out.layers.compression.unwrap_or(default);
    let mut images = archive::compress_for_export(
        store,
        vec![(image.clone(), Vec::new())],
        wanted,
        out.layers.level,
    )
    .with_context(|| format!("{}: compress the layers", flag_words(out)))?;
    let (image, _) = images.remove(0);
    if out.layers.force {
        // compress_for_export keeps a layer that came compressed (a base's) as it is, as
        // BuildKit does without force-compression. Converting it is not something kiln does.
        for layer in &image.manifest.layers {
            let has = match kiln_image::Compression::of_media_type(&layer.media_type) {
                kiln_image::Compression::Gzip => Compression::Gzip,
                kiln_image::Compression::Zstd => Compression::Zstd,
                kiln_image::Compression::None => Compression::None,
            };
            anyhow::ensure!(
                has == wanted,
                "{}: force-compression: layer {} is {} ({}); kiln does not convert a \
                 compressed layer to another compression (drop force-compression to keep it)",
                flag_words(out),
                layer.digest,
                compression_name(has),
                layer.media_type
            );
        }
    }
    Ok(image)
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "uncompressed",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// Names as BuildKit's oci and docker exporters report them: normalized, with a tag.
fn normalized_names(names: &[String]) -> anyhow::Result<Vec<String>> {
    names
        .iter()
        .map(|n| {
            let r = n.parse::<Reference>()?;
            let mut full = r.repository();
            if let Some(tag) = r.tag_or_latest() {
                full.push(':');
                full.push_str(tag);
            }
            if let Some(digest) = &r.digest {
                full.push('@');
                full.push_str(digest.as_str());
            }
            Ok(full)
        })
        .collect()
}

fn export_oci(cx: &ExportContext<'_>, image: &Image, out: &Exporter) -> anyhow::Result<Exported> {
    cx.view
        .line(&format!("exporting to oci image format ({})", out.flag));
    // BuildKit's image exporters gzip layers unless told otherwise.
    let image = compressed(cx.store, image, out, Compression::Gzip)?;
    let images = vec![(image.clone(), out.names.clone())];
    match &out.dest {
        Some(Dest::Path(dir)) if !out.tar => write_dir(dir, |staged| {
            archive::save_oci_dir(cx.store, &images, &[], staged)
                .with_context(|| format!("{}: write the OCI layout", flag_words(out)))
        })?,
        dest => write_file(dest.as_ref(), out, |w| {
            archive::save(cx.store, &images, SaveFormat::OciArchive, w)
                .with_context(|| format!("{}: write the OCI archive", flag_words(out)))
        })?,
    }
    Ok(Exported {
        manifest: image.descriptor.clone(),
        names: normalized_names(&out.names)?.join(","),
    })
}

fn export_docker(
    cx: &ExportContext<'_>,
    image: &Image,
    out: &Exporter,
) -> anyhow::Result<Exported> {
    let exported = |image: &Image| -> anyhow::Result<Exported> {
        Ok(Exported {
            manifest: image.descriptor.clone(),
            names: normalized_names(&out.names)?.join(","),
        })
    };
    match &out.dest {
        None => {
            cx.view
                .line(&format!("loading the image into docker ({})", out.flag));
            // Loaded, the layers are docker's own uncompressed copies whatever the archive
            // held: compressing them only to be undone costs time and changes nothing.
            let image = compressed(cx.store, image, out, Compression::None)?;
            load_into_docker(cx, &image, out)?;
            exported(&image)
        }
        dest => {
            cx.view
                .line(&format!("exporting to docker image format ({})", out.flag));
            let image = compressed(cx.store, image, out, Compression::Gzip)?;
            let images = vec![(image.clone(), out.names.clone())];
            write_file(dest.as_ref(), out, |w| {
                archive::save(cx.store, &images, SaveFormat::Docker, w)
                    .with_context(|| format!("{}: write the docker archive", flag_words(out)))
            })?;
            exported(&image)
        }
    }
}

/// Pipes a docker archive into `docker load`.
fn load_into_docker(cx: &ExportContext<'_>, image: &Image, out: &Exporter) -> anyhow::Result<()> {
    let docker = docker_binary(out)?;
    let mut child = Command::new(&docker)
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{}: run {} load", flag_words(out), docker.display()))?;
    let images = vec![(image.clone(), out.names.clone())];
    let written = match child.stdin.take() {
        Some(stdin) => archive::save(
            cx.store,
            &images,
            SaveFormat::Docker,
            io::BufWriter::with_capacity(1 << 20, stdin),
        )
        .map_err(|e| e.to_string()),
        None => Err("its stdin is not a pipe".to_owned()),
    };
    // Read both pipes to the end, so that docker never blocks on a full one.
    let result = child.wait_with_output();
    let output = result.with_context(|| format!("{}: wait for docker load", flag_words(out)))?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    // A broken pipe is reported as text, not as the io::Error: the binary exits 0 on a
    // broken pipe of its own stdout, and this one is docker's.
    if !output.status.success() {
        anyhow::bail!(
            "{}: docker load failed ({}): {}",
            flag_words(out),
            output.status,
            if stderr.is_empty() {
                "no message"
            } else {
                &stderr
            }
        );
    }
    if let Err(why) = written {
        anyhow::bail!(
            "{}: writing the archive to docker load failed: {why}",
            flag_words(out)
        );
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        cx.view.line(line);
    }
    Ok(())
}

fn export_image(cx: &ExportContext<'_>, image: &Image, out: &Exporter) -> anyhow::Result<Exported> {
    let names = tag_names(cx, out, &image.descriptor)?;
    if !out.push {
        return Ok(Exported {
            manifest: image.descriptor.clone(),
            names: out.names.join(","),
        });
    }
    let registry = registry_for(cx, out, &names)?;
    // Without compression options the push compresses as `kiln push` does (its gzip level is
    // the config's); with them, the layers are compressed first and pushed as they are.
    let image = if out.layers.given() {
        compressed(cx.store, image, out, Compression::Gzip)?
    } else {
        image.clone()
    };
    let pushed =
        super::registry::push_tags(cx.store, &image, None, &names, &registry, cx.progress)?;
    let last = pushed.last().context("a push without a name")?;
    Ok(Exported {
        manifest: Descriptor::new(media_type::OCI_MANIFEST, last.digest.clone(), last.size),
        names: out.names.join(","),
    })
}

/// Applies the image's layers, bottom first, into `root` (a fresh directory).
fn unpack(store: &Store, image: &Image, root: &Path, keep_owners: bool) -> anyhow::Result<()> {
    let opts = kiln_layer::ApplyOptions {
        preserve_owner: keep_owners,
        ..Default::default()
    };
    for (layer, diff_id) in image
        .manifest
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
    {
        kiln_layer::apply_stored_layer(
            store,
            layer,
            diff_id,
            root,
            kiln_layer::ApplyMode::Merged,
            opts,
        )
        .with_context(|| format!("unpack layer {}", layer.digest))?;
    }
    Ok(())
}

/// `type=local`: the image's files in DIR, owned by the user running kiln (as BuildKit's
/// client writes them). They are unpacked next to their place first, then renamed in: a
/// failure leaves DIR as it was.
fn export_local(store: &Store, image: &Image, out: &Exporter) -> anyhow::Result<()> {
    export_local_with(out, |root| unpack(store, image, root, false))
}

/// [`export_local`] of what `fill` unpacks into a fresh directory.
fn export_local_with(
    out: &Exporter,
    fill: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(Dest::Path(dest)) = &out.dest else {
        anyhow::bail!("{}: no dest", flag_words(out));
    };
    let what = flag_words(out);
    if dest.is_dir() {
        let staged = tempfile::Builder::new()
            .prefix(".kiln-output-")
            .tempdir_in(dest)
            .with_context(|| format!("{what}: create a directory in {}", dest.display()))?;
        fill(staged.path()).with_context(|| what.clone())?;
        merge_into(staged.path(), dest)
            .with_context(|| format!("{what}: move the files into {}", dest.display()))?;
        return Ok(());
    }
    write_dir(dest, |staged| fill(staged).with_context(|| what.clone()))?;
    // BuildKit's client creates the directory 0700.
    std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("{what}: chmod {}", dest.display()))?;
    Ok(())
}

/// Moves the entries of `from` into `to`, merging directories that both have and replacing
/// anything else; `to`'s symlinks are replaced, never followed.
fn merge_into(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry.with_context(|| format!("read {}", from.display()))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let source_meta = std::fs::symlink_metadata(&source)
            .with_context(|| format!("stat {}", source.display()))?;
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() && source_meta.is_dir() => {
                merge_into(&source, &target)?;
                std::fs::set_permissions(&target, source_meta.permissions())
                    .with_context(|| format!("chmod {}", target.display()))?;
                continue;
            }
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&target)
                .with_context(|| format!("remove {}", target.display()))?,
            Ok(_) => std::fs::remove_file(&target)
                .with_context(|| format!("remove {}", target.display()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("stat {}", target.display())));
            }
        }
        std::fs::rename(&source, &target)
            .with_context(|| format!("rename {} to {}", source.display(), target.display()))?;
    }
    Ok(())
}

/// `type=tar`: the image's files as one tarball, owners kept (as BuildKit's tar exporter
/// writes them from the snapshot).
fn export_tar(store: &Store, image: &Image, out: &Exporter) -> anyhow::Result<()> {
    export_tar_with(store, out, |root| unpack(store, image, root, true))
}

/// [`export_tar`] of what `fill` unpacks into a fresh directory.
fn export_tar_with(
    store: &Store,
    out: &Exporter,
    fill: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let what = flag_words(out);
    anyhow::ensure!(
        rustix::process::geteuid().is_root(),
        "{what}: type=tar keeps the files' owners, which needs root to unpack them; run kiln \
         as root, or use type=local"
    );
    let staged = store.staging_dir("output")?;
    fill(staged.path()).with_context(|| what.clone())?;
    write_file(out.dest.as_ref(), out, |w| {
        kiln_layer::write_layer_from_dir(staged.path(), w, kiln_layer::DiffOptions::default())
            .with_context(|| format!("{what}: write the tarball"))?;
        Ok(())
    })
}

/// Writes a file output: to stdout, or beside `dest` under a temporary name, renamed over it
/// once complete.
fn write_file(
    dest: Option<&Dest>,
    out: &Exporter,
    write: impl FnOnce(&mut (dyn Write + Send)) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match dest {
        Some(Dest::Path(path)) => {
            let dir = parent_dir(path);
            let mut file = tempfile::Builder::new()
                .prefix(".kiln-output-")
                .tempfile_in(dir)
                .with_context(|| {
                    format!("{}: create a file in {}", flag_words(out), dir.display())
                })?;
            {
                let mut buffered = io::BufWriter::with_capacity(1 << 20, file.as_file_mut());
                write(&mut buffered)?;
                buffered
                    .flush()
                    .with_context(|| format!("{}: write {}", flag_words(out), path.display()))?;
            }
            persist(file, path).with_context(|| flag_words(out))
        }
        Some(Dest::Stdout) => {
            // `Stdout`, not its lock: the layer writer hands the bytes to a thread of its own.
            {
                let mut buffered = io::BufWriter::with_capacity(1 << 20, io::stdout());
                write(&mut buffered)?;
                buffered.flush()?;
            }
            Ok(())
        }
        None => anyhow::bail!("{}: no dest", flag_words(out)),
    }
}

/// Makes a complete temp file the file at `path`: synced, as readable as any file the user
/// writes (a temp file is 0600), then renamed.
fn persist(file: tempfile::NamedTempFile, path: &Path) -> anyhow::Result<()> {
    file.as_file()
        .sync_all()
        .with_context(|| format!("sync {}", file.path().display()))?;
    std::fs::set_permissions(
        file.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("chmod {}", file.path().display()))?;
    file.persist(path)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Writes a directory output that does not exist yet: made beside it under a temporary name,
/// renamed into place once complete. An existing directory is written in place.
fn write_dir(dest: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    if dest.is_dir() {
        return fill(dest);
    }
    let parent = parent_dir(dest);
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let staged = tempfile::Builder::new()
        .prefix(".kiln-output-")
        .tempdir_in(parent)
        .with_context(|| format!("create a directory in {}", parent.display()))?;
    fill(staged.path())?;
    std::fs::set_permissions(
        staged.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .with_context(|| format!("chmod {}", staged.path().display()))?;
    let staged = staged.keep();
    std::fs::rename(&staged, dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        anyhow::Error::new(e).context(format!("rename {} to {}", staged.display(), dest.display()))
    })
}

/// Writes a small file whole or not at all (`--iidfile`, `--metadata-file`).
pub fn write_small_file(flag: &str, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let mut file = tempfile::Builder::new()
        .prefix(".kiln-")
        .tempfile_in(dir)
        .with_context(|| format!("{flag}: create a file in {}", dir.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("{flag}: write {}", path.display()))?;
    persist(file, path).with_context(|| flag.to_owned())
}

/// Removes an earlier `--iidfile`, so that a failed build leaves none behind (as buildx does).
pub fn remove_stale(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(anyhow::Error::new(e)
                .context(format!("--iidfile: remove the old {}", path.display())))
        }
    }
}

/// The JSON that buildx writes to `--metadata-file`, for kiln's result: the image keys of
/// BuildKit's image exporters. buildx's own `buildx.build.*` keys (its builder's ref, its
/// provenance and warnings) describe a buildx builder and have no kiln counterpart.
pub fn metadata(image: &Image, exported: Option<&Exported>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    let Some(exported) = exported else {
        return serde_json::Value::Object(map);
    };
    let mut descriptor = serde_json::json!({
        "mediaType": exported.manifest.media_type,
        "digest": exported.manifest.digest.as_str(),
        "size": exported.manifest.size,
    });
    // An index (several platforms) has no config digest, and its descriptor no platform.
    if !kiln_image::is_index(&exported.manifest.media_type) {
        let config_digest = image.id().as_str().to_owned();
        let mut annotations = serde_json::Map::new();
        annotations.insert("config.digest".into(), config_digest.clone().into());
        if let Some(created) = &image.config.created {
            annotations.insert(
                "org.opencontainers.image.created".into(),
                created.clone().into(),
            );
        }
        let mut platform = serde_json::Map::new();
        platform.insert(
            "architecture".into(),
            image.config.architecture.clone().into(),
        );
        platform.insert("os".into(), image.config.os.clone().into());
        if let Some(variant) = &image.config.variant {
            platform.insert("variant".into(), variant.clone().into());
        }
        descriptor["annotations"] = annotations.into();
        descriptor["platform"] = platform.into();
        map.insert("containerimage.config.digest".into(), config_digest.into());
    }
    map.insert(
        "containerimage.digest".into(),
        exported.manifest.digest.as_str().into(),
    );
    map.insert("containerimage.descriptor".into(), descriptor);
    if !exported.names.is_empty() {
        map.insert("image.name".into(), exported.names.clone().into());
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_output(text).unwrap_err().to_string()
    }

    #[test]
    fn shorthands_are_local_and_stdout_tar() {
        let local = parse_output("out/dir").unwrap();
        assert_eq!(local.kind, Kind::Local);
        assert_eq!(local.dest, Some(Dest::Path("out/dir".into())));
        let tar = parse_output("-").unwrap();
        assert_eq!(tar.kind, Kind::Tar);
        assert_eq!(tar.dest, Some(Dest::Stdout));
    }

    #[test]
    fn options_parse_as_buildkit_names_them() {
        let oci = parse_output(
            "type=oci,dest=x.tar,compression=zstd,compression-level=9,force-compression=true",
        )
        .unwrap();
        assert_eq!(oci.kind, Kind::Oci);
        assert_eq!(oci.layers.compression, Some(Compression::Zstd));
        assert_eq!(oci.layers.level, Some(9));
        assert!(oci.layers.force);
        let reg = parse_output("type=registry,\"name=a/b:1,c/d:2\"").unwrap();
        assert_eq!(reg.kind, Kind::Image);
        assert!(reg.push);
        assert_eq!(reg.names, ["a/b:1", "c/d:2"]);
        let layout = parse_output("type=oci,dest=layout,tar=false").unwrap();
        assert!(!layout.tar);
        assert_eq!(parse_output("type=tar").unwrap().dest, Some(Dest::Stdout));
        assert_eq!(parse_output("type=docker").unwrap().dest, None);
    }

    #[test]
    fn what_kiln_cannot_honour_is_refused_by_name() {
        assert!(err("type=bogus").contains("unknown output type \"bogus\""));
        assert!(err("dest=x,compression=gzip").contains("type is required"));
        assert!(err("type=oci,force-compression").contains("not KEY=VALUE"));
        assert!(err("type=local").contains("dest=DIR is required"));
        assert!(err("type=local,dest=-").contains("dest cannot be stdout"));
        assert!(err("type=oci,compression=estargz").contains("compression=estargz"));
        assert!(err("type=oci,oci-mediatypes=false").contains("oci-mediatypes=false"));
        assert!(err("type=docker,oci-mediatypes=true").contains("oci-mediatypes=true"));
        assert!(err("type=local,dest=x,mode=delete").contains("mode=delete"));
        assert!(err("type=image,name=a,unpack=false").contains("option \"unpack\""));
        assert!(err("type=oci,annotation.a=b").contains("option \"annotation.a\""));
        assert!(err("type=oci,compression-level=10").contains("gzip levels are 0 to 9"));
        assert!(
            err("type=oci,compression=uncompressed,compression-level=1").contains("uncompressed")
        );
        assert!(err("type=registry,compression=uncompressed").contains("gzip or zstd"));
        assert!(err("type=image,name=a,compression=zstd").contains("push=true"));
        assert!(err("type=docker,tar=false").contains("tar=false"));
        assert!(err("type=oci,tar=maybe").contains("not true or false"));
        assert!(err("type=oci,\"dest=x").contains("quote"));
        assert!(err("type=oci,name=UPPER").contains("name \"UPPER\""));
    }
}
