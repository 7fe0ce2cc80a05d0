//! Attestations stored as BuildKit stores them (docs/attestations/attestation-storage.md in
//! moby/buildkit): per platform image, one attestation manifest in the image index, after the
//! runnable manifests, with platform `unknown/unknown` and the annotations
//! `vnd.docker.reference.type=attestation-manifest` and `vnd.docker.reference.digest=<image
//! manifest digest>`. The manifest is an OCI artifact (`artifactType`, the empty config, a
//! `subject` descriptor of the image); each layer is one in-toto statement
//! (`application/vnd.in-toto+json`) annotated with its `in-toto.io/predicate-type`.
//!
//! Nothing runs an attestation: [`Store::platform_images`] leaves them out, so every command
//! that picks an image from an index picks a real one.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{
    Descriptor, Digest, Error, Image, Index, MAX_MANIFEST_SIZE, Manifest, Platform, Result, Store,
    is_index, media_type,
};

/// The index annotation that marks an attestation manifest.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Its value.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// The index annotation naming the image manifest an attestation is about.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The media type of an in-toto statement layer.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The layer annotation giving the statement's predicate type.
pub const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.docker.attestation.manifest.v1+json";
/// The OCI empty JSON descriptor's media type.
pub const EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";

/// Whether an index entry is an attestation manifest.
pub fn is_attestation(entry: &Descriptor) -> bool {
    entry.annotation(REFERENCE_TYPE) == Some(ATTESTATION_MANIFEST)
}

/// One attestation manifest of an index.
#[derive(Debug, Clone)]
pub struct Attestation {
    /// Its index entry (platform unknown/unknown, the reference annotations).
    pub entry: Descriptor,
    /// The manifest.
    pub manifest: Manifest,
}

impl Attestation {
    /// The image manifest it is about.
    pub fn subject(&self) -> Option<&str> {
        self.entry.annotation(REFERENCE_DIGEST)
    }

    /// The statement layers with a predicate type.
    pub fn statement(&self, predicate_type: &str) -> Option<&Descriptor> {
        self.manifest.layers.iter().find(|l| {
            l.media_type == IN_TOTO && l.annotation(PREDICATE_TYPE) == Some(predicate_type)
        })
    }
}

fn subject_descriptor(subject: &Descriptor) -> Value {
    serde_json::json!({
        "mediaType": subject.media_type,
        "digest": subject.digest.as_str(),
        "size": subject.size,
    })
}

impl Store {
    /// Stores an attestation manifest over in-toto statements `(predicate type, bytes)`
    /// about `subject` (an image manifest); returns its index entry.
    pub fn put_attestation(
        &self,
        subject: &Descriptor,
        statements: &[(String, Vec<u8>)],
    ) -> Result<Descriptor> {
        let empty = self.write_blob(b"{}")?;
        let mut config = Descriptor::new(EMPTY_JSON, empty, 2);
        config
            .extra
            .insert("data".into(), Value::String("e30=".into()));
        let mut layers = Vec::new();
        for (predicate_type, bytes) in statements {
            let digest = self.write_blob(bytes)?;
            let mut layer = Descriptor::new(IN_TOTO, digest, bytes.len() as u64);
            layer.annotations = Some(BTreeMap::from([(
                PREDICATE_TYPE.to_owned(),
                predicate_type.clone(),
            )]));
            layers.push(layer);
        }
        let mut manifest = Manifest::oci(config, layers);
        manifest.extra = Map::from_iter([
            (
                "artifactType".to_owned(),
                Value::String(ARTIFACT_TYPE.into()),
            ),
            ("subject".to_owned(), subject_descriptor(subject)),
        ]);
        let bytes = manifest.to_bytes();
        let digest = self.write_blob(&bytes)?;
        let mut entry = Descriptor::new(media_type::OCI_MANIFEST, digest, bytes.len() as u64);
        entry.platform = Some(Platform::new("unknown", "unknown", None));
        entry.annotations = Some(BTreeMap::from([
            (REFERENCE_TYPE.to_owned(), ATTESTATION_MANIFEST.to_owned()),
            (REFERENCE_DIGEST.to_owned(), subject.digest.to_string()),
        ]));
        Ok(entry)
    }

    /// Stores an index over images of several platforms and, after them, their attestation
    /// manifests (entries made by [`Store::put_attestation`]), with the index's own
    /// annotations. Each image's entry is its descriptor, so annotations it carries
    /// (`--annotation manifest-descriptor:K=V`) stay on the entry.
    pub fn put_attested_index(
        &self,
        images: &[(Platform, Image)],
        attestations: &[Descriptor],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor> {
        let mut index = Index {
            annotations: (!annotations.is_empty()).then(|| annotations.clone()),
            ..Index::default()
        };
        for (platform, image) in images {
            let mut entry = image.descriptor.clone();
            entry.platform = Some(platform.clone());
            index.manifests.push(entry);
        }
        index.manifests.extend(attestations.iter().cloned());
        let bytes = index.to_bytes();
        let digest = self.write_blob(&bytes)?;
        Ok(Descriptor::new(
            media_type::OCI_INDEX,
            digest,
            bytes.len() as u64,
        ))
    }

    /// The attestation manifests of an index (none for a single image).
    pub fn attestations(&self, descriptor: &Descriptor) -> Result<Vec<Attestation>> {
        if !is_index(&descriptor.media_type) {
            return Ok(Vec::new());
        }
        let index: Index = self.read_json(&descriptor.digest, MAX_MANIFEST_SIZE, "index")?;
        index
            .manifests
            .into_iter()
            .filter(is_attestation)
            .map(|entry| {
                let manifest: Manifest =
                    self.read_json(&entry.digest, MAX_MANIFEST_SIZE, "attestation manifest")?;
                Ok(Attestation { entry, manifest })
            })
            .collect()
    }

    /// The same attestation about another manifest of the same image (the one a registry
    /// got when push compressed the layers): each statement's subject digest and the
    /// manifest's subject are rewritten, and the new blobs stored.
    pub fn rebind_attestation(
        &self,
        attestation: &Attestation,
        old: &Digest,
        new: &Descriptor,
    ) -> Result<Attestation> {
        let mut layers = Vec::new();
        for layer in &attestation.manifest.layers {
            let bytes = self.read_blob(&layer.digest)?;
            let mut statement: Value =
                serde_json::from_slice(&bytes).map_err(|e| Error::BadJson {
                    what: format!("in-toto statement {}", layer.digest),
                    source: e,
                })?;
            if let Some(subjects) = statement["subject"].as_array_mut() {
                for s in subjects {
                    if s["digest"]["sha256"].as_str() == Some(old.hex()) {
                        s["digest"]["sha256"] = Value::String(new.digest.hex().to_owned());
                    }
                }
            }
            let bytes = serde_json::to_vec(&statement).unwrap_or_default();
            let digest = self.write_blob(&bytes)?;
            let mut layer = layer.clone();
            layer.digest = digest;
            layer.size = bytes.len() as u64;
            layers.push(layer);
        }
        let mut manifest = attestation.manifest.clone();
        manifest.layers = layers;
        manifest
            .extra
            .insert("subject".to_owned(), subject_descriptor(new));
        let bytes = manifest.to_bytes();
        let digest = self.write_blob(&bytes)?;
        let mut entry = attestation.entry.clone();
        entry.digest = digest;
        entry.size = bytes.len() as u64;
        entry
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REFERENCE_DIGEST.to_owned(), new.digest.to_string());
        Ok(Attestation { entry, manifest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageConfig;

    #[test]
    fn attestations_are_kept_found_rebound_and_never_picked_as_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = store
            .put_image(&ImageConfig::scratch(), Vec::new())
            .unwrap();
        let statement = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"_","digest":{"sha256":"HEX"}}],"predicateType":"https://spdx.dev/Document","predicate":{}}"#;
        let statement = String::from_utf8_lossy(statement)
            .replace("HEX", image.manifest_digest().hex())
            .into_bytes();
        let entry = store
            .put_attestation(
                &image.descriptor,
                &[("https://spdx.dev/Document".into(), statement)],
            )
            .unwrap();
        let host = Platform::host();
        let index = store
            .put_attested_index(
                &[(host.clone(), image.clone())],
                std::slice::from_ref(&entry),
                &BTreeMap::new(),
            )
            .unwrap();
        store.tag("a", &index).unwrap();

        // The image is what every pick finds; the attestation is found as one.
        let images = store.platform_images(&index).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(
            store.resolve("a").unwrap().manifest_digest(),
            image.manifest_digest()
        );
        let found = store.attestations(&index).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].subject(), Some(image.manifest_digest().as_str()));
        assert_eq!(
            found[0].manifest.extra["subject"]["digest"],
            image.manifest_digest().as_str()
        );
        assert!(found[0].statement("https://spdx.dev/Document").is_some());
        assert_eq!(
            found[0].entry.platform,
            Some(Platform::new("unknown", "unknown", None))
        );

        // gc keeps its blobs and check finds nothing wrong with them.
        store.gc(true).unwrap();
        let layer = &found[0].manifest.layers[0].digest;
        assert!(store.has_blob(&found[0].entry.digest) && store.has_blob(layer));
        let report = store.check(false).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);

        // Rebound to another manifest: the subject and the statement follow.
        let other = Descriptor::new(media_type::OCI_MANIFEST, Digest::of(b"pushed"), 7);
        let rebound = store
            .rebind_attestation(&found[0], image.manifest_digest(), &other)
            .unwrap();
        assert_eq!(rebound.subject(), Some(other.digest.as_str()));
        let bytes = store.read_blob(&rebound.manifest.layers[0].digest).unwrap();
        let statement: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            other.digest.hex()
        );
    }
}
