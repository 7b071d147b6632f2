//! Loom model checks for restable live in `tests/`; see the README.
