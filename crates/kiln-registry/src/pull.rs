//! Pull: manifest (through mirrors, read up to 4 MiB), platform choice, the config (up to
//! 8 MiB), then the layers streamed into staging, each checked against its digest and its
//! size; committed only when all are, and only then the manifest stored and tagged.
//!
//! A layer's diff id is checked where the layer is first decompressed, not here: the unpack
//! into a snapshot (`kiln_layer::apply_stored_layer`) refuses a layer that does not unpack to
//! its diff id, and only a diff id kiln computed is ever recorded. Decompressing on the way in
//! as well would double the work of a pull (one gzip stream inflates on one core, slower than
//! the download) and buys nothing the unpack does not check again. A diff id kiln already
//! knows for a blob is still compared here, for free.
//!
//! Each byte stream is hashed once: a blob by the store's `BlobWriter` as it is staged (kiln
//! makes the GET itself, as oci-client's blob streams hash what they hand over a second
//! time).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kiln_image::{
    BlobWriter, Descriptor, Digest, Image, ImageConfig, Index, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE,
    Manifest, Platform, Reference, StagedBlob, Store, media_type,
};
use oci_client::RegistryOperation;
use oci_client::errors::OciDistributionError;
use reqwest::StatusCode;

use crate::client::{ATTEMPTS, Endpoint, error_chain, retry};
use crate::config::{host_platform, platform_string};
use crate::{BlobAction, Error, Event, Registry, Reporter};

/// Manifest media types kiln asks for.
pub(crate) const ACCEPT: &[&str] = &[
    media_type::OCI_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST,
    media_type::DOCKER_LIST,
];

/// What a pull brought.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image as stored (and tagged).
    pub image: Image,
    /// The host that served it (a mirror or the registry).
    pub served_by: String,
    /// Whether that host is a mirror.
    pub from_mirror: bool,
    /// The manifest digest in the registry (of the index, when the reference names one).
    pub remote_digest: Digest,
    /// Bytes downloaded.
    pub downloaded: u64,
}

/// A parsed manifest document.
pub(crate) enum Document {
    Index(Index),
    Manifest(Box<Manifest>),
}

/// Reads a manifest or index, by its media type (or its shape, when it names none).
pub(crate) fn parse_document(reference: &str, bytes: &[u8]) -> Result<Document, Error> {
    let bad = |why: String| Error::BadManifest {
        reference: reference.to_owned(),
        why,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Err(Error::UnknownMediaType {
            reference: reference.to_owned(),
            media_type: "application/vnd.docker.distribution.manifest.v1+json".into(),
        });
    }
    let media = match value.get("mediaType").and_then(|v| v.as_str()) {
        Some(m) => m.to_owned(),
        None if value.get("manifests").is_some() => media_type::OCI_INDEX.to_owned(),
        None if value.get("config").is_some() => media_type::OCI_MANIFEST.to_owned(),
        None => return Err(bad("neither a manifest nor an index".into())),
    };
    match media.as_str() {
        media_type::OCI_INDEX | media_type::DOCKER_LIST => Ok(Document::Index(
            serde_json::from_value(value).map_err(|e| bad(e.to_string()))?,
        )),
        media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => {
            let manifest: Manifest =
                serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            for layer in &manifest.layers {
                if !known_layer(&layer.media_type) {
                    return Err(Error::UnknownMediaType {
                        reference: reference.to_owned(),
                        media_type: layer.media_type.clone(),
                    });
                }
            }
            Ok(Document::Manifest(Box::new(manifest)))
        }
        other => Err(Error::UnknownMediaType {
            reference: reference.to_owned(),
            media_type: other.to_owned(),
        }),
    }
}

fn known_layer(media: &str) -> bool {
    media.starts_with("application/vnd.oci.image.layer.")
        || media.starts_with("application/vnd.docker.image.rootfs.")
}

/// The OCI media type of a layer kiln stores.
fn oci_layer_type(media: &str) -> &str {
    match media {
        media_type::DOCKER_LAYER_GZIP => media_type::OCI_LAYER_GZIP,
        media_type::DOCKER_LAYER_TAR => media_type::OCI_LAYER_TAR,
        other => other,
    }
}

/// The index entry for `want`: os and architecture equal, variant equal when asked for.
pub(crate) fn select_platform<'a>(
    index: &'a Index,
    want: &Platform,
) -> Result<&'a Descriptor, Vec<String>> {
    let matches = |p: &Platform| {
        p.os == want.os
            && p.architecture == want.architecture
            && match (&want.variant, &p.variant) {
                (None, _) => true,
                (Some(w), Some(v)) => w == v,
                (Some(w), None) => want.architecture == "arm64" && w == "v8",
            }
    };
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(matches))
        .ok_or_else(|| {
            index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(platform_string))
                .collect()
        })
}

/// A download's outcome: the staged blob and the bytes it took, or why it failed.
type Downloaded = Result<(StagedBlob, u64), Error>;

/// A blob to fetch, with the diff id its config gives it when it is a layer.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub(crate) blob: Descriptor,
    pub(crate) diff_id: Option<Digest>,
}

impl Wanted {
    pub(crate) fn blob(blob: &Descriptor) -> Wanted {
        Wanted {
            blob: blob.clone(),
            diff_id: None,
        }
    }
}

impl Registry {
    /// Pulls `reference` for `platform` (default: the host's) into the store and tags it.
    /// Mirrors of its registry are tried first.
    pub fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        platform: Option<&Platform>,
        reporter: &dyn Reporter,
    ) -> Result<Pulled, Error> {
        let want = platform.cloned().unwrap_or_else(host_platform);
        self.block_on(self.pull_async(store, reference, &want, reporter))
    }

    async fn pull_async(
        &self,
        store: &Store,
        reference: &Reference,
        want: &Platform,
        reporter: &dyn Reporter,
    ) -> Result<Pulled, Error> {
        let name = reference.to_string();
        let endpoints = self.pull_endpoints(&reference.domain, reporter).await?;
        let mut tried = Vec::new();
        for endpoint in endpoints {
            tried.push(endpoint.host.clone());
            let found = self
                .resolve_manifest(&endpoint, reference, want, reporter)
                .await;
            let (manifest, remote_digest) = match found {
                Ok(found) => found,
                Err(e) if endpoint.mirror => {
                    reporter.report(Event::MirrorSkipped {
                        mirror: &endpoint.host,
                        why: error_chain(&e),
                    });
                    continue;
                }
                Err(e) if e.is_not_found() => {
                    return Err(Error::NotFound {
                        reference: name,
                        tried,
                    });
                }
                Err(e) => return Err(e),
            };
            reporter.report(Event::Served {
                host: &endpoint.host,
                reference: &name,
                mirror: endpoint.mirror,
            });
            tracing::info!(host = %endpoint.host, mirror = endpoint.mirror, "{name} served");
            // The config first: its diff ids are what the layers are checked against.
            let (config_bytes, config_wire) = self
                .fetch_config(
                    store,
                    &endpoint,
                    &reference.path,
                    &manifest.config,
                    reporter,
                )
                .await?;
            let config: ImageConfig =
                serde_json::from_slice(&config_bytes).map_err(|e| Error::BadManifest {
                    reference: name.clone(),
                    why: format!("config {} is not valid: {e}", manifest.config.digest),
                })?;
            if config.rootfs.diff_ids.len() != manifest.layers.len() {
                return Err(Error::BadManifest {
                    reference: name,
                    why: format!(
                        "it has {} layers, but its config lists {} diff ids",
                        manifest.layers.len(),
                        config.rootfs.diff_ids.len()
                    ),
                });
            }
            let wanted: Vec<Wanted> = manifest
                .layers
                .iter()
                .zip(&config.rootfs.diff_ids)
                .map(|(blob, diff_id)| Wanted {
                    blob: blob.clone(),
                    diff_id: Some(diff_id.clone()),
                })
                .collect();
            let downloaded = config_wire
                + self
                    .fetch_blobs(store, &endpoint, &reference.path, &wanted, reporter)
                    .await?;
            store.write_blob(&config_bytes)?;
            let mut blobs = vec![manifest.config.clone()];
            blobs.extend(manifest.layers.iter().cloned());
            let config_desc = Descriptor::new(
                media_type::OCI_CONFIG,
                manifest.config.digest.clone(),
                manifest.config.size,
            );
            let layers = manifest
                .layers
                .iter()
                .map(|l| {
                    let mut d = l.clone();
                    d.media_type = oci_layer_type(&l.media_type).to_owned();
                    d
                })
                .collect();
            let image = store.put_manifest(config_desc, config, layers)?;
            store.tag(&reference.store_name(), &image.descriptor)?;
            crate::push::record_sources(store, &endpoint.host, &reference.path, &blobs);
            return Ok(Pulled {
                image,
                served_by: endpoint.host.clone(),
                from_mirror: endpoint.mirror,
                remote_digest,
                downloaded,
            });
        }
        Err(Error::NotFound {
            reference: name,
            tried,
        })
    }

    /// GETs the manifest (through an index if need be) on one endpoint.
    async fn resolve_manifest(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        want: &Platform,
        reporter: &dyn Reporter,
    ) -> Result<(Manifest, Digest), Error> {
        let name = reference.to_string();
        let (bytes, top_digest) = self
            .get_manifest(
                endpoint,
                &reference.path,
                reference.tag_or_latest(),
                reference.digest.as_ref(),
                reporter,
            )
            .await?;
        match parse_document(&name, &bytes)? {
            Document::Manifest(m) => Ok((*m, top_digest)),
            Document::Index(index) => {
                let entry = select_platform(&index, want).map_err(|available| {
                    Error::NoMatchingPlatform {
                        reference: name.clone(),
                        platform: platform_string(want),
                        available,
                    }
                })?;
                let (bytes, _) = self
                    .get_manifest(
                        endpoint,
                        &reference.path,
                        None,
                        Some(&entry.digest),
                        reporter,
                    )
                    .await?;
                match parse_document(&name, &bytes)? {
                    Document::Manifest(m) => Ok((*m, top_digest)),
                    Document::Index(_) => Err(Error::BadManifest {
                        reference: name,
                        why: "an index entry points at another index".into(),
                    }),
                }
            }
        }
    }

    /// GETs one manifest and checks it against the digest asked for.
    pub(crate) async fn get_manifest(
        &self,
        endpoint: &Endpoint,
        path: &str,
        tag: Option<&str>,
        digest: Option<&Digest>,
        reporter: &dyn Reporter,
    ) -> Result<(bytes::Bytes, Digest), Error> {
        let r = endpoint.reference(path, tag, digest.map(Digest::as_str));
        endpoint.authorize(&r).await;
        let what = format!(
            "GET manifest {path}:{}",
            tag.or(digest.map(Digest::as_str)).unwrap_or("latest")
        );
        // A mirror gets one try: falling back quickly matters more than a mirror's hiccup.
        let attempts = if endpoint.mirror { 1 } else { ATTEMPTS };
        let bytes = retry(&what, reporter, attempts, |_| {
            get_capped_manifest(endpoint, &r, &what)
        })
        .await?;
        let actual = Digest::of(&bytes);
        if let Some(expected) = digest
            && *expected != actual
        {
            return Err(Error::DigestMismatch {
                what: format!("manifest {path}"),
                expected: expected.clone(),
                actual,
            });
        }
        Ok((bytes, actual))
    }

    /// The config blob, from the store or the registry, checked and capped; returns it and the
    /// bytes downloaded. It enters the store with the layers.
    async fn fetch_config(
        &self,
        store: &Store,
        endpoint: &Endpoint,
        path: &str,
        desc: &Descriptor,
        reporter: &dyn Reporter,
    ) -> Result<(Vec<u8>, u64), Error> {
        if desc.size > MAX_CONFIG_SIZE {
            return Err(kiln_image::Error::TooLarge {
                what: format!("config {}", desc.digest),
                size: desc.size,
                limit: MAX_CONFIG_SIZE,
            }
            .into());
        }
        if store.has_blob(&desc.digest) {
            reporter.report(Event::BlobDone {
                digest: &desc.digest,
                bytes: 0,
                action: BlobAction::Exists,
            });
            return Ok((store.read_blob(&desc.digest)?, 0));
        }
        reporter.report(Event::BlobStart {
            digest: &desc.digest,
            size: desc.size,
        });
        let r = endpoint.reference(path, None, Some(desc.digest.as_str()));
        endpoint.authorize(&r).await;
        let what = format!("GET blob {}", desc.digest);
        let bytes = retry(&what, reporter, ATTEMPTS, |_| async {
            let mut response = get_blob(endpoint, &r, 0, &what).await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = body_chunk(&mut response, &desc.digest).await? {
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 > desc.size {
                    return Err(Error::SizeMismatch {
                        digest: desc.digest.clone(),
                        expected: desc.size,
                        actual: bytes.len() as u64,
                    });
                }
            }
            Ok(bytes)
        })
        .await?;
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                what: format!("config {}", desc.digest),
                expected: desc.digest.clone(),
                actual,
            });
        }
        if bytes.len() as u64 != desc.size {
            return Err(Error::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        let wire = bytes.len() as u64;
        reporter.report(Event::BlobDone {
            digest: &desc.digest,
            bytes: wire,
            action: BlobAction::Downloaded,
        });
        Ok((bytes, wire))
    }

    /// Downloads every blob the store lacks, in parallel, into staging; commits them all only
    /// when all are verified (digest and size). A layer the store has, whose diff id kiln
    /// knows, is checked against the config's. Returns the bytes downloaded.
    pub(crate) async fn fetch_blobs(
        &self,
        store: &Store,
        endpoint: &Arc<Endpoint>,
        path: &str,
        blobs: &[Wanted],
        reporter: &dyn Reporter,
    ) -> Result<u64, Error> {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo: Vec<&Wanted> = Vec::new();
        for wanted in blobs {
            if !seen.insert((wanted.blob.digest.clone(), wanted.diff_id.clone())) {
                continue;
            }
            if !store.has_blob(&wanted.blob.digest) {
                todo.push(wanted);
                continue;
            }
            if let Some(diff_id) = &wanted.diff_id
                && let Some(actual) = kiln_layer::known_diff_id_in_store(store, &wanted.blob)?
                && actual != *diff_id
            {
                return Err(Error::DiffIdMismatch {
                    layer: wanted.blob.digest.clone(),
                    actual,
                    expected: diff_id.clone(),
                });
            }
            reporter.report(Event::BlobDone {
                digest: &wanted.blob.digest,
                bytes: 0,
                action: BlobAction::Exists,
            });
        }
        // One thread per concurrent download, each driving its transfer on the runtime: the
        // hashing and writing of different blobs then run on different cores. (This runs
        // inside `Registry::block_on`, on the caller's thread, which may wait here.)
        let handle = tokio::runtime::Handle::current();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<(usize, Downloaded)>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..self.concurrency.min(todo.len()) {
                scope.spawn(|| {
                    while !failed.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(desc) = todo.get(i) else { break };
                        let result =
                            handle.block_on(download(store, endpoint, path, desc, reporter));
                        if result.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        if let Ok(mut results) = results.lock() {
                            results.push((i, result));
                        }
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_default();
        results.sort_by_key(|(i, _)| *i);
        let mut staged = Vec::with_capacity(results.len());
        for (_, result) in results {
            staged.push(result?);
        }
        if staged.len() != todo.len() {
            return Err(Error::Config("a download thread stopped early".into()));
        }
        // Every blob is verified: now they enter the store.
        let mut total = 0;
        for (blob, bytes) in staged {
            total += bytes;
            blob.commit()?;
        }
        Ok(total)
    }
}

/// Streams one blob into staging, resuming with a ranged GET after a transient error.
async fn download(
    store: &Store,
    endpoint: &Endpoint,
    path: &str,
    wanted: &Wanted,
    reporter: &dyn Reporter,
) -> Result<(StagedBlob, u64), Error> {
    let desc = &wanted.blob;
    let digest = &desc.digest;
    reporter.report(Event::BlobStart {
        digest,
        size: desc.size,
    });
    let r = endpoint.reference(path, None, Some(digest.as_str()));
    endpoint.authorize(&r).await;
    let what = format!("GET blob {}", digest.short());
    let mut writer: Option<BlobWriter> = None;
    let mut wire = 0u64;
    let mut attempt = 1;
    loop {
        let result = download_attempt(
            store,
            endpoint,
            &r,
            wanted,
            &mut writer,
            &mut wire,
            reporter,
        )
        .await;
        match result {
            Ok(()) => break,
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                reporter.report(Event::Retry {
                    what: &what,
                    attempt,
                    error: error_chain(&e),
                });
                tokio::time::sleep(std::time::Duration::from_millis(200 << (attempt - 1))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
    let Some(blob) = writer else {
        return Err(Error::Truncated {
            digest: digest.clone(),
            got: 0,
            expected: desc.size,
        });
    };
    // Staged unchecked, to be checked here with the error that names the registry's blob; a
    // blob that fails is dropped, its file with it.
    let blob = blob.stage(None)?;
    let actual = blob.digest().clone();
    if actual != *digest {
        return Err(Error::DigestMismatch {
            what: format!("blob {digest}"),
            expected: digest.clone(),
            actual,
        });
    }
    if blob.size() != desc.size {
        return Err(Error::SizeMismatch {
            digest: digest.clone(),
            expected: desc.size,
            actual: blob.size(),
        });
    }
    reporter.report(Event::BlobDone {
        digest,
        bytes: wire,
        action: BlobAction::Downloaded,
    });
    Ok((blob, wire))
}

async fn download_attempt(
    store: &Store,
    endpoint: &Endpoint,
    r: &oci_client::Reference,
    wanted: &Wanted,
    writer: &mut Option<BlobWriter>,
    wire: &mut u64,
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    let desc = &wanted.blob;
    let digest = &desc.digest;
    let offset = writer.as_ref().map_or(0, |w| w.written());
    let what = format!("GET blob {digest}");
    let mut response = get_blob(endpoint, r, offset, &what).await?;
    if offset == 0 || response.status() != StatusCode::PARTIAL_CONTENT {
        // A fresh start: whatever was staged is dropped (and its file removed).
        *writer = Some(store.blob_writer()?);
    }
    let Some(out) = writer.as_mut() else {
        return Err(Error::Truncated {
            digest: digest.clone(),
            got: 0,
            expected: desc.size,
        });
    };
    while let Some(chunk) = body_chunk(&mut response, digest).await? {
        *wire += chunk.len() as u64;
        out.write_all(&chunk)
            .map_err(Error::io("write staged blob", store.root().join("tmp")))?;
        reporter.report(Event::BlobProgress {
            digest,
            bytes: out.written(),
        });
        if out.written() > desc.size {
            return Err(Error::SizeMismatch {
                digest: digest.clone(),
                expected: desc.size,
                actual: out.written(),
            });
        }
    }
    if out.written() < desc.size {
        return Err(Error::Truncated {
            digest: digest.clone(),
            got: out.written(),
            expected: desc.size,
        });
    }
    Ok(())
}

/// Sends a GET of `/v2/<repository>/<kind>/<digest or tag>` that kiln makes itself; oci-client
/// still does the auth: it answers the registry's challenge and gives the token. A status
/// other than 2xx is an error of the registry's.
async fn send_get(
    endpoint: &Endpoint,
    r: &oci_client::Reference,
    kind: &str,
    headers: &[(reqwest::header::HeaderName, String)],
    what: &str,
) -> Result<reqwest::Response, Error> {
    let registry_err = |e| Error::registry(&endpoint.host, what.to_owned(), e);
    let url = format!(
        "{}/v2/{}/{kind}/{}",
        base_url(endpoint, r),
        r.repository(),
        r.digest().or(r.tag()).unwrap_or("latest")
    );
    let mut request = endpoint.web.get(&url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = authorized(endpoint, r, RegistryOperation::Pull, request, what).await?;
    let http_err = |source| Error::Http {
        host: endpoint.host.clone(),
        what: what.to_owned(),
        source,
    };
    let mut response = request.send().await.map_err(http_err)?;
    let status = response.status();
    if !status.is_success() {
        // What the registry says, within reason: an error body is not read whole.
        let mut body = Vec::new();
        while body.len() < 4096
            && let Ok(Some(chunk)) = response.chunk().await
        {
            body.extend_from_slice(&chunk);
        }
        return Err(registry_err(OciDistributionError::ServerError {
            code: status.as_u16(),
            url,
            message: String::from_utf8_lossy(&body).chars().take(500).collect(),
        }));
    }
    Ok(response)
}

/// `scheme://registry` of an endpoint, for the requests kiln makes itself.
pub(crate) fn base_url(endpoint: &Endpoint, r: &oci_client::Reference) -> String {
    format!(
        "{}://{}",
        if endpoint.http { "http" } else { "https" },
        r.resolve_registry()
    )
}

/// A request of kiln's own with the endpoint's credentials: oci-client answers the registry's
/// challenge and gives the token.
pub(crate) async fn authorized(
    endpoint: &Endpoint,
    r: &oci_client::Reference,
    operation: RegistryOperation,
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<reqwest::RequestBuilder, Error> {
    let push = matches!(operation, RegistryOperation::Push);
    let token = match endpoint.grants.fresh(r.repository(), push) {
        Some(token) => token,
        None => {
            let token = endpoint
                .client
                .auth(r, &endpoint.auth, operation)
                .await
                .map_err(|e| Error::registry(&endpoint.host, what.to_owned(), e))?;
            endpoint
                .grants
                .remember(r.repository(), push, token.clone());
            token
        }
    };
    Ok(match (token, &endpoint.auth) {
        (Some(token), _) => request.bearer_auth(token),
        (None, oci_client::secrets::RegistryAuth::Basic(user, password)) => {
            request.basic_auth(user, Some(password))
        }
        _ => request,
    })
}

/// GETs a blob from `offset` on (a ranged GET when it is not 0). Not oci-client's blob
/// stream: it hashes the bytes it hands over, and they are hashed where they are staged.
/// The answer to a ranged GET may be 206 (the rest) or 200 (the whole blob).
async fn get_blob(
    endpoint: &Endpoint,
    r: &oci_client::Reference,
    offset: u64,
    what: &str,
) -> Result<reqwest::Response, Error> {
    let range = (reqwest::header::RANGE, format!("bytes={offset}-"));
    let headers = if offset > 0 { &[range][..] } else { &[] };
    send_get(endpoint, r, "blobs", headers, what).await
}

/// The next piece of a blob's body; a broken transfer is [`Error::BlobStream`], which a
/// retry resumes.
async fn body_chunk(
    response: &mut reqwest::Response,
    digest: &Digest,
) -> Result<Option<bytes::Bytes>, Error> {
    response.chunk().await.map_err(|e| Error::BlobStream {
        digest: digest.clone(),
        source: std::io::Error::other(e),
    })
}

/// GETs a manifest with kiln's own request, so that its body is read up to
/// [`MAX_MANIFEST_SIZE`] and no further (oci-client reads a manifest whole, however big).
async fn get_capped_manifest(
    endpoint: &Endpoint,
    r: &oci_client::Reference,
    what: &str,
) -> Result<bytes::Bytes, Error> {
    let accept = [(reqwest::header::ACCEPT, ACCEPT.join(", "))];
    let mut response = send_get(endpoint, r, "manifests", &accept, what).await?;
    let http_err = |source| Error::Http {
        host: endpoint.host.clone(),
        what: what.to_owned(),
        source,
    };
    let too_large = |size: u64| -> Error {
        kiln_image::Error::TooLarge {
            what: format!("manifest {}", r.whole()),
            size,
            limit: MAX_MANIFEST_SIZE,
        }
        .into()
    };
    if let Some(length) = response.content_length()
        && length > MAX_MANIFEST_SIZE
    {
        return Err(too_large(length));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http_err)? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(too_large(body.len() as u64));
        }
    }
    Ok(body.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_told_apart() {
        let index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1,"platform":{"os":"linux","architecture":"s390x"}}]}"#;
        let Ok(Document::Index(index)) = parse_document("x", index) else {
            panic!("an index")
        };
        let want = crate::parse_platform("linux/amd64").unwrap();
        assert_eq!(select_platform(&index, &want).unwrap_err(), ["linux/s390x"]);
        assert!(matches!(
            parse_document(
                "x",
                br#"{"schemaVersion":2,"mediaType":"application/x-weird"}"#
            ),
            Err(Error::UnknownMediaType { .. })
        ));
        assert!(matches!(
            parse_document("x", br#"{"schemaVersion":1,"name":"x"}"#),
            Err(Error::UnknownMediaType { .. })
        ));
        assert!(matches!(
            parse_document("x", b"nope"),
            Err(Error::BadManifest { .. })
        ));
    }
}
