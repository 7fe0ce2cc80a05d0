//! The local store: an OCI layout plus snapshots, build-cache records and staging.
//!
//! Crash safety comes from one rule: every file is written under `tmp/`, fsynced, and renamed
//! into place. Blobs are content-addressed, so two writers of the same blob cannot conflict.
//! Blobs are checked against their digest whenever they are read, and only kiln writes here:
//! the root and every directory of the layout are 0700, since snapshots hold whatever setuid
//! files the images ship.
//! Two locks keep processes apart: `lock` is held shared by every command that reads or writes
//! and exclusive by `gc`, and `index.lock` serialises the read-modify-write of `index.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::{
    Descriptor, Digest, Error, HashingWriter, ImageConfig, Index, MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE, Manifest, Platform, Reference, Result, VerifyingReader, chain_id,
    media_type,
};

pub use crate::check::{CheckReport, Problem};

/// Directories of the layout that other parts of kiln create when they first need them;
/// [`Store::open`] closes them too if an older kiln left them open.
const OPTIONAL_DIRS: [&str; 7] = [
    "cache-mounts",
    "compressed",
    "compressed/gzip",
    "compressed/zstd",
    "registry",
    "registry/sources",
    "diff-ids",
];

/// The annotation that names an image in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held flock; released on drop (and by the kernel if the process dies).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// An image as the store knows it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The parsed config.
    pub config: ImageConfig,
}

impl Image {
    /// The manifest digest.
    pub fn manifest_digest(&self) -> &Digest {
        &self.descriptor.digest
    }

    /// The image id, as docker defines it: the config digest.
    pub fn id(&self) -> &Digest {
        &self.manifest.config.digest
    }

    /// Bytes of the config plus every layer blob.
    pub fn size(&self) -> u64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// A name in the store and the manifest it points at.
#[derive(Debug, Clone)]
pub struct TaggedImage {
    /// `name:tag` as stored.
    pub name: String,
    /// The manifest descriptor.
    pub descriptor: Descriptor,
}

/// What one build step produced: the image state after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The config blob after the step.
    pub config: Digest,
    /// Every layer after the step, bottom first.
    pub layers: Vec<Descriptor>,
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs: usize,
    /// Bytes of blobs deleted.
    pub bytes: u64,
    /// Snapshots deleted.
    pub snapshots: usize,
    /// Build-cache records deleted.
    pub cache_records: usize,
}

impl Store {
    /// The default root: `/var/lib/kiln` for root, `$XDG_DATA_HOME/kiln` otherwise.
    pub fn default_root() -> PathBuf {
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/kiln");
        }
        match std::env::var_os("XDG_DATA_HOME") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("kiln"),
            _ => {
                let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
                PathBuf::from(home).join(".local/share/kiln")
            }
        }
    }

    /// Opens (creating if needed) the store at `root`, and clears staging left by dead processes.
    /// The root and the directories of its layout are made 0700 (`/var/lib/docker` is 0710):
    /// snapshots and cache mounts hold setuid files, which no other user may reach.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
        };
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
        }
        for dir in [
            store.root.clone(),
            store.oci(),
            store.oci().join("blobs"),
            store.oci().join("blobs/sha256"),
            store.root.join("snapshots"),
            store.root.join("cache"),
            store.root.join("tmp"),
        ] {
            create_private_dir(&dir)?;
        }
        for dir in OPTIONAL_DIRS {
            let dir = store.root.join(dir);
            if dir.is_dir() {
                create_private_dir(&dir)?;
            }
        }
        let layout = store.oci().join("oci-layout");
        if !layout.exists() {
            write_atomic(&store.tmp(), &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.oci().join("index.json");
        if !index.exists() {
            let _guard = store.lock_index()?;
            if !index.exists() {
                write_atomic(&store.tmp(), &index, &Index::default().to_bytes())?;
            }
        }
        store.clear_dead_staging();
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI layout directory.
    pub fn oci(&self) -> PathBuf {
        self.root.join("oci")
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Held shared by every command for its whole run; `gc` takes it exclusive.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        self.flock("lock", FlockOperation::LockShared)
    }

    /// Held by `gc`: no other kiln process is using the store meanwhile.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        self.flock("lock", FlockOperation::LockExclusive)
    }

    fn lock_index(&self) -> Result<StoreLock> {
        self.flock("index.lock", FlockOperation::LockExclusive)
    }

    fn flock(&self, name: &str, op: FlockOperation) -> Result<StoreLock> {
        let path = self.root.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open lock file", &path))?;
        rustix::fs::flock(file.as_fd(), op).map_err(|e| Error::io("flock", path)(e.into()))?;
        Ok(StoreLock { _file: file })
    }

    /// A fresh staging directory, removed on drop, named so that a later process can tell
    /// whether its owner is still alive.
    pub fn staging_dir(&self, purpose: &str) -> Result<tempfile::TempDir> {
        let prefix = format!("{}-{purpose}-", std::process::id());
        tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(self.tmp())
            .map_err(Error::io("create staging directory", self.tmp()))
    }

    /// Removes `tmp/<pid>-…` entries whose process is gone (a killed import, say).
    fn clear_dead_staging(&self) {
        let Ok(entries) = fs::read_dir(self.tmp()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            let path = entry.path();
            detach_mounts_under(&path);
            // Snapshots staged for a rename are made read-only dirs only by content; plain removal works.
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }

    // ---- blobs ----

    /// Where a blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.oci().join("blobs/sha256").join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    /// Stores bytes as a blob.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if !self.has_blob(&digest) {
            write_atomic(&self.tmp(), &self.blob_path(&digest), bytes)?;
        }
        Ok(digest)
    }

    /// A writer that streams a blob into staging and hashes it.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let file = staging_file(&self.tmp())?;
        Ok(BlobWriter {
            inner: HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file)),
            store: self.clone(),
        })
    }

    /// Reads a whole blob (configs and manifests), checking it against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::BlobNotFound(digest.clone())
            } else {
                Error::io("read", path)(e)
            }
        })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::Corrupt {
                digest: digest.clone(),
                why: format!("its content hashes to {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Reads and parses a JSON blob of at most `limit` bytes, checked against its digest.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        limit: u64,
        what: &str,
    ) -> Result<T> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(meta) if meta.len() > limit => {
                return Err(Error::TooLarge {
                    what: format!("{what} {digest}"),
                    size: meta.len(),
                    limit,
                });
            }
            _ => {}
        }
        parse_json(&self.read_blob(digest)?, || format!("{what} {digest}"))
    }

    /// Opens a blob for streaming, checked against its digest (and `size`, when a descriptor
    /// gives it) as it is read: see [`VerifyingReader`].
    pub fn open_verified(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<VerifyingReader<BufReader<File>>> {
        let file = self.open_blob(digest)?;
        Ok(VerifyingReader::new(
            BufReader::with_capacity(1 << 20, file),
            digest.clone(),
            size,
        ))
    }

    /// Reads a whole blob to check it; returns its size.
    pub fn verify_blob(&self, digest: &Digest, size: Option<u64>) -> Result<u64> {
        self.open_verified(digest, size)?.finish()
    }

    /// The diff id kiln computed for a compressed layer blob earlier, if it did.
    pub fn known_diff_id(&self, blob: &Digest) -> Option<Digest> {
        fs::read_to_string(self.root.join("diff-ids").join(blob.hex()))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Remembers the diff id of a compressed layer blob, which kiln computed from its content,
    /// so that the next pull that finds the blob present need not decompress it again.
    pub fn record_diff_id(&self, blob: &Digest, diff_id: &Digest) -> Result<()> {
        if blob == diff_id {
            return Ok(());
        }
        let dir = self.root.join("diff-ids");
        create_private_dir(&dir)?;
        write_atomic(
            &self.tmp(),
            &dir.join(blob.hex()),
            diff_id.as_str().as_bytes(),
        )
    }

    /// Opens a blob for streaming, unchecked: for readers that skip through a layer (analyze)
    /// and so cannot hash it. Everything that passes a blob's bytes on uses
    /// [`Store::open_verified`].
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::BlobNotFound(digest.clone())
            } else {
                Error::io("open", path)(e)
            }
        })
    }

    // ---- images ----

    /// Stores a config and a manifest over `layers` (whose blobs must already be present).
    pub fn put_image(&self, config: &ImageConfig, layers: Vec<Descriptor>) -> Result<Image> {
        let config_bytes = config.to_bytes();
        let config_digest = self.write_blob(&config_bytes)?;
        let config_desc = Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        );
        self.put_manifest(config_desc, config.clone(), layers)
    }

    /// Stores a manifest over a config blob that is already stored byte for byte as it came
    /// (a loaded or pulled image keeps its id).
    pub fn put_manifest(
        &self,
        config_desc: Descriptor,
        config: ImageConfig,
        layers: Vec<Descriptor>,
    ) -> Result<Image> {
        let manifest = Manifest::oci(config_desc, layers);
        let manifest_bytes = manifest.to_bytes();
        let digest = self.write_blob(&manifest_bytes)?;
        let descriptor = Descriptor::new(
            media_type::OCI_MANIFEST,
            digest,
            manifest_bytes.len() as u64,
        );
        Ok(Image {
            descriptor,
            manifest,
            config,
        })
    }

    /// `image` with its manifest annotated (`kiln build --annotation`): a new manifest over the
    /// same config and layers.
    pub fn annotate_manifest(
        &self,
        image: &Image,
        annotations: BTreeMap<String, String>,
    ) -> Result<Image> {
        let mut manifest = image.manifest.clone();
        manifest
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(annotations);
        let bytes = manifest.to_bytes();
        let digest = self.write_blob(&bytes)?;
        let descriptor = Descriptor::new(media_type::OCI_MANIFEST, digest, bytes.len() as u64);
        Ok(Image {
            descriptor,
            manifest,
            config: image.config.clone(),
        })
    }

    /// What `name` points at: its tag's descriptor (an index for a multi-platform image), or
    /// the manifest of the image an id or digest names.
    pub fn descriptor_of(&self, name: &str) -> Result<Descriptor> {
        match self.resolve_name(name) {
            Ok(tagged) => Ok(tagged.descriptor),
            Err(_) => Ok(self.resolve(name)?.descriptor),
        }
    }

    /// Stores an index over images of several platforms (`kiln build --platform a,b`).
    pub fn put_index(&self, entries: &[(Platform, Image)]) -> Result<Descriptor> {
        self.put_attested_index(entries, &[], &BTreeMap::new())
    }

    /// The annotations of an index (`--annotation index:K=V`); none for a single image.
    pub fn index_annotations(&self, descriptor: &Descriptor) -> Result<BTreeMap<String, String>> {
        if !is_index(&descriptor.media_type) {
            return Ok(BTreeMap::new());
        }
        let index: Index = self.read_json(&descriptor.digest, MAX_MANIFEST_SIZE, "index")?;
        Ok(index.annotations.unwrap_or_default())
    }

    /// The images a descriptor stands for: itself, or each platform's of an index (whose
    /// platform it then gives). An index's attestation manifests are not images.
    pub fn platform_images(
        &self,
        descriptor: &Descriptor,
    ) -> Result<Vec<(Option<Platform>, Image)>> {
        if !is_index(&descriptor.media_type) {
            return Ok(vec![(None, self.image_of_manifest(descriptor)?)]);
        }
        let index: Index = self.read_json(&descriptor.digest, MAX_MANIFEST_SIZE, "index")?;
        index
            .manifests
            .iter()
            .filter(|d| !is_index(&d.media_type) && !crate::attestation::is_attestation(d))
            .map(|d| Ok((d.platform.clone(), self.image_of_manifest(d)?)))
            .collect()
    }

    /// The image of `name` for a platform: an index's entry for it, or a single image whose
    /// config says that platform. Without a platform, the host's (or an index's first entry).
    pub fn resolve_platform(&self, name: &str, platform: Option<&Platform>) -> Result<Image> {
        let descriptor = match self.resolve_name(name) {
            Ok(tagged) => tagged.descriptor,
            Err(_) => self.resolve(name)?.descriptor,
        };
        let Some(want) = platform else {
            return self.image(&descriptor);
        };
        let images = self.platform_images(&descriptor)?;
        let mut have = Vec::new();
        for (entry, image) in images {
            let actual = entry.unwrap_or_else(|| image.config.platform());
            if actual.matches(want) {
                return Ok(image);
            }
            have.push(actual.to_string());
        }
        Err(Error::NoPlatform {
            name: name.to_owned(),
            want: want.to_string(),
            have,
        })
    }

    /// Reads the image a manifest descriptor points at; for an index, the host platform's
    /// entry (or its first).
    pub fn image(&self, descriptor: &Descriptor) -> Result<Image> {
        if is_index(&descriptor.media_type) {
            let host = Platform::host();
            let images = self.platform_images(descriptor)?;
            // An index without the host's platform still names an image: its first.
            let pick = images
                .iter()
                .position(|(p, _)| p.as_ref().is_some_and(|p| p.matches(&host)))
                .unwrap_or(0);
            return images
                .into_iter()
                .nth(pick)
                .map(|(_, image)| image)
                .ok_or_else(|| Error::ImageNotFound(descriptor.digest.to_string()));
        }
        self.image_of_manifest(descriptor)
    }

    fn image_of_manifest(&self, descriptor: &Descriptor) -> Result<Image> {
        let manifest: Manifest =
            self.read_json(&descriptor.digest, MAX_MANIFEST_SIZE, "manifest")?;
        let config: ImageConfig =
            self.read_json(&manifest.config.digest, MAX_CONFIG_SIZE, "config")?;
        Ok(Image {
            descriptor: descriptor.clone(),
            manifest,
            config,
        })
    }

    /// Reads the config blob of a cache record or a manifest.
    pub fn config(&self, digest: &Digest) -> Result<ImageConfig> {
        self.read_json(digest, MAX_CONFIG_SIZE, "config")
    }

    /// The index of the layout.
    pub fn index(&self) -> Result<Index> {
        let path = self.oci().join("index.json");
        let bytes = fs::read(&path).map_err(Error::io("read", &path))?;
        parse_json(&bytes, || path.display().to_string())
    }

    /// Every tagged image, sorted by name.
    pub fn list(&self) -> Result<Vec<TaggedImage>> {
        let mut images: Vec<TaggedImage> = self
            .index()?
            .manifests
            .into_iter()
            .filter_map(|d| {
                Some(TaggedImage {
                    name: d.annotation(REF_NAME_ANNOTATION)?.to_owned(),
                    descriptor: d,
                })
            })
            .collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Points `name` (a reference, normalised) at a manifest, replacing any earlier target.
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<()> {
        let name = name.parse::<Reference>()?.store_name();
        self.edit_index(|index| {
            index
                .manifests
                .retain(|d| d.annotation(REF_NAME_ANNOTATION) != Some(name.as_str()));
            let mut entry =
                Descriptor::new(&manifest.media_type, manifest.digest.clone(), manifest.size);
            entry.annotations = Some(BTreeMap::from([(
                REF_NAME_ANNOTATION.to_owned(),
                name.clone(),
            )]));
            index.manifests.push(entry);
        })
    }

    /// Removes a name; returns what it pointed at.
    pub fn untag(&self, name: &str) -> Result<Descriptor> {
        let tagged = self.resolve_name(name)?;
        self.edit_index(|index| {
            index
                .manifests
                .retain(|d| d.annotation(REF_NAME_ANNOTATION) != Some(tagged.name.as_str()))
        })?;
        Ok(tagged.descriptor)
    }

    pub(crate) fn edit_index(&self, edit: impl FnOnce(&mut Index)) -> Result<()> {
        let _guard = self.lock_index()?;
        let mut index = self.index()?;
        edit(&mut index);
        write_atomic(
            &self.tmp(),
            &self.oci().join("index.json"),
            &index.to_bytes(),
        )
    }

    fn resolve_name(&self, name: &str) -> Result<TaggedImage> {
        let wanted = name
            .parse::<Reference>()
            .map(|r| r.store_name())
            .unwrap_or_else(|_| name.to_owned());
        self.list()?
            .into_iter()
            .find(|t| t.name == wanted)
            .ok_or_else(|| Error::ImageNotFound(name.to_owned()))
    }

    /// Finds an image by name, by image id (config digest, or a prefix of its hex of at least
    /// 4 digits), or by manifest digest.
    pub fn resolve(&self, name_or_id: &str) -> Result<Image> {
        if let Ok(tagged) = self.resolve_name(name_or_id) {
            return self.image(&tagged.descriptor);
        }
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found: Option<Image> = None;
            for tagged in self.list()? {
                let image = self.image(&tagged.descriptor)?;
                if image.id().hex().starts_with(hex)
                    || image.manifest_digest().hex().starts_with(hex)
                {
                    if found
                        .as_ref()
                        .is_some_and(|f| f.manifest_digest() != image.manifest_digest())
                    {
                        return Err(Error::Ambiguous(name_or_id.to_owned()));
                    }
                    found = Some(image);
                }
            }
            if let Some(image) = found {
                return Ok(image);
            }
        }
        Err(Error::ImageNotFound(name_or_id.to_owned()))
    }

    // ---- snapshots ----

    /// Where the unpacked layer at the top of `chain` lives (an overlay lower dir).
    pub fn snapshot_dir(&self, chain: &Digest) -> PathBuf {
        self.root.join("snapshots").join(chain.hex())
    }

    /// Moves a finished snapshot into place. If another process won the race, ours is dropped.
    pub fn commit_snapshot(&self, staged: &Path, chain: &Digest) -> Result<PathBuf> {
        let target = self.snapshot_dir(chain);
        place_dir(staged, &target)?;
        sync_dir(&self.root.join("snapshots"));
        Ok(target)
    }

    // ---- build cache ----

    /// The result of a step, if one with this key was built before and its blobs survive.
    pub fn cache_get(&self, key: &Digest) -> Option<CacheRecord> {
        let bytes = fs::read(self.root.join("cache").join(key.hex())).ok()?;
        let record: CacheRecord = serde_json::from_slice(&bytes).ok()?;
        let complete =
            self.has_blob(&record.config) && record.layers.iter().all(|l| self.has_blob(&l.digest));
        complete.then_some(record)
    }

    /// Records the result of a step.
    pub fn cache_put(&self, key: &Digest, record: &CacheRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        write_atomic(
            &self.tmp(),
            &self.root.join("cache").join(key.hex()),
            &bytes,
        )
    }

    // ---- gc ----

    /// Removes blobs and snapshots that no tag reaches, keeping what the build cache still
    /// references unless `prune_cache`, which drops the build cache first.
    pub fn gc(&self, prune_cache: bool) -> Result<GcReport> {
        let _exclusive = self.lock_exclusive()?;
        let mut report = GcReport::default();
        let cache_dir = self.root.join("cache");
        let mut live_blobs = BTreeSet::new();
        let mut live_layers: Vec<Vec<Digest>> = Vec::new();
        for entry in fs::read_dir(&cache_dir)
            .map_err(Error::io("read directory", &cache_dir))?
            .flatten()
        {
            let record = fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<CacheRecord>(&b).ok());
            match record {
                Some(record) if !prune_cache => {
                    live_blobs.insert(record.config.clone());
                    if let Ok(config) = self.config(&record.config) {
                        live_layers.push(config.rootfs.diff_ids);
                    }
                    live_blobs.extend(record.layers.into_iter().map(|l| l.digest));
                }
                _ => {
                    if fs::remove_file(entry.path()).is_ok() {
                        report.cache_records += 1;
                    }
                }
            }
        }
        for descriptor in self.index()?.manifests {
            live_blobs.insert(descriptor.digest.clone());
            for attestation in self.attestations(&descriptor).unwrap_or_default() {
                live_blobs.insert(attestation.entry.digest.clone());
                live_blobs.insert(attestation.manifest.config.digest.clone());
                live_blobs.extend(attestation.manifest.layers.into_iter().map(|l| l.digest));
            }
            let Ok(images) = self.platform_images(&descriptor) else {
                continue;
            };
            for (_, image) in images {
                live_blobs.insert(image.descriptor.digest.clone());
                live_blobs.insert(image.manifest.config.digest.clone());
                live_blobs.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
                live_layers.push(image.config.rootfs.diff_ids);
            }
        }
        let blob_dir = self.oci().join("blobs/sha256");
        for entry in fs::read_dir(&blob_dir)
            .map_err(Error::io("read directory", &blob_dir))?
            .flatten()
        {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if !live_blobs.contains(&digest) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(entry.path()).is_ok() {
                    report.blobs += 1;
                    report.bytes += size;
                }
            }
        }
        let records = self.root.join("diff-ids");
        for entry in fs::read_dir(&records).into_iter().flatten().flatten() {
            let blob = entry.file_name();
            if !blob_dir.join(&blob).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
        let mut live_chains = BTreeSet::new();
        for diff_ids in live_layers {
            for n in 1..=diff_ids.len() {
                if let Some(chain) = chain_id(&diff_ids[..n]) {
                    live_chains.insert(chain.hex().to_owned());
                }
            }
        }
        let snapshot_root = self.root.join("snapshots");
        for entry in fs::read_dir(&snapshot_root)
            .map_err(Error::io("read directory", &snapshot_root))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live_chains.contains(&name) && fs::remove_dir_all(entry.path()).is_ok() {
                report.snapshots += 1;
            }
        }
        Ok(report)
    }
}

/// A blob being streamed into the store.
pub struct BlobWriter {
    inner: HashingWriter<io::BufWriter<tempfile::NamedTempFile>>,
    store: Store,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.written()
    }

    /// Finishes the blob. With `expected`, content that hashes otherwise is discarded and
    /// nothing enters the store.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let staged = self.stage(expected)?;
        let done = (staged.digest.clone(), staged.size);
        staged.commit()?;
        Ok(done)
    }

    /// Finishes writing the blob but leaves it in staging (its file closed), to enter the store
    /// only when everything it belongs with has been checked. With `expected`, content that
    /// hashes otherwise is discarded.
    pub fn stage(self, expected: Option<&Digest>) -> Result<StagedBlob> {
        let (buffered, digest, size) = self.inner.finish();
        let tmp = self.store.tmp();
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io("write", &tmp)(e.into_error()))?;
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        Ok(StagedBlob {
            path: file.into_temp_path(),
            digest,
            size,
            store: self.store,
        })
    }
}

/// A blob written and hashed, waiting in staging; removed on drop unless committed.
pub struct StagedBlob {
    path: tempfile::TempPath,
    digest: Digest,
    size: u64,
    store: Store,
}

impl std::fmt::Debug for StagedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedBlob")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish()
    }
}

impl StagedBlob {
    /// What its content hashes to.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads it whole, refusing more than `limit` bytes: a JSON document of an archive.
    pub fn read(&self, limit: u64, what: &str) -> Result<Vec<u8>> {
        if self.size > limit {
            return Err(Error::TooLarge {
                what: what.to_owned(),
                size: self.size,
                limit,
            });
        }
        fs::read(&self.path).map_err(Error::io("read", self.path.to_path_buf()))
    }

    /// Moves it into the store, durably (a no-op when the store has it already).
    pub fn commit(self) -> Result<()> {
        let target = self.store.blob_path(&self.digest);
        if target.exists() {
            return Ok(());
        }
        // Synced only now: what an archive holds besides its images is staged and dropped.
        File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(Error::io("fsync", self.path.to_path_buf()))?;
        self.path
            .persist(&target)
            .map_err(|e| Error::io("rename blob into", &target)(e.error))?;
        sync_dir(&self.store.oci().join("blobs/sha256"));
        Ok(())
    }
}

/// Creates a directory of the store (and its missing parents) 0700, or closes an existing one
/// that other users can enter.
pub fn create_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(Error::io("create directory", path))?;
    let meta = fs::metadata(path).map_err(Error::io("stat", path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(Error::io("chmod 0700", path))?;
    }
    Ok(())
}

/// Renames the directory `staged` to `target`, unless a directory is already there: then the
/// one there stays, and `staged` is left for the caller to drop.
///
/// rename(2) alone would replace an empty directory that a concurrent writer has just put in
/// place and may have opened, leaving that writer a deleted directory.
pub fn place_dir(staged: &Path, target: &Path) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, staged, CWD, target, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) if target.is_dir() => Ok(()),
        Err(e) => Err(Error::io("rename into", target)(e.into())),
    }
}

/// Writes `bytes` to `path` through a temp file in `tmp_dir`: fsync, rename, fsync the dir.
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = staging_file(tmp_dir)?;
    file.write_all(bytes)
        .map_err(Error::io("write", file.path()))?;
    file.as_file()
        .sync_all()
        .map_err(Error::io("fsync", file.path()))?;
    file.persist(path)
        .map_err(|e| Error::io("rename into", path)(e.error))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// A temp file named `<pid>-…`, so that a later process can tell whether its writer died.
fn staging_file(tmp_dir: &Path) -> Result<tempfile::NamedTempFile> {
    let prefix = format!("{}-", std::process::id());
    tempfile::Builder::new()
        .prefix(&prefix)
        .tempfile_in(tmp_dir)
        .map_err(Error::io("create temp file", tmp_dir))
}

fn sync_dir(dir: &Path) {
    // Durability of the rename; a failure here cannot tear anything, so it is not fatal.
    if let Ok(file) = File::open(dir) {
        let _ = file.sync_all();
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::BadJson {
        what: what(),
        source,
    })
}

/// Lazily unmounts whatever a dead process left mounted under `dir` (an overlay of a killed
/// build step), so that its staging can be removed.
fn detach_mounts_under(dir: &Path) {
    let Ok(mut mountinfo) = File::open("/proc/self/mountinfo") else {
        return;
    };
    let mut text = String::new();
    if mountinfo.read_to_string(&mut text).is_err() {
        return;
    }
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Whether a media type is an image index (OCI) or a manifest list (docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == media_type::OCI_INDEX || media_type == media_type::DOCKER_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_resolve_and_untag() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = store
            .put_image(&ImageConfig::scratch(), Vec::new())
            .unwrap();
        store.tag("a", &image.descriptor).unwrap();
        store.tag("b:1", &image.descriptor).unwrap();
        assert_eq!(
            store
                .list()
                .unwrap()
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a:latest", "b:1"]
        );
        assert_eq!(store.resolve("a:latest").unwrap().id(), image.id());
        assert_eq!(
            store.resolve(&image.id().hex()[..12]).unwrap().id(),
            image.id()
        );
        store.untag("a").unwrap();
        assert!(matches!(store.resolve("a"), Err(Error::ImageNotFound(_))));
    }

    #[test]
    fn the_store_is_private_and_an_open_one_is_closed_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Store::open(&root).unwrap();
        let mode = |d: &str| fs::metadata(root.join(d)).unwrap().permissions().mode() & 0o7777;
        let layout = [
            "",
            "oci",
            "oci/blobs",
            "oci/blobs/sha256",
            "snapshots",
            "cache",
            "tmp",
        ];
        for d in layout {
            assert_eq!(mode(d), 0o700, "{d:?}");
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(root.join("cache-mounts")).unwrap();
        fs::set_permissions(root.join("cache-mounts"), fs::Permissions::from_mode(0o755)).unwrap();
        Store::open(&root).unwrap();
        assert_eq!((mode(""), mode("cache-mounts")), (0o700, 0o700));
    }

    #[test]
    fn a_corrupt_blob_is_named_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = store
            .put_image(&ImageConfig::scratch(), Vec::new())
            .unwrap();
        fs::write(store.blob_path(image.id()), b"{\"tampered\":1}").unwrap();
        let err = store.image(&image.descriptor).unwrap_err().to_string();
        assert!(
            err.contains(image.id().as_str()) && err.contains("corrupt"),
            "{err}"
        );
    }

    #[test]
    fn a_staged_blob_enters_the_store_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut writer = store.blob_writer().unwrap();
        writer.write_all(b"staged").unwrap();
        let staged = writer.stage(None).unwrap();
        assert!(!store.has_blob(staged.digest()));
        drop(staged);
        assert_eq!(fs::read_dir(store.tmp()).unwrap().count(), 0);
        let mut writer = store.blob_writer().unwrap();
        writer.write_all(b"staged").unwrap();
        let staged = writer.stage(None).unwrap();
        let digest = staged.digest().clone();
        staged.commit().unwrap();
        assert_eq!(store.read_blob(&digest).unwrap(), b"staged");
    }

    #[test]
    fn a_blob_with_the_wrong_digest_never_lands() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut writer = store.blob_writer().unwrap();
        writer.write_all(b"hello").unwrap();
        let wrong = Digest::of(b"other");
        assert!(matches!(
            writer.commit(Some(&wrong)),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&Digest::of(b"hello")));
        assert_eq!(
            fs::read_dir(store.tmp()).unwrap().count(),
            0,
            "staging is cleaned"
        );
    }

    #[test]
    fn gc_keeps_tagged_and_cached_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let orphan = store.write_blob(b"orphan").unwrap();
        let cached = store.write_blob(b"cached-layer").unwrap();
        let image = store
            .put_image(&ImageConfig::scratch(), Vec::new())
            .unwrap();
        store.tag("kept", &image.descriptor).unwrap();
        let record = CacheRecord {
            config: image.id().clone(),
            layers: vec![Descriptor::new(
                media_type::OCI_LAYER_TAR,
                cached.clone(),
                12,
            )],
        };
        store.cache_put(&Digest::of(b"key"), &record).unwrap();
        let report = store.gc(false).unwrap();
        assert_eq!(report.blobs, 1);
        assert!(!store.has_blob(&orphan));
        assert!(store.has_blob(&cached));
        assert!(store.has_blob(image.id()));
        let report = store.gc(true).unwrap();
        assert_eq!((report.blobs, report.cache_records), (1, 1));
        assert!(store.has_blob(image.manifest_digest()));
    }

    #[test]
    fn placing_a_directory_keeps_an_empty_one_already_there() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, second, target) = (
            dir.path().join("first"),
            dir.path().join("second"),
            dir.path().join("target"),
        );
        fs::create_dir(&first).unwrap();
        fs::create_dir(&second).unwrap();
        place_dir(&first, &target).unwrap();
        let placed = fs::metadata(&target).unwrap().ino();
        // The one a concurrent writer may hold open stays; the loser is left to its caller.
        place_dir(&second, &target).unwrap();
        assert_eq!(fs::metadata(&target).unwrap().ino(), placed);
        assert!(second.is_dir());
        assert!(place_dir(&dir.path().join("missing"), &dir.path().join("other")).is_err());
    }
}
