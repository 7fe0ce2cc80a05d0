//! What a step may ask of the kernel: the seccomp filter, keyrings, and the caller's terminal.
