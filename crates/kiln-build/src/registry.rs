//! Registry access during a build: a `FROM` image the store lacks is pulled (`--pull` checks
//! the registry every time), and `--cache-from`/`--cache-to type=registry,ref=R` share step
//! records through a registry, so a runner with an empty store reuses what another built.

use std::fmt;
use std::sync::{Mutex, OnceLock};

use kiln_image::{CacheRecord, Digest, Image, Platform, Reference, Store};
use kiln_registry::{Registry, RegistryConfig, cache::RemoteCache};

use crate::Error;
use crate::steps::{BuildRequest, Event, Reporter};

/// What a build may do with registries.
pub struct BuildRegistry {
    config: RegistryConfig,
    client: OnceLock<Result<Registry, String>>,
    /// `--pull`: check the registry for a newer base even when the store has one.
    pub pull: bool,
    /// `--cache-from type=registry,ref=R`.
    pub cache_from: Vec<Reference>,
    /// `--cache-to type=registry,ref=R`.
    pub cache_to: Option<Reference>,
    remote: OnceLock<Vec<RemoteCache>>,
    keys: Mutex<Vec<Digest>>,
}

impl fmt::Debug for BuildRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildRegistry")
            .field("config", &self.config)
            .field("pull", &self.pull)
            .field("cache_from", &self.cache_from)
            .field("cache_to", &self.cache_to)
            .finish_non_exhaustive()
    }
}

impl BuildRegistry {
    /// Registry settings for a build; the client starts on first use.
    pub fn new(config: RegistryConfig) -> BuildRegistry {
        BuildRegistry {
            config,
            client: OnceLock::new(),
            pull: false,
            cache_from: Vec::new(),
            cache_to: None,
            remote: OnceLock::new(),
            keys: Mutex::new(Vec::new()),
        }
    }

    fn client(&self) -> Result<&Registry, Error> {
        self.client
            .get_or_init(|| Registry::new(self.config.clone()).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::BadInput(format!("registry settings: {e}")))
    }
}

/// `ADD <url>`'s download. It goes through the registry client, so it trusts the CA files
/// and `insecure` hosts of the registry settings and uses the environment's proxies, as a pull
/// does. A build without registry access downloads with the default settings.
pub(crate) fn fetch_url<'r>(
    registry: Option<&'r BuildRegistry>,
    url: &str,
) -> Result<kiln_registry::Download<'r>, Error> {
    static DEFAULT: OnceLock<Result<Registry, String>> = OnceLock::new();
    let client = match registry {
        Some(registry) => registry.client()?,
        None => DEFAULT
            .get_or_init(|| Registry::new(RegistryConfig::default()).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::BadInput(format!("registry settings: {e}")))?,
    };
    client.fetch_url(url).map_err(|source| Error::Registry {
        what: format!("ADD {url}: download failed"),
        source,
    })
}

/// Parses `type=registry,ref=R` (the only cache type kiln has).
pub fn parse_cache_spec(flag: &str, text: &str) -> Result<Reference, Error> {
    let mut kind = None;
    let mut reference = None;
    for field in text.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = Some(v),
            Some(("ref", v)) => reference = Some(v),
            // BuildKit's mode=max and friends: kiln always exports every step it ran.
            Some((_, _)) => {}
            None => {
                return Err(Error::BadInput(format!(
                    "{flag} {text:?}: expected type=registry,ref=REFERENCE"
                )));
            }
        }
    }
    match (kind, reference) {
        (Some("registry"), Some(r)) => Ok(r.parse::<Reference>()?),
        (Some(other), _) if other != "registry" => Err(Error::BadInput(format!(
            "{flag} {text:?}: cache type {other:?} is not supported (kiln has type=registry)"
        ))),
        _ => Err(Error::BadInput(format!(
            "{flag} {text:?}: expected type=registry,ref=REFERENCE"
        ))),
    }
}

/// Hands a registry's events to the build's reporter as they happen, as output of one step.
struct Live<'r> {
    reporter: &'r dyn Reporter,
    id: usize,
}

impl kiln_registry::Reporter for Live<'_> {
    fn report(&self, event: kiln_registry::Event<'_>) {
        use kiln_registry::Event as E;
        let (blob, done, total) = match &event {
            E::BlobStart { digest, size } => (digest.short(), 0, Some(*size)),
            E::BlobProgress { digest, bytes } => (digest.short(), *bytes, None),
            _ => ("", 0, None),
        };
        if !blob.is_empty() {
            self.reporter.report(Event::Transfer {
                id: self.id,
                blob,
                done,
                total,
            });
            return;
        }
        let line = match event {
            E::BlobStart { .. } | E::BlobProgress { .. } => return,
            E::BlobDone {
                digest,
                bytes,
                action,
            } => format!("{}: {} {bytes} bytes done", digest.short(), action.as_str()),
            E::Compressed {
                diff_id, digest, ..
            } => {
                format!("{}: compressed to {}", diff_id.short(), digest.short())
            }
            E::Retry {
                what,
                attempt,
                error,
            } => format!("retry {what} (attempt {attempt} failed: {error})"),
            E::MirrorSkipped { mirror, why } => format!("mirror {mirror} skipped: {why}"),
            E::Served {
                host,
                reference,
                mirror,
            } => format!(
                "{reference}: served by {}{host}",
                if mirror { "mirror " } else { "" }
            ),
        };
        self.reporter.report(Event::Output {
            id: self.id,
            line: &line,
        });
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The image a `FROM` (or `COPY --from`) names: from the store, pulled when the store lacks
/// it or when `--pull` asks for a check. A failed pull of an image the store lacks is a
/// warning, and the caller's "not in the store" error follows.
pub(crate) fn resolve_image(
    store: &Store,
    request: &BuildRequest,
    name: &str,
    platform: &Platform,
    reporter: &dyn Reporter,
    id: usize,
) -> Result<Image, Error> {
    let local = store.resolve_platform(name, Some(platform));
    let Some(settings) = &request.registry else {
        return Ok(local?);
    };
    let missing = matches!(
        local,
        Err(kiln_image::Error::ImageNotFound(_) | kiln_image::Error::NoPlatform { .. })
    );
    if !(missing || settings.pull) {
        return Ok(local?);
    }
    let Ok(reference) = name.parse::<Reference>() else {
        return Ok(local?);
    };
    let lines = Live { reporter, id };
    let pulled = settings.client().and_then(|client| {
        client
            .pull(store, &reference, Some(platform), &lines)
            .map_err(|source| Error::Registry {
                what: format!("pull {reference}"),
                source,
            })
    });
    match pulled {
        Ok(pulled) => Ok(pulled.image),
        Err(e) => {
            reporter.report(Event::Warning { text: chain(&e) });
            Ok(local?)
        }
    }
}

/// The cached result of a step: the local cache, else a `--cache-from` registry cache (whose
/// blobs are then fetched into the store); none when `ignore_cache` (`--no-cache`, or the
/// step's stage is in `--no-cache-filter`). Remembers the key for `--cache-to`.
pub(crate) fn cache_get(
    store: &Store,
    request: &BuildRequest,
    key: &Digest,
    ignore_cache: bool,
    reporter: &dyn Reporter,
    id: usize,
) -> Result<Option<CacheRecord>, Error> {
    if let Some(settings) = &request.registry
        && let Ok(mut keys) = settings.keys.lock()
    {
        keys.push(key.clone());
    }
    if ignore_cache {
        return Ok(None);
    }
    if let Some(record) = store.cache_get(key) {
        return Ok(Some(record));
    }
    let Some(settings) = &request.registry else {
        return Ok(None);
    };
    if settings.cache_from.is_empty() {
        return Ok(None);
    }
    let client = settings.client()?;
    let remote = settings.remote.get_or_init(|| {
        let lines = Live { reporter, id };
        settings
            .cache_from
            .iter()
            .filter_map(|r| match client.import_cache(store, r, &lines) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    reporter.report(Event::Warning {
                        text: format!("--cache-from {r}: {}", chain(&e)),
                    });
                    None
                }
            })
            .collect()
    });
    for cache in remote.iter().filter(|c| c.contains(key)) {
        let lines = Live { reporter, id };
        let got = client.fetch_cached(store, cache, key, &lines);
        match got {
            Ok(Some(record)) => return Ok(Some(record)),
            Ok(None) => {}
            Err(e) => reporter.report(Event::Warning {
                text: format!("remote cache record {}: {}", key.short(), chain(&e)),
            }),
        }
    }
    Ok(None)
}

/// After a build: `--cache-to` pushes the records of every step this build went through.
pub(crate) fn after_build(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
    id: usize,
) -> Result<(), Error> {
    let Some(settings) = &request.registry else {
        return Ok(());
    };
    let Some(target) = &settings.cache_to else {
        return Ok(());
    };
    let keys = settings.keys.lock().map(|k| k.clone()).unwrap_or_default();
    let lines = Live { reporter, id };
    let exported = settings
        .client()?
        .export_cache(store, target, &keys, &lines)
        .map_err(|source| Error::Registry {
            what: format!("--cache-to {target}"),
            source,
        });
    let count = exported?;
    reporter.report(Event::Output {
        id,
        line: &format!("exported {count} cache records to {target}"),
    });
    Ok(())
}
