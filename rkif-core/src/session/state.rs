//! The state of the task being trained.

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::values::TaskPlan;
use crate::config::Method;
use crate::data::Example;
use crate::kif::ImportanceTracker;
use crate::train::AdamW;

/// The position of a task's data streams: the epoch's shuffled order, the next index in
/// it, and the generators of the next shuffle and of the memory batches.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct DataPosition {
    pub order: Vec<usize>,
    pub cursor: usize,
    pub shuffle: ChaCha8Rng,
    pub memory_rng: ChaCha8Rng,
}

/// The best validation loss seen in the task and the adapter values that had it.
#[derive(Debug, Clone)]
pub struct Best {
    pub step: usize,
    pub loss: f64,
    pub values: Vec<Tensor>,
}

/// Everything that lives only while one task trains.
#[derive(Debug)]
pub struct TaskState {
    /// Task index in training order.
    pub index: usize,
    pub name: String,
    /// What new-task (inner) steps draw from.
    pub(crate) pool: Vec<Example>,
    /// The replay memory of the earlier tasks (outer steps draw from it).
    pub(crate) memory: Vec<Example>,
    pub(crate) validation: Vec<Example>,
    order: Vec<usize>,
    cursor: usize,
    shuffle: ChaCha8Rng,
    memory_rng: ChaCha8Rng,
    /// Scheduled optimiser steps taken.
    pub step: usize,
    /// Steps in the task's budget.
    pub planned: usize,
    /// Outer (memory) steps taken.
    pub outer_steps: usize,
    /// Rounds fused.
    pub round: usize,
    /// Steps (inner and outer) skipped by the skip policy for non-finite values.
    pub skipped: usize,
    /// Seconds of the current round's inner and outer steps (with importance updates).
    pub(crate) round_seconds: [f64; 2],
    /// The step of the last mid-task checkpoint (0: none yet).
    pub(crate) last_checkpoint: usize,
    pub inner: ImportanceTracker,
    pub outer: ImportanceTracker,
    /// The adapter at the start of the round.
    pub(crate) anchor: Vec<Tensor>,
    /// The adapter after the round's inner steps (set by the first outer step).
    pub(crate) theta_k: Option<Vec<Tensor>>,
    pub(crate) outer_opt: Option<AdamW>,
    pub(crate) best: Option<Best>,
    /// `(step, validation loss)` of every validation.
    pub val_history: Vec<(usize, f64)>,
    /// Losses of the latest inner steps.
    pub(crate) recent: Vec<f64>,
    /// The adapter when the task started.
    pub(crate) start_values: Vec<Tensor>,
    /// `rkif-fuse-once`: the summed inner and outer updates of the task's rounds.
    pub(crate) accumulated: Option<Vec<(Tensor, Tensor)>>,
    /// Fusion-case shares of every fusion in this task.
    pub fusions: Vec<crate::report::FusionShares>,
}

impl TaskState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        name: String,
        pool: Vec<Example>,
        memory: Vec<Example>,
        validation: Vec<Example>,
        planned: usize,
        shuffle_seed: u64,
        memory_seed: u64,
        inner: ImportanceTracker,
        outer: ImportanceTracker,
        anchor: Vec<Tensor>,
        outer_opt: Option<AdamW>,
    ) -> Self {
        let task_seed = |s: u64| s ^ ((index as u64 + 1) << 40);
        Self {
            index,
            name,
            order: Vec::new(),
            cursor: 0,
            pool,
            memory,
            validation,
            shuffle: ChaCha8Rng::seed_from_u64(task_seed(shuffle_seed)),
            memory_rng: ChaCha8Rng::seed_from_u64(task_seed(memory_seed)),
            step: 0,
            planned,
            outer_steps: 0,
            round: 0,
            skipped: 0,
            last_checkpoint: 0,
            round_seconds: [0.0; 2],
            inner,
            outer,
            start_values: anchor.clone(),
            anchor,
            theta_k: None,
            accumulated: None,
            fusions: Vec::new(),
            outer_opt,
            best: None,
            val_history: Vec::new(),
            recent: Vec::new(),
        }
    }

    /// The next `n` examples of the pool, reshuffled (seeded) at every epoch.
    pub(crate) fn next_batch(&mut self, n: usize) -> Vec<Example> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n && !self.pool.is_empty() {
            if self.cursor >= self.order.len() {
                self.order = (0..self.pool.len()).collect();
                self.order.shuffle(&mut self.shuffle);
                self.cursor = 0;
            }
            out.push(self.pool[self.order[self.cursor]].clone());
            self.cursor += 1;
        }
        out
    }

    /// A fresh random batch of the memory (without repeats within the batch).
    pub(crate) fn memory_batch(&mut self, n: usize) -> Vec<Example> {
        let mut idx: Vec<usize> = (0..self.memory.len()).collect();
        idx.shuffle(&mut self.memory_rng);
        idx.into_iter()
            .take(n)
            .map(|i| self.memory[i].clone())
            .collect()
    }

    /// Where the task's data streams stand (a mid-task checkpoint).
    pub(crate) fn position(&self) -> DataPosition {
        DataPosition {
            order: self.order.clone(),
            cursor: self.cursor,
            shuffle: self.shuffle.clone(),
            memory_rng: self.memory_rng.clone(),
        }
    }

    /// Continue the data streams from `p` (resuming a mid-task checkpoint).
    pub(crate) fn set_position(&mut self, p: DataPosition) -> crate::Result<()> {
        if p.cursor > p.order.len() || p.order.iter().any(|&i| i >= self.pool.len()) {
            return Err(crate::Error::Data(format!(
                "checkpoint data position (cursor {} of {}) does not fit task {}'s pool of {}",
                p.cursor,
                p.order.len(),
                self.name,
                self.pool.len()
            )));
        }
        self.order = p.order;
        self.cursor = p.cursor;
        self.shuffle = p.shuffle;
        self.memory_rng = p.memory_rng;
        Ok(())
    }

    pub(crate) fn record_loss(&mut self, loss: f64) {
        self.recent.push(loss);
        if self.recent.len() > 20 {
            self.recent.remove(0);
        }
    }

    /// Mean of the latest inner-step losses.
    pub fn recent_loss(&self) -> Option<f64> {
        (!self.recent.is_empty())
            .then(|| self.recent.iter().sum::<f64>() / self.recent.len() as f64)
    }

    /// The adapter values when the task started.
    pub fn task_start_values(&self) -> &[Tensor] {
        &self.start_values
    }

    pub fn memory_len(&self) -> usize {
        self.memory.len()
    }

    pub fn validation_len(&self) -> usize {
        self.validation.len()
    }

    pub(crate) fn plan(&self, method: Method) -> TaskPlan {
        TaskPlan {
            task: self.index,
            name: self.name.clone(),
            method: method.name().to_string(),
            pool: self.pool.len(),
            memory: self.memory.len(),
            validation: self.validation.len(),
            planned_steps: self.planned,
            sample: self.pool.iter().take(3).cloned().collect(),
        }
    }
}

/// `k` distinct indices of `0..n`, seeded, in increasing order.
pub(crate) fn sample_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng);
    idx.truncate(k);
    idx.sort_unstable();
    idx
}
