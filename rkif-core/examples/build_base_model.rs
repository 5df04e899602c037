//! Rebuild the embedded base model bit for bit: `cargo run --release -p rkif-core --example
//! build_base_model [OUT]` (default `data/base-model/`).

use std::path::PathBuf;
use std::time::Instant;

use rkif_core::model::embedded::{build, Recipe};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/base-model"));
    let recipe = Recipe::default();
    let start = Instant::now();
    let loss = build(&recipe, &out, |step, loss| {
        eprintln!(
            "step {step:5}  loss {loss:.4}  {:6.1}s",
            start.elapsed().as_secs_f64()
        )
    })?;
    println!(
        "wrote {} (final loss {loss:.4}, {:.1}s)",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
