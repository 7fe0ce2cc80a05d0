//! The threat model's probes: a hostile Dockerfile, context or base image tries to reach the
//! host. Each test is built from an attacker's minimal reproduction and asserts both that the
//! attack fails and that the legitimate use next to it still works.

mod sandbox;
mod store;
mod syscalls;
