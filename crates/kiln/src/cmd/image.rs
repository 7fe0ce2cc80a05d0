//! `images`, `inspect`, `history`, `tag`, `rmi`, `gc`, `check`: looking at and tidying the
//! store.

use std::process::ExitCode;

use clap::Args;
use kiln_image::{Image, Store};
use serde_json::json;

use super::{Output, OutputFormat, human_size, relative_time};

/// `kiln images`
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kiln images\n  kiln images --format json")]
pub struct ImagesArgs {
    /// Output format: table or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Lists the tagged images.
pub fn images(store: &Store, out: &mut Output, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for tagged in store.list()? {
        let image = store.image(&tagged.descriptor)?;
        let (name, tag) = split_name_tag(&tagged.name);
        rows.push((name, tag, image));
    }
    match args.format {
        OutputFormat::Json => {
            let list: Vec<_> = rows
                .iter()
                .map(|(name, tag, image)| {
                    json!({
                        "Repository": name, "Tag": tag, "ID": image.id().as_str(), "Digest": image.manifest_digest().as_str(),
                        "Created": image.config.created, "Size": image.size(),
                    })
                })
                .collect();
            out.line(&serde_json::to_string_pretty(&list)?)?;
        }
        OutputFormat::Table => {
            let mut table = vec![[
                "REPOSITORY".to_owned(),
                "TAG".into(),
                "IMAGE ID".into(),
                "CREATED".into(),
                "SIZE".into(),
            ]];
            for (name, tag, image) in &rows {
                table.push([
                    name.clone(),
                    tag.clone(),
                    image.id().short().to_owned(),
                    relative_time(image.config.created.as_deref()),
                    human_size(image.size()),
                ]);
            }
            out.table(&table)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn split_name_tag(name: &str) -> (String, String) {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (
            name[..slash + i].to_owned(),
            name[slash + i + 1..].to_owned(),
        ),
        None => (name.to_owned(), "<none>".to_owned()),
    }
}

/// `kiln inspect`
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kiln inspect my-python-base")]
pub struct InspectArgs {
    /// Images (name, id or digest).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Prints docker-style JSON for each image.
pub fn inspect(store: &Store, out: &mut Output, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let tagged = store.list()?;
    let mut list = Vec::new();
    for name in &args.images {
        let image = store.resolve(name)?;
        let tags: Vec<&str> = tagged
            .iter()
            .filter(|t| t.descriptor.digest == *image.manifest_digest())
            .map(|t| t.name.as_str())
            .collect();
        list.push(inspect_json(&image, &tags));
    }
    out.line(&serde_json::to_string_pretty(&list)?)?;
    Ok(ExitCode::SUCCESS)
}

fn inspect_json(image: &Image, tags: &[&str]) -> serde_json::Value {
    let config = &image.config;
    json!({
        "Id": image.id().as_str(),
        "RepoTags": tags,
        "RepoDigests": [],
        "Created": config.created,
        "Author": config.author.clone().unwrap_or_default(),
        "Config": config.config,
        "Architecture": config.architecture,
        "Variant": config.variant,
        "Os": config.os,
        "Size": image.size(),
        "RootFS": { "Type": "layers", "Layers": config.rootfs.diff_ids },
        "Manifest": image.manifest_digest().as_str(),
    })
}

/// `kiln history`
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  kiln history my-python-base\n  kiln history --no-trunc --format json my-python-base"
)]
pub struct HistoryArgs {
    /// The image.
    pub image: String,
    /// Show whole commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format: table or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Lists the steps of an image, newest first, with the size of the layer each made. As in
/// `docker history`, a layer's size is the size of its content (the files it adds), not of
/// its compressed blob: each layer is read once, headers only.
pub fn history(store: &Store, out: &mut Output, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let image = store.resolve(&args.image)?;
    let analysis = kiln_analyze::source::open_store(store, &args.image)?.analyze()?;
    let mut layers = analysis.layers.iter();
    let mut rows = Vec::new();
    for entry in &image.config.history {
        let size = if entry.empty_layer {
            0
        } else {
            layers.next().map_or(0, |l| l.size)
        };
        rows.push((entry, size));
    }
    rows.reverse();
    match args.format {
        OutputFormat::Json => {
            let list: Vec<_> = rows
                .iter()
                .enumerate()
                .map(|(i, (h, size))| json!({ "ID": if i == 0 { image.id().as_str() } else { "<missing>" }, "Created": h.created, "CreatedBy": h.created_by, "Size": size, "Comment": h.comment, "EmptyLayer": h.empty_layer }))
                .collect();
            out.line(&serde_json::to_string_pretty(&list)?)?;
        }
        OutputFormat::Table => {
            // As docker: the image id on the newest step, `<missing>` on the steps below
            // (they are not images of their own).
            let mut table = vec![[
                "IMAGE".to_owned(),
                "CREATED".into(),
                "CREATED BY".into(),
                "SIZE".into(),
                "COMMENT".into(),
            ]];
            for (i, (h, size)) in rows.into_iter().enumerate() {
                let id = match (i, args.no_trunc) {
                    (0, true) => image.id().as_str().to_owned(),
                    (0, false) => image.id().short().to_owned(),
                    _ => "<missing>".to_owned(),
                };
                let mut by = h.created_by.clone().unwrap_or_default();
                if !args.no_trunc && by.chars().count() > 45 {
                    by = by.chars().take(44).collect::<String>() + "…";
                }
                table.push([
                    id,
                    relative_time(h.created.as_deref()),
                    by,
                    human_size(size),
                    h.comment.clone().unwrap_or_default(),
                ]);
            }
            out.table(&table)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln tag`
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kiln tag my-python-base registry.local:5000/base/python:1")]
pub struct TagArgs {
    /// The image to name.
    pub source: String,
    /// The new name.
    pub target: String,
}

/// Gives an image another name.
pub fn tag(store: &Store, args: TagArgs) -> anyhow::Result<ExitCode> {
    // A multi-platform image is tagged whole: the new name points at its index too.
    let descriptor = store.descriptor_of(&args.source)?;
    store.tag(&args.target, &descriptor)?;
    Ok(ExitCode::SUCCESS)
}

/// `kiln rmi`
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  kiln rmi my-python-base old-image:1\n\nBlobs are freed by `kiln gc`."
)]
pub struct RmiArgs {
    /// Names to remove.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Removes names; the blobs go at the next `gc`.
pub fn rmi(store: &Store, out: &mut Output, args: RmiArgs) -> anyhow::Result<ExitCode> {
    for name in &args.images {
        let descriptor = store.untag(name)?;
        out.line(&format!("Untagged: {name} ({})", descriptor.digest))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln gc`
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kiln gc\n  kiln gc --prune-cache")]
pub struct GcArgs {
    /// Also drop the build cache.
    #[arg(long)]
    pub prune_cache: bool,
}

/// Removes what no name (and, unless pruned, no cache record) reaches.
pub fn gc(store: &Store, out: &mut Output, args: GcArgs) -> anyhow::Result<ExitCode> {
    let report = store.gc(args.prune_cache)?;
    out.line(&format!(
        "removed {} blobs ({}), {} snapshots, {} cache records",
        report.blobs,
        human_size(report.bytes),
        report.snapshots,
        report.cache_records
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `kiln check`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln check\n  kiln check --repair\n\nEvery blob is hashed against its name (as `ctr content verify` does), and every image\nand build-cache record checked for the blobs it needs. `--repair` removes the corrupt blobs,\nthe images and cache records that use them, and the snapshots unpacked from them; get the\nimages again with `kiln pull` or `kiln load`, and free what only they used with `kiln gc`."
)]
pub struct CheckArgs {
    /// Remove what is corrupt and what depends on it.
    #[arg(long)]
    pub repair: bool,
}

/// Verifies every blob; with `--repair`, drops what is corrupt and what depends on it.
pub fn check(store: &Store, out: &mut Output, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report = store.check(args.repair)?;
    for problem in &report.problems {
        out.line(&problem.to_string())?;
    }
    for blob in &report.removed_blobs {
        out.line(&format!("removed blob {blob}"))?;
    }
    for image in &report.removed_images {
        out.line(&format!("removed image {image}"))?;
    }
    if args.repair && !report.problems.is_empty() {
        out.line(&format!(
            "removed {} snapshots and {} cache records built from what was removed",
            report.removed_snapshots, report.removed_cache_records
        ))?;
    }
    let checked = format!(
        "checked {} blobs ({}), {} images, {} cache records",
        report.blobs,
        human_size(report.bytes),
        report.images,
        report.cache_records
    );
    if report.problems.is_empty() {
        out.line(&format!("{checked}: no problems"))?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.repair {
        out.line(&format!(
            "{checked}: {} problems repaired; `kiln gc` frees the blobs only the removed images used",
            report.problems.len()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::bail!(
        "{checked}: {} corrupt blobs, {} problems in all; `kiln check --repair` removes what is corrupt and what depends on it",
        report.corrupt_blobs(),
        report.problems.len()
    )
}
