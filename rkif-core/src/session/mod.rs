//! The stepwise API that notebooks and the command line drive.
//!
//! A [`Session`] holds a model with its LoRA adapter, the benchmark tasks in training order,
//! the accuracy matrix so far and, while a task trains, that task's state (its optimiser,
//! data position, importance trackers and round anchor). Each call does one meaningful
//! thing and returns a value worth displaying:
//!
//! ```no_run
//! # fn main() -> rkif_core::Result<()> {
//! use rkif_core::config::RunConfig;
//! use rkif_core::session::Session;
//! let mut s = Session::new(RunConfig::preset("quick")?)?;
//! let task = s.start_task()?;               // the next task: data, memory, optimiser
//! let inner = s.inner_steps(8)?;            // new-task steps + inner importance
//! let outer = s.outer_steps(4)?;            // memory steps + outer importance
//! let fused = s.fuse()?;                    // masks, coefficients, statistics
//! let summary = s.train_task()?;            // the configured method to the task's end
//! let row = s.evaluate()?;                  // one row of the accuracy matrix
//! # Ok(()) }
//! ```
//!
//! An error leaves the session usable: nothing is committed to the adapter or the matrix
//! unless the whole step succeeded.

mod checkpoint;
mod evaluate;
mod guard;
mod run;
mod state;
mod values;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};

use crate::config::{Method, RunConfig, Selection};
use crate::data::{validation_set, Benchmark, Example, FileHash, TaskData};
use crate::eval::{score_predictions, AccuracyMatrix};
use crate::kif::{
    fuse, global_mask, FusionTensor, ImportanceConfig, ImportanceTracker, Sensitivity,
};
use crate::model::backbone::{Lengths, Model};
use crate::model::SharedRng;
use crate::report::{
    EvalEvent, Event, OuterStepEvent, RoundEvent, RoundTimings, StepEvent, StepPhase, TaskEnd,
    TaskStart,
};
use crate::train::Learner;
use crate::{Error, Result};

pub use evaluate::{evaluate_adapter, run_config, run_of_adapter, AdapterEvaluation, TaskScore};
#[doc(hidden)]
pub use guard::Fault;
#[cfg(feature = "evcxr")]
pub(crate) use run::importance_snapshot;
pub use run::RunWriter;
pub use state::TaskState;
pub use values::{
    EvalRow, FusionReport, ImportanceView, MachineryTimings, ModuleScore, RunOutcome, StepsReport,
    TaskPlan, TaskSummary,
};

/// Seeds of every generator a run uses, derived from the root seed and recorded in the
/// manifest. Kept below 2^53 so JavaScript readers of the manifest see them exactly.
pub fn derive_seeds(root: u64) -> BTreeMap<String, u64> {
    let names = [
        "lora_init",
        "dropout",
        "data",
        "shuffle",
        "memory_batches",
        "eval_subset",
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mixed = root
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add((i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
            (n.to_string(), mixed >> 11)
        })
        .collect()
}

/// A continual-learning run, one step at a time.
pub struct Session {
    config: RunConfig,
    learner: Learner,
    tasks: Vec<TaskData>,
    data_files: Vec<FileHash>,
    matrix: AccuracyMatrix,
    /// Index of the next task to start (tasks before it are trained and evaluated).
    next_task: usize,
    current: Option<TaskState>,
    seeds: BTreeMap<String, u64>,
    /// TaSL's accumulated skill-unit scores (one per LoRA matrix).
    tasl_scores: Option<Vec<f64>>,
    run: Option<RunWriter>,
    benchmark_name: String,
    step_hook: Option<StepHook>,
    /// A fault to inject (tests of the numerical guards).
    fault: Option<guard::PendingFault>,
    /// Set (by a Ctrl-C handler, or a notebook) to stop at the next safe point.
    stop: Option<Arc<AtomicBool>>,
    timings: MachineryTimings,
}

/// `(delta_in, delta_out)` of one LoRA tensor in a round.
type RoundDelta = (candle_core::Tensor, candle_core::Tensor);

/// Called after every inner step with `(task, step, planned steps, loss)`.
pub type StepHook = Box<dyn FnMut(usize, usize, usize, f64) + Send>;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("method", &self.config.method)
            .field("tasks", &self.task_names())
            .field("next_task", &self.next_task)
            .finish()
    }
}

impl Session {
    /// Load the model and the benchmark tasks of `config`; nothing is written to disk.
    pub fn new(mut config: RunConfig) -> Result<Session> {
        config.validate()?;
        let seeds = derive_seeds(config.seed);
        let (bench, order_name) = open_benchmark(&config)?;
        // The saved config is the derived one: the folder and order actually used.
        config.data.dir = Some(bench.root().to_path_buf());
        if config.data.tasks.is_none() {
            config.data.order = Some(order_name.clone());
        }
        let task_names = task_order(&bench, &config)?;
        let mut tasks = Vec::with_capacity(task_names.len());
        for name in &task_names {
            let mut t = bench.load_task(name)?;
            if let Some(cap) = config.data.max_train_per_task {
                t.train.truncate(cap);
            }
            tasks.push(t);
        }
        let data_files = bench.files_read();
        let device = device_of(&config.model.device)?;
        let dtype = dtype_of(&config.model.dtype)?;
        let rng = SharedRng::seeded(seeds["lora_init"]);
        let model = Model::load(
            &config.model.source,
            &config.model.lora,
            &device,
            dtype,
            rng,
        )?;
        // Dropout draws from its own stream, after the adapter's initial values.
        model
            .rng()
            .restore(SharedRng::seeded(seeds["dropout"]).state());
        let lengths = Lengths {
            source: config.model.max_source_len,
            target: config.model.max_target_len,
        };
        let learner = Learner::new(model, &config.optim, lengths)?;
        let matrix = AccuracyMatrix::new(task_names)?;
        Ok(Session {
            benchmark_name: order_name,
            config,
            learner,
            tasks,
            data_files,
            matrix,
            next_task: 0,
            current: None,
            seeds,
            tasl_scores: None,
            run: None,
            step_hook: None,
            fault: None,
            stop: None,
            timings: MachineryTimings::default(),
        })
    }

    /// Like [`Session::new`], writing the run's artifacts under `dir` (which must not hold a
    /// run yet): manifest, events, metrics, adapters, importance and checkpoints.
    pub fn with_run_dir(config: RunConfig, dir: &Path) -> Result<Session> {
        let mut s = Session::new(config)?;
        s.run = Some(RunWriter::create(dir, &s)?);
        Ok(s)
    }

    /// Resume the run in `dir` from its last checkpoint: the config comes from the
    /// manifest; the adapter, dropout generator, TaSL scores and accuracy matrix from the
    /// checkpoint of the last finished task; and, when the run stopped inside a task, that
    /// task from its latest mid-task checkpoint (optimiser moments, data position,
    /// generators, importance trackers, best-validation state). The event log is cut back
    /// to match. Steps after the latest checkpoint are redone exactly as they first ran.
    pub fn resume(dir: &Path) -> Result<Session> {
        let (writer, state, mid) = RunWriter::reopen(dir)?;
        let manifest_path = writer.dir().manifest_path();
        let mut config_value = writer.manifest().config.clone();
        if let serde_json::Value::Object(map) = &mut config_value {
            map.remove("run");
        }
        let config: RunConfig = serde_json::from_value(config_value)
            .map_err(|e| Error::format(&manifest_path, format!("config: {e}")))?;
        let mut s = Session::new(config)?;
        if let Some(state) = state {
            if !state.adapter.is_empty() {
                run::load_checkpoint_adapter(&mut s, dir, &state)?;
            }
            s.model().rng().restore(state.dropout_rng.clone());
            s.tasl_scores = state.tasl_scores.clone();
            let matrix = state.metrics.matrix().map_err(|e| {
                Error::format(dir.join("checkpoint/state.json"), format!("metrics: {e}"))
            })?;
            s.set_progress(state.tasks_done, matrix);
        }
        if let Some((mid_dir, mid)) = mid {
            s.prepare_task()?;
            checkpoint::restore(&mut s, &mid_dir, &mid)?;
        }
        s.run = Some(writer);
        Ok(s)
    }

    /// Stop at the next safe point once `flag` is set: a checkpoint is written (with a run
    /// folder) and the training call returns [`Error::Interrupted`] ([`Session::run_all`]:
    /// [`RunOutcome::Interrupted`]). The session stays usable; clear the flag to go on.
    pub fn set_stop_flag(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// A safe point of a method's loop (the end of a round; any step without rounds): a
    /// mid-task checkpoint when one is due or a stop was requested, then the stop itself.
    pub(crate) fn safe_point(&mut self) -> Result<()> {
        let stop = self.stop_requested();
        let every = self.config.optim.checkpoint_every;
        let st = self.current_mut()?;
        let (task, step) = (st.index, st.step);
        let due = step >= st.last_checkpoint + every && step < st.planned;
        if (stop || due) && self.run.is_some() {
            self.write_checkpoint()?;
        }
        if stop {
            return Err(Error::Interrupted { task, step });
        }
        Ok(())
    }

    /// Write a mid-task checkpoint now (only at a safe point: between rounds).
    fn write_checkpoint(&mut self) -> Result<()> {
        if let Some(mut run) = self.run.take() {
            let saved = run.save_mid_task(self);
            self.run = Some(run);
            saved?;
        }
        let st = self.current_mut()?;
        st.last_checkpoint = st.step;
        Ok(())
    }

    /// Time spent in steps, importance updates, masks and fusions so far.
    pub fn timings(&self) -> MachineryTimings {
        self.timings
    }

    /// Call `hook` after every inner step (progress bars, live plots).
    pub fn set_step_hook(&mut self, hook: StepHook) {
        self.step_hook = Some(hook);
    }

    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    pub fn model(&self) -> &Model {
        self.learner.model()
    }

    /// Task names in training order.
    pub fn task_names(&self) -> Vec<String> {
        self.matrix.tasks().to_vec()
    }

    pub fn tasks(&self) -> &[TaskData] {
        &self.tasks
    }

    pub fn matrix(&self) -> &AccuracyMatrix {
        &self.matrix
    }

    pub fn seeds(&self) -> &BTreeMap<String, u64> {
        &self.seeds
    }

    pub fn data_files(&self) -> &[FileHash] {
        &self.data_files
    }

    /// The benchmark order's name (`mini-1`, `standard-1`, or `custom`).
    pub fn order_name(&self) -> &str {
        &self.benchmark_name
    }

    /// Index of the next task to start.
    pub fn next_task(&self) -> usize {
        self.next_task
    }

    /// The task being trained, if any.
    pub fn current(&self) -> Option<&TaskState> {
        self.current.as_ref()
    }

    /// Whether every task has been trained and evaluated.
    pub fn is_finished(&self) -> bool {
        self.next_task >= self.tasks.len() && self.current.is_none()
    }

    pub fn run_dir(&self) -> Option<&Path> {
        self.run.as_ref().map(|r| r.dir().root())
    }

    fn current_mut(&mut self) -> Result<&mut TaskState> {
        self.current
            .as_mut()
            .ok_or_else(|| Error::Data("no task is being trained: call start_task first".into()))
    }

    fn log(&mut self, event: Event) -> Result<()> {
        if let Some(run) = self.run.as_mut() {
            run.event(&event)?;
        }
        Ok(())
    }

    /// Start the next task: its training pool, the replay memory of the earlier tasks, the
    /// validation set, a fresh optimiser and schedule. For joint training (MTL) the one
    /// "task" is all tasks at once.
    pub fn start_task(&mut self) -> Result<TaskPlan> {
        let plan = self.prepare_task()?;
        self.log(Event::TaskStart(TaskStart {
            task: plan.task,
            name: plan.name.clone(),
            train_examples: plan.pool,
            memory_examples: plan.memory,
            planned_steps: plan.planned_steps,
        }))?;
        Ok(plan)
    }

    /// [`Session::start_task`] without the event (resuming rebuilds a task's data this way).
    fn prepare_task(&mut self) -> Result<TaskPlan> {
        if self.current.is_some() {
            return Err(Error::Data(
                "a task is already being trained: finish it with train_task and evaluate".into(),
            ));
        }
        let k = self.next_task;
        if k >= self.tasks.len() {
            return Err(Error::Data("every task has been trained".into()));
        }
        let cfg = &self.config;
        let (index, pool, planned) = if cfg.method == Method::Mtl {
            // Joint training: one phase over the union, with the summed step budget.
            let last = self.tasks.len() - 1;
            let pool: Vec<Example> = self.tasks.iter().flat_map(|t| t.train.clone()).collect();
            let planned = self
                .tasks
                .iter()
                .map(|t| planned_steps(cfg, t.train.len()))
                .sum();
            (last, pool, planned)
        } else {
            let t = &self.tasks[k];
            (k, t.train.clone(), planned_steps(cfg, t.train.len()))
        };
        let memory: Vec<Example> =
            if cfg.method.uses_memory() && index > 0 && cfg.method != Method::Mtl {
                crate::data::replay_memory(
                    &self.tasks[..index],
                    cfg.kif.memory_fraction,
                    self.seeds["data"],
                )?
                .into_iter()
                .map(|te| te.example)
                .collect()
            } else {
                Vec::new()
            };
        let pool = if cfg.method == Method::Replay {
            pool.into_iter().chain(memory.iter().cloned()).collect()
        } else {
            pool
        };
        let seen = if cfg.method == Method::Mtl {
            self.tasks.len()
        } else {
            index + 1
        };
        let validation: Vec<Example> = validation_set(
            &self.tasks[..seen],
            cfg.eval.val_per_task,
            self.seeds["data"],
        )
        .into_iter()
        .map(|te| te.example)
        .collect();
        let importance = ImportanceConfig {
            beta1: cfg.kif.beta1,
            beta2: cfg.kif.beta2,
            sensitivity: sensitivity(cfg.kif.importance),
        };
        self.learner.begin_task(planned)?;
        let anchor = self.learner.snapshot()?;
        let outer_opt = match cfg.kif.outer_optimizer {
            crate::config::OuterOptimizer::Separate { .. } => Some(self.learner.new_optimizer()?),
            crate::config::OuterOptimizer::Shared => None,
        };
        let state = TaskState::new(
            index,
            self.tasks[index].name().to_string(),
            pool,
            memory,
            validation,
            planned,
            self.seeds["shuffle"],
            self.seeds["memory_batches"],
            ImportanceTracker::new(importance)?,
            ImportanceTracker::new(importance)?,
            anchor,
            outer_opt,
        );
        let plan = state.plan(self.config.method);
        self.current = Some(state);
        Ok(plan)
    }

    /// Up to `n` optimiser steps on the task's own data, each followed by an update of the
    /// inner importance tracker (for the methods that use it: TaSL and Recurrent-KIF). Stops early at the task's step budget. Under the skip
    /// policy a skipped step is not one of the `n` (the next batch is tried instead).
    pub fn inner_steps(&mut self, n: usize) -> Result<StepsReport> {
        let records = self.run_inner(n)?;
        let st = self
            .current
            .as_ref()
            .ok_or_else(|| Error::Data("task vanished".into()))?;
        Ok(StepsReport {
            phase: "inner".into(),
            task: st.index,
            first_step: st.step + 1 - records.len().min(st.step + 1),
            records,
            importance: ImportanceView::of(
                &st.inner,
                self.learner.params(),
                self.config.kif.quantile,
            )?,
        })
    }

    /// The steps of [`Session::inner_steps`], without the importance view.
    pub(crate) fn run_inner(&mut self, n: usize) -> Result<Vec<crate::train::StepRecord>> {
        let mut records = Vec::new();
        while records.len() < n {
            let st = self.current_mut()?;
            if st.step >= st.planned {
                break;
            }
            if let Some(rec) = self.one_inner_step()? {
                records.push(rec);
            }
        }
        Ok(records)
    }

    /// One guarded inner step with its bookkeeping (event, hook, validation); `None` when
    /// it was skipped.
    fn one_inner_step(&mut self) -> Result<Option<crate::train::StepRecord>> {
        let eff = self.config.optim.effective_batch();
        let batch = self.current_mut()?.next_batch(eff);
        let Some(rec) = self.guarded_step(StepPhase::Inner, &batch)? else {
            return Ok(None);
        };
        let st = self.current_mut()?;
        st.step += 1;
        let (task, step, planned) = (st.index, st.step, st.planned);
        st.record_loss(rec.loss);
        if let Some(hook) = self.step_hook.as_mut() {
            hook(task, step, planned, rec.loss);
        }
        self.log(Event::Step(StepEvent {
            task,
            step,
            loss: rec.loss,
            lr: rec.lr,
            grad_norm: rec.grad_norm,
        }))?;
        if self.config.eval.select == Selection::BestVal && step % self.config.eval.val_every == 0 {
            self.validate()?;
        }
        Ok(Some(rec))
    }

    /// `m` steps on random memory batches (the outer loop), each followed by an update of
    /// the outer importance tracker. The first outer step of a round remembers the
    /// parameters after the inner steps (`theta_k`), from which `delta_out` is measured.
    pub fn outer_steps(&mut self, m: usize) -> Result<StepsReport> {
        let records = self.run_outer(m)?;
        let st = self
            .current
            .as_ref()
            .ok_or_else(|| Error::Data("task vanished".into()))?;
        Ok(StepsReport {
            phase: "outer".into(),
            task: st.index,
            first_step: st.step,
            records,
            importance: ImportanceView::of(
                &st.outer,
                self.learner.params(),
                self.config.kif.quantile,
            )?,
        })
    }

    /// The steps of [`Session::outer_steps`], without the importance view.
    pub(crate) fn run_outer(&mut self, m: usize) -> Result<Vec<crate::train::StepRecord>> {
        let batch_size = self.config.kif.memory_batch;
        {
            let st = self.current_mut()?;
            if st.memory.is_empty() {
                return Err(Error::Data(format!(
                    "task {} has no replay memory (the first task, or a method without memory)",
                    st.name
                )));
            }
        }
        if self.current_mut()?.theta_k.is_none() {
            let snap = self.learner.snapshot()?;
            self.current_mut()?.theta_k = Some(snap);
        }
        let mut records = Vec::new();
        while records.len() < m {
            let batch = self.current_mut()?.memory_batch(batch_size);
            let Some(rec) = self.guarded_step(StepPhase::Outer, &batch)? else {
                continue;
            };
            let st = self.current_mut()?;
            st.outer_steps += 1;
            let (task, step, outer_step) = (st.index, st.step, st.outer_steps);
            records.push(rec);
            self.log(Event::OuterStep(OuterStepEvent {
                task,
                step,
                outer_step,
                loss: rec.loss,
                lr: rec.lr,
                grad_norm: rec.grad_norm,
            }))?;
        }
        Ok(records)
    }

    /// Fuse the round: masks from both trackers, `theta = anchor + c_in delta_in + c_out
    /// delta_out` element-wise, written into the adapter; the anchor moves to the result
    /// and the inner tracker restarts (the outer one keeps its state within the task).
    pub fn fuse(&mut self) -> Result<FusionReport> {
        let (anchor, deltas) = self.round_deltas()?;
        self.fuse_deltas(anchor, deltas)
    }

    /// End a round without fusing (the ablations): the adapter keeps the outer steps'
    /// result; with `accumulate`, the round's two updates are added to the task's sums for
    /// [`Session::fuse_accumulated`].
    pub fn end_round_without_fusion(&mut self, accumulate: bool) -> Result<()> {
        let (_, deltas) = self.round_deltas()?;
        let now = self.learner.snapshot()?;
        let st = self.current_mut()?;
        if accumulate {
            st.accumulated = Some(match st.accumulated.take() {
                None => deltas,
                Some(sums) => sums
                    .into_iter()
                    .zip(deltas)
                    .map(|((si, so), (di, dout))| Ok(((si + di)?, (so + dout)?)))
                    .collect::<candle_core::Result<Vec<_>>>()?,
            });
        } else {
            st.inner.reset();
        }
        st.anchor = now;
        st.theta_k = None;
        st.round += 1;
        Ok(())
    }

    /// The one fusion of `rkif-fuse-once`: the task-start adapter plus the summed inner and
    /// outer updates of all rounds, weighted by the masks of the trackers at the task's end.
    pub fn fuse_accumulated(&mut self) -> Result<Option<FusionReport>> {
        let now = self.learner.snapshot()?;
        let st = self.current_mut()?;
        let Some(sums) = st.accumulated.take() else {
            return Ok(None);
        };
        // Steps after the last full round belong to the inner update too.
        let tail: Vec<candle_core::Tensor> = now
            .iter()
            .zip(&st.anchor)
            .map(|(n, a)| n - a)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut deltas = Vec::with_capacity(sums.len());
        let mut start = Vec::with_capacity(sums.len());
        for ((si, so), (t, n)) in sums.into_iter().zip(tail.iter().zip(&now)) {
            let di = (si + t)?;
            start.push(((n - &di)? - &so)?);
            deltas.push((di, so));
        }
        self.fuse_deltas(start, deltas).map(Some)
    }

    /// `(anchor, [(delta_in, delta_out)])` of the current round.
    fn round_deltas(&mut self) -> Result<(Vec<candle_core::Tensor>, Vec<RoundDelta>)> {
        let now = self.learner.snapshot()?;
        let st = self
            .current
            .as_ref()
            .ok_or_else(|| Error::Data("no task is being trained".into()))?;
        if st.inner.updates() == 0 {
            return Err(Error::Data(
                "nothing to fuse: no inner step since the last fusion".into(),
            ));
        }
        let theta_k = st.theta_k.clone().unwrap_or_else(|| now.clone());
        let mut deltas = Vec::with_capacity(now.len());
        for ((a, tk), cur) in st.anchor.iter().zip(&theta_k).zip(&now) {
            deltas.push(((tk - a)?, (cur - tk)?));
        }
        Ok((st.anchor.clone(), deltas))
    }

    fn fuse_deltas(
        &mut self,
        anchor: Vec<candle_core::Tensor>,
        deltas: Vec<RoundDelta>,
    ) -> Result<FusionReport> {
        let started = Instant::now();
        let q = self.config.kif.quantile;
        let table = self.config.kif.fusion;
        let params = self.learner.params().to_vec();
        let fault = self.take_fault(|f| matches!(f, guard::Fault::Fusion(_)));
        let st = self
            .current
            .as_ref()
            .ok_or_else(|| Error::Data("no task is being trained".into()))?;
        let masks_started = Instant::now();
        let inner_mask = global_mask(&st.inner.scores(), q)?;
        let outer_scores = if st.outer.updates() > 0 {
            st.outer.scores()
        } else {
            // No memory step yet: nothing is important to the old tasks.
            st.inner
                .scores()
                .into_iter()
                .map(|(n, s)| Ok((n, s.zeros_like()?)))
                .collect::<candle_core::Result<Vec<_>>>()?
        };
        let outer_mask = global_mask(&outer_scores, q)?;
        let mask_seconds = masks_started.elapsed().as_secs_f64();
        let fusion_started = Instant::now();
        let mut inputs = Vec::with_capacity(params.len());
        for (i, p) in params.iter().enumerate() {
            let im = inner_mask
                .get(&p.name)
                .ok_or_else(|| Error::tensor(&p.name, "no inner mask"))?;
            let om = outer_mask
                .get(&p.name)
                .ok_or_else(|| Error::tensor(&p.name, "no outer mask"))?;
            inputs.push(FusionTensor {
                name: &p.name,
                anchor: &anchor[i],
                delta_in: &deltas[i].0,
                delta_out: &deltas[i].1,
                inner_mask: &im.mask,
                outer_mask: &om.mask,
            });
        }
        let poisoned = match fault {
            Some(guard::Fault::Fusion(name)) => inputs
                .iter()
                .position(|t| t.name == name)
                .map(|i| Ok::<_, Error>((i, deltas[i].1.affine(0.0, f64::NAN)?)))
                .transpose()?,
            _ => None,
        };
        if let Some((i, bad)) = &poisoned {
            if let Some(t) = inputs.get_mut(*i) {
                t.delta_out = bad;
            }
        }
        // A non-finite fused value is refused here, before anything is written.
        let fusion = fuse(&table, &inputs)?;
        if let Some(run) = self.run.as_mut() {
            run.maybe_save_round_importance(st.index, st.round + 1, st.step, st, &params, q)?;
        }
        fusion.write_into(&params)?;
        self.timings.mask_seconds += mask_seconds;
        self.timings.fusion_seconds += fusion_started.elapsed().as_secs_f64();
        let report = FusionReport::new(&fusion, &inner_mask, &outer_mask, &params);
        let new_anchor = self.learner.snapshot()?;
        let st = self.current_mut()?;
        st.anchor = new_anchor;
        st.theta_k = None;
        st.inner.reset();
        st.round += 1;
        st.fusions.push(report.shares());
        let (task, round, step) = (st.index, st.round, st.step);
        let timings = RoundTimings {
            inner_seconds: std::mem::take(&mut st.round_seconds[0]),
            outer_seconds: std::mem::take(&mut st.round_seconds[1]),
            fusion_seconds: started.elapsed().as_secs_f64(),
        };
        self.log(Event::Round(RoundEvent {
            task,
            round,
            step,
            elements: report.elements,
            inner_mask: report.inner_selected,
            outer_mask: report.outer_selected,
            shares: report.shares(),
            overlap: report.overlap,
            timings,
        }))?;
        Ok(report)
    }

    /// Train the current task (started if needed) to its step budget with the configured
    /// method, then select the final state (`best-val` or `last`).
    pub fn train_task(&mut self) -> Result<TaskSummary> {
        if self.current.is_none() {
            self.start_task()?;
        }
        let started = Instant::now();
        crate::methods::train_task(self)?;
        let st = self
            .current
            .as_ref()
            .ok_or_else(|| Error::Data("task vanished".into()))?;
        let selected = match (&self.config.eval.select, &st.best) {
            (Selection::BestVal, Some(best)) => {
                self.learner.restore(&best.values)?;
                Some((best.step, best.loss))
            }
            _ => None,
        };
        crate::methods::finish_task(self)?;
        let st = self
            .current
            .as_ref()
            .ok_or_else(|| Error::Data("task vanished".into()))?;
        let summary = TaskSummary {
            task: st.index,
            name: st.name.clone(),
            steps: st.step,
            outer_steps: st.outer_steps,
            rounds: st.round,
            skipped_steps: st.skipped,
            mean_loss_last: st.recent_loss(),
            selected_step: selected.map(|s| s.0),
            selected_val_loss: selected.map(|s| s.1),
            seconds: started.elapsed().as_secs_f64(),
        };
        let (task, steps, skipped_steps) = (st.index, st.step, st.skipped);
        self.log(Event::TaskEnd(TaskEnd {
            task,
            steps,
            skipped_steps,
            seconds: summary.seconds,
        }))?;
        if let Some(run) = self.run.as_mut() {
            run.save_task_importance(
                task,
                steps,
                self.current.as_ref(),
                self.learner.params(),
                self.config.kif.quantile,
            )?;
        }
        Ok(summary)
    }

    /// Validation loss on the validation set; remembers the best state for `best-val`.
    pub fn validate(&mut self) -> Result<f64> {
        let batch = self.config.eval.batch_size;
        let st = self
            .current
            .as_ref()
            .ok_or_else(|| Error::Data("no task is being trained".into()))?;
        let refs: Vec<&Example> = st.validation.iter().collect();
        let loss = self.learner.eval_loss(&refs, batch)?;
        let values = self.learner.snapshot()?;
        let examples = refs.len();
        let st = self.current_mut()?;
        st.val_history.push((st.step, loss));
        let (task, step) = (st.index, st.step);
        if st.best.as_ref().is_none_or(|b| loss < b.loss) {
            st.best = Some(state::Best {
                step: st.step,
                loss,
                values,
            });
        }
        self.log(Event::ValLoss(crate::report::ValLoss {
            task,
            step,
            loss,
            examples,
        }))?;
        Ok(loss)
    }

    /// Evaluate after the current task: greedy answers on the test sets of the tasks seen so
    /// far (all tasks with `eval.all_tasks`), one row of the accuracy matrix. Ends the task:
    /// the adapter, metrics and a checkpoint are written when the session has a run folder.
    pub fn evaluate(&mut self) -> Result<EvalRow> {
        let st = self
            .current
            .as_ref()
            .ok_or_else(|| Error::Data("no task to evaluate: start and train one first".into()))?;
        let row = st.index;
        let started = Instant::now();
        let upto = if self.config.eval.all_tasks {
            self.tasks.len()
        } else {
            row + 1
        };
        let mut results = Vec::new();
        for i in 0..upto {
            let examples = self.eval_examples(i);
            let preds = self.learner.predict(
                &examples,
                self.config.eval.batch_size,
                self.config.eval.max_new_tokens,
            )?;
            let labels: Vec<&str> = examples.iter().map(|e| e.output.as_str()).collect();
            let score = score_predictions(self.tasks[i].name(), &preds, &labels)?;
            let samples = examples
                .iter()
                .zip(&preds)
                .take(5)
                .map(|(e, p)| (e.output.clone(), p.clone()))
                .collect();
            results.push((i, score, samples));
        }
        for (i, score, _) in &results {
            self.matrix.record(row, *i, *score)?;
        }
        self.matrix.mark_trained(row + 1)?;
        let accuracy: Vec<Option<f64>> = (0..self.tasks.len())
            .map(|i| self.matrix.get(row, i))
            .collect();
        let examples: Vec<Option<usize>> = (0..self.tasks.len())
            .map(|i| self.matrix.examples(row, i))
            .collect();
        let seconds = started.elapsed().as_secs_f64();
        self.log(Event::Eval(EvalEvent {
            after_task: row,
            accuracy: accuracy.clone(),
            examples,
            seconds,
        }))?;
        self.current = None;
        self.next_task = row + 1;
        if let Some(mut run) = self.run.take() {
            let saved = run.after_task(self, row);
            self.run = Some(run);
            saved?;
        }
        Ok(EvalRow {
            after_task: row,
            tasks: self.task_names(),
            accuracy,
            samples: results.into_iter().map(|(i, _, s)| (i, s)).collect(),
            seconds,
        })
    }

    /// Train and evaluate every remaining task; `progress` is called after each task. A
    /// stop request (see [`Session::set_stop_flag`]) ends it early with
    /// [`RunOutcome::Interrupted`] after a checkpoint.
    pub fn run_all(
        &mut self,
        mut progress: impl FnMut(&TaskSummary, &EvalRow),
    ) -> Result<RunOutcome> {
        while !self.is_finished() {
            if self.current.is_none() && self.stop_requested() {
                // Between tasks: the last task's checkpoint is the place to resume from.
                return Ok(self.interrupted(self.next_task, 0));
            }
            let summary = match self.train_task() {
                Err(Error::Interrupted { task, step }) => return Ok(self.interrupted(task, step)),
                other => other?,
            };
            let row = self.evaluate()?;
            progress(&summary, &row);
        }
        if let Some(run) = self.run.as_mut() {
            run.finish()?;
        }
        Ok(RunOutcome::Finished)
    }

    fn interrupted(&self, task: usize, step: usize) -> RunOutcome {
        RunOutcome::Interrupted {
            task,
            step,
            run_dir: self.run_dir().map(Path::to_path_buf),
        }
    }

    /// The test examples of task `i` used for evaluation: all, or a seeded subset of
    /// `eval.max_examples_per_task` (the same subset after every task).
    fn eval_examples(&self, i: usize) -> Vec<&Example> {
        let test = &self.tasks[i].test;
        match self.config.eval.max_examples_per_task {
            Some(cap) if cap < test.len() => {
                let idx =
                    state::sample_indices(test.len(), cap, self.seeds["eval_subset"] ^ i as u64);
                idx.into_iter().map(|j| &test[j]).collect()
            }
            _ => test.iter().collect(),
        }
    }

    /// For methods: mutable access to the current task and the learner together.
    pub(crate) fn parts(&mut self) -> Result<(&mut TaskState, &mut Learner)> {
        let st = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Data("no task is being trained".into()))?;
        Ok((st, &mut self.learner))
    }

    pub(crate) fn tasl_scores_mut(&mut self) -> &mut Option<Vec<f64>> {
        &mut self.tasl_scores
    }

    pub(crate) fn tasl_scores(&self) -> Option<&Vec<f64>> {
        self.tasl_scores.as_ref()
    }

    pub(crate) fn set_progress(&mut self, next_task: usize, matrix: AccuracyMatrix) {
        self.next_task = next_task;
        self.matrix = matrix;
    }
}

fn sensitivity(kind: crate::config::ImportanceKind) -> Sensitivity {
    match kind {
        crate::config::ImportanceKind::FirstOrder => Sensitivity::FirstOrder,
        crate::config::ImportanceKind::SecondOrder => Sensitivity::SecondOrder,
        crate::config::ImportanceKind::Mixed => Sensitivity::Mixed,
    }
}

/// Optimiser steps for a task of `n` training examples: `ceil(n / batch) * epochs`, capped.
pub fn planned_steps(cfg: &RunConfig, n: usize) -> usize {
    let per_epoch = n.div_ceil(cfg.optim.effective_batch().max(1));
    let steps = per_epoch * cfg.optim.epochs;
    match cfg.optim.max_steps_per_task {
        Some(cap) => steps.min(cap),
        None => steps,
    }
    .max(1)
}

/// The benchmark folder: `data.dir`, else `RKIF_DATA_DIR`, else the embedded `rkif-mini`.
fn open_benchmark(cfg: &RunConfig) -> Result<(Benchmark, String)> {
    let dir = match (&cfg.data.dir, std::env::var_os(crate::data::DATA_DIR_ENV)) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) if !d.is_empty() => d.into(),
        _ => default_benchmark_dir(),
    };
    let bench = Benchmark::open(&dir)?;
    let name = match (&cfg.data.tasks, &cfg.data.order) {
        (Some(_), _) => "custom".to_string(),
        (None, Some(o)) => o.clone(),
        (None, None) => default_order(&bench)?,
    };
    Ok((bench, name))
}

/// The committed default benchmark of this source tree.
pub fn default_benchmark_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/rkif-mini")
}

fn default_order(bench: &Benchmark) -> Result<String> {
    bench
        .orders()
        .first()
        .map(|o| o.name.clone())
        .ok_or_else(|| {
            Error::Data(format!(
                "{}: the benchmark has no task order",
                bench.root().display()
            ))
        })
}

fn task_order(bench: &Benchmark, cfg: &RunConfig) -> Result<Vec<String>> {
    if let Some(tasks) = &cfg.data.tasks {
        return Ok(tasks.clone());
    }
    let name = match &cfg.data.order {
        Some(o) => o.clone(),
        None => default_order(bench)?,
    };
    Ok(bench.order(&name)?.tasks.clone())
}

fn device_of(name: &str) -> Result<Device> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = name
        .strip_prefix("cuda")
        .map(|rest| rest.trim_start_matches(':'))
        .map(|n| {
            if n.is_empty() {
                Ok(0)
            } else {
                n.parse::<usize>()
            }
        })
        .ok_or_else(|| Error::config("model.device", format!("`{name}`: expected cpu or cuda:N")))?
        .map_err(|_| Error::config("model.device", format!("`{name}`: bad device index")))?;
    Device::new_cuda(index).map_err(|e| {
        Error::config(
            "model.device",
            format!("`{name}`: {e} (built without the `cuda` feature?)"),
        )
    })
}

fn dtype_of(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(Error::config(
            "model.dtype",
            format!("`{other}`: expected f32, bf16 or f16"),
        )),
    }
}
