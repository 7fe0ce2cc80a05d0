//! Named build contexts (`--build-context NAME=…`), which `FROM NAME`, `COPY --from=NAME` and
//! `RUN --mount=from=NAME` read instead of a stage or an image of that name, as BuildKit's
//! Dockerfile frontend has them:
//!
//! - a directory, whose files `COPY --from` and bind mounts read (filtered by its own
//!   `.dockerignore`);
//! - `docker-image://REF`, an image resolved as `FROM REF` would be;
//! - `oci-layout://PATH[:TAG][@DIGEST]`, an image of an OCI layout directory, loaded into the
//!   store (and checked, blob by blob) before the build.
//!
//! A name is matched as BuildKit matches it: the `FROM`/`--from` name in its familiar form
//! without `:latest` (`alpine`, `alpine:latest` and `docker.io/library/alpine` all look up
//! `alpine`), against the context names exactly as given.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_image::{Descriptor, Digest, Image, Index, MAX_MANIFEST_SIZE, Reference, Store};

use crate::Error;
use crate::context::Context;

/// What a named context holds.
#[derive(Debug, Clone)]
pub enum NamedContext {
    /// A directory of files.
    Dir(Context),
    /// `docker-image://REF`: the image REF, from the store or its registry.
    Image(String),
    /// `oci-layout://…`: an image loaded from a layout.
    Loaded(Box<Image>),
}

/// Whether a named context holds files or an image (what the plan needs to know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedKind {
    /// Files: read by `COPY --from` and bind mounts, not a base.
    Dir,
    /// An image: a base, or files to copy.
    Image,
    /// `docker-image://scratch`: the empty base, as `FROM scratch`.
    Scratch,
}

/// The named contexts of a build, by name.
#[derive(Debug, Clone, Default)]
pub struct NamedContexts {
    contexts: BTreeMap<String, NamedContext>,
}

/// The name a `FROM`/`--from` name looks up (see the module documentation).
pub fn context_key(name: &str) -> String {
    match name.parse::<Reference>() {
        Ok(r) => {
            let name = r.store_name();
            name.strip_suffix(":latest").unwrap_or(&name).to_owned()
        }
        Err(_) => name.to_lowercase(),
    }
}

impl NamedContexts {
    /// Adds a context; a name given twice is an error.
    pub fn insert(&mut self, name: &str, context: NamedContext) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::BadInput(
                "--build-context: the name is empty (NAME=VALUE)".into(),
            ));
        }
        if self.contexts.contains_key(name) {
            return Err(Error::BadInput(format!(
                "--build-context {name}: given twice"
            )));
        }
        self.contexts.insert(name.to_owned(), context);
        Ok(())
    }

    /// The context a `FROM`/`--from` name refers to, if any.
    pub fn get(&self, name: &str) -> Option<&NamedContext> {
        self.contexts.get(&context_key(name))
    }

    /// Its kind, for the plan.
    pub fn kind(&self, name: &str) -> Option<NamedKind> {
        self.get(name).map(|c| match c {
            NamedContext::Dir(_) => NamedKind::Dir,
            NamedContext::Image(target) if target == "scratch" => NamedKind::Scratch,
            NamedContext::Image(_) | NamedContext::Loaded(_) => NamedKind::Image,
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }
}

/// An `oci-layout://` reference, parsed as buildx parses it: the path, then `:TAG` and
/// `@DIGEST` at the end; `latest` when neither is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayoutRef {
    /// The layout directory.
    pub path: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name` or the containerd image name).
    pub tag: Option<String>,
    /// The manifest digest.
    pub digest: Option<Digest>,
}

impl OciLayoutRef {
    /// Parses `oci-layout://PATH[:TAG][@DIGEST]`; `None` for another scheme.
    pub fn parse(text: &str) -> Option<Result<OciLayoutRef, Error>> {
        let mut rest = text.strip_prefix("oci-layout://")?;
        let mut digest = None;
        if let Some((path, after)) = rest.rsplit_once('@')
            && after.starts_with("sha256:")
        {
            match after.parse::<Digest>() {
                Ok(d) => digest = Some(d),
                Err(e) => {
                    return Some(Err(Error::BadInput(format!("--build-context {text}: {e}"))));
                }
            }
            rest = path;
        }
        let is_tag = |t: &str| {
            !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        let mut tag = None;
        if let Some((path, after)) = rest.rsplit_once(':')
            && is_tag(after)
        {
            tag = Some(after.to_owned());
            rest = path;
        }
        if tag.is_none() && digest.is_none() {
            tag = Some("latest".to_owned());
        }
        if rest.is_empty() {
            return Some(Err(Error::BadInput(format!(
                "--build-context {text}: no layout directory"
            ))));
        }
        Some(Ok(OciLayoutRef {
            path: PathBuf::from(rest),
            tag,
            digest,
        }))
    }
}

/// Loads the image an `oci-layout://` reference names into the store, through the archive
/// loader (every blob checked against its digest, every layer against its diff id), and
/// returns it. Nothing is tagged.
pub fn load_oci_layout(store: &Store, layout: &OciLayoutRef) -> Result<Image, Error> {
    let dir = &layout.path;
    let shown = dir.display();
    let index_path = dir.join("index.json");
    let bytes = read_capped(&index_path, MAX_MANIFEST_SIZE)?;
    let index: Index = serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadInput(format!("{shown}: index.json is not an OCI index: {e}")))?;
    let chosen = choose(&index, layout).ok_or_else(|| {
        let wanted = match (&layout.tag, &layout.digest) {
            (_, Some(d)) => format!("manifest {d}"),
            (Some(t), None) => format!("tag {t:?}"),
            (None, None) => "an image".to_owned(),
        };
        Error::BadInput(format!(
            "oci-layout://{shown}: the layout has no {wanted} (its index lists {} manifests)",
            index.manifests.len()
        ))
    })?;
    // The one manifest, without the names that would tag it in the store.
    let mut entry = Descriptor::new(&chosen.media_type, chosen.digest.clone(), chosen.size);
    entry.platform = chosen.platform.clone();
    let single = Index {
        manifests: vec![entry],
        ..index.clone()
    };
    let staged = store.staging_dir("oci-layout")?;
    let tar_path = staged.path().join("layout.tar");
    {
        let file =
            std::fs::File::create(&tar_path).map_err(Error::io("create", tar_path.clone()))?;
        let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, file));
        let blobs = dir.join("blobs/sha256");
        let entries = std::fs::read_dir(&blobs).map_err(Error::io("read", blobs.clone()))?;
        for entry in entries {
            let entry = entry.map_err(Error::io("read", blobs.clone()))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str() else { continue };
            tar.append_path_with_name(entry.path(), format!("blobs/sha256/{hex}"))
                .map_err(Error::archive("write the layout as an archive"))?;
        }
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append(&mut tar, "index.json", &single.to_bytes())?;
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(Error::archive("write the layout as an archive"))?;
    }
    let file = std::fs::File::open(&tar_path).map_err(Error::io("open", tar_path.clone()))?;
    let loaded = crate::archive::load(store, file)?;
    loaded
        .images
        .into_iter()
        .next()
        .map(|(image, _)| image)
        .ok_or_else(|| Error::BadInput(format!("oci-layout://{shown}: no image was loaded")))
}

/// buildx's choice: the digest if given; else the first manifest whose containerd image name,
/// then whose ref name, is the tag; else the only manifest of the index.
fn choose<'i>(index: &'i Index, layout: &OciLayoutRef) -> Option<&'i Descriptor> {
    if let Some(digest) = &layout.digest {
        return index.manifests.iter().find(|d| &d.digest == digest);
    }
    let tag = layout.tag.as_deref()?;
    index
        .manifests
        .iter()
        .find(|d| d.annotation("io.containerd.image.name") == Some(tag))
        .or_else(|| {
            index
                .manifests
                .iter()
                .find(|d| d.annotation(kiln_image::REF_NAME_ANNOTATION) == Some(tag))
        })
        .or_else(|| (index.manifests.len() == 1).then(|| &index.manifests[0]))
}

fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(Error::io("open", path.to_path_buf()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io("read", path.to_path_buf()))?;
    if bytes.len() as u64 > limit {
        return Err(Error::BadInput(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, bytes)
        .map_err(Error::archive("write the layout as an archive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_as_buildkit_matches_them() {
        assert_eq!(context_key("alpine"), "alpine");
        assert_eq!(context_key("alpine:latest"), "alpine");
        assert_eq!(context_key("docker.io/library/alpine"), "alpine");
        assert_eq!(context_key("alpine:3"), "alpine:3");
        assert_eq!(context_key("Build"), "build");
        let mut contexts = NamedContexts::default();
        contexts
            .insert("alpine", NamedContext::Image("busybox".into()))
            .unwrap();
        assert!(contexts.get("docker.io/library/alpine:latest").is_some());
        assert!(contexts.get("alpine:3").is_none());
        assert!(
            contexts
                .insert("alpine", NamedContext::Image("x".into()))
                .is_err()
        );
        // As in BuildKit, a context name is not normalized: this one is never looked up.
        contexts
            .insert("alpine:latest", NamedContext::Image("x".into()))
            .unwrap();
        assert!(matches!(contexts.get("alpine"), Some(NamedContext::Image(i)) if i == "busybox"));
    }

    #[test]
    fn layout_references_parse_as_buildx_parses_them() {
        let p = |t: &str| OciLayoutRef::parse(t).unwrap().unwrap();
        assert_eq!(p("oci-layout:///a/b").tag.as_deref(), Some("latest"));
        let tagged = p("oci-layout:///a/b:v1");
        assert_eq!(
            (tagged.path.to_str(), tagged.tag.as_deref()),
            (Some("/a/b"), Some("v1"))
        );
        let hex = "a".repeat(64);
        let both = p(&format!("oci-layout://rel/dir:v2@sha256:{hex}"));
        assert_eq!(both.path, PathBuf::from("rel/dir"));
        assert_eq!(both.tag.as_deref(), Some("v2"));
        assert_eq!(both.digest.unwrap().hex(), hex);
        let digest_only = p(&format!("oci-layout://d@sha256:{hex}"));
        assert_eq!(digest_only.tag, None);
        assert!(OciLayoutRef::parse("docker-image://x").is_none());
        assert!(
            OciLayoutRef::parse("oci-layout://@sha256:bad")
                .unwrap()
                .is_err()
        );
    }
}
