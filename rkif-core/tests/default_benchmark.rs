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
