//! Realistic fake run folders written with the `report` API, for the viewer tests and its
//! benchmark (the training engine that writes real runs lands separately).
//!
//! Values are deterministic functions of the task, step and layer (no randomness needed):
//! accuracies fall a little on old tasks as new ones are learned, losses decay with a warm-up
//! learning-rate schedule, fusion shares drift between rounds, and importance grows with depth.

use std::path::{Path, PathBuf};

use rkif_core::eval::{AccuracyMatrix, TaskAccuracy};
use rkif_core::report::{
    downsample_mean, Event, FusionShares, ImportanceMap, ImportanceSnapshot, LoraFactor, Manifest,
    MetricsFile, ModuleImportance, RoundEvent, RoundTimings, RunDir, ScoreKind, ScoreSummary,
    StepEvent, TaskEnd, TaskStart, ValLoss, DEFAULT_MAP_SIDE,
};
use rkif_core::Result;

/// Test examples behind every accuracy.
pub const TEST_EXAMPLES: usize = 500;

/// The shape of a fake run.
#[derive(Debug, Clone)]
pub struct FakeRun {
    /// Run name (manifest `run_name`).
    pub name: String,
    /// Method name (manifest `method`).
    pub method: String,
    /// Task names in training order.
    pub tasks: Vec<String>,
    /// Recurrent-KIF rounds per task.
    pub rounds: usize,
    /// Inner steps per round (`Q`).
    pub steps_per_round: usize,
    /// Transformer blocks with LoRA on `q` and `v`.
    pub layers: usize,
    /// A snapshot every this many rounds (and one at each task's end).
    pub snapshot_every: usize,
    /// Shifts every accuracy, so two runs differ.
    pub skill: f64,
    /// Module kind names (the hostile run puts markup here).
    pub kinds: [String; 2],
    /// Config text values (benchmark folder, order).
    pub benchmark: String,
}

impl FakeRun {
    /// A Standard-CL-shaped run: 4 tasks, 6 rounds of 8 steps, 3 layers.
    pub fn standard(name: &str, method: &str, skill: f64) -> Self {
        Self {
            name: name.into(),
            method: method.into(),
            tasks: ["dbpedia", "amazon", "yahoo", "agnews"]
                .map(String::from)
                .to_vec(),
            rounds: 6,
            steps_per_round: 8,
            layers: 3,
            snapshot_every: 2,
            skill,
            kinds: ["q".into(), "v".into()],
            benchmark: "data/cl_benchmark".into(),
        }
    }

    /// `a[j][i]` of this run for `j >= i - 1`: learned well on its own task, forgotten a
    /// little per later task, and lower before training (the upper cell `a[i-1][i]`).
    pub fn accuracy(&self, after: usize, on: usize) -> f64 {
        let own = (0.80 + self.skill + 0.03 * ((on * 7 % 5) as f64) / 4.0).min(0.99);
        let value = if after < on {
            0.25 + 0.02 * on as f64
        } else {
            own - 0.035 * (after - on) as f64
        };
        // Whole test examples, as a real evaluation gives.
        (value * TEST_EXAMPLES as f64).round() / TEST_EXAMPLES as f64
    }

    /// The matrix: lower triangle, the cells just above the diagonal, and zero-shot.
    pub fn matrix(&self) -> Result<AccuracyMatrix> {
        let mut m = AccuracyMatrix::new(self.tasks.clone())?;
        let t = self.tasks.len();
        for after in 0..t {
            for on in 0..t.min(after + 2) {
                let correct = (self.accuracy(after, on) * TEST_EXAMPLES as f64).round() as usize;
                m.record(
                    after,
                    on,
                    TaskAccuracy {
                        correct,
                        total: TEST_EXAMPLES,
                    },
                )?;
            }
        }
        for on in 0..t {
            m.set_zero_shot(on, 0.2 + 0.01 * on as f64)?;
        }
        Ok(m)
    }

    /// Writes the run under `parent/<folder>`; returns the run folder.
    pub fn write(&self, parent: &Path, folder: &str) -> Result<PathBuf> {
        let run = RunDir::create(parent.join(folder))?;
        let mut manifest = Manifest::new(
            self.name.clone(),
            self.method.clone(),
            "cpu",
            8,
            "2026-11-30T12:00:00Z",
        );
        manifest.config = serde_json::json!({
            "method": self.method,
            "model": { "source": "rkif-mini-t5" },
            "data": { "dir": self.benchmark, "order": "standard-1" },
        });
        manifest.seeds.insert("init".into(), 42);
        manifest.seeds.insert("shuffle".into(), 7);
        manifest.record_timing("train", 61.5 * self.tasks.len() as f64);
        manifest.record_timing("eval", 9.25);
        run.save_manifest(&manifest)?;
        run.save_metrics(&MetricsFile::from_matrix(&self.matrix()?))?;
        self.write_events(&run)?;
        for task in 0..self.tasks.len() {
            for round in (1..=self.rounds).filter(|r| r % self.snapshot_every == 0) {
                run.save_importance(&self.snapshot(task, Some(round))?)?;
            }
            run.save_importance(&self.snapshot(task, None)?)?;
        }
        Ok(run.root().to_path_buf())
    }

    fn steps(&self) -> usize {
        self.rounds * self.steps_per_round
    }

    fn write_events(&self, run: &RunDir) -> Result<()> {
        let mut log = run.events_writer()?;
        let steps = self.steps();
        for (task, name) in self.tasks.iter().enumerate() {
            log.append(&Event::TaskStart(TaskStart {
                task,
                name: name.clone(),
                train_examples: 1000,
                memory_examples: 20 * task,
                planned_steps: steps,
            }))?;
            for step in 1..=steps {
                let progress = step as f64 / steps as f64;
                let lr =
                    3e-4 * (step as f64 / 5.0).min(1.0) * (1.0 - progress + 1.0 / steps as f64);
                log.append(&Event::Step(StepEvent {
                    task,
                    step,
                    loss: 2.5 * (-3.0 * progress).exp()
                        + 0.1
                        + 0.05 * ((step * 13 % 7) as f64 / 7.0),
                    lr,
                    grad_norm: 1.0 + progress,
                }))?;
                if task > 0 && step % self.steps_per_round == 0 {
                    log.append(&self.round(task, step))?;
                }
                if step % (2 * self.steps_per_round) == 0 {
                    log.append(&Event::ValLoss(ValLoss {
                        task,
                        step,
                        loss: 2.2 * (-2.5 * progress).exp() + 0.2,
                        examples: 25 * (task + 1),
                    }))?;
                }
            }
            log.append(&Event::TaskEnd(TaskEnd {
                task,
                steps,
                skipped_steps: 0,
                seconds: 61.5,
            }))?;
        }
        Ok(())
    }

    fn round(&self, task: usize, step: usize) -> Event {
        let round = step / self.steps_per_round;
        let drift = 0.05 * ((round + task) % 4) as f64;
        let (inner_only, outer_only) = (0.10 + drift / 2.0, 0.12 - drift / 2.0);
        let both = 0.2 - inner_only.max(outer_only) / 2.0;
        let neither = 1.0 - inner_only - outer_only - both;
        Event::Round(RoundEvent {
            task,
            round,
            step,
            elements: 10_000,
            inner_mask: 2000,
            outer_mask: 2000,
            shares: FusionShares {
                inner_only,
                outer_only,
                both,
                neither,
            },
            overlap: Some(both / (inner_only + outer_only + both)),
            timings: RoundTimings {
                inner_seconds: 0.4,
                outer_seconds: 0.2,
                fusion_seconds: 0.01,
            },
        })
    }

    /// Element scores of one LoRA matrix: larger with depth and task, a smooth pattern over
    /// rank and features.
    fn scores(
        &self,
        task: usize,
        layer: usize,
        kind: usize,
        shape: [usize; 2],
        outer: bool,
    ) -> Vec<f32> {
        let scale =
            (1.0 + layer as f32) * (1.0 + 0.2 * task as f32) * if outer { 0.6 } else { 1.0 };
        (0..shape[0] * shape[1])
            .map(|e| {
                let (r, c) = (e / shape[1], e % shape[1]);
                scale * (1e-4 * (1.0 + kind as f32) + 1e-5 * ((r * 3 + c * 5) % 17) as f32)
            })
            .collect()
    }

    /// The snapshot of `task` at `round` (`None`: end of task).
    pub fn snapshot(&self, task: usize, round: Option<usize>) -> Result<ImportanceSnapshot> {
        let step = round.map_or(self.steps(), |r| r * self.steps_per_round);
        let mut s = ImportanceSnapshot::new(task, round, step);
        s.inner_threshold = Some(3e-4);
        s.outer_threshold = (task > 0).then_some(2e-4);
        for layer in 0..self.layers {
            for (k, kind) in self.kinds.iter().enumerate() {
                for (factor, shape) in [(LoraFactor::A, [8, 64]), (LoraFactor::B, [64, 8])] {
                    let module = format!("encoder.block.{layer}.layer.0.SelfAttention.{kind}");
                    let inner = self.scores(task, layer, k, shape, false);
                    let outer = self.scores(task, layer, k, shape, true);
                    s.modules.push(ModuleImportance {
                        module: module.clone(),
                        layer,
                        kind: kind.clone(),
                        factor,
                        shape,
                        inner: Some(ScoreSummary::of(&module, &inner, s.inner_threshold)?),
                        outer: match task {
                            0 => None,
                            _ => Some(ScoreSummary::of(&module, &outer, s.outer_threshold)?),
                        },
                    });
                    if layer == 0 && factor == LoraFactor::A {
                        s.maps.push(ImportanceMap {
                            module,
                            factor,
                            score: ScoreKind::Inner,
                            grid: downsample_mean(kind, &inner, shape, [DEFAULT_MAP_SIDE; 2])?,
                        });
                    }
                }
            }
        }
        Ok(s)
    }
}
