//! Run one process in a rootfs: namespaces, overlay mounts, pivot_root, user, env, workdir.
#![deny(missing_docs)]
