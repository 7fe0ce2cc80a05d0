//! Image archives: `docker save` tarballs and OCI archives in, docker-archive, oci-archive and
//! OCI directories out, and rootfs tarballs imported as one-layer images.
//!
//! Loading streams every file of the archive into staging, hashing it and, for what may be a
//! layer, computing its diff id on the way; nothing is kept in memory but the JSON documents
//! being read, which are capped. Only when every blob matches its descriptor (digest and
//! size) and every layer its config's diff id do the blobs enter the store and the names the
//! index: a refused archive leaves the store as it was. Names inside the archive are never
//! used as file-system paths, so a hostile archive cannot write outside the store.
//!
//! Saving streams blobs out checked against their digests: a corrupt blob fails the save,
//! naming it, before its last bytes are written.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::path::Path;

use kiln_image::archive::{
    self, ArchiveImage, ArchiveMembers, DockerManifestEntry, PlatformChoice, blob_member,
    member_name,
};
use kiln_image::{
    Descriptor, Digest, Image, ImageConfig, Index, Manifest, REF_NAME_ANNOTATION, Reference,
    StagedBlob, Store, media_type,
};

use crate::Error;

/// What an archive held once it is in the store.
#[derive(Debug)]
pub struct Loaded {
    /// Each image with the names it was tagged with.
    pub images: Vec<(Image, Vec<String>)>,
}

/// A file of the archive, staged as a blob while the archive streams by.
struct Member {
    blob: StagedBlob,
    /// The digest of its content decompressed (its diff id, if it is a layer), or why it does
    /// not decompress (which matters only if it is a layer).
    diff_id: Result<Digest, String>,
    /// Its first bytes, which tell its compression.
    head: Vec<u8>,
}

impl Member {
    fn descriptor(&self, media_type: &str) -> Descriptor {
        Descriptor::new(media_type, self.blob.digest().clone(), self.blob.size())
    }

    /// The OCI media type its compression calls for, as a layer.
    fn layer_media_type(&self) -> &'static str {
        match kiln_layer::detect_compression(&self.head) {
            kiln_layer::Compression::None => media_type::OCI_LAYER_TAR,
            kiln_layer::Compression::Gzip => media_type::OCI_LAYER_GZIP,
            kiln_layer::Compression::Zstd => media_type::OCI_LAYER_ZSTD,
        }
    }

    /// Checks that the member, as layer `name`, unpacks to `diff_id`.
    fn check_layer(&self, name: &str, diff_id: &Digest) -> Result<(), Error> {
        match &self.diff_id {
            Ok(actual) if actual == diff_id => Ok(()),
            Ok(actual) => Err(Error::BadArchive(format!(
                "layer {name} ({}) unpacks to {actual}, but the config says {diff_id}",
                self.blob.digest()
            ))),
            Err(why) => Err(Error::BadArchive(format!(
                "layer {name} does not decompress: {why}"
            ))),
        }
    }
}

/// The archive's files by name; blobs are taken out as they are committed.
type Members = HashMap<String, Member>;

/// Reads a docker-archive or an OCI archive (plain or compressed) into the store and tags
/// what it names.
pub fn load(store: &Store, input: impl Read) -> Result<Loaded, Error> {
    let mut archive = tar::Archive::new(kiln_layer::decompress_auto(
        io::BufReader::with_capacity(1 << 20, input),
    )?);
    let mut members = Members::new();
    let mut buf = vec![0u8; 1 << 20];
    for entry in archive.entries().map_err(Error::archive("read archive"))? {
        let mut entry = entry.map_err(Error::archive("read archive entry"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = member_name(&entry.path_bytes());
        let mut writer = store.blob_writer()?;
        let mut diff_id = kiln_layer::DiffIdWriter::new();
        let mut head = Vec::with_capacity(4);
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::archive("read archive entry")(e)),
            };
            let take = (4 - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
            writer
                .write_all(&buf[..n])
                .map_err(Error::io("write staged blob", store.root().join("tmp")))?;
            diff_id
                .write_all(&buf[..n])
                .map_err(Error::archive("decompress archive entry"))?;
        }
        // `blobs/sha256/<hex>` names promise their digest.
        let blob = writer.stage(blob_name_digest(&name).as_ref())?;
        let diff_id = diff_id.finish(blob.digest()).map_err(|e| e.to_string());
        members.insert(
            name,
            Member {
                blob,
                diff_id,
                head,
            },
        );
    }
    let images = archive::read_images(&mut Staged(&members), PlatformChoice::Host)?;
    let mut checked = Vec::with_capacity(images.len());
    for image in images {
        checked.push(check(&members, image)?);
    }
    store_checked(store, &mut members, checked)
}

/// `blobs/sha256/<hex>` names promise their digest; anything else promises nothing.
fn blob_name_digest(name: &str) -> Option<Digest> {
    name.strip_prefix("blobs/sha256/")
        .and_then(|hex| format!("sha256:{hex}").parse().ok())
}

fn member<'m>(members: &'m Members, name: &str) -> Result<&'m Member, Error> {
    members
        .get(name)
        .ok_or_else(|| Error::BadArchive(format!("it names {name:?}, which it does not contain")))
}

/// The staged members, as the archive reader sees them.
struct Staged<'m>(&'m Members);

impl ArchiveMembers for Staged<'_> {
    fn size(&self, name: &str) -> Option<u64> {
        self.0.get(name).map(|m| m.blob.size())
    }

    fn read(&mut self, name: &str, limit: u64) -> kiln_image::Result<Vec<u8>> {
        match self.0.get(name) {
            Some(member) => member.blob.read(limit, name),
            None => Err(kiln_image::Error::BadArchive(format!(
                "it names {name:?}, which it does not contain"
            ))),
        }
    }
}

/// Moves a member into the store, once: later calls for the same name do nothing.
fn commit_member(store: &Store, members: &mut Members, name: &str) -> Result<(), Error> {
    if let Some(member) = members.remove(name) {
        let digest = member.blob.digest().clone();
        member.blob.commit()?;
        if let Ok(diff_id) = &member.diff_id {
            store.record_diff_id(&digest, diff_id)?;
        }
    }
    Ok(())
}

/// An image of an archive, checked, with the members it needs.
struct Checked {
    members: Vec<String>,
    config_desc: Descriptor,
    config: ImageConfig,
    /// For an OCI archive, the manifest as it came (a loaded image keeps its digest).
    manifest: Option<(Descriptor, Manifest)>,
    layers: Vec<Descriptor>,
    names: Vec<String>,
}

/// Checks that each layer member unpacks to the config's diff id, and describes the members
/// while they are all still staged (images may share them).
fn check(members: &Members, image: ArchiveImage) -> Result<Checked, Error> {
    let mut layers = Vec::with_capacity(image.layers.len());
    for (name, diff_id) in image.layers.iter().zip(&image.config.rootfs.diff_ids) {
        let layer = member(members, name)?;
        layer.check_layer(name, diff_id)?;
        layers.push(layer.descriptor(layer.layer_media_type()));
    }
    let config_desc = match &image.manifest {
        // An OCI manifest's descriptors stay as they are.
        Some((_, manifest)) => {
            layers.clone_from(&manifest.layers);
            manifest.config.clone()
        }
        None => member(members, &image.config_member)?.descriptor(media_type::OCI_CONFIG),
    };
    let mut image_members: Vec<String> = image.manifest_member.into_iter().collect();
    image_members.push(image.config_member);
    image_members.extend(image.layers);
    Ok(Checked {
        members: image_members,
        config_desc,
        config: image.config,
        manifest: image.manifest,
        layers,
        names: image.names,
    })
}

/// Stores the checked images, their blobs first, and tags them.
fn store_checked(
    store: &Store,
    members: &mut Members,
    checked: Vec<Checked>,
) -> Result<Loaded, Error> {
    let mut images = Vec::new();
    for image in checked {
        for name in &image.members {
            commit_member(store, members, name)?;
        }
        let stored = match image.manifest {
            Some((descriptor, manifest)) => Image {
                descriptor,
                manifest,
                config: image.config,
            },
            None => store.put_manifest(image.config_desc, image.config, image.layers)?,
        };
        for name in &image.names {
            store.tag(name, &stored.descriptor)?;
        }
        images.push((stored, image.names));
    }
    Ok(Loaded { images })
}

/// Output formats of `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker save` layout, which `docker load` reads.
    Docker,
    /// An OCI image layout in a tar.
    OciArchive,
}

/// A multi-platform image to save: its index (a blob of the store) over one image per
/// platform, and the names it goes by. Only OCI layouts hold one.
#[derive(Debug, Clone)]
pub struct SavedIndex {
    /// The index blob.
    pub index: Descriptor,
    /// The images it lists.
    pub images: Vec<Image>,
    /// Names for `index.json`.
    pub names: Vec<String>,
    /// Its attestation manifests (`build --sbom`), whose blobs go with it.
    pub attestations: Vec<kiln_image::attestation::Attestation>,
}

impl SavedIndex {
    /// Every blob of its attestations: manifest, config, statements.
    fn attestation_blobs(&self) -> impl Iterator<Item = Descriptor> + '_ {
        self.attestations.iter().flat_map(|a| {
            let mut entry = a.entry.clone();
            entry.platform = None;
            entry.annotations = None;
            std::iter::once(entry)
                .chain(std::iter::once(a.manifest.config.clone()))
                .chain(a.manifest.layers.iter().cloned())
        })
    }
}

/// Writes images as one archive to `out`.
pub fn save(
    store: &Store,
    images: &[(Image, Vec<String>)],
    format: SaveFormat,
    out: impl Write,
) -> Result<(), Error> {
    save_with_indexes(store, images, &[], format, out)
}

/// Writes images and multi-platform images as one archive to `out`.
pub fn save_with_indexes(
    store: &Store,
    images: &[(Image, Vec<String>)],
    indexes: &[SavedIndex],
    format: SaveFormat,
    out: impl Write,
) -> Result<(), Error> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    match format {
        SaveFormat::Docker if !indexes.is_empty() => {
            return Err(Error::BadInput(
                "docker's archive holds one platform per image: choose one with --platform".into(),
            ));
        }
        SaveFormat::Docker => save_docker(store, images, &mut tar)?,
        SaveFormat::OciArchive => {
            let mut written = std::collections::BTreeSet::new();
            let index = oci_index(images, indexes);
            let all = images
                .iter()
                .map(|(image, _)| image)
                .chain(indexes.iter().flat_map(|i| &i.images));
            let index_blobs = indexes
                .iter()
                .flat_map(|i| std::iter::once(i.index.clone()).chain(i.attestation_blobs()));
            for blob in index_blobs {
                if written.insert(blob.digest.clone()) {
                    append_blob(
                        store,
                        &mut tar,
                        &format!("blobs/sha256/{}", blob.digest.hex()),
                        &blob,
                    )?;
                }
            }
            for image in all {
                for blob in image_blobs(image) {
                    if written.insert(blob.digest.clone()) {
                        append_blob(store, &mut tar, &blob_member(&blob.digest), &blob)?;
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
    indexes: &[SavedIndex],
    dir: &Path,
) -> Result<(), Error> {
    let mut all: Vec<Descriptor> = indexes
        .iter()
        .flat_map(|i| std::iter::once(i.index.clone()).chain(i.attestation_blobs()))
        .collect();
    for image in images
        .iter()
        .map(|(image, _)| image)
        .chain(indexes.iter().flat_map(|i| &i.images))
    {
        all.extend(image_blobs(image));
    }
    // Every blob is checked before anything is written: a layout is linked, not streamed,
    // so there is no later point at which to stop a corrupt blob.
    let mut checked = std::collections::BTreeSet::new();
    for blob in &all {
        if checked.insert(blob.digest.clone()) {
            store.verify_blob(&blob.digest, Some(blob.size))?;
        }
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(Error::io("create directory", &blobs))?;
    for blob in &all {
        let target = blobs.join(blob.digest.hex());
        if !target.exists() {
            let source = store.blob_path(&blob.digest);
            // A hard link costs nothing when the output is on the store's file system.
            if std::fs::hard_link(&source, &target).is_err() {
                std::fs::copy(&source, &target).map_err(Error::io("copy blob to", &target))?;
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
        &oci_index(images, indexes).to_bytes(),
    )?;
    Ok(())
}

fn oci_index(images: &[(Image, Vec<String>)], indexes: &[SavedIndex]) -> Index {
    let mut index = Index::default();
    let entries = images
        .iter()
        .map(|(image, names)| (&image.descriptor, names))
        .chain(indexes.iter().map(|i| (&i.index, &i.names)));
    for (descriptor, names) in entries {
        let mut entry = Descriptor::new(
            &descriptor.media_type,
            descriptor.digest.clone(),
            descriptor.size,
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
            append_blob(store, tar, &config_name, &image.manifest.config)?;
        }
        let mut layer_names = Vec::new();
        for layer in &image.manifest.layers {
            let name = format!("{}/layer.tar", layer.digest.hex());
            if written.insert(name.clone()) {
                append_blob(store, tar, &name, layer)?;
            }
            layer_names.push(name);
        }
        let tags: Vec<String> = names
            .iter()
            .filter_map(|n| n.parse::<Reference>().ok())
            .map(|r| r.store_name())
            .collect();
        entries.push(DockerManifestEntry {
            config: config_name,
            repo_tags: Some(tags),
            layers: layer_names,
        });
    }
    let manifest = serde_json::to_vec(&entries).unwrap_or_default();
    append_bytes(tar, "manifest.json", &manifest)
}

/// Streams a blob into the archive as `name`, checked against its descriptor on the way: a
/// corrupt blob fails the save before its last bytes are written.
fn append_blob<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    name: &str,
    blob: &Descriptor,
) -> Result<(), Error> {
    let mut reader = store.open_verified(&blob.digest, Some(blob.size))?;
    let mut header = file_header(blob.size);
    let appended = tar
        .append_data(&mut header, name, &mut reader)
        .map_err(Error::archive("write archive"));
    reader.finish()?;
    appended
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

/// The images with their layers compressed as asked, for `save --compress` and `build -o`:
/// each compressed layer is made once, at `level` (`None`: the usual default), and kept (see
/// `kiln_layer::compressed_in_store`), and a manifest over them is stored beside the
/// original. Layers that are already compressed stay as they are.
pub fn compress_for_export(
    store: &Store,
    images: Vec<(Image, Vec<String>)>,
    compression: kiln_layer::Compression,
    level: Option<u32>,
) -> Result<Vec<(Image, Vec<String>)>, Error> {
    if compression == kiln_layer::Compression::None {
        return Ok(images);
    }
    let mut out = Vec::with_capacity(images.len());
    for (image, names) in images {
        let mut layers = Vec::with_capacity(image.manifest.layers.len());
        for layer in &image.manifest.layers {
            layers.push(kiln_layer::compressed_in_store(store, layer, compression, level)?.0);
        }
        let compressed =
            store.put_manifest(image.manifest.config.clone(), image.config.clone(), layers)?;
        out.push((compressed, names));
    }
    Ok(out)
}
