//! Image archives: `docker save` tarballs and OCI archives in, docker-archive, oci-archive and
//! OCI directories out, and rootfs tarballs imported as one-layer images.
//!
//! Loading streams every file of the archive straight into the store's blob area, checking
//! digests on the way; only small JSON documents are kept in memory. Names inside the archive
//! are never used as file-system paths, so a hostile archive cannot write outside the store.
//! The index is touched only once everything has been verified.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::path::Path;

use kiln_image::{
    Descriptor, Digest, HashingReader, Image, ImageConfig, Index, Manifest, REF_NAME_ANNOTATION,
    Reference, Store, media_type,
};
use serde::Deserialize;

use crate::Error;

/// JSON files up to this size are kept in memory while an archive streams by.
const MAX_JSON: u64 = 4 << 20;

/// What an archive held once it is in the store.
#[derive(Debug)]
pub struct Loaded {
    /// Each image with the names it was tagged with.
    pub images: Vec<(Image, Vec<String>)>,
}

/// A file of the archive, as seen while streaming.
enum Member {
    Json(Vec<u8>),
    Blob(Box<Descriptor>),
}

/// Reads a docker-archive or an OCI archive (plain or compressed) into the store and tags
/// what it names.
pub fn load(store: &Store, input: impl Read) -> Result<Loaded, Error> {
    let mut archive = tar::Archive::new(kiln_layer::decompress_auto(
        io::BufReader::with_capacity(1 << 20, input),
    )?);
    let mut members: HashMap<String, Member> = HashMap::new();
    for entry in archive.entries().map_err(Error::archive("read archive"))? {
        let mut entry = entry.map_err(Error::archive("read archive entry"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = normalize_member(&entry.path_bytes());
        let size = entry.size();
        let mut head = [0u8; 1];
        let peeked = entry
            .read(&mut head)
            .map_err(Error::archive("read archive entry"))?;
        let rest = io::Cursor::new(head[..peeked].to_vec()).chain(&mut entry);
        if size <= MAX_JSON && peeked == 1 && (head[0] == b'{' || head[0] == b'[') {
            let mut bytes = Vec::with_capacity(size as usize);
            let mut rest = rest;
            rest.read_to_end(&mut bytes)
                .map_err(Error::archive("read archive entry"))?;
            members.insert(name, Member::Json(bytes));
        } else {
            let mut writer = store.blob_writer()?;
            let mut rest = rest;
            io::copy(&mut rest, &mut writer).map_err(Error::archive("read archive entry"))?;
            let expected = blob_name_digest(&name);
            let (digest, size) = writer.commit(expected.as_ref())?;
            members.insert(
                name,
                Member::Blob(Box::new(Descriptor::new(
                    media_type::OCI_LAYER_TAR,
                    digest,
                    size,
                ))),
            );
        }
    }
    if members.contains_key("manifest.json") {
        load_docker(store, &mut members)
    } else if members.contains_key("index.json") {
        load_oci(store, &mut members)
    } else {
        Err(Error::BadArchive(
            "neither manifest.json (docker-archive) nor index.json (OCI archive) is in it".into(),
        ))
    }
}

fn normalize_member(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.trim_start_matches("./")
        .trim_start_matches('/')
        .to_owned()
}

/// `blobs/sha256/<hex>` names promise their digest; anything else promises nothing.
fn blob_name_digest(name: &str) -> Option<Digest> {
    name.strip_prefix("blobs/sha256/")
        .and_then(|hex| format!("sha256:{hex}").parse().ok())
}

/// Stores a member as a blob (JSON members are written now) and returns its descriptor.
fn member_blob(
    store: &Store,
    members: &HashMap<String, Member>,
    name: &str,
) -> Result<Descriptor, Error> {
    match members.get(name) {
        Some(Member::Blob(descriptor)) => Ok((**descriptor).clone()),
        Some(Member::Json(bytes)) => {
            let digest = store.write_blob(bytes)?;
            Ok(Descriptor::new(
                media_type::OCI_CONFIG,
                digest,
                bytes.len() as u64,
            ))
        }
        None => Err(Error::BadArchive(format!(
            "it names {name:?}, which it does not contain"
        ))),
    }
}

fn member_json<T: serde::de::DeserializeOwned>(
    members: &HashMap<String, Member>,
    name: &str,
) -> Result<T, Error> {
    match members.get(name) {
        Some(Member::Json(bytes)) => serde_json::from_slice(bytes)
            .map_err(|e| Error::BadArchive(format!("{name} is not valid: {e}"))),
        Some(Member::Blob(_)) => Err(Error::BadArchive(format!("{name} is not a JSON document"))),
        None => Err(Error::BadArchive(format!(
            "it names {name:?}, which it does not contain"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn load_docker(store: &Store, members: &mut HashMap<String, Member>) -> Result<Loaded, Error> {
    let entries: Vec<DockerManifestEntry> = member_json(members, "manifest.json")?;
    let mut images = Vec::new();
    for entry in entries {
        let config_name = normalize_member(entry.config.as_bytes());
        let config: ImageConfig = member_json(members, &config_name)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(Error::BadArchive(format!(
                "{config_name} lists {} layers but manifest.json lists {}",
                config.rootfs.diff_ids.len(),
                entry.layers.len()
            )));
        }
        let config_desc = member_blob(store, members, &config_name)?;
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let blob = member_blob(store, members, &normalize_member(path.as_bytes()))?;
            layers.push(verify_layer(store, blob, diff_id)?);
        }
        let image = store.put_manifest(config_desc, config, layers)?;
        let names = entry.repo_tags.unwrap_or_default();
        for name in &names {
            store.tag(name, &image.descriptor)?;
        }
        images.push((image, names));
    }
    Ok(Loaded { images })
}

/// Checks that a layer blob unpacks to the diff id the config promises, and gives it the
/// media type its compression calls for.
fn verify_layer(
    store: &Store,
    mut blob: Descriptor,
    diff_id: &Digest,
) -> Result<Descriptor, Error> {
    let file = store.open_blob(&blob.digest)?;
    let mut sniff = io::BufReader::new(file);
    let head = io::BufRead::fill_buf(&mut sniff).map_err(Error::archive("read layer"))?;
    let compression = kiln_layer::detect_compression(head);
    blob.media_type = match compression {
        kiln_layer::Compression::None => media_type::OCI_LAYER_TAR,
        kiln_layer::Compression::Gzip => media_type::OCI_LAYER_GZIP,
        kiln_layer::Compression::Zstd => media_type::OCI_LAYER_ZSTD,
    }
    .to_owned();
    let actual = if compression == kiln_layer::Compression::None {
        blob.digest.clone()
    } else {
        let mut reader = HashingReader::new(kiln_layer::decompress_auto(sniff)?);
        io::copy(&mut reader, &mut io::sink()).map_err(Error::archive("decompress layer"))?;
        reader.finish().0
    };
    if &actual != diff_id {
        return Err(Error::BadArchive(format!(
            "layer {} unpacks to {actual}, but the config says {diff_id}",
            blob.digest
        )));
    }
    Ok(blob)
}

fn load_oci(store: &Store, members: &mut HashMap<String, Member>) -> Result<Loaded, Error> {
    let index: Index = member_json(members, "index.json")?;
    let mut images = Vec::new();
    for descriptor in index.manifests {
        let manifest_desc = resolve_platform_manifest(store, members, &descriptor)?;
        let manifest: Manifest = oci_member_json(store, members, &manifest_desc.digest)?;
        let config: ImageConfig = oci_member_json(store, members, &manifest.config.digest)?;
        for layer in &manifest.layers {
            member_blob(
                store,
                members,
                &format!("blobs/sha256/{}", layer.digest.hex()),
            )?;
        }
        let image = store.image(&manifest_desc)?;
        debug_assert_eq!(image.config.rootfs, config.rootfs);
        let mut names = Vec::new();
        let name = descriptor
            .annotation("io.containerd.image.name")
            .or(descriptor.annotation(REF_NAME_ANNOTATION));
        if let Some(name) = name.filter(|n| n.parse::<Reference>().is_ok()) {
            store.tag(name, &manifest_desc)?;
            names.push(name.to_owned());
        }
        images.push((image, names));
    }
    Ok(Loaded { images })
}

/// Stores an OCI blob that may have been kept in memory, checking its digest, and parses it.
fn oci_member_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    members: &HashMap<String, Member>,
    digest: &Digest,
) -> Result<T, Error> {
    let name = format!("blobs/sha256/{}", digest.hex());
    if let Some(Member::Json(bytes)) = members.get(&name) {
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(kiln_image::Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            }
            .into());
        }
    }
    member_blob(store, members, &name)?;
    member_json(members, &name).or_else(|_| {
        let bytes = store.read_blob(digest)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadArchive(format!("{name} is not valid: {e}")))
    })
}

/// An index entry may be a nested index (multi-platform): pick the host's platform.
fn resolve_platform_manifest(
    store: &Store,
    members: &HashMap<String, Member>,
    descriptor: &Descriptor,
) -> Result<Descriptor, Error> {
    if descriptor.media_type != media_type::OCI_INDEX
        && descriptor.media_type != media_type::DOCKER_LIST
    {
        member_blob(
            store,
            members,
            &format!("blobs/sha256/{}", descriptor.digest.hex()),
        )?;
        return Ok(descriptor.clone());
    }
    let nested: Index = oci_member_json(store, members, &descriptor.digest)?;
    let host = kiln_image::host_architecture();
    let chosen = nested
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.architecture == host && p.os == "linux")
        })
        .ok_or_else(|| Error::BadArchive(format!("its index has no manifest for linux/{host}")))?;
    resolve_platform_manifest(store, members, chosen)
}

/// Output formats of `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker save` layout, which `docker load` reads.
    Docker,
    /// An OCI image layout in a tar.
    OciArchive,
}

/// Writes images as one archive to `out`.
pub fn save(
    store: &Store,
    images: &[(Image, Vec<String>)],
    format: SaveFormat,
    out: impl Write,
) -> Result<(), Error> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    match format {
        SaveFormat::Docker => save_docker(store, images, &mut tar)?,
        SaveFormat::OciArchive => {
            let mut written = std::collections::BTreeSet::new();
            let index = oci_index(images);
            for (image, _) in images {
                for blob in image_blobs(image) {
                    if written.insert(blob.digest.clone()) {
                        append_blob(
                            store,
                            &mut tar,
                            &format!("blobs/sha256/{}", blob.digest.hex()),
                            &blob.digest,
                        )?;
                    }
                }
            }
            append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            append_bytes(&mut tar, "index.json", &index.to_bytes())?;
        }
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(Error::archive("write archive"))?;
    Ok(())
}

/// Writes images as an OCI layout directory (`--format oci-dir`).
pub fn save_oci_dir(
    store: &Store,
    images: &[(Image, Vec<String>)],
    dir: &Path,
) -> Result<(), Error> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(Error::io("create directory", &blobs))?;
    for (image, _) in images {
        for blob in image_blobs(image) {
            let target = blobs.join(blob.digest.hex());
            if !target.exists() {
                let source = store.blob_path(&blob.digest);
                // A hard link costs nothing when the output is on the store's file system.
                if std::fs::hard_link(&source, &target).is_err() {
                    std::fs::copy(&source, &target).map_err(Error::io("copy blob to", &target))?;
                }
            }
        }
    }
    let tmp = tempfile::tempdir_in(dir).map_err(Error::io("create temp dir in", dir))?;
    kiln_image::write_atomic(
        tmp.path(),
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    kiln_image::write_atomic(
        tmp.path(),
        &dir.join("index.json"),
        &oci_index(images).to_bytes(),
    )?;
    Ok(())
}

fn oci_index(images: &[(Image, Vec<String>)]) -> Index {
    let mut index = Index::default();
    for (image, names) in images {
        let mut entry = Descriptor::new(
            &image.descriptor.media_type,
            image.descriptor.digest.clone(),
            image.descriptor.size,
        );
        let names: Vec<Option<&String>> = if names.is_empty() {
            vec![None]
        } else {
            names.iter().map(Some).collect()
        };
        for name in names {
            let mut annotations = BTreeMap::new();
            if let Some(name) = name {
                annotations.insert(REF_NAME_ANNOTATION.to_owned(), name.clone());
                if let Ok(reference) = name.parse::<Reference>() {
                    annotations.insert(
                        "io.containerd.image.name".to_owned(),
                        format!(
                            "{}:{}",
                            reference.repository(),
                            reference.tag_or_latest().unwrap_or("latest")
                        ),
                    );
                }
            }
            entry.annotations = (!annotations.is_empty()).then_some(annotations);
            index.manifests.push(entry.clone());
        }
    }
    index
}

fn image_blobs(image: &Image) -> Vec<Descriptor> {
    let mut blobs = vec![image.descriptor.clone(), image.manifest.config.clone()];
    blobs.extend(image.manifest.layers.iter().cloned());
    blobs
}

fn save_docker<W: Write>(
    store: &Store,
    images: &[(Image, Vec<String>)],
    tar: &mut tar::Builder<W>,
) -> Result<(), Error> {
    let mut entries = Vec::new();
    let mut written = std::collections::BTreeSet::new();
    for (image, names) in images {
        let config_name = format!("{}.json", image.id().hex());
        if written.insert(config_name.clone()) {
            append_blob(store, tar, &config_name, image.id())?;
        }
        let mut layer_names = Vec::new();
        for layer in &image.manifest.layers {
            let name = format!("{}/layer.tar", layer.digest.hex());
            if written.insert(name.clone()) {
                append_blob(store, tar, &name, &layer.digest)?;
            }
            layer_names.push(name);
        }
        let tags: Vec<String> = names
            .iter()
            .filter_map(|n| n.parse::<Reference>().ok())
            .map(|r| r.store_name())
            .collect();
        entries.push(
            serde_json::json!({ "Config": config_name, "RepoTags": tags, "Layers": layer_names }),
        );
    }
    let manifest = serde_json::to_vec(&entries).unwrap_or_default();
    append_bytes(tar, "manifest.json", &manifest)
}

fn append_blob<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    name: &str,
    digest: &Digest,
) -> Result<(), Error> {
    let file = store.open_blob(digest)?;
    let size = file
        .metadata()
        .map_err(Error::io("stat blob", store.blob_path(digest)))?
        .len();
    let mut header = file_header(size);
    tar.append_data(
        &mut header,
        name,
        io::BufReader::with_capacity(1 << 20, file),
    )
    .map_err(Error::archive("write archive"))
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> Result<(), Error> {
    let mut header = file_header(bytes.len() as u64);
    tar.append_data(&mut header, name, bytes)
        .map_err(Error::archive("write archive"))
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// Streams a rootfs tarball (plain or compressed) into the store as one uncompressed layer,
/// checking on the way that it is a readable tar. Returns the layer descriptor; its digest is
/// its diff id.
pub fn import_layer(store: &Store, input: impl Read) -> Result<Descriptor, Error> {
    let plain = kiln_layer::decompress_auto(io::BufReader::with_capacity(1 << 20, input))?;
    let mut writer = store.blob_writer()?;
    {
        let tee = TeeReader {
            inner: plain,
            copy: &mut writer,
        };
        let mut archive = tar::Archive::new(tee);
        let mut entries = 0usize;
        for entry in archive.entries().map_err(Error::archive("read tarball"))? {
            let mut entry = entry.map_err(Error::archive("read tarball entry"))?;
            io::copy(&mut entry, &mut io::sink()).map_err(Error::archive("read tarball entry"))?;
            entries += 1;
        }
        if entries == 0 {
            return Err(Error::BadArchive("the tarball holds no entries".into()));
        }
        // The tar reader stops at the end-of-archive marker; keep the padding after it too so
        // that the layer is the tarball byte for byte.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(Error::archive("read tarball"))?;
    }
    let (digest, size) = writer.commit(None)?;
    Ok(Descriptor::new(media_type::OCI_LAYER_TAR, digest, size))
}

struct TeeReader<'a, R> {
    inner: R,
    copy: &'a mut kiln_image::BlobWriter,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The images with their layers compressed as asked, for `save --compress`: each compressed
/// layer is made once and kept (see `kiln_layer::compressed_in_store`), and a manifest over
/// them is stored beside the original. Layers that are already compressed stay as they are.
pub fn compress_for_export(
    store: &Store,
    images: Vec<(Image, Vec<String>)>,
    compression: kiln_layer::Compression,
) -> Result<Vec<(Image, Vec<String>)>, Error> {
    if compression == kiln_layer::Compression::None {
        return Ok(images);
    }
    let mut out = Vec::with_capacity(images.len());
    for (image, names) in images {
        let mut layers = Vec::with_capacity(image.manifest.layers.len());
        for layer in &image.manifest.layers {
            layers.push(kiln_layer::compressed_in_store(store, layer, compression, None)?.0);
        }
        let compressed =
            store.put_manifest(image.manifest.config.clone(), image.config.clone(), layers)?;
        out.push((compressed, names));
    }
    Ok(out)
}
