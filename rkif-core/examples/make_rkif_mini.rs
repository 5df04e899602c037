//! Regenerate the committed default benchmark: `cargo run -p rkif-core --example make_rkif_mini`
//! (writes `data/rkif-mini/`; pass another folder as the first argument to write elsewhere).

use std::path::PathBuf;

use rkif_core::data::synthetic;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/rkif-mini"));
    for (rel, text) in synthetic::generate(synthetic::DEFAULT_SEED) {
        let path = out.join(&rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text)?;
    }
    println!("wrote {} (seed {})", out.display(), synthetic::DEFAULT_SEED);
    Ok(())
}
