//! `type=local`: the cache artifact of the registry backend in an OCI image layout directory,
//! as BuildKit's local cache is one: `oci-layout`, `index.json` naming the artifact's manifest
//! by its tag (the `org.opencontainers.image.ref.name` annotation; `latest` unless `tag=`),
//! and `blobs/sha256/`.
//!
//! An export is a read-merge-write of the tag under an flock on the directory, so writers at
//! once keep each other's records. The blobs go in first, each by rename, and `index.json`
//! last, by rename: a crash leaves the cache as it was, plus blobs that nothing names yet.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_image::{Descriptor, Digest, Index, Manifest, REF_NAME_ANNOTATION, Store};

use super::{Artifact, RemoteCache, Source};
use crate::Error;

/// The most kiln reads of a cache's manifest or `index.json`.
const MAX_JSON_SIZE: u64 = 16 << 20;

/// Writes the records of `keys` (those the store has complete) into the layout at `dir`
/// under `tag`, merged with what the tag held. Returns the number of records exported.
pub fn export(store: &Store, dir: &Path, tag: &str, keys: &[Digest]) -> Result<usize, Error> {
    let blobs_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs_dir).map_err(Error::io("create directory", &blobs_dir))?;
    let lock = File::open(dir).map_err(Error::io("open", dir))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io("flock", dir)(e.into()))?;
    let mut index = read_index(dir)?.unwrap_or_default();
    let mut artifact = Artifact::of(store, keys)?;
    let exported = artifact.config.records.len();
    if let Some(held) = held(dir, &index, tag, None)? {
        artifact.merge(held);
    }
    let layout = dir.join("oci-layout");
    if !layout.exists() {
        write_file(dir, &layout, |f| {
            f.write_all(br#"{"imageLayoutVersion":"1.0.0"}"#)
        })?;
    }
    for blob in &artifact.blobs {
        let path = blob_path(dir, &blob.digest);
        if !path.exists() {
            let from = store.blob_path(&blob.digest);
            let mut source = File::open(&from).map_err(Error::io("open", &from))?;
            write_file(dir, &path, |f| io::copy(&mut source, f).map(drop))?;
        }
    }
    let (config, config_desc, manifest) = artifact.manifest();
    let manifest = manifest.to_bytes();
    for bytes in [&config, &manifest] {
        let path = blob_path(dir, &Digest::of(bytes));
        write_file(dir, &path, |f| f.write_all(bytes))?;
    }
    let mut entry = Descriptor::new(
        kiln_image::media_type::OCI_MANIFEST,
        Digest::of(&manifest),
        manifest.len() as u64,
    );
    entry.annotations = Some([(REF_NAME_ANNOTATION.to_owned(), tag.to_owned())].into());
    entry.extra.insert(
        "artifactType".into(),
        serde_json::Value::String(config_desc.media_type),
    );
    index.manifests.retain(|d| ref_name(d) != Some(tag));
    index.manifests.push(entry);
    write_file(dir, &dir.join("index.json"), |f| {
        f.write_all(&index.to_bytes())
    })?;
    drop(lock);
    Ok(exported)
}

/// Reads the cache at `dir`, by `digest` (of its manifest) or else by `tag`: its records, not
/// yet their blobs. None when there is no such cache yet: no directory, no `index.json` or
/// nothing under the tag, as buildx warns and goes on then. Anything else that is not a kiln
/// cache is an error.
pub fn import(
    dir: &Path,
    tag: &str,
    digest: Option<&Digest>,
) -> Result<Option<RemoteCache>, Error> {
    let Some(index) = read_index(dir)? else {
        return Ok(None);
    };
    let Some(artifact) = held(dir, &index, tag, digest)? else {
        return Ok(None);
    };
    let mut cache = RemoteCache::new(Source::Local(dir.to_path_buf()));
    cache.add(artifact.config);
    Ok(Some(cache))
}

/// Copies blobs of the cache at `dir` into the store, checked against their digests.
pub(super) fn copy_blobs(store: &Store, dir: &Path, blobs: &[Descriptor]) -> Result<(), Error> {
    for blob in blobs {
        let path = blob_path(dir, &blob.digest);
        let mut source = File::open(&path).map_err(Error::io("open", &path))?;
        let mut writer = store.blob_writer()?;
        io::copy(&mut source, &mut writer).map_err(Error::io("copy", &path))?;
        writer.commit(Some(&blob.digest))?;
    }
    Ok(())
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations
        .as_ref()?
        .get(REF_NAME_ANNOTATION)
        .map(String::as_str)
}

fn bad(dir: &Path, why: impl Into<String>) -> Error {
    Error::BadCache {
        reference: dir.display().to_string(),
        why: why.into(),
    }
}

/// Reads a JSON file of the layout whole, refusing one larger than `limit`.
fn read_limited(dir: &Path, path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let size = fs::metadata(path).map_err(Error::io("stat", path))?.len();
    if size > limit {
        return Err(bad(
            dir,
            format!("{} is {size} bytes, more than kiln reads", path.display()),
        ));
    }
    fs::read(path).map_err(Error::io("read", path))
}

/// The layout's `index.json`; None when there is none (nor the directory).
fn read_index(dir: &Path) -> Result<Option<Index>, Error> {
    let path = dir.join("index.json");
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_limited(dir, &path, MAX_JSON_SIZE)?;
    let index = serde_json::from_slice(&bytes)
        .map_err(|e| bad(dir, format!("index.json is not an OCI index: {e}")))?;
    Ok(Some(index))
}

/// A blob of the layout read whole and checked against its digest.
fn read_blob(dir: &Path, digest: &Digest, limit: u64) -> Result<Vec<u8>, Error> {
    let bytes = read_limited(dir, &blob_path(dir, digest), limit)?;
    if Digest::of(&bytes) != *digest {
        return Err(bad(dir, format!("blob {digest} does not match its digest")));
    }
    Ok(bytes)
}

/// The artifact `index` names by `digest`, else by `tag`; None if it names none.
fn held(
    dir: &Path,
    index: &Index,
    tag: &str,
    digest: Option<&Digest>,
) -> Result<Option<Artifact>, Error> {
    let found = index.manifests.iter().find(|d| match digest {
        Some(digest) => d.digest == *digest,
        None => ref_name(d) == Some(tag),
    });
    let Some(entry) = found else {
        return Ok(None);
    };
    let name = dir.display().to_string();
    let bytes = read_blob(dir, &entry.digest, MAX_JSON_SIZE)?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(dir, format!("manifest {}: {e}", entry.digest)))?;
    Artifact::check_manifest(&name, &manifest)?;
    let config = read_blob(dir, &manifest.config.digest, manifest.config.size)?;
    Ok(Some(Artifact::parse(&name, manifest, &config)?))
}

/// Writes a file of the layout through a temp file beside it: fsync, rename, fsync the dir.
fn write_file(
    dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Error> {
    let parent = path.parent().unwrap_or(dir);
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempfile_in(parent)
        .map_err(Error::io("create temp file in", parent))?;
    write(tmp.as_file_mut()).map_err(Error::io("write", tmp.path()))?;
    tmp.as_file()
        .sync_all()
        .map_err(Error::io("fsync", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into", path)(e.error))?;
    if let Ok(parent) = File::open(parent) {
        // Durability of the rename; a failure here cannot tear anything.
        let _ = parent.sync_all();
    }
    Ok(())
}
