//! `load`, `save`, `import`: images in and out of the store as tarballs.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kiln_build::archive::{self, SaveFormat};
use kiln_image::{History, Image, ImageConfig, Store};

use super::Output;

/// `kiln load`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln load -i my-image.tar\n  docker save debian:bookworm | kiln load"
)]
pub struct LoadArgs {
    /// Read from this file instead of stdin (docker-archive or oci-archive, optionally gzip or zstd).
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// Reads an archive into the store.
pub fn load(store: &Store, out: &mut Output, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let loaded = match &args.input {
        Some(path) => archive::load(
            store,
            File::open(path).with_context(|| format!("open {}", path.display()))?,
        ),
        None => {
            anyhow::ensure!(
                !io::stdin().is_terminal(),
                "no archive on stdin: pass -i FILE or pipe one in"
            );
            archive::load(store, io::stdin().lock())
        }
    };
    let loaded = loaded.context("load failed; the store is unchanged")?;
    for (image, names) in loaded.images {
        if names.is_empty() {
            out.line(&format!("Loaded image ID: {}", image.id()))?;
        }
        for name in names {
            out.line(&format!("Loaded image: {name}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Archive formats of `kiln save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormatArg {
    /// What `docker save` writes and `docker load` reads.
    Docker,
    /// An OCI image layout in a tar (`oci-archive:`).
    Oci,
    /// An OCI image layout directory (`oci:`); needs `-o DIR`.
    OciDir,
}

/// `kiln save`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln save my-python-base | docker load\n  kiln save --format oci -o base.tar my-python-base\n  kiln save --format oci-dir -o ./layout my-python-base"
)]
pub struct SaveArgs {
    /// Images to write.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to this file (or directory for oci-dir) instead of stdout.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Archive format.
    #[arg(long, value_enum, default_value_t = SaveFormatArg::Docker)]
    pub format: SaveFormatArg,
    /// Compress the layers (gzip runs on every core; the compressed copies are kept for the
    /// next save or push). Layers kiln built are stored uncompressed.
    #[arg(long, value_enum, default_value_t = CompressArg::None)]
    pub compress: CompressArg,
    /// Save this platform's image of a multi-platform image (needed for --format docker).
    /// Without it, OCI formats keep the whole index.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

/// Layer compression of `kiln save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    /// As stored.
    None,
    /// gzip, in parallel.
    Gzip,
    /// zstd.
    Zstd,
}

/// Writes images out of the store.
pub fn save(store: &Store, args: SaveArgs) -> anyhow::Result<ExitCode> {
    let platform = super::platform_flag(args.platform.as_deref())?;
    let compression = match args.compress {
        CompressArg::None => kiln_layer::Compression::None,
        CompressArg::Gzip => kiln_layer::Compression::Gzip,
        CompressArg::Zstd => kiln_layer::Compression::Zstd,
    };
    let mut images: Vec<(Image, Vec<String>)> = Vec::new();
    let mut indexes = Vec::new();
    for name in &args.images {
        let tagged = store.list()?.into_iter().find(|t| {
            name.parse::<kiln_image::Reference>()
                .is_ok_and(|r| r.store_name() == t.name)
        });
        // A name, not an id, is carried into the archive so that `docker load` tags it.
        let names = if tagged.is_some() {
            vec![name.clone()]
        } else {
            Vec::new()
        };
        // An index over one image and its attestations (`build --sbom`) saves as that image
        // in docker's format, which has no place for attestations, and as an index in OCI's.
        let multi = tagged.as_ref().filter(|t| {
            kiln_image::is_index(&t.descriptor.media_type)
                && (args.format != SaveFormatArg::Docker
                    || store
                        .platform_images(&t.descriptor)
                        .map_or(true, |images| images.len() > 1))
        });
        match (multi, &platform) {
            (Some(tagged), None) => {
                anyhow::ensure!(
                    args.format != SaveFormatArg::Docker,
                    "{name} is a multi-platform image, and docker's archive holds one platform \
                     per image: choose one with --platform, or save --format oci"
                );
                indexes.push(saved_index(
                    store,
                    &tagged.descriptor,
                    names,
                    compression,
                    None,
                )?);
            }
            _ => images.push((store.resolve_platform(name, platform.as_ref())?, names)),
        }
    }
    let images = archive::compress_for_export(store, images, compression, None)?;
    let format = match args.format {
        SaveFormatArg::OciDir => {
            let dir = args.output.context("--format oci-dir needs -o DIR")?;
            archive::save_oci_dir(store, &images, &indexes, &dir)?;
            return Ok(ExitCode::SUCCESS);
        }
        SaveFormatArg::Docker => SaveFormat::Docker,
        SaveFormatArg::Oci => SaveFormat::OciArchive,
    };
    match &args.output {
        Some(path) => {
            // Written beside the target and renamed, so a failed save leaves no torn file.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut file = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("create a file in {}", dir.display()))?;
            archive::save_with_indexes(
                store,
                &images,
                &indexes,
                format,
                io::BufWriter::with_capacity(1 << 20, file.as_file_mut()),
            )?;
            // A temp file is 0600; an archive is as readable as any file the user writes.
            std::fs::set_permissions(
                file.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )?;
            file.persist(path)
                .with_context(|| format!("write {}", path.display()))?;
        }
        None => {
            let stdout = io::stdout();
            anyhow::ensure!(
                !stdout.is_terminal(),
                "refusing to write an archive to a terminal: pass -o FILE or pipe it"
            );
            let mut lock = stdout.lock();
            archive::save_with_indexes(
                store,
                &images,
                &indexes,
                format,
                io::BufWriter::with_capacity(1 << 20, &mut lock),
            )?;
            lock.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln import`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln import rootfs.tar debian:bookworm\n  mmdebstrap bookworm - | kiln import - debian:bookworm\n  kiln import --change 'CMD [\"/bin/sh\"]' --change 'ENV LANG=C.UTF-8' rootfs.tar.gz base"
)]
pub struct ImportArgs {
    /// A rootfs tarball (plain, gzip or zstd), or `-` for stdin.
    pub file: String,
    /// The name to give the image.
    pub name: String,
    /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, ONBUILD, STOPSIGNAL, HEALTHCHECK, SHELL).
    #[arg(short, long, value_name = "INSTRUCTION")]
    pub change: Vec<String>,
    /// A commit message for the history entry.
    #[arg(short, long)]
    pub message: Option<String>,
    /// The platform the rootfs is for (default: the host's). When NAME already names an
    /// image of another platform, NAME becomes an index of both (a multi-platform base).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

/// Makes a one-layer image from a rootfs tarball.
pub fn import(store: &Store, out: &mut Output, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let name: kiln_image::Reference = args.name.parse()?;
    let platform = super::platform_flag(args.platform.as_deref())?;
    let input: Box<dyn Read> = if args.file == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&args.file).with_context(|| format!("open {}", args.file))?)
    };
    let layer =
        archive::import_layer(store, input).context("import failed; the store is unchanged")?;
    let mut config = ImageConfig::scratch();
    let created = kiln_build::created_timestamp();
    config.created = Some(created.clone());
    config.rootfs.diff_ids.push(layer.digest.clone());
    config.history.push(History {
        created: Some(created),
        created_by: None,
        comment: Some(args.message.clone().unwrap_or_else(|| {
            format!(
                "Imported from {}",
                if args.file == "-" { "-" } else { &args.file }
            )
        })),
        ..History::default()
    });
    if let Some(platform) = &platform {
        config.os = platform.os.clone();
        config.architecture = platform.architecture.clone();
        config.variant = platform.variant.clone();
    }
    kiln_build::apply_changes(&mut config, &args.change)?;
    let image = store.put_image(&config, vec![layer])?;
    let store_name = name.store_name();
    match platform.and_then(|p| other_platforms(store, &store_name, &p).map(|o| (p, o))) {
        Some((platform, mut others)) if !others.is_empty() => {
            others.push((platform, image.clone()));
            let index = store.put_index(&others)?;
            store.tag(&store_name, &index)?;
            let list: Vec<String> = others.iter().map(|(p, _)| p.to_string()).collect();
            // On stderr: stdout carries only the image id, for scripts.
            let _ = writeln!(
                io::stderr(),
                "{store_name} is an index of {}",
                list.join(", ")
            );
        }
        _ => store.tag(&store_name, &image.descriptor)?,
    }
    out.line(image.id().as_str())?;
    Ok(ExitCode::SUCCESS)
}

/// The images `name` has for platforms other than `platform`, if it names any.
fn other_platforms(
    store: &Store,
    name: &str,
    platform: &kiln_image::Platform,
) -> Option<Vec<(kiln_image::Platform, kiln_image::Image)>> {
    let tagged = store.list().ok()?.into_iter().find(|t| t.name == name)?;
    let images = store.platform_images(&tagged.descriptor).ok()?;
    Some(
        images
            .into_iter()
            .map(|(p, image)| (p.unwrap_or_else(|| image.config.platform()), image))
            .filter(|(p, _)| !(p.matches(platform) && platform.matches(p)))
            .collect(),
    )
}

/// A stored index made ready for an archive (`save --format oci`, `build -o type=oci` of
/// several platforms): each platform's image with its layers compressed as asked, its
/// attestations rebound to the new manifests, and a new index over them that keeps the
/// index's annotations and each entry's.
pub fn saved_index(
    store: &Store,
    index: &kiln_image::Descriptor,
    names: Vec<String>,
    compression: kiln_layer::Compression,
    level: Option<u32>,
) -> anyhow::Result<archive::SavedIndex> {
    let mut platforms = Vec::new();
    let mut members = Vec::new();
    let mut originals = Vec::new();
    let mut entry_annotations = Vec::new();
    for (p, image) in store.platform_images(index)? {
        platforms.push(p.unwrap_or_else(|| image.config.platform()));
        originals.push(image.manifest_digest().clone());
        entry_annotations.push(image.descriptor.annotations.clone());
        members.push((image, Vec::new()));
    }
    let members = archive::compress_for_export(store, members, compression, level)?;
    // The compressed images keep their entries' annotations
    // (`manifest-descriptor:`).
    let entries: Vec<(kiln_image::Platform, Image)> = platforms
        .into_iter()
        .zip(members.into_iter().map(|(image, _)| image))
        .zip(&entry_annotations)
        .map(|((platform, mut image), annotations)| {
            image.descriptor.annotations = annotations.clone();
            (platform, image)
        })
        .collect();
    // Compressing for export gives each image another manifest: its attestations
    // are rebound to it.
    let mut attestations = Vec::new();
    for attestation in store.attestations(index)? {
        let subject = attestation.subject().unwrap_or_default().to_owned();
        let Some(((_, new), old)) = entries
            .iter()
            .zip(&originals)
            .find(|(_, old)| old.as_str() == subject)
        else {
            continue;
        };
        let mut descriptor = new.descriptor.clone();
        descriptor.platform = None;
        descriptor.annotations = None;
        attestations.push(store.rebind_attestation(&attestation, old, &descriptor)?);
    }
    let entries_only: Vec<_> = attestations.iter().map(|a| a.entry.clone()).collect();
    let index =
        store.put_attested_index(&entries, &entries_only, &store.index_annotations(index)?)?;
    Ok(archive::SavedIndex {
        index,
        images: entries.into_iter().map(|(_, image)| image).collect(),
        names,
        attestations,
    })
}
