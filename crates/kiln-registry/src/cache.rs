//! The build cache in a registry (filled in below).
