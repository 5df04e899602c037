//! The learner: a model, its trainable LoRA tensors and the current task's optimiser and
//! schedule, with the operations every method is built from (a gradient step on some
//! examples, a loss, predictions, parameter snapshots).

use candle_core::Tensor;

use super::{AdamW, AdamWConfig, GradAccumulator, Gradients, LinearWarmupSchedule};
use crate::config::OptimConfig;
use crate::data::Example;
use crate::model::backbone::{Lengths, Model};
use crate::model::{LoraModel, LoraParam};
use crate::{Error, Result};

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepRecord {
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Which optimiser a step uses.
#[derive(Debug)]
pub enum StepOptimizer<'a> {
    /// The task's AdamW at the scheduled rate; the schedule advances.
    Scheduled,
    /// The task's AdamW at the current rate; the schedule does not advance.
    Shared,
    /// Another AdamW at a fixed rate (a separate outer learner).
    Separate { opt: &'a mut AdamW, lr: f64 },
}

/// The learner's state before a step, to undo it (see [`Learner::mark`]).
#[derive(Debug, Clone)]
pub struct LearnerMark {
    values: Vec<Tensor>,
    opt: super::AdamWState,
    task_steps: u64,
}

/// The model and the optimisation state of the task being trained.
#[derive(Debug)]
pub struct Learner {
    model: Model,
    params: Vec<LoraParam>,
    opt: AdamW,
    schedule: LinearWarmupSchedule,
    optim: OptimConfig,
    lengths: Lengths,
    /// Scheduled (new-task) steps taken in the current task. Outer steps share the
    /// optimiser but not the schedule: they run at the current rate without advancing it.
    task_steps: u64,
}

impl Learner {
    /// A learner over `model`'s LoRA tensors; call [`Learner::begin_task`] before stepping.
    pub fn new(model: Model, optim: &OptimConfig, lengths: Lengths) -> Result<Self> {
        let params = model.lora_params();
        if params.is_empty() {
            return Err(Error::Model(
                "the model has no LoRA adapter to train".into(),
            ));
        }
        let opt = AdamW::new(&params, adamw_config(optim))?;
        let schedule = LinearWarmupSchedule::new(optim.lr, optim.warmup_steps as u64, 1)?;
        Ok(Self {
            model,
            params,
            opt,
            schedule,
            optim: optim.clone(),
            lengths,
            task_steps: 0,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, mutable (loading an adapter into it keeps the learner's tensors, which
    /// are the same variables).
    pub(crate) fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// The trainable tensors, A then B per adapted layer, in module order.
    pub fn params(&self) -> &[LoraParam] {
        &self.params
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// Replace the optimiser (resuming from a checkpoint).
    pub fn set_optimizer(&mut self, opt: AdamW) {
        self.opt = opt;
    }

    pub fn schedule(&self) -> &LinearWarmupSchedule {
        &self.schedule
    }

    pub fn lengths(&self) -> Lengths {
        self.lengths
    }

    /// A new optimiser and schedule for a task of `total_steps` optimiser steps (METHOD.md:
    /// a fresh AdamW and warm-up/decay per task).
    pub fn begin_task(&mut self, total_steps: usize) -> Result<()> {
        self.opt = AdamW::new(&self.params, adamw_config(&self.optim))?;
        self.schedule = LinearWarmupSchedule::new(
            self.optim.lr,
            self.optim.warmup_steps as u64,
            total_steps.max(1) as u64,
        )?;
        self.task_steps = 0;
        Ok(())
    }

    /// The mean gradient and loss of `examples`, in micro-batches of `optim.micro_batch`.
    /// A non-finite loss is an error naming it.
    pub fn gradients(&self, examples: &[&Example]) -> Result<(f64, Gradients)> {
        if examples.is_empty() {
            return Err(Error::Data("a training step got no examples".into()));
        }
        let mut acc = GradAccumulator::new();
        let mut loss_sum = 0.0;
        let mut n = 0usize;
        for chunk in examples.chunks(self.optim.micro_batch.max(1)) {
            let batch = self.model.train_batch(chunk, self.lengths)?;
            let loss = self.model.loss(&batch, true)?;
            let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    name: "loss".into(),
                    what: format!("{value} on a micro-batch starting at `{}`", chunk[0].id),
                });
            }
            let store = loss.backward()?;
            acc.add(Gradients::from_store(&self.params, &store))?;
            loss_sum += value;
            n += 1;
        }
        Ok((loss_sum / n as f64, acc.mean()?))
    }

    /// The learning rate the schedule gives now.
    pub fn current_lr(&self) -> f64 {
        self.schedule.lr(self.task_steps)
    }

    /// Scheduled steps taken in this task.
    pub fn task_steps(&self) -> u64 {
        self.task_steps
    }

    /// One optimiser step on `examples` at the scheduled learning rate, advancing the
    /// schedule. Returns the step record and the (clipped) gradients the step used, for the
    /// importance trackers.
    pub fn step(&mut self, examples: &[&Example]) -> Result<(StepRecord, Gradients)> {
        let (loss, grads) = self.gradients(examples)?;
        self.apply(loss, grads, StepOptimizer::Scheduled)
    }

    /// A step with the task's optimiser (shared moments) at the current rate, without
    /// advancing the schedule: the reference's outer step on T5.
    pub fn shared_step(&mut self, examples: &[&Example]) -> Result<(StepRecord, Gradients)> {
        let (loss, grads) = self.gradients(examples)?;
        self.apply(loss, grads, StepOptimizer::Shared)
    }

    /// One step with another optimiser at a fixed learning rate (a separate outer learner).
    pub fn step_with(
        &mut self,
        opt: &mut AdamW,
        lr: f64,
        examples: &[&Example],
    ) -> Result<(StepRecord, Gradients)> {
        let (loss, grads) = self.gradients(examples)?;
        self.apply(loss, grads, StepOptimizer::Separate { opt, lr })
    }

    /// Apply gradients computed by [`Learner::gradients`] with the loss they came from: clip
    /// them and step `which` optimiser. A non-finite loss or gradient is an error naming it,
    /// found before anything changes. Returns the record and the clipped gradients.
    pub fn apply(
        &mut self,
        loss: f64,
        mut grads: Gradients,
        which: StepOptimizer<'_>,
    ) -> Result<(StepRecord, Gradients)> {
        if !loss.is_finite() {
            return Err(Error::NonFinite {
                name: "loss".into(),
                what: format!("the training loss of the step is {loss}"),
            });
        }
        let grad_norm = grads.clip_global_norm(self.optim.max_grad_norm)?;
        let lr = match &which {
            StepOptimizer::Separate { lr, .. } => *lr,
            _ => self.current_lr(),
        };
        match which {
            StepOptimizer::Scheduled => {
                self.opt.step(&grads, lr)?;
                self.task_steps += 1;
            }
            StepOptimizer::Shared => self.opt.step(&grads, lr)?,
            StepOptimizer::Separate { opt, .. } => opt.step(&grads, lr)?,
        }
        Ok((
            StepRecord {
                loss,
                lr,
                grad_norm,
            },
            grads,
        ))
    }

    /// What [`Learner::rollback`] needs to undo the steps taken after this call: the LoRA
    /// values (copied), the optimiser state (shared: moments are never changed in place) and
    /// the schedule position.
    pub fn mark(&self) -> Result<LearnerMark> {
        Ok(LearnerMark {
            values: self.snapshot()?,
            opt: self.opt.state()?,
            task_steps: self.task_steps,
        })
    }

    /// Return to the state of `mark` (a step whose result was refused).
    pub fn rollback(&mut self, mark: &LearnerMark) -> Result<()> {
        self.restore(&mark.values)?;
        self.opt.restore(&mark.opt)?;
        self.task_steps = mark.task_steps;
        Ok(())
    }

    /// The task's optimiser, mutable (resuming from a mid-task checkpoint).
    pub(crate) fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.opt
    }

    /// Set the schedule position (resuming from a mid-task checkpoint).
    pub(crate) fn set_task_steps(&mut self, steps: u64) {
        self.task_steps = steps;
    }

    /// A fresh AdamW over the same tensors (for a separate outer optimiser).
    pub fn new_optimizer(&self) -> Result<AdamW> {
        AdamW::new(&self.params, adamw_config(&self.optim))
    }

    /// Mean loss of `examples` without dropout, in batches of `batch`.
    pub fn eval_loss(&self, examples: &[&Example], batch: usize) -> Result<f64> {
        let mut total = 0.0;
        let mut n = 0usize;
        for chunk in examples.chunks(batch.max(1)) {
            let b = self.model.train_batch(chunk, self.lengths)?;
            let loss = self.model.loss(&b, false)?.detach();
            total +=
                loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? * chunk.len() as f64;
            n += chunk.len();
        }
        if n == 0 {
            return Err(Error::Data("a loss was asked of no examples".into()));
        }
        Ok(total / n as f64)
    }

    /// Greedy answers, in batches of `batch`.
    pub fn predict(
        &self,
        examples: &[&Example],
        batch: usize,
        max_new_tokens: usize,
    ) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(examples.len());
        for chunk in examples.chunks(batch.max(1)) {
            out.extend(self.model.predict(chunk, self.lengths, max_new_tokens)?);
        }
        Ok(out)
    }

    /// Copies of the current LoRA values, in parameter order.
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        Ok(self
            .params
            .iter()
            .map(|p| p.var.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?)
    }

    /// Write `values` (from [`Learner::snapshot`]) back into the LoRA tensors.
    pub fn restore(&self, values: &[Tensor]) -> Result<()> {
        if values.len() != self.params.len() {
            return Err(Error::Model(format!(
                "snapshot has {} tensors, the adapter {}",
                values.len(),
                self.params.len()
            )));
        }
        for (p, v) in self.params.iter().zip(values) {
            if p.var.shape() != v.shape() {
                return Err(Error::tensor(
                    &p.name,
                    format!("snapshot is {:?}, parameter {:?}", v.shape(), p.var.shape()),
                ));
            }
        }
        for (p, v) in self.params.iter().zip(values) {
            p.var.set(v)?;
        }
        Ok(())
    }
}

fn adamw_config(o: &OptimConfig) -> AdamWConfig {
    AdamWConfig {
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weight_decay: o.weight_decay,
    }
}
