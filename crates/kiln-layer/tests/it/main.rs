//! Integration tests of kiln-layer, in one test binary.
//!
//! Tests that need root (chown, device nodes, `trusted.*` xattrs, overlay
//! mounts) call [`common::require_root`], which fails them with a message
//! when not run as root: they never pass silently.

mod common;
mod overlay;
mod roundtrip;
mod security;
mod semantics;
