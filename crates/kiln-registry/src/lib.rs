//! OCI distribution client: pull and push with mirrors, auth, retries and digest checks.
#![deny(missing_docs)]
