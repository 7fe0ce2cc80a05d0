//! Registry access during a build: a `FROM` image the store lacks is pulled (`--pull` checks
//! the registry every time), and `--cache-from`/`--cache-to` share step records through a
//! registry, a local directory or the image itself (`type=registry|local|inline`), so a
//! runner with an empty store reuses what another built.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
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
    /// `--cache-from`.
    pub cache_from: Vec<CacheFrom>,
    /// `--cache-to`.
    pub cache_to: Option<CacheTo>,
    /// The caches of `--cache-from`, read at the first step that misses the store's.
    remote: OnceLock<Result<Vec<RemoteCache>, String>>,
    /// Every step key the build went through, with its parent's key.
    keys: Mutex<Vec<(Digest, Digest)>>,
    /// The last step key of each image built (one a platform).
    results: Mutex<Vec<Digest>>,
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
            results: Mutex::new(Vec::new()),
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

/// Which steps `--cache-to` exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// BuildKit's default: the steps whose results are in the image's chain (the final stage's
    /// steps and those of the stages it is `FROM`).
    #[default]
    Min,
    /// Every step of every stage the build went through.
    Max,
}

/// Where `--cache-to` writes.
#[derive(Debug, Clone)]
pub enum CacheKind {
    /// `type=registry,ref=R`.
    Registry(Reference),
    /// `type=local,dest=DIR[,tag=T]`: an OCI layout directory.
    Local {
        /// `dest=`.
        dir: PathBuf,
        /// `tag=` (`latest`).
        tag: String,
    },
    /// `type=inline`: the image's config.
    Inline,
}

/// `--cache-to`.
#[derive(Debug, Clone)]
pub struct CacheTo {
    /// The backend.
    pub kind: CacheKind,
    /// `mode=min|max`.
    pub mode: CacheMode,
    /// `ignore-error=true`: a failed export is a warning.
    pub ignore_error: bool,
}

/// `--cache-from`.
#[derive(Debug, Clone)]
pub enum CacheFrom {
    /// `type=registry,ref=R`, or a bare `R` as buildx has it: a cache artifact, or an image
    /// with an inline cache.
    Registry(Reference),
    /// `type=local,src=DIR[,tag=T|digest=D]`.
    Local {
        /// `src=`.
        dir: PathBuf,
        /// `tag=` (`latest`).
        tag: String,
        /// `digest=`: the cache's manifest, instead of the tag.
        digest: Option<Digest>,
    },
}

/// The `key=value` fields of a cache spec; a bare value is buildx's shorthand for
/// `type=registry,ref=VALUE`.
struct Spec<'t> {
    flag: &'static str,
    text: &'t str,
    fields: BTreeMap<&'t str, &'t str>,
}

impl<'t> Spec<'t> {
    fn parse(flag: &'static str, text: &'t str) -> Result<Spec<'t>, Error> {
        let mut fields = BTreeMap::new();
        if !text.contains('=') {
            fields.insert("type", "registry");
            fields.insert("ref", text);
        } else {
            for field in text.split(',') {
                let Some((key, value)) = field.split_once('=') else {
                    return Err(Error::BadInput(format!(
                        "{flag} {text:?}: {field:?} is not key=value"
                    )));
                };
                fields.insert(key.trim(), value);
            }
        }
        let spec = Spec { flag, text, fields };
        if !spec.fields.contains_key("type") {
            return Err(spec.error("no type= (kiln has type=registry, local and inline)"));
        }
        Ok(spec)
    }

    fn error(&self, why: impl fmt::Display) -> Error {
        Error::BadInput(format!("{} {:?}: {why}", self.flag, self.text))
    }

    fn get(&self, key: &str) -> Option<&'t str> {
        self.fields.get(key).copied()
    }

    fn required(&self, key: &str, example: &str) -> Result<&'t str, Error> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| self.error(format!("{key}= is missing: {example}")))
    }

    /// Refuses options that kiln does not implement for this type, naming them.
    fn only(&self, allowed: &[&str]) -> Result<(), Error> {
        let kind = self.get("type").unwrap_or_default();
        match self.fields.keys().find(|k| !allowed.contains(k)) {
            Some(key) => Err(self.error(format!(
                "option {key:?} is not supported for type={kind} (kiln takes {})",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn unsupported_type(&self, kinds: &str) -> Error {
        let kind = self.get("type").unwrap_or_default();
        self.error(format!(
            "cache type {kind:?} is not supported (kiln has {kinds})"
        ))
    }

    fn mode(&self) -> Result<CacheMode, Error> {
        match self.get("mode") {
            None | Some("min") => Ok(CacheMode::Min),
            Some("max") => Ok(CacheMode::Max),
            Some(other) => Err(self.error(format!("mode={other:?}: expected min or max"))),
        }
    }

    fn flag_value(&self, key: &str) -> Result<bool, Error> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(self.error(format!("{key}={other:?}: expected true or false"))),
        }
    }

    fn reference(&self) -> Result<Reference, Error> {
        let text = self.required("ref", "type=registry,ref=REFERENCE")?;
        text.parse::<Reference>()
            .map_err(|e| self.error(format!("ref={text:?}: {e}")))
    }
}

/// Parses `--cache-to`: `type=registry,ref=R`, `type=local,dest=DIR`, `type=inline`, with
/// BuildKit's `mode=min|max` (min unless said) and `ignore-error`.
pub fn parse_cache_to(text: &str) -> Result<CacheTo, Error> {
    let spec = Spec::parse("--cache-to", text)?;
    let kind = match spec.get("type") {
        Some("registry") => {
            spec.only(&["type", "ref", "mode", "ignore-error"])?;
            CacheKind::Registry(spec.reference()?)
        }
        Some("local") => {
            spec.only(&["type", "dest", "tag", "mode", "ignore-error"])?;
            CacheKind::Local {
                dir: PathBuf::from(spec.required("dest", "type=local,dest=DIRECTORY")?),
                tag: spec.get("tag").unwrap_or("latest").to_owned(),
            }
        }
        Some("inline") => {
            spec.only(&["type", "mode"])?;
            if spec.mode()? == CacheMode::Max {
                return Err(spec.error(
                    "type=inline has mode=min only, as BuildKit's: export mode=max with \
                     type=registry or type=local",
                ));
            }
            CacheKind::Inline
        }
        _ => return Err(spec.unsupported_type("registry, local and inline")),
    };
    Ok(CacheTo {
        kind,
        mode: spec.mode()?,
        ignore_error: spec.flag_value("ignore-error")?,
    })
}

/// Parses `--cache-from`: `type=registry,ref=R` (a cache, or an image with an inline cache),
/// a bare `R`, or `type=local,src=DIR[,tag=T|digest=D]`.
pub fn parse_cache_from(text: &str) -> Result<CacheFrom, Error> {
    let spec = Spec::parse("--cache-from", text)?;
    match spec.get("type") {
        Some("registry") => {
            spec.only(&["type", "ref"])?;
            Ok(CacheFrom::Registry(spec.reference()?))
        }
        Some("local") => {
            spec.only(&["type", "src", "tag", "digest"])?;
            let digest = spec
                .get("digest")
                .map(|d| {
                    d.parse::<Digest>()
                        .map_err(|e| spec.error(format!("digest={d:?}: {e}")))
                })
                .transpose()?;
            Ok(CacheFrom::Local {
                dir: PathBuf::from(spec.required("src", "type=local,src=DIRECTORY")?),
                tag: spec.get("tag").unwrap_or("latest").to_owned(),
                digest,
            })
        }
        _ => Err(spec.unsupported_type(
            "registry and local; an inline cache is read with \
             type=registry,ref=IMAGE",
        )),
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

/// Notes a step key and its parent's, for `--cache-to`: `mode=min` walks them back from the
/// image's last key.
pub(crate) fn remember_key(request: &BuildRequest, key: &Digest, parent: &Digest) {
    if let Some(settings) = &request.registry
        && let Ok(mut keys) = settings.keys.lock()
    {
        keys.push((key.clone(), parent.clone()));
    }
}

/// The cached result of a step: the local cache, else a `--cache-from` cache (whose blobs are
/// then fetched into the store); none when `ignore_cache` (`--no-cache`, or the step's stage
/// is in `--no-cache-filter`). Remembers the key and its parent's for `--cache-to`.
pub(crate) fn cache_get(
    store: &Store,
    request: &BuildRequest,
    key: &Digest,
    parent: &Digest,
    ignore_cache: bool,
    reporter: &dyn Reporter,
    id: usize,
) -> Result<Option<CacheRecord>, Error> {
    remember_key(request, key, parent);
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
    let remote = settings
        .remote
        .get_or_init(|| import_caches(store, settings, client, reporter, id))
        .as_ref()
        .map_err(|e| Error::BadInput(e.clone()))?;
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

/// Reads the caches of `--cache-from`. As buildx has it, a cache that is not there (yet) is a
/// warning; so is a registry that fails, while a local directory that is not a kiln cache is
/// an error.
fn import_caches(
    store: &Store,
    settings: &BuildRegistry,
    client: &Registry,
    reporter: &dyn Reporter,
    id: usize,
) -> Result<Vec<RemoteCache>, String> {
    let lines = Live { reporter, id };
    let mut caches = Vec::new();
    for from in &settings.cache_from {
        match from {
            CacheFrom::Registry(r) => match client.import_cache(store, r, &lines) {
                Ok(cache) => caches.push(cache),
                Err(e) => reporter.report(Event::Warning {
                    text: format!("--cache-from {r}: {}", chain(&e)),
                }),
            },
            CacheFrom::Local { dir, tag, digest } => {
                match kiln_registry::cache::local::import(dir, tag, digest.as_ref()) {
                    Ok(Some(cache)) => caches.push(cache),
                    Ok(None) => reporter.report(Event::Warning {
                        text: format!(
                            "--cache-from type=local,src={}: no cache there yet (no {})",
                            dir.display(),
                            match digest {
                                Some(d) => format!("manifest {d}"),
                                None => format!("index.json entry tagged {tag:?}"),
                            }
                        ),
                    }),
                    Err(e) => {
                        return Err(format!(
                            "--cache-from type=local,src={}: {}",
                            dir.display(),
                            chain(&e)
                        ));
                    }
                }
            }
        }
    }
    Ok(caches)
}

impl BuildRegistry {
    /// The keys `--cache-to` exports in `mode`: every step's, or those of the chains that end
    /// at `results` (each step's parent, back to the base).
    fn export_keys(&self, mode: CacheMode, results: &[Digest]) -> Vec<Digest> {
        let keys = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
        if mode == CacheMode::Max {
            return keys.into_iter().map(|(key, _)| key).collect();
        }
        let parents: BTreeMap<&Digest, &Digest> = keys.iter().map(|(k, p)| (k, p)).collect();
        let mut chain = Vec::new();
        for result in results {
            let mut key = result;
            while let Some(parent) = parents.get(key) {
                // A key digests its parent's, so the walk ends; the bound is for safety.
                if chain.len() > keys.len() {
                    break;
                }
                chain.push(key.clone());
                key = parent;
            }
        }
        chain
    }
}

/// Remembers the last step key of an image the build made, whose chain `mode=min` exports.
pub(crate) fn note_result(request: &BuildRequest, key: &Digest) {
    if let Some(settings) = &request.registry
        && let Ok(mut results) = settings.results.lock()
    {
        results.push(key.clone());
    }
}

/// `--cache-to type=inline`: the inline cache of the image whose last step key is `result` and
/// whose layers are `layers`, and how many records it has; None without that flag.
pub(crate) fn inline_cache(
    store: &Store,
    request: &BuildRequest,
    result: &Digest,
    layers: &[kiln_image::Descriptor],
) -> Result<Option<(serde_json::Value, usize)>, Error> {
    let Some(settings) = &request.registry else {
        return Ok(None);
    };
    let Some(CacheTo {
        kind: CacheKind::Inline,
        ..
    }) = &settings.cache_to
    else {
        return Ok(None);
    };
    let keys = settings.export_keys(CacheMode::Min, std::slice::from_ref(result));
    kiln_registry::cache::inline::build(store, &keys, layers)
        .map(Some)
        .map_err(|source| Error::Registry {
            what: "--cache-to type=inline".into(),
            source,
        })
}

/// After a build: `--cache-to` exports the records of the steps its mode names (the inline
/// cache is in the image already).
pub(crate) fn after_build(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
    id: usize,
) -> Result<(), Error> {
    let Some(settings) = &request.registry else {
        return Ok(());
    };
    let Some(to) = &settings.cache_to else {
        return Ok(());
    };
    let results = settings
        .results
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let keys = settings.export_keys(to.mode, &results);
    let lines = Live { reporter, id };
    let (place, exported) = match &to.kind {
        CacheKind::Inline => return Ok(()),
        CacheKind::Registry(target) => (
            target.to_string(),
            settings
                .client()?
                .export_cache(store, target, &keys, &lines),
        ),
        CacheKind::Local { dir, tag } => (
            format!("{} (tag {tag})", dir.display()),
            kiln_registry::cache::local::export(store, dir, tag, &keys),
        ),
    };
    let count = match exported {
        Ok(count) => count,
        Err(source) if to.ignore_error => {
            reporter.report(Event::Warning {
                text: format!(
                    "--cache-to {place} failed (ignore-error=true): {}",
                    chain(&source)
                ),
            });
            return Ok(());
        }
        Err(source) => {
            return Err(Error::Registry {
                what: format!("--cache-to {place}"),
                source,
            });
        }
    };
    reporter.report(Event::Output {
        id,
        line: &format!("exported {count} cache records to {place}"),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn cache_specs_parse_as_buildkit_has_them() {
        let to = parse_cache_to("type=local,dest=/c").unwrap();
        assert!(
            matches!(&to.kind, CacheKind::Local { dir, tag } if dir == Path::new("/c") && tag == "latest")
        );
        assert_eq!(to.mode, CacheMode::Min);
        let to = parse_cache_to("type=registry,ref=r.example/c:1,mode=max").unwrap();
        assert_eq!(to.mode, CacheMode::Max);
        assert!(matches!(
            parse_cache_to("r.example/c:1").unwrap().kind,
            CacheKind::Registry(_)
        ));
        assert!(matches!(
            parse_cache_to("type=inline").unwrap().kind,
            CacheKind::Inline
        ));
        let from = parse_cache_from("type=local,src=/c,tag=t").unwrap();
        assert!(matches!(from, CacheFrom::Local { tag, digest: None, .. } if tag == "t"));
        assert!(matches!(
            parse_cache_from("r.example/app:1").unwrap(),
            CacheFrom::Registry(_)
        ));
        for (bad, word) in [
            ("type=local", "dest="),
            ("type=local,dest=/c,compression=zstd", "compression"),
            ("type=inline,mode=max", "mode=max"),
            ("type=registry,ref=r/c,mode=all", "mode"),
            ("type=s3,bucket=b", "\"s3\""),
            ("mode=max", "type="),
        ] {
            let err = parse_cache_to(bad).unwrap_err().to_string();
            assert!(
                err.contains("--cache-to") && err.contains(word),
                "{bad}: {err}"
            );
        }
        let err = parse_cache_from("type=inline").unwrap_err().to_string();
        assert!(
            err.contains("--cache-from") && err.contains("inline"),
            "{err}"
        );
    }

    #[test]
    fn mode_min_is_the_chain_of_the_results_and_max_every_key() {
        let settings = BuildRegistry::new(RegistryConfig::default());
        let d = |s: &str| Digest::of(s.as_bytes());
        // A stage `inter` (base → i1), and the final stage (base → f1 → f2).
        let keys = [("i1", "base"), ("f1", "base"), ("f2", "f1")];
        *settings.keys.lock().unwrap() = keys.iter().map(|(k, p)| (d(k), d(p))).collect();
        let mut min = settings.export_keys(CacheMode::Min, &[d("f2")]);
        min.sort();
        let mut want = vec![d("f1"), d("f2")];
        want.sort();
        assert_eq!(min, want);
        assert_eq!(settings.export_keys(CacheMode::Max, &[d("f2")]).len(), 3);
    }
}
