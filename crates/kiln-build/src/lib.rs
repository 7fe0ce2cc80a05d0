//! Stages, steps, cache keys and instruction semantics: a Dockerfile becomes an image.
//!
//! This crate is where the leaf crates meet: `kiln-dockerfile` says what to do,
//! `kiln-sandbox` runs `RUN` steps, `kiln-layer` turns file-system changes into layers and
//! layers into snapshots, and `kiln-image` keeps the results. It also owns image archives
//! (`load`, `save`, `import`), which need both the store and the layer code.
#![deny(missing_docs)]

pub mod archive;
pub mod steps;
pub mod context;
pub mod copy;
mod error;
pub mod registry;
pub mod snapshot;
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

pub use steps::{BuildRequest, Event, Reporter, Silent, apply_changes, build};
