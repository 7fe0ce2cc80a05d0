//! diff a tree → apply it → the same tree; determinism.
