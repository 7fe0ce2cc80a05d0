//! OCI layers: apply a layer into a rootfs safely, diff an overlay upper dir into a layer, compression.
#![deny(missing_docs)]
