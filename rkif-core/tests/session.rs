//! The engine end to end on a tiny model pretrained by the embedded recipe and the
//! `rkif-mini` benchmark: every method runs, runs are deterministic, a resumed run ends
//! where an uninterrupted one does, and the stepwise API behaves as documented.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rkif_core::config::{Method, ModelSource, RunConfig};
use rkif_core::model::embedded::{build, Recipe};
use rkif_core::report::{Event, RunDir};
use rkif_core::session::Session;

/// A tiny base model, built once per test binary.
fn tiny_model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("rkif-session-test-model-{}", std::process::id()));
        let recipe = Recipe {
            hidden_size: 32,
            intermediate_size: 64,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            steps: 20,
            batch: 8,
            documents: 200,
            warmup: 4,
            ..Recipe::default()
        };
        build(&recipe, &dir, |_, _| {}).expect("tiny model");
        dir
    })
}

fn config(method: Method) -> RunConfig {
    let mut c = RunConfig::preset("quick").expect("preset");
    c.method = method;
    c.model.source = ModelSource::Local {
        path: tiny_model().to_path_buf(),
    };
    c.model.lora.rank = 4;
    // Explicit, so that an RKIF_DATA_DIR in the environment does not change the test.
    c.data.dir = Some(rkif_core::session::default_benchmark_dir());
    c.data.max_train_per_task = Some(24);
    c.optim.micro_batch = 4;
    c.optim.grad_accum = 2;
    c.optim.epochs = 1;
    c.optim.warmup_steps = 1;
    c.kif.inner_steps = 1;
    c.kif.outer_steps = 1;
    c.kif.memory_batch = 4;
    c.kif.memory_fraction = 0.25;
    c.eval.max_examples_per_task = Some(4);
    c.eval.max_new_tokens = 2;
    c.eval.val_every = 2;
    c
}

fn run_to(dir: &Path, method: Method) -> rkif_core::Result<String> {
    let mut s = Session::with_run_dir(config(method), dir)?;
    s.run_all(|_, _| {})?;
    std::fs::read_to_string(dir.join("metrics.json")).map_err(|e| rkif_core::Error::io(dir, e))
}

#[test]
fn every_method_runs_and_fills_the_matrix() -> rkif_core::Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| rkif_core::Error::io("tempdir", e))?;
    for method in Method::ALL {
        let dir = tmp.path().join(method.name());
        run_to(&dir, method)?;
        let run = RunDir::open(&dir)?;
        let metrics = run.load_metrics()?;
        let m = metrics.matrix().map_err(rkif_core::Error::Data)?;
        let t = m.tasks().len();
        let last = t - 1;
        assert!(
            (0..t).all(|i| m.get(last, i).is_some()),
            "{}: last row",
            method.name()
        );
        if method != Method::Mtl {
            assert!(
                (0..t).all(|i| m.get(i, i).is_some()),
                "{}: diagonal",
                method.name()
            );
        }
        let events = run.load_events()?;
        let rounds = events
            .events
            .iter()
            .filter(|e| matches!(e, Event::Round(_)))
            .count();
        match method {
            Method::Rkif => assert!(rounds > 0, "rkif fused no round"),
            Method::RkifFuseOnce => {
                assert_eq!(rounds, t - 1, "one fusion per task after the first")
            }
            _ => assert_eq!(rounds, 0, "{} should not fuse", method.name()),
        }
        assert!(run
            .adapter_dir(last)
            .join("adapter_model.safetensors")
            .is_file());
        assert!(!run.importance_entries()?.is_empty());
    }
    Ok(())
}

#[test]
fn same_seed_same_metrics_and_resume_matches() -> rkif_core::Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| rkif_core::Error::io("tempdir", e))?;
    let a = run_to(&tmp.path().join("a"), Method::Rkif)?;
    let b = run_to(&tmp.path().join("b"), Method::Rkif)?;
    assert_eq!(a, b, "two runs with one seed differ");

    // Interrupted after two tasks and part of the third, then resumed.
    let dir = tmp.path().join("resumed");
    {
        let mut s = Session::with_run_dir(config(Method::Rkif), &dir)?;
        for _ in 0..2 {
            s.train_task()?;
            s.evaluate()?;
        }
        s.start_task()?;
        s.inner_steps(2)?;
        // Dropped here, as a crash would leave it.
    }
    let mut s = Session::resume(&dir)?;
    assert_eq!(s.next_task(), 2);
    s.run_all(|_, _| {})?;
    let resumed = std::fs::read_to_string(dir.join("metrics.json"))
        .map_err(|e| rkif_core::Error::io(&dir, e))?;
    assert_eq!(resumed, a, "resumed run ended elsewhere");
    Ok(())
}

#[test]
fn stepwise_api_reports_and_survives_errors() -> rkif_core::Result<()> {
    let mut s = Session::new(config(Method::Rkif))?;
    // Errors that must leave the session usable.
    assert!(s.inner_steps(1).is_err(), "no task started yet");
    let plan = s.start_task()?;
    assert_eq!(plan.task, 0);
    assert_eq!(plan.memory, 0);
    assert!(s.outer_steps(1).is_err(), "the first task has no memory");
    assert!(s.start_task().is_err(), "a task is already running");
    let inner = s.inner_steps(2)?;
    assert_eq!(inner.records.len(), 2);
    assert!(inner.importance.updates == 2 && !inner.importance.modules.is_empty());
    s.train_task()?;
    let row = s.evaluate()?;
    assert!(row.accuracy[0].is_some() && row.accuracy[1].is_none());

    let plan = s.start_task()?;
    assert!(plan.memory > 0, "the second task replays the first");
    s.inner_steps(1)?;
    let outer = s.outer_steps(1)?;
    assert_eq!(outer.phase, "outer");
    let fused = s.fuse()?;
    let total = fused.inner_only + fused.outer_only + fused.both + fused.neither;
    assert_eq!(total, fused.elements);
    // About a fifth of the elements pass each 0.8-quantile mask.
    let share = fused.inner_selected as f64 / fused.elements as f64;
    assert!(share > 0.1 && share <= 0.21, "inner share {share}");
    assert!(s.fuse().is_err(), "nothing to fuse right after a fusion");
    s.inner_steps(1)?;
    s.fuse()?;
    Ok(())
}
