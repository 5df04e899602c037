//! End-to-end tests of rkif live in `tests/tests/`; this library holds their shared helpers.

pub mod fake_run;
pub mod static_server;
