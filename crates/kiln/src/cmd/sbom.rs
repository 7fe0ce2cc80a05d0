//! `kiln sbom`, and the attestations `kiln build --sbom` and `--provenance` attach to the
//! images they build.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_image::{Descriptor, Image, Platform, Store};
use kiln_sbom::{Inventory, provenance, spdx};

use super::Output;

/// `kiln sbom`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln sbom my-python-base\n  kiln sbom --format table my-python-base\n  kiln build --sbom --provenance -t app . && kiln sbom app"
)]
pub struct SbomArgs {
    /// The image (name, id or digest).
    pub image: String,
    /// spdx-json: the SPDX 2.3 document; table: one row per package.
    #[arg(long, value_enum, default_value_t = SbomFormat::SpdxJson)]
    pub format: SbomFormat,
    /// Which image of a multi-platform one (default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

/// How `kiln sbom` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON.
    SpdxJson,
    /// Aligned columns.
    Table,
}

/// Which attestations a build attaches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attest {
    pub sbom: bool,
    pub provenance: bool,
}

impl Attest {
    /// From `--sbom[=true|false]` and `--provenance[=true|false]`.
    pub fn from_flags(sbom: Option<&str>, provenance: Option<&str>) -> anyhow::Result<Attest> {
        let flag = |name: &str, value: Option<&str>| match value {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => anyhow::bail!(
                "--{name}={other}: kiln takes --{name}, --{name}=true or --{name}=false \
                 (BuildKit's generator= and mode= options are not implemented)"
            ),
        };
        Ok(Attest {
            sbom: flag("sbom", sbom)?,
            provenance: flag("provenance", provenance)?,
        })
    }

    pub fn any(self) -> bool {
        self.sbom || self.provenance
    }
}

/// SPDX wants seconds and `Z`; SOURCE_DATE_EPOCH when set, as image configs have it.
fn spdx_time() -> String {
    let at = kiln_build::source_date_epoch()
        .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn tool() -> String {
    format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))
}

/// Scans an image's layers into an SPDX document.
pub fn scan(store: &Store, name: &str, image: &Image) -> anyhow::Result<serde_json::Value> {
    let inventory =
        Inventory::of_image(store, image).with_context(|| format!("read the layers of {name}"))?;
    let (tool, created) = (tool(), spdx_time());
    Ok(spdx::document(
        &inventory,
        &spdx::Subject {
            name,
            digest: image.manifest_digest(),
            tool: &tool,
            created: &created,
        },
    ))
}

/// The SPDX document of an image's attestation, if its index has one.
fn attested(
    store: &Store,
    descriptor: &Descriptor,
    image: &Image,
) -> anyhow::Result<Option<serde_json::Value>> {
    for attestation in store.attestations(descriptor)? {
        if attestation.subject() != Some(image.manifest_digest().as_str()) {
            continue;
        }
        let Some(layer) = attestation.statement(spdx::PREDICATE_TYPE) else {
            continue;
        };
        let bytes = store.read_blob(&layer.digest)?;
        let mut statement: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("the SBOM statement {} is not JSON", layer.digest))?;
        return Ok(Some(statement["predicate"].take()));
    }
    Ok(None)
}

/// Runs `kiln sbom`.
pub fn sbom(store: &Store, out: &mut Output, args: SbomArgs) -> anyhow::Result<ExitCode> {
    let platform = super::platform_flag(args.platform.as_deref())?;
    let descriptor = store.descriptor_of(&args.image)?;
    let image = store.resolve_platform(&args.image, platform.as_ref())?;
    let doc = match attested(store, &descriptor, &image)? {
        Some(doc) => doc,
        None => scan(store, &args.image, &image)?,
    };
    match args.format {
        SbomFormat::SpdxJson => out.line(&serde_json::to_string_pretty(&doc)?)?,
        SbomFormat::Table => {
            let mut rows = vec![[
                "TYPE".to_owned(),
                "NAME".to_owned(),
                "VERSION".to_owned(),
                "LICENSE".to_owned(),
                "PURL".to_owned(),
            ]];
            for row in spdx::rows(&doc)? {
                // Some packages' copyright files name dozens of licenses: the table shows
                // the start, the JSON has all of it.
                let license = if row.license.chars().count() > 60 {
                    format!("{}…", row.license.chars().take(59).collect::<String>())
                } else {
                    row.license
                };
                rows.push([row.kind, row.name, row.version, license, row.purl]);
            }
            out.table(&rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The base images a build read for a platform, by digest (the plan names them; the build
/// has just put them in the store).
fn bases(
    store: &Store,
    request: &kiln_build::BuildRequest,
    platform: &Platform,
) -> anyhow::Result<Vec<provenance::Base>> {
    let mut request = request.clone();
    request.platform = Some(platform.clone());
    let plan = kiln_build::plan_only(store, &request, &kiln_build::Silent)?;
    let mut bases: Vec<provenance::Base> = Vec::new();
    for stage in &plan.stages {
        if let kiln_build::plan::Base::Image { name, digest } = &stage.base
            && !bases.iter().any(|b| b.name == *name && b.digest == *digest)
        {
            bases.push(provenance::Base {
                name: name.clone(),
                digest: digest.clone(),
                platform: stage.platform.to_string(),
            });
        }
    }
    Ok(bases)
}

/// Attaches attestations to built images: one attestation manifest per image, all in one
/// index after the images, which the build's tags then name. Returns the index.
pub fn attach(
    store: &Store,
    request: &kiln_build::BuildRequest,
    images: &[(Platform, Image)],
    attest: Attest,
    started: &str,
) -> anyhow::Result<Descriptor> {
    let subject_name = request
        .tags
        .first()
        .map_or_else(|| "_".to_owned(), |t| t.store_name());
    let finished = spdx_time();
    let mut attestations = Vec::new();
    for (platform, image) in images {
        let mut statements = Vec::new();
        if attest.sbom {
            let doc = scan(store, &subject_name, image)?;
            let statement = kiln_sbom::statement(
                &subject_name,
                image.manifest_digest(),
                spdx::PREDICATE_TYPE,
                doc,
            );
            statements.push((
                spdx::PREDICATE_TYPE.to_owned(),
                serde_json::to_vec(&statement)?,
            ));
        }
        if attest.provenance {
            let predicate = provenance::predicate(&provenance::Build {
                dockerfile_name: &request.dockerfile_name,
                dockerfile_digest: kiln_image::Digest::of(request.dockerfile.as_bytes()),
                build_args: &request.build_args,
                target: request.target.as_deref(),
                platform: platform.to_string(),
                bases: bases(store, request, platform)?,
                kiln_version: env!("CARGO_PKG_VERSION"),
                started,
                finished: &finished,
            });
            let statement = kiln_sbom::statement(
                &subject_name,
                image.manifest_digest(),
                provenance::PREDICATE_TYPE,
                predicate,
            );
            statements.push((
                provenance::PREDICATE_TYPE.to_owned(),
                serde_json::to_vec(&statement)?,
            ));
        }
        let mut subject = image.descriptor.clone();
        subject.platform = None;
        subject.annotations = None;
        attestations.push(store.put_attestation(&subject, &statements)?);
    }
    let index = store.put_attested_index(
        images,
        &attestations,
        &request.annotations_of(kiln_build::AnnotationKind::Index, None),
    )?;
    for tag in &request.tags {
        store.tag(&tag.store_name(), &index)?;
    }
    Ok(index)
}

/// The build's start, for provenance.
pub fn started() -> String {
    spdx_time()
}
