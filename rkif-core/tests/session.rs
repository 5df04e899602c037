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

/// The adapter's current values, flattened, for before/after comparisons.
fn adapter_values(s: &Session) -> Vec<Vec<f32>> {
    s.learner()
        .params()
        .iter()
        .map(|p| {
            p.var
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("adapter values")
        })
        .collect()
}

#[test]
fn non_finite_values_are_errors_naming_the_tensor() -> rkif_core::Result<()> {
    use rkif_core::session::Fault;
    let mut s = Session::new(config(Method::Rkif))?;
    s.start_task()?;
    s.inner_steps(1)?;
    let lora_b = s.learner().params()[1].name.clone();
    let lora_a = s.learner().params()[2].name.clone();
    let steps_before = s.learner().optimizer().steps_taken();
    let values_before = adapter_values(&s);
    for (fault, expect) in [
        (Fault::Gradient(lora_b.clone()), lora_b.as_str()),
        (Fault::Loss, "`loss`"),
        (Fault::Score(lora_a.clone()), lora_a.as_str()),
    ] {
        s.inject_fault(fault.clone(), 1);
        let err = s
            .inner_steps(1)
            .expect_err("a NaN step must fail")
            .to_string();
        assert!(err.contains(expect), "{fault:?}: {err}");
        if matches!(fault, Fault::Score(_)) {
            assert!(err.contains("inner importance score"), "{err}");
        }
        // Nothing of the failed step remains.
        assert_eq!(
            adapter_values(&s),
            values_before,
            "{fault:?} changed the adapter"
        );
        assert_eq!(s.learner().optimizer().steps_taken(), steps_before);
        assert_eq!(s.current().map(|t| (t.step, t.skipped)), Some((1, 0)));
        assert_eq!(s.current().map(|t| t.inner.updates()), Some(1));
    }
    // Still usable.
    assert_eq!(s.inner_steps(1)?.records.len(), 1);
    s.train_task()?;
    s.evaluate()?;

    // A fusion that would write NaN is refused and the adapter stays as it was.
    s.start_task()?;
    s.inner_steps(1)?;
    s.outer_steps(1)?;
    s.inject_fault(Fault::Fusion(lora_a.clone()), 1);
    let values_before = adapter_values(&s);
    let err = s.fuse().expect_err("a NaN fusion must fail").to_string();
    assert!(
        err.contains(&lora_a) && err.contains("fused value"),
        "{err}"
    );
    assert_eq!(adapter_values(&s), values_before);
    assert_eq!(s.current().map(|t| t.round), Some(0));
    s.fuse()?;
    assert_eq!(s.current().map(|t| t.round), Some(1));
    Ok(())
}

#[test]
fn skip_policy_counts_skipped_steps_and_goes_on() -> rkif_core::Result<()> {
    use rkif_core::config::NonFinitePolicy;
    use rkif_core::session::Fault;
    let tmp = tempfile::tempdir().map_err(|e| rkif_core::Error::io("tempdir", e))?;
    let mut cfg = config(Method::Rkif);
    cfg.optim.nonfinite = NonFinitePolicy::Skip;
    cfg.optim.max_skipped_steps = 2;
    let dir = tmp.path().join("skip");
    let mut s = Session::with_run_dir(cfg, &dir)?;
    let name = s.learner().params()[0].name.clone();
    s.start_task()?;
    s.inject_fault(Fault::Gradient(name.clone()), 2);
    let report = s.inner_steps(3)?;
    assert_eq!(report.records.len(), 3, "skipped steps are not among the n");
    assert_eq!(s.current().map(|t| (t.step, t.skipped)), Some((3, 2)));
    assert_eq!(s.learner().optimizer().steps_taken(), 3);
    let summary = s.train_task()?;
    assert_eq!(summary.skipped_steps, 2);
    s.evaluate()?;
    let events = RunDir::open(&dir)?.load_events()?;
    let skipped: Vec<_> = events
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SkippedStep(k) => Some(k),
            _ => None,
        })
        .collect();
    assert_eq!(skipped.len(), 2);
    assert!(skipped.iter().all(|k| k.reason.contains(&name)));
    assert_eq!(
        (skipped[0].step, skipped[1].step),
        (1, 1),
        "both attempts were the first step"
    );
    assert!(events
        .events
        .iter()
        .any(|e| matches!(e, Event::TaskEnd(t) if t.task == 0 && t.skipped_steps == 2)));

    // The cap is per task: three more in the next task, one over the cap, is an error.
    s.start_task()?;
    s.inject_fault(Fault::Loss, 3);
    let err = s.inner_steps(5).expect_err("over the cap").to_string();
    assert!(err.contains("optim.max_skipped_steps = 2"), "{err}");
    Ok(())
}

/// `(phase, task, step, loss)` of every inner and outer step event of a run.
fn step_losses(dir: &Path) -> rkif_core::Result<Vec<(&'static str, usize, usize, f64)>> {
    Ok(RunDir::open(dir)?
        .load_events()?
        .events
        .into_iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some(("inner", s.task, s.step, s.loss)),
            Event::OuterStep(s) => Some(("outer", s.task, s.outer_step, s.loss)),
            _ => None,
        })
        .collect())
}

/// The mid-task checkpoint `checkpoint/state.json` names, if any.
fn mid_task_checkpoint(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("checkpoint/state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mid_task"].as_str().map(String::from)
}

#[test]
fn stop_mid_task_then_resume_gives_the_same_metrics() -> rkif_core::Result<()> {
    use rkif_core::session::RunOutcome;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().map_err(|e| rkif_core::Error::io("tempdir", e))?;
    for method in Method::ALL {
        let mut cfg = config(method);
        // Rounds of two inner steps, so a stop asked mid-round waits for the round's end.
        cfg.kif.inner_steps = 2;
        cfg.data.max_train_per_task = Some(40);
        let whole = tmp.path().join(format!("{}-whole", method.name()));
        let mut s = Session::with_run_dir(cfg.clone(), &whole)?;
        assert_eq!(s.run_all(|_, _| {})?, RunOutcome::Finished);
        let expected = std::fs::read_to_string(whole.join("metrics.json"))
            .map_err(|e| rkif_core::Error::io(&whole, e))?;

        // Ask for a stop after the first inner step of the last task (MTL: of its one phase).
        let dir = tmp.path().join(method.name());
        let mut s = Session::with_run_dir(cfg, &dir)?;
        let last = s.tasks().len() - 1;
        let stop = Arc::new(AtomicBool::new(false));
        s.set_stop_flag(stop.clone());
        let hook_stop = stop.clone();
        s.set_step_hook(Box::new(move |task, step, _, _| {
            if task == last && step == 1 {
                hook_stop.store(true, Ordering::SeqCst);
            }
        }));
        let outcome = s.run_all(|_, _| {})?;
        let stopped_at = match outcome {
            RunOutcome::Interrupted { task, step, .. } => (task, step),
            other => panic!("{}: expected an interruption, got {other:?}", method.name()),
        };
        let rounds = matches!(
            method,
            Method::Rkif | Method::RkifNoFusion | Method::RkifFuseOnce
        );
        // With rounds the stop waits for the round's end; otherwise it is the next step.
        let expected_step = if rounds { 2 } else { 1 };
        assert_eq!(stopped_at, (last, expected_step), "{}", method.name());
        assert!(
            mid_task_checkpoint(&dir).is_some(),
            "{}: no mid-task checkpoint",
            method.name()
        );
        drop(s);

        let mut s = Session::resume(&dir)?;
        assert_eq!(
            s.current().map(|t| (t.index, t.step)),
            Some((last, expected_step)),
            "{}: resumed elsewhere",
            method.name()
        );
        assert_eq!(s.run_all(|_, _| {})?, RunOutcome::Finished);
        let resumed = std::fs::read_to_string(dir.join("metrics.json"))
            .map_err(|e| rkif_core::Error::io(&dir, e))?;
        assert_eq!(
            resumed,
            expected,
            "{}: resumed run ended elsewhere",
            method.name()
        );
        assert_eq!(mid_task_checkpoint(&dir), None, "finished task clears it");
        // The event log holds every inner and outer step once, with the same losses.
        assert_eq!(
            step_losses(&dir)?,
            step_losses(&whole)?,
            "{}: step events",
            method.name()
        );
        if rounds {
            assert!(step_losses(&dir)?.iter().any(|(kind, ..)| *kind == "outer"));
        }
    }
    Ok(())
}
