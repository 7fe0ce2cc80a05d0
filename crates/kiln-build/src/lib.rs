//! Plan, solver, cache keys and instruction semantics: a Dockerfile becomes an image.
//!
//! This crate is where the leaf crates meet: `kiln-dockerfile` says what to do,
//! `kiln-sandbox` runs `RUN` steps, `kiln-layer` turns file-system changes into layers and
//! layers into snapshots, and `kiln-image` keeps the results. It also owns image archives
//! (`load`, `save`, `import`), which need both the store and the layer code.
//!
//! # The life of a build
//!
//! 1. **Plan** ([`plan`]): the Dockerfile, build args and target become a [`plan::BuildPlan`]:
//!    the stages the target needs, each with its base resolved (an image, an earlier stage,
//!    scratch), its steps with variables expanded (the base's ONBUILD triggers first), and the
//!    stages each step reads. Pure: images and context files are looked up through
//!    [`plan::Resolver`]. Every user error is found here, before anything runs. The images the
//!    target will read are pulled concurrently first.
//! 2. **Solve** ([`solve`]): each stage runs on a thread once its base stage is built; a step
//!    that reads another stage waits for it there. `--jobs` slots bound the work.
//! 3. **Step** (`steps`): for each step, the cache key is the digest of a [`key::KeyInput`]:
//!    the parent key, the expanded instruction, and what the step reads (its environment, the
//!    digest of its sources or bound files). A hit reuses the recorded config and layers
//!    without touching a file system. A miss runs the step (a `RUN` in the sandbox over an
//!    overlay of the parent snapshots; a `COPY`/`ADD` writes into an upper dir), commits the
//!    upper dir as a layer (hashed once, as it is written), keeps the upper dir as the
//!    snapshot, and records the key. A `COPY --link`/`ADD --link` (without `--chmod`, as
//!    BuildKit has it) is copied onto the empty image and keyed without its parent: its
//!    record keeps that one layer, which is laid as it is on whatever parent the stage has,
//!    and the steps after it are keyed on both ([`key::merge_key`]).
//! 4. **Finish**: the target stage's config and layers become an image in the store, tagged;
//!    `--cache-to` exports the keys the build went through.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod archive;
pub mod context;
pub mod copy;
mod error;
pub mod git;
pub mod isolation;
pub mod key;
pub mod named;
pub mod plan;
pub mod registry;
pub mod snapshot;
pub mod solve;
pub mod ssh;
pub mod steps;
mod support;

pub use error::Error;

/// The time stamps of configs and history: `SOURCE_DATE_EPOCH` when set, so that builds of
/// the same inputs give the same digests, and now otherwise.
pub fn created_timestamp() -> String {
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    let at = match epoch.and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok()) {
        Some(at) => at,
        None => time::OffsetDateTime::now_utc(),
    };
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The `SOURCE_DATE_EPOCH` in force, if any.
pub fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
}

pub use steps::{
    Annotation, AnnotationKind, BuildRequest, Event, MultiPlatform, Reporter, RunOptions, Session,
    Silent, apply_changes, build, build_platforms, export_cache, http_date, plan_only,
};
