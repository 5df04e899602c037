//! Finding and reading the fixture folder.

use std::path::PathBuf;

/// The fixture folder: `RKIF_HF_FIXTURES`, or `../shared/fixtures/hf-reference` next to the
/// workspace.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("RKIF_HF_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/hf-reference")
        }
    }
}
