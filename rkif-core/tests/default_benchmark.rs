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

#[test]
fn opens_through_the_benchmark_loader_with_its_orders() -> rkif_core::Result<()> {
    use rkif_core::data::{Benchmark, Suite};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/rkif-mini");
    let bench = Benchmark::open(&root)?;
    assert_eq!(bench.tasks(Suite::Mini).len(), synthetic::TASKS.len());
    assert!(bench.tasks(Suite::Long).is_empty());
    for (i, (_, tasks)) in synthetic::ORDERS.iter().enumerate() {
        let order = bench.order(&format!("mini-{}", i + 1))?;
        assert_eq!(order.tasks, tasks.to_vec());
    }
    for task in synthetic::TASKS {
        let data = bench.load_task(task)?;
        assert_eq!(data.train.len(), synthetic::SPLIT_SIZES[0].1, "{task}");
        assert!(data.excluded.is_empty(), "{task}");
    }
    Ok(())
}

/// The embedded base model's recipe rebuilds the committed weights bit for bit (f32 on the
/// CPU; the same kernels are used whatever the thread count).
#[test]
#[ignore = "slow (rebuilds the base model, minutes in a debug build): scripts/check-base-model.sh runs it"]
fn base_model_recipe_reproduces_the_committed_files() -> rkif_core::Result<()> {
    use sha2::{Digest, Sha256};
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/base-model");
    let tmp = tempfile::tempdir().map_err(|e| rkif_core::Error::io("tempdir", e))?;
    rkif_core::model::embedded::build(
        &rkif_core::model::embedded::Recipe::default(),
        tmp.path(),
        |_, _| {},
    )?;
    for file in ["model.safetensors", "config.json", "tokenizer.json"] {
        let hash = |dir: &std::path::Path| -> rkif_core::Result<String> {
            let bytes = std::fs::read(dir.join(file))
                .map_err(|e| rkif_core::Error::io(dir.join(file), e))?;
            Ok(format!("{:x}", Sha256::digest(&bytes)))
        };
        assert_eq!(
            hash(tmp.path())?,
            hash(&committed)?,
            "{file} differs: rebuild with `rkif base-model --out data/base-model`"
        );
    }
    Ok(())
}
