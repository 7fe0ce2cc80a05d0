//! End-to-end tests: the real `kiln` binary against the real judges (docker, skopeo, umoci,
//! docker-registry). One test binary, as ripgrep has it; every test gets a fresh directory.
//!
//! These tests need root and the tools that `scripts/test.sh` installs. A missing tool fails
//! the test with a message naming it; nothing is skipped in silence.

mod util;

mod analyze;
mod bake;
mod builds;
mod cache;
mod checks;
mod crash;
mod differential;
mod hostile;
mod init;
mod isolation;
mod link;
mod lint;
mod outputs;
mod plan;
mod platforms;
mod python_base;
mod registry;
mod remote_contexts;
mod rootless;
mod run_mounts;
mod sbom;
mod security;
mod semantics;
mod slim;
mod ssh_mounts;
mod store;
mod unprivileged;
