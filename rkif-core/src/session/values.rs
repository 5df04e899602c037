//! What the stepwise API returns: plain values that print as tables and that the notebook
//! display and the viewer can draw.

use crate::data::Example;
use crate::kif::{Fusion, FusionCase, ImportanceMask, ImportanceTracker};
use crate::model::LoraParam;
use crate::report::FusionShares;
use crate::train::StepRecord;
use crate::Result;

/// What [`super::Session::start_task`] set up.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskPlan {
    pub task: usize,
    pub name: String,
    pub method: String,
    /// Examples inner steps draw from.
    pub pool: usize,
    /// Replay-memory examples (outer steps).
    pub memory: usize,
    pub validation: usize,
    pub planned_steps: usize,
    /// A few training examples.
    pub sample: Vec<Example>,
}

/// Importance of one LoRA matrix at a moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleScore {
    /// PEFT runtime name of the tensor.
    pub name: String,
    /// Block index, when the name has one.
    pub layer: Option<usize>,
    /// `q`, `v`, `q_proj`, ... and the factor: `q.A`, `v_proj.B`.
    pub kind: String,
    pub mean: f64,
    pub max: f64,
    /// Share of the tensor's elements above the global threshold.
    pub important_share: f64,
}

/// A tracker's scores summarised per LoRA matrix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportanceView {
    /// Updates the tracker has applied since its last reset.
    pub updates: u64,
    /// The global quantile threshold `tau` (None before any update).
    pub threshold: Option<f32>,
    pub modules: Vec<ModuleScore>,
}

impl ImportanceView {
    pub(crate) fn of(tracker: &ImportanceTracker, params: &[LoraParam], q: f64) -> Result<Self> {
        if tracker.updates() == 0 {
            return Ok(Self {
                updates: 0,
                threshold: None,
                modules: Vec::new(),
            });
        }
        let scores = tracker.scores();
        let mask = crate::kif::global_mask(&scores, q)?;
        let mut modules = Vec::with_capacity(scores.len());
        for (name, s) in &scores {
            let v = s
                .flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?;
            let n = v.len().max(1) as f64;
            let selected = mask.get(name).map_or(0, |m| m.selected);
            let param = params.iter().find(|p| &p.name == name);
            modules.push(ModuleScore {
                name: name.clone(),
                layer: param.and_then(|p| layer_of(&p.module)),
                kind: param.map_or_else(String::new, kind_of),
                mean: v.iter().sum::<f64>() / n,
                max: v.iter().cloned().fold(0.0, f64::max),
                important_share: selected as f64 / n,
            });
        }
        Ok(Self {
            updates: tracker.updates(),
            threshold: mask.global_threshold(),
            modules,
        })
    }
}

/// The block index in a Hugging Face module path (`...layers.3...`, `...block.3...`).
pub(crate) fn layer_of(module: &str) -> Option<usize> {
    let parts: Vec<&str> = module.split('.').collect();
    parts
        .windows(2)
        .find(|w| matches!(w[0], "layers" | "block" | "h"))
        .and_then(|w| w[1].parse().ok())
}

/// `q.A`, `v_proj.B`, ...; T5 cross-attention is `EncDecAttention.q.A`.
pub(crate) fn kind_of(p: &LoraParam) -> String {
    let last = p.module.rsplit('.').next().unwrap_or(&p.module);
    let factor = match p.factor {
        crate::model::LoraFactor::A => "A",
        crate::model::LoraFactor::B => "B",
    };
    let prefix = if p.module.contains("EncDecAttention") {
        "cross."
    } else if p.module.starts_with("decoder.") {
        "dec."
    } else {
        ""
    };
    format!("{prefix}{last}.{factor}")
}

/// What a run of inner or outer steps did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepsReport {
    /// `inner` or `outer`.
    pub phase: String,
    pub task: usize,
    /// Task step of the first record.
    pub first_step: usize,
    pub records: Vec<StepRecord>,
    /// The phase's tracker after the steps.
    pub importance: ImportanceView,
}

/// Fusion case shares of one LoRA matrix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleFusion {
    pub name: String,
    pub layer: Option<usize>,
    pub kind: String,
    pub shares: FusionShares,
}

/// What [`super::Session::fuse`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FusionReport {
    /// LoRA elements fused.
    pub elements: u64,
    pub inner_selected: u64,
    pub outer_selected: u64,
    pub inner_threshold: Option<f32>,
    pub outer_threshold: Option<f32>,
    /// Element counts per case, whole adapter.
    pub inner_only: u64,
    pub outer_only: u64,
    pub both: u64,
    pub neither: u64,
    /// `|inner ∩ outer| / |inner ∪ outer|`.
    pub overlap: Option<f64>,
    pub modules: Vec<ModuleFusion>,
}

impl FusionReport {
    pub(crate) fn new(
        fusion: &Fusion,
        inner: &ImportanceMask,
        outer: &ImportanceMask,
        params: &[LoraParam],
    ) -> Self {
        let s = &fusion.stats;
        let shares_of = |st: &crate::kif::FusionStats| FusionShares {
            inner_only: st.share(FusionCase::InnerOnly),
            outer_only: st.share(FusionCase::OuterOnly),
            both: st.share(FusionCase::Both),
            neither: st.share(FusionCase::Neither),
        };
        let modules = fusion
            .tensors
            .iter()
            .map(|t| {
                let p = params.iter().find(|p| p.name == t.name);
                ModuleFusion {
                    name: t.name.clone(),
                    layer: p.and_then(|p| layer_of(&p.module)),
                    kind: p.map_or_else(String::new, kind_of),
                    shares: shares_of(&t.stats),
                }
            })
            .collect();
        Self {
            elements: s.total(),
            inner_selected: s.inner(),
            outer_selected: s.outer(),
            inner_threshold: inner.global_threshold(),
            outer_threshold: outer.global_threshold(),
            inner_only: s.inner_only,
            outer_only: s.outer_only,
            both: s.both,
            neither: s.neither,
            overlap: s.overlap(),
            modules,
        }
    }

    /// The four shares of the whole adapter.
    pub fn shares(&self) -> FusionShares {
        let n = self.elements.max(1) as f64;
        FusionShares {
            inner_only: self.inner_only as f64 / n,
            outer_only: self.outer_only as f64 / n,
            both: self.both as f64 / n,
            neither: self.neither as f64 / n,
        }
    }
}

/// What training one task did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskSummary {
    pub task: usize,
    pub name: String,
    pub steps: usize,
    pub outer_steps: usize,
    pub rounds: usize,
    /// Steps (inner and outer) skipped by the skip policy for non-finite values.
    pub skipped_steps: usize,
    /// Mean loss of the last inner steps.
    pub mean_loss_last: Option<f64>,
    /// With `best-val`: the step whose adapter was kept and its validation loss.
    pub selected_step: Option<usize>,
    pub selected_val_loss: Option<f64>,
    pub seconds: f64,
}

/// One row of the accuracy matrix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalRow {
    pub after_task: usize,
    pub tasks: Vec<String>,
    /// Accuracy (a fraction) on each task; None where not evaluated.
    pub accuracy: Vec<Option<f64>>,
    /// Per evaluated task: a few `(label, prediction)` pairs.
    pub samples: Vec<(usize, Vec<(String, String)>)>,
    pub seconds: f64,
}

/// How [`super::Session::run_all`] ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum RunOutcome {
    /// Every task was trained and evaluated.
    Finished,
    /// A stop was requested; training stopped at a safe point of task `task` after `step`
    /// optimiser steps (0: between tasks). With a run folder, a checkpoint there holds
    /// everything needed to resume ([`super::Session::resume`]).
    Interrupted {
        task: usize,
        step: usize,
        run_dir: Option<std::path::PathBuf>,
    },
}

/// Where training time went, summed over the session's life (the overhead benchmark reads
/// it; rounds also log their share).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MachineryTimings {
    /// Inner optimiser steps: forward, backward, clipping, AdamW.
    pub inner_step_seconds: f64,
    /// Outer (replay-memory) optimiser steps: forward, backward, clipping, AdamW.
    pub outer_step_seconds: f64,
    /// Inner and outer steps taken (skipped ones included).
    pub inner_steps: u64,
    pub outer_steps: u64,
    /// Importance tracker updates (inner and outer).
    pub importance_seconds: f64,
    /// The global quantile masks of the fusions.
    pub mask_seconds: f64,
    /// The fusions themselves: coefficients, fused values, writing them back.
    pub fusion_seconds: f64,
}
