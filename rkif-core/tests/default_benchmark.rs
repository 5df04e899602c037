//! The committed default benchmark (`data/rkif-mini`) is exactly what its generator makes.

use std::path::PathBuf;

use rkif_core::data::synthetic;

#[test]
fn committed_files_match_the_generator() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/rkif-mini");
    let files = synthetic::generate(synthetic::DEFAULT_SEED);
    assert!(files.len() >= 14, "expected 12 split files and 2 configs");
    for (rel, expected) in files {
        let path = root.join(&rel);
        let actual =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            actual == expected,
            "{} differs from the generator: rerun `cargo run -p rkif-core --example make_rkif_mini`",
            path.display()
        );
    }
}
