//! Numerical safety of the steps (METHOD.md section 3, "Non-finite values").
//!
//! Every optimiser step, inner or outer, is guarded: the learner is marked before it, and a
//! step that fails (a non-finite loss, a non-finite gradient, a non-finite importance score)
//! is undone, so the adapter, the optimiser moments, the schedule and the trackers are as
//! before the step. Under `optim.nonfinite = "error"` the error, naming the tensor, is
//! returned; under `"skip"` the step is counted, logged as a `skipped_step` event, and
//! training goes on, until more than `optim.max_skipped_steps` steps of one task were
//! skipped.
//!
//! Tests and notebooks inject faults with [`Session::inject_fault`] to see this happen.

use super::Session;
use crate::config::{Method, NonFinitePolicy, OuterOptimizer};
use crate::data::Example;
use crate::kif::{ImportanceTracker, ParamGrad};
use crate::model::LoraParam;
use crate::report::{Event, SkippedStep, StepPhase};
use crate::train::{Gradients, StepOptimizer, StepRecord};
use crate::{Error, Result};

/// A fault to inject (tests of the numerical guards; not for training).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The step's loss becomes NaN.
    Loss,
    /// The gradient of the named LoRA tensor becomes NaN.
    Gradient(String),
    /// The importance score of the named LoRA tensor overflows to infinity.
    Score(String),
    /// The fused value of the named LoRA tensor becomes NaN (the next fusion).
    Fusion(String),
}

/// A pending fault and how many more steps (or fusions) it hits.
#[derive(Debug, Clone)]
pub(crate) struct PendingFault {
    fault: Fault,
    remaining: usize,
}

impl Session {
    /// Make the next `times` steps (for [`Fault::Fusion`]: fusions) fail as `fault` says.
    #[doc(hidden)]
    pub fn inject_fault(&mut self, fault: Fault, times: usize) {
        self.fault = (times > 0).then_some(PendingFault {
            fault,
            remaining: times,
        });
    }

    /// The pending fault if it is of the kind `wanted` accepts, counted down.
    pub(crate) fn take_fault(&mut self, wanted: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let pending = self.fault.as_mut()?;
        if !wanted(&pending.fault) {
            return None;
        }
        pending.remaining = pending.remaining.saturating_sub(1);
        let fault = pending.fault.clone();
        if pending.remaining == 0 {
            self.fault = None;
        }
        Some(fault)
    }

    /// One guarded step of `phase` on `batch`: `Some` when applied, `None` when skipped by
    /// the skip policy. On any error nothing of the step remains.
    pub(crate) fn guarded_step(
        &mut self,
        phase: StepPhase,
        batch: &[Example],
    ) -> Result<Option<StepRecord>> {
        let started = std::time::Instant::now();
        match phase {
            StepPhase::Inner => self.timings.inner_steps += 1,
            StepPhase::Outer => self.timings.outer_steps += 1,
        }
        let refs: Vec<&Example> = batch.iter().collect();
        let fault = self.take_fault(|f| !matches!(f, Fault::Fusion(_)));
        let mark = self.learner.mark()?;
        let outer_mark = match (phase, self.current.as_ref()) {
            (StepPhase::Outer, Some(st)) => st.outer_opt.as_ref().map(|o| o.state()).transpose()?,
            _ => None,
        };
        let error = match self.unguarded_step(phase, &refs, fault.as_ref()) {
            Ok(rec) => {
                let seconds = started.elapsed().as_secs_f64();
                if let Some(st) = self.current.as_mut() {
                    let slot = match phase {
                        StepPhase::Inner => 0,
                        StepPhase::Outer => 1,
                    };
                    if let Some(total) = st.round_seconds.get_mut(slot) {
                        *total += seconds;
                    }
                }
                return Ok(Some(rec));
            }
            Err(e) => e,
        };
        self.learner.rollback(&mark)?;
        if let (Some(state), Some(st)) = (outer_mark, self.current.as_mut()) {
            if let Some(opt) = st.outer_opt.as_mut() {
                opt.restore(&state)?;
            }
        }
        match (&error, self.config.optim.nonfinite) {
            (Error::NonFinite { .. }, NonFinitePolicy::Skip) => {
                self.record_skip(phase, error)?;
                Ok(None)
            }
            _ => Err(error),
        }
    }

    fn unguarded_step(
        &mut self,
        phase: StepPhase,
        refs: &[&Example],
        fault: Option<&Fault>,
    ) -> Result<StepRecord> {
        let (mut loss, mut grads) = self.timed_step(phase, |me| me.learner.gradients(refs))?;
        match fault {
            Some(Fault::Loss) => loss = f64::NAN,
            Some(Fault::Gradient(name)) => grads = poison(grads, name)?,
            _ => {}
        }
        let separate_lr = match self.config.kif.outer_optimizer {
            OuterOptimizer::Separate { lr } => Some(lr),
            OuterOptimizer::Shared => None,
        };
        let (rec, grads) = self.timed_step(phase, |me| match (phase, separate_lr) {
            (StepPhase::Inner, _) => me.learner.apply(loss, grads, StepOptimizer::Scheduled),
            (StepPhase::Outer, None) => me.learner.apply(loss, grads, StepOptimizer::Shared),
            (StepPhase::Outer, Some(lr)) => {
                let mut opt =
                    me.current_mut()?.outer_opt.take().ok_or_else(|| {
                        Error::Data("the separate outer optimiser is missing".into())
                    })?;
                let out =
                    me.learner
                        .apply(loss, grads, StepOptimizer::Separate { opt: &mut opt, lr });
                me.current_mut()?.outer_opt = Some(opt);
                out
            }
        })?;
        let overflow = match fault {
            Some(Fault::Score(name)) => Some(name.as_str()),
            _ => None,
        };
        if phase == StepPhase::Inner && !tracks_inner_importance(self.config.method) {
            return Ok(rec);
        }
        let params = self.learner.params().to_vec();
        let importance_started = std::time::Instant::now();
        let st = self.current_mut()?;
        let tracker = match phase {
            StepPhase::Inner => &mut st.inner,
            StepPhase::Outer => &mut st.outer,
        };
        let updated = update_tracker(tracker, &params, &grads, overflow);
        self.timings.importance_seconds += importance_started.elapsed().as_secs_f64();
        updated.map_err(|e| match e {
            Error::NonFinite { name, what } => Error::NonFinite {
                name,
                what: format!("{} importance score: {what}", phase.name()),
            },
            other => other,
        })?;
        Ok(rec)
    }

    /// Run `f` (part of an optimiser step) and add its time to the phase's step total.
    fn timed_step<T>(
        &mut self,
        phase: StepPhase,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let started = std::time::Instant::now();
        let out = f(self);
        let seconds = started.elapsed().as_secs_f64();
        match phase {
            StepPhase::Inner => self.timings.inner_step_seconds += seconds,
            StepPhase::Outer => self.timings.outer_step_seconds += seconds,
        }
        out
    }

    /// Count a skipped step and log it; an error once the task skipped too many.
    fn record_skip(&mut self, phase: StepPhase, error: Error) -> Result<()> {
        let cap = self.config.optim.max_skipped_steps;
        let st = self.current_mut()?;
        st.skipped += 1;
        let (task, skipped) = (st.index, st.skipped);
        let step = match phase {
            StepPhase::Inner => st.step + 1,
            StepPhase::Outer => st.step,
        };
        if skipped > cap {
            return Err(match error {
                Error::NonFinite { name, what } => Error::NonFinite {
                    name,
                    what: format!(
                        "{what}; task {task} skipped {skipped} steps, more than \
                         optim.max_skipped_steps = {cap}"
                    ),
                },
                other => other,
            });
        }
        self.log(Event::SkippedStep(SkippedStep {
            task,
            step,
            phase,
            reason: error.to_string(),
            loss: None,
            grad_norm: None,
        }))
    }
}

/// Whether the method reads the inner importance (TaSL's merge, Recurrent-KIF's masks).
/// The others skip the tracker: its update costs about as much as an AdamW update, and
/// Replay, the baseline of the overhead comparison, must not pay for what it never uses.
fn tracks_inner_importance(method: Method) -> bool {
    matches!(
        method,
        Method::Tasl | Method::Rkif | Method::RkifNoFusion | Method::RkifFuseOnce
    )
}

/// `grads` with the named tensor's gradient replaced by NaN.
fn poison(grads: Gradients, name: &str) -> Result<Gradients> {
    let entries = grads
        .iter()
        .map(|(n, g)| {
            let g = if n == name {
                g.affine(0.0, f64::NAN)?
            } else {
                g.clone()
            };
            Ok((n.to_string(), g))
        })
        .collect::<Result<Vec<_>>>()?;
    Gradients::from_named(entries)
}

/// Update `tracker` with the step's parameters and (clipped) gradients. `overflow` names a
/// tensor whose score is made to overflow (fault injection): its parameter and gradient are
/// given as the largest finite values, whose product is infinite.
pub(crate) fn update_tracker(
    tracker: &mut ImportanceTracker,
    params: &[LoraParam],
    grads: &Gradients,
    overflow: Option<&str>,
) -> Result<()> {
    let mut inputs = Vec::with_capacity(params.len());
    for p in params {
        if let Some(g) = grads.get(&p.name) {
            let v = p.var.as_tensor().clone();
            if overflow == Some(p.name.as_str()) {
                let big = v.ones_like()?.affine(f64::from(f32::MAX), 0.0)?;
                inputs.push((p.name.as_str(), big.clone(), big));
            } else {
                inputs.push((p.name.as_str(), v, g.clone()));
            }
        }
    }
    let step: Vec<ParamGrad<'_>> = inputs
        .iter()
        .map(|(name, param, grad)| ParamGrad { name, param, grad })
        .collect();
    tracker.update(&step)
}
