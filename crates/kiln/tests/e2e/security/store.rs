//! The store's integrity: layer ids checked on the way in, digests checked on the way out,
//! permissions that keep other users out, and `kiln check`.
