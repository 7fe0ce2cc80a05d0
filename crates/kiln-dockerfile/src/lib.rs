//! Dockerfile parser, directives, heredocs and shell-word expansion, conformant with BuildKit. No I/O.
#![deny(missing_docs)]
