//! Real overlayfs mounts: upper dir → layer → apply in both modes.
