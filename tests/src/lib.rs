//! End-to-end tests of rkif live in `tests/tests/`; this library holds their shared helpers.
