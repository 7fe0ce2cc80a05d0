//! Push: layers gzipped once (and remembered), blobs the registry has skipped (HEAD), blobs
//! mounted from a sibling repository when kiln knows one, the rest streamed up; the manifest
//! goes last.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _};
use kiln_image::attestation::Attestation;
use kiln_image::{
    Descriptor, Digest, Image, Index, Manifest, Platform, Reference, Store, Verifier, media_type,
};
use oci_client::errors::OciDistributionError;
use tokio::io::AsyncReadExt as _;

use crate::client::{ATTEMPTS, Endpoint, retry};
use crate::{BlobAction, Error, Event, Registry, Reporter};

/// The gzip level of layers compressed for a push, unless `[push] gzip_level` says otherwise.
///
/// A push waits on its compressor, so the default favours speed, as go-containerregistry
/// (crane, ko) does with `gzip.BestSpeed`. On the seed image (705 MB of layers, 2 cores) level
/// 1 pushes in 2.7 s and 333 MB, level 2 in 3.8 s and 278 MB, and skopeo takes 4.6 s for
/// 267 MB (bench/push-pull.sh). Level 6 is docker's choice for the smallest blobs.
pub(crate) const GZIP_LEVEL: u32 = 1;

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest digest in the registry.
    pub digest: Digest,
    /// The manifest's size in bytes (an OCI manifest's, or an OCI index's for `push_index`).
    pub size: u64,
    /// Layer and config bytes uploaded (0 when the registry had everything).
    pub uploaded: u64,
    /// Layers gzipped for this push (0 when earlier pushes had done it).
    pub compressed: usize,
    /// Each blob and what happened to it, config first.
    pub blobs: Vec<(Digest, BlobAction)>,
}

fn sources_path(store: &Store, digest: &Digest) -> PathBuf {
    store.root().join("registry/sources").join(digest.hex())
}

/// Remembers that `host/path` has these blobs (a later push to `host` may mount them).
/// Best effort: a failure only costs a later mount.
pub(crate) fn record_sources(store: &Store, host: &str, path: &str, blobs: &[Descriptor]) {
    let line = format!("{host} {path}");
    for blob in blobs {
        let file = sources_path(store, &blob.digest);
        let old = std::fs::read_to_string(&file).unwrap_or_default();
        if old.lines().any(|l| l == line) {
            continue;
        }
        if let Some(dir) = file.parent() {
            let _ = kiln_image::create_private_dir(dir);
        }
        let text = format!("{old}{line}\n");
        let _ = kiln_image::write_atomic(&store.root().join("tmp"), &file, text.as_bytes());
    }
}

/// A repository of `host` other than `path` that has the blob, as far as kiln knows.
fn mount_source(store: &Store, digest: &Digest, host: &str, path: &str) -> Option<String> {
    let text = std::fs::read_to_string(sources_path(store, digest)).ok()?;
    text.lines().rev().find_map(|l| {
        let (h, p) = l.split_once(' ')?;
        (h == host && p != path).then(|| p.to_owned())
    })
}

/// What to push for a layer.
enum LayerBlob {
    /// A blob the store has in a form a registry takes (compressed, or known compressed).
    Ready(Descriptor),
    /// An uncompressed layer with no gzip copy yet.
    Compress(Descriptor),
}

/// The blob to push for a layer: itself when compressed, its remembered gzip copy, or a
/// note that it must be compressed.
fn layer_blob(store: &Store, layer: &Descriptor) -> LayerBlob {
    let plain = matches!(
        layer.media_type.as_str(),
        media_type::OCI_LAYER_TAR | media_type::DOCKER_LAYER_TAR
    );
    if !plain {
        let mut d = layer.clone();
        if d.media_type == media_type::DOCKER_LAYER_GZIP {
            d.media_type = media_type::OCI_LAYER_GZIP.to_owned();
        }
        return LayerBlob::Ready(d);
    }
    match kiln_layer::known_compressed(store, layer, kiln_layer::Compression::Gzip) {
        Some(gzip) => LayerBlob::Ready(gzip),
        None => LayerBlob::Compress(layer.clone()),
    }
}

/// Gzips a layer into the store, remembering diff id → gzip blob. Blocking: runs on a
/// blocking thread.
#[cfg(test)]
fn compress_layer(store: &Store, layer: &Descriptor, level: u32) -> Result<Descriptor, Error> {
    Ok(
        kiln_layer::compressed_in_store(store, layer, kiln_layer::Compression::Gzip, Some(level))?
            .0,
    )
}

/// Where a response sends the upload next (its `Location`, relative to `from`).
fn next_location(
    from: &reqwest::Url,
    response: &reqwest::Response,
) -> Result<reqwest::Url, String> {
    if !response.status().is_success() {
        return Err(format!("{} answered {}", from, response.status()));
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("{from} answered without a Location"))?;
    from.join(location)
        .map_err(|e| format!("Location {location}: {e}"))
}

/// Starts an upload and sends `body` into it as one PATCH, as its bytes come; returns where
/// the closing PUT goes.
async fn stream_upload(
    endpoint: &Endpoint,
    path: &str,
    body: reqwest::Body,
) -> Result<reqwest::Url, String> {
    let r = endpoint.reference(path, None, None);
    let what = "upload a blob as it is compressed";
    let start = format!(
        "{}/v2/{}/blobs/uploads/",
        crate::pull::base_url(endpoint, &r),
        r.repository()
    );
    let start = reqwest::Url::parse(&start).map_err(|e| format!("{start}: {e}"))?;
    let post = endpoint
        .web
        .post(start.clone())
        .header(reqwest::header::CONTENT_LENGTH, 0);
    let response = send_for_push(endpoint, &r, post, what).await?;
    let location = next_location(&start, &response)?;
    let patch = endpoint
        .web
        .patch(location.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body);
    let response = send_for_push(endpoint, &r, patch, what).await?;
    next_location(&location, &response)
}

/// Sends a request of an upload to `r`'s repository, with the push scope's credentials.
async fn send_for_push(
    endpoint: &Endpoint,
    r: &oci_client::Reference,
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<reqwest::Response, String> {
    let push = oci_client::RegistryOperation::Push;
    crate::pull::authorized(endpoint, r, push, request, what)
        .await
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| e.to_string())
}

/// Closes a streamed upload as the blob `digest`; the registry checks the bytes against it.
async fn finish_upload(
    endpoint: &Endpoint,
    path: &str,
    mut location: reqwest::Url,
    digest: &Digest,
) -> Result<(), String> {
    let r = endpoint.reference(path, None, None);
    location
        .query_pairs_mut()
        .append_pair("digest", digest.as_str());
    let put = endpoint
        .web
        .put(location.clone())
        .header(reqwest::header::CONTENT_LENGTH, 0);
    let response = send_for_push(endpoint, &r, put, "finish an upload").await?;
    next_location(&location, &response).map(|_| ())
}

/// Compresses a layer (on every core) into the store while its bytes stream up in one upload,
/// which the registry checks against the blob's digest once it is known. Overlapping the two
/// takes the upload's time off a push that compresses (1.35 s to 1.0 s on the Debian base,
/// level 1, 2 cores). When that path fails, or the copy had to be made again, the blob in the
/// store is pushed like any other: HEAD, mount, or one upload.
async fn compress_and_push(
    level: u32,
    store: &Store,
    endpoint: &Endpoint,
    path: &str,
    layer: &Descriptor,
    reporter: &dyn Reporter,
) -> Result<(Descriptor, BlobAction, u64), Error> {
    let (pieces, mut received) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let compressing = {
        let store = store.clone();
        let layer = layer.clone();
        tokio::task::spawn_blocking(move || {
            let mut send = |piece: &[u8]| {
                // An upload that stopped takes nothing more; the blob is pushed afterwards.
                let _ = pieces.blocking_send(bytes::Bytes::copy_from_slice(piece));
            };
            kiln_layer::compressed_in_store_teed(
                &store,
                &layer,
                kiln_layer::Compression::Gzip,
                Some(level),
                Some(&mut send),
            )
        })
    };
    let body = reqwest::Body::wrap_stream(futures_util::stream::poll_fn(move |cx| {
        received
            .poll_recv(cx)
            .map(|piece| piece.map(Ok::<_, std::io::Error>))
    }));
    let (compressed, uploaded) = tokio::join!(compressing, stream_upload(endpoint, path, body));
    let (desc, _, streamed) =
        compressed.map_err(|e| Error::Config(format!("the compression task failed: {e}")))??;
    reporter.report(Event::Compressed {
        diff_id: &layer.digest,
        digest: &desc.digest,
        size: desc.size,
    });
    let finished = match uploaded {
        Ok(location) if streamed => finish_upload(endpoint, path, location, &desc.digest).await,
        Ok(_) => Err("the copy was made again".to_owned()),
        Err(e) => Err(e),
    };
    match finished {
        Ok(()) => {
            reporter.report(Event::BlobStart {
                digest: &desc.digest,
                size: desc.size,
            });
            reporter.report(Event::BlobDone {
                digest: &desc.digest,
                bytes: desc.size,
                action: BlobAction::Uploaded,
            });
            Ok((desc.clone(), BlobAction::Uploaded, desc.size))
        }
        Err(why) => {
            tracing::debug!(
                "streamed upload of {} not used ({why}); pushing it",
                desc.digest
            );
            let (_, action, bytes) = push_blob(store, endpoint, path, &desc, reporter).await?;
            Ok((desc, action, bytes))
        }
    }
}

impl Registry {
    /// Pushes an image of the store to `target`.
    pub fn push(
        &self,
        store: &Store,
        image: &Image,
        target: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<Pushed, Error> {
        self.block_on(async {
            let endpoint = self.endpoint(&target.domain, false, false).await?;
            self.push_manifest_of(store, &endpoint, image, target, reporter)
                .await
        })
    }

    /// Pushes a multi-platform image: each platform's image under its digest, then the index
    /// over them under `target`'s tag.
    pub fn push_index(
        &self,
        store: &Store,
        images: &[(Platform, Image)],
        target: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<Pushed, Error> {
        self.push_attested_index(store, images, &[], &BTreeMap::new(), target, reporter)
    }

    /// [`Registry::push_index`] with the index's attestation manifests, after the images as
    /// BuildKit orders them, and the index's annotations. An image whose manifest changes on
    /// the way (its layers gzipped here) gets its attestation rebound to the manifest the
    /// registry holds; an image's entry keeps the annotations its descriptor carries.
    pub fn push_attested_index(
        &self,
        store: &Store,
        images: &[(Platform, Image)],
        attestations: &[Attestation],
        annotations: &BTreeMap<String, String>,
        target: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<Pushed, Error> {
        self.block_on(async {
            let endpoint = self.endpoint(&target.domain, false, false).await?;
            let mut index = Index {
                annotations: (!annotations.is_empty()).then(|| annotations.clone()),
                ..Index::default()
            };
            // Each image's manifest digest in the store and its index entry as pushed.
            let mut pushed_as: Vec<(Digest, Descriptor)> = Vec::new();
            let mut total = Pushed {
                digest: Digest::of(b""),
                size: 0,
                uploaded: 0,
                compressed: 0,
                blobs: Vec::new(),
            };
            for (platform, image) in images {
                let by_digest = Reference {
                    tag: None,
                    digest: None,
                    ..target.clone()
                };
                let pushed = self
                    .push_manifest_of(store, &endpoint, image, &by_digest, reporter)
                    .await?;
                let mut entry =
                    Descriptor::new(media_type::OCI_MANIFEST, pushed.digest, pushed.size);
                entry.platform = Some(platform.clone());
                entry.annotations = image.descriptor.annotations.clone();
                pushed_as.push((image.descriptor.digest.clone(), entry.clone()));
                index.manifests.push(entry);
                total.uploaded += pushed.uploaded;
                total.compressed += pushed.compressed;
                total.blobs.extend(pushed.blobs);
            }
            for attestation in attestations {
                let Some((old, new)) = pushed_as
                    .iter()
                    .find(|(old, _)| attestation.subject() == Some(old.as_str()))
                else {
                    // About no image of this push: BuildKit would not have it in the index.
                    continue;
                };
                let mut subject = new.clone();
                subject.platform = None;
                subject.annotations = None;
                let attestation = if old == &new.digest {
                    attestation.clone()
                } else {
                    let (store, attestation, old, subject) = (
                        store.clone(),
                        attestation.clone(),
                        old.clone(),
                        subject.clone(),
                    );
                    tokio::task::spawn_blocking(move || {
                        store.rebind_attestation(&attestation, &old, &subject)
                    })
                    .await
                    .map_err(|e| Error::Config(format!("the attestation task failed: {e}")))??
                };
                let mut blobs = vec![attestation.manifest.config.clone()];
                blobs.extend(attestation.manifest.layers.iter().cloned());
                let pushed_blobs = self
                    .push_blobs(store, &endpoint, &target.path, &blobs, reporter)
                    .await?;
                let by_digest = Reference {
                    tag: None,
                    digest: Some(attestation.entry.digest.clone()),
                    ..target.clone()
                };
                self.put_manifest(
                    &endpoint,
                    &by_digest,
                    attestation.manifest.to_bytes(),
                    media_type::OCI_MANIFEST,
                    reporter,
                )
                .await?;
                total.uploaded += pushed_blobs.iter().map(|(_, _, n)| n).sum::<u64>();
                total
                    .blobs
                    .extend(pushed_blobs.into_iter().map(|(d, a, _)| (d, a)));
                index.manifests.push(attestation.entry.clone());
            }
            let bytes = index.to_bytes();
            total.size = bytes.len() as u64;
            total.digest = self
                .put_manifest(&endpoint, target, bytes, media_type::OCI_INDEX, reporter)
                .await?;
            Ok(total)
        })
    }

    /// Pushes an image's blobs, then its manifest under `target`'s tag, or under its own
    /// digest when `target` has neither tag nor digest.
    async fn push_manifest_of(
        &self,
        store: &Store,
        endpoint: &Arc<Endpoint>,
        image: &Image,
        target: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<Pushed, Error> {
        let config = Descriptor::new(
            media_type::OCI_CONFIG,
            image.manifest.config.digest.clone(),
            image.manifest.config.size,
        );
        let config_pushed = push_blob(store, endpoint, &target.path, &config, reporter);
        // Layers move concurrently; one that needs gzip is compressed first.
        let layers_pushed = futures_util::stream::iter(&image.manifest.layers)
            .map(|layer| async move {
                match layer_blob(store, layer) {
                    LayerBlob::Ready(desc) => {
                        let (_, action, bytes) =
                            push_blob(store, endpoint, &target.path, &desc, reporter).await?;
                        Ok::<_, Error>((desc, action, bytes, false))
                    }
                    LayerBlob::Compress(plain) => {
                        let (desc, action, bytes) = compress_and_push(
                            self.config.push.gzip_level.unwrap_or(GZIP_LEVEL),
                            store,
                            endpoint,
                            &target.path,
                            &plain,
                            reporter,
                        )
                        .await?;
                        Ok((desc, action, bytes, true))
                    }
                }
            })
            .buffered(self.concurrency)
            .try_collect::<Vec<(Descriptor, BlobAction, u64, bool)>>();
        // The config goes up beside the layers: a future left until they finish would only
        // start then.
        let ((_, config_action, config_bytes), layers) =
            futures_util::future::try_join(config_pushed, layers_pushed).await?;
        let mut blobs = vec![config.clone()];
        blobs.extend(layers.iter().map(|(d, ..)| d.clone()));
        let mut manifest = Manifest::oci(config.clone(), blobs[1..].to_vec());
        manifest.annotations = image.manifest.annotations.clone();
        let bytes = manifest.to_bytes();
        let size = bytes.len() as u64;
        let put_as = if target.tag.is_none() && target.digest.is_none() {
            Reference {
                digest: Some(Digest::of(&bytes)),
                ..target.clone()
            }
        } else {
            target.clone()
        };
        let digest = self
            .put_manifest(endpoint, &put_as, bytes, media_type::OCI_MANIFEST, reporter)
            .await?;
        record_sources(store, &endpoint.host, &target.path, &blobs);
        let mut actions = vec![(config.digest.clone(), config_action)];
        actions.extend(layers.iter().map(|(d, a, ..)| (d.digest.clone(), *a)));
        Ok(Pushed {
            digest,
            size,
            uploaded: config_bytes + layers.iter().map(|(_, _, n, _)| n).sum::<u64>(),
            compressed: layers.iter().filter(|l| l.3).count(),
            blobs: actions,
        })
    }

    /// Pushes blobs of the store concurrently; returns `(digest, action, bytes uploaded)` in
    /// the order given.
    pub(crate) async fn push_blobs(
        &self,
        store: &Store,
        endpoint: &Arc<Endpoint>,
        path: &str,
        blobs: &[Descriptor],
        reporter: &dyn Reporter,
    ) -> Result<Vec<(Digest, BlobAction, u64)>, Error> {
        futures_util::stream::iter(blobs)
            .map(|d| push_blob(store, endpoint, path, d, reporter))
            .buffered(self.concurrency)
            .try_collect()
            .await
    }

    /// PUTs a manifest (or index) under the target's tag, or its digest.
    pub(crate) async fn put_manifest(
        &self,
        endpoint: &Endpoint,
        target: &Reference,
        bytes: Vec<u8>,
        content_type: &str,
        reporter: &dyn Reporter,
    ) -> Result<Digest, Error> {
        let digest = Digest::of(&bytes);
        let r = endpoint.reference(
            &target.path,
            target.tag.as_deref().or(if target.digest.is_some() {
                None
            } else {
                Some("latest")
            }),
            if target.tag.is_some() {
                None
            } else {
                target.digest.as_ref().map(Digest::as_str)
            },
        );
        endpoint.authorize(&r).await;
        let what = format!("PUT manifest {target}");
        let header = content_type
            .parse::<reqwest::header::HeaderValue>()
            .map_err(|e| Error::Config(format!("content type {content_type:?}: {e}")))?;
        let bytes = bytes::Bytes::from(bytes);
        retry(&what, reporter, ATTEMPTS, |_| async {
            endpoint
                .client
                .push_manifest_raw(&r, bytes.clone(), header.clone())
                .await
                .map_err(|e| Error::registry(&endpoint.host, what.clone(), e))
        })
        .await?;
        Ok(digest)
    }
}

/// HEAD, else mount, else upload one blob.
async fn push_blob(
    store: &Store,
    endpoint: &Endpoint,
    path: &str,
    desc: &Descriptor,
    reporter: &dyn Reporter,
) -> Result<(Digest, BlobAction, u64), Error> {
    let digest = &desc.digest;
    let r = endpoint.reference(path, None, Some(digest.as_str()));
    endpoint.authorize(&r).await;
    let head = format!("HEAD blob {}", digest.short());
    let exists = retry(&head, reporter, ATTEMPTS, |_| async {
        endpoint
            .client
            .blob_exists(&r, digest.as_str())
            .await
            .map_err(|e| Error::registry(&endpoint.host, head.clone(), e))
    })
    .await?;
    if exists {
        reporter.report(Event::BlobDone {
            digest,
            bytes: 0,
            action: BlobAction::Exists,
        });
        return Ok((digest.clone(), BlobAction::Exists, 0));
    }
    if let Some(from) = mount_source(store, digest, &endpoint.host, path) {
        let source = endpoint.reference(&from, Some("latest"), None);
        if endpoint
            .client
            .mount_blob(&r, &source, digest.as_str())
            .await
            .is_ok()
        {
            reporter.report(Event::BlobDone {
                digest,
                bytes: 0,
                action: BlobAction::Mounted,
            });
            return Ok((digest.clone(), BlobAction::Mounted, 0));
        }
        tracing::debug!("mount of {digest} from {from} refused; uploading");
    }
    reporter.report(Event::BlobStart {
        digest,
        size: desc.size,
    });
    let file = store.blob_path(digest);
    let what = format!("upload blob {}", digest.short());
    retry(&what, reporter, ATTEMPTS, |_| async {
        let f = tokio::fs::File::open(&file)
            .await
            .map_err(Error::io("open blob", &file))?;
        // The body stream must be 'static: it counts what it sends into a channel that this
        // task drains into progress events while the request runs. It checks the blob as it
        // reads: a corrupt blob's last chunk is never sent, and the error kept here is the
        // one reported, rather than the aborted request's.
        let (sent, mut progress) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let corrupt = Arc::new(std::sync::Mutex::new(None::<kiln_image::Error>));
        let verifier = Verifier::new(digest.clone(), Some(desc.size));
        let state = (f, sent, verifier, corrupt.clone());
        let stream = futures_util::stream::try_unfold(
            state,
            |(mut f, sent, mut verifier, corrupt)| async move {
                let mut buf = vec![0u8; 1 << 20];
                let n = f
                    .read(&mut buf)
                    .await
                    .map_err(OciDistributionError::IoError)?;
                let checked = if n == 0 {
                    verifier.finish()
                } else {
                    verifier.update(&buf[..n])
                };
                if let Err(error) = checked {
                    let message = error.to_string();
                    if let Ok(mut slot) = corrupt.lock() {
                        *slot = Some(error);
                    }
                    return Err(OciDistributionError::IoError(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        message,
                    )));
                }
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                let _ = sent.send(n as u64);
                Ok(Some((
                    bytes::Bytes::from(buf),
                    (f, sent, verifier, corrupt),
                )))
            },
        );
        let upload = endpoint
            .client
            .push_blob_stream(&r, stream, digest.as_str(), Some(desc.size));
        let report = async {
            let mut total = 0;
            while let Some(n) = progress.recv().await {
                total += n;
                reporter.report(Event::BlobProgress {
                    digest,
                    bytes: total,
                });
            }
        };
        let (result, ()) = tokio::join!(upload, report);
        if let Some(error) = corrupt.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(Error::Store(error));
        }
        result.map_err(|e| Error::registry(&endpoint.host, what.clone(), e))
    })
    .await?;
    reporter.report(Event::BlobDone {
        digest,
        bytes: desc.size,
        action: BlobAction::Uploaded,
    });
    Ok((digest.clone(), BlobAction::Uploaded, desc.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_gzipped_once_and_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let data = vec![b'k'; 100_000];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "file", &data[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let digest = store.write_blob(&bytes).unwrap();
        let layer = Descriptor::new(media_type::OCI_LAYER_TAR, digest, bytes.len() as u64);
        assert!(matches!(layer_blob(&store, &layer), LayerBlob::Compress(_)));
        let gz = compress_layer(&store, &layer, GZIP_LEVEL).unwrap();
        assert_eq!(gz.media_type, media_type::OCI_LAYER_GZIP);
        assert!(gz.size < 2_000, "compressed: {}", gz.size);
        match layer_blob(&store, &layer) {
            LayerBlob::Ready(d) => assert_eq!(d, gz),
            LayerBlob::Compress(_) => panic!("compressed twice"),
        }
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(store.open_blob(&gz.digest).unwrap()),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, bytes);
    }

    #[test]
    fn mount_sources_are_per_host_and_not_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = Descriptor::new(media_type::OCI_LAYER_GZIP, Digest::of(b"x"), 1);
        record_sources(&store, "r:5000", "a/base", std::slice::from_ref(&blob));
        record_sources(&store, "r:5000", "a/base", std::slice::from_ref(&blob));
        assert_eq!(
            mount_source(&store, &blob.digest, "r:5000", "b/app").as_deref(),
            Some("a/base")
        );
        assert_eq!(mount_source(&store, &blob.digest, "r:5000", "a/base"), None);
        assert_eq!(
            mount_source(&store, &blob.digest, "other:5000", "b/app"),
            None
        );
    }
}
