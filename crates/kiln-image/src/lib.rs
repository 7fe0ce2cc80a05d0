//! Digests, descriptors, image configs, manifests and the crash-safe local OCI store.
#![deny(missing_docs)]
