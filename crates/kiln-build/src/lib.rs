//! Stages, steps, cache keys and instruction semantics: a Dockerfile becomes an image.
#![deny(missing_docs)]
