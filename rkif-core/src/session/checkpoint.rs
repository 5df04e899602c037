//! Mid-task checkpoints: everything a task in training needs to go on exactly as if it had
//! never stopped, taken at safe points (the end of a Recurrent-KIF round; any step for the
//! other methods).
//!
//! A checkpoint is a folder `checkpoint/task-<k>-step-<s>/` holding
//!
//! - `state.json`: counters, the data position and generators, the dropout generator,
//!   validation history and best loss, fusion shares so far, the event-log length;
//! - `tensors.safetensors`: the adapter, the round anchor, the task-start values, the
//!   best-validation values, `rkif-fuse-once`'s summed updates and both importance trackers;
//! - `optimizer.safetensors` (and `outer_optimizer.safetensors` for a separate outer
//!   optimiser): the AdamW moments.
//!
//! The folder is written under a temporary name and renamed; `checkpoint/state.json` then
//! names it, so a crash at any moment leaves either the old or the new checkpoint whole.
//! The pool, memory and validation set are not stored: they are rebuilt from the seeds.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::state::{Best, DataPosition};
use super::Session;
use crate::kif::ImportanceState;
use crate::model::tensor_file::{read_safetensors, write_safetensors};
use crate::report::{read_json, write_json, FusionShares};
use crate::train::AdamW;
use crate::{Error, Result};

/// `state.json` of a mid-task checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MidTaskState {
    pub schema_version: u32,
    pub task: usize,
    pub step: usize,
    pub outer_steps: usize,
    pub round: usize,
    pub skipped: usize,
    /// Scheduled steps the learner has taken (the learning-rate schedule's position).
    pub task_steps: u64,
    position: DataPosition,
    pub dropout_rng: ChaCha8Rng,
    /// `(step, loss)`; losses as `f64::to_bits` so they come back bit for bit.
    best: Option<(usize, u64)>,
    val_history: Vec<(usize, f64)>,
    recent: Vec<f64>,
    fusions: Vec<FusionShares>,
    has_accumulated: bool,
    inner_updates: u64,
    inner_names: Vec<String>,
    outer_updates: u64,
    outer_names: Vec<String>,
    /// Bytes of `events.jsonl` up to this checkpoint.
    pub events_bytes: u64,
}

const STATE: &str = "state.json";
const TENSORS: &str = "tensors.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const OUTER_OPTIMIZER: &str = "outer_optimizer.safetensors";

/// Write the current task's checkpoint into the new folder `dir` (written under a temporary
/// name, then renamed).
pub(crate) fn save(s: &Session, dir: &Path, events_bytes: u64) -> Result<()> {
    let st = s
        .current
        .as_ref()
        .ok_or_else(|| Error::Data("no task is being trained: nothing to checkpoint".into()))?;
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;

    let params = s.learner.params();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut put = |group: &str, values: &[Tensor]| {
        for (p, v) in params.iter().zip(values) {
            tensors.push((format!("{group}/{}", p.name), v.clone()));
        }
    };
    put("adapter", &s.learner.snapshot()?);
    put("anchor", &st.anchor);
    put("start", &st.start_values);
    if let Some(best) = &st.best {
        put("best", &best.values);
    }
    if let Some(acc) = &st.accumulated {
        let (d_in, d_out): (Vec<Tensor>, Vec<Tensor>) = acc.iter().cloned().unzip();
        put("acc_in", &d_in);
        put("acc_out", &d_out);
    }
    for (group, tracker) in [("inner", &st.inner), ("outer", &st.outer)] {
        for (k, v) in tracker.export().to_named_tensors() {
            tensors.push((format!("{group}/{k}"), v));
        }
    }
    write_safetensors(&tmp.join(TENSORS), &tensors, HashMap::new())?;
    s.learner.optimizer().save(&tmp.join(OPTIMIZER))?;
    if let Some(opt) = &st.outer_opt {
        opt.save(&tmp.join(OUTER_OPTIMIZER))?;
    }
    let state = MidTaskState {
        schema_version: 1,
        task: st.index,
        step: st.step,
        outer_steps: st.outer_steps,
        round: st.round,
        skipped: st.skipped,
        task_steps: s.learner.task_steps(),
        position: st.position(),
        dropout_rng: s.model().rng().state(),
        best: st.best.as_ref().map(|b| (b.step, b.loss.to_bits())),
        val_history: st.val_history.clone(),
        recent: st.recent.clone(),
        fusions: st.fusions.clone(),
        has_accumulated: st.accumulated.is_some(),
        inner_updates: st.inner.updates(),
        inner_names: st.inner.names().map(String::from).collect(),
        outer_updates: st.outer.updates(),
        outer_names: st.outer.names().map(String::from).collect(),
        events_bytes,
    };
    write_json(&tmp.join(STATE), &state)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
}

/// Read a mid-task checkpoint's `state.json`.
pub(crate) fn read_state(dir: &Path) -> Result<MidTaskState> {
    let state: MidTaskState = read_json(&dir.join(STATE))?;
    if state.schema_version != 1 {
        return Err(Error::SchemaVersion {
            path: dir.join(STATE),
            found: state.schema_version,
            supported: 1,
        });
    }
    Ok(state)
}

/// Put the session, whose current task was just prepared afresh, where the checkpoint in
/// `dir` left it.
pub(crate) fn restore(s: &mut Session, dir: &Path, state: &MidTaskState) -> Result<()> {
    let device = s.model().device().clone();
    let tensors_path = dir.join(TENSORS);
    let (tensors, _) = read_safetensors(&tensors_path, &device)?;
    let names: Vec<String> = s.learner.params().iter().map(|p| p.name.clone()).collect();
    let group = |g: &str| -> Result<Vec<Tensor>> {
        names
            .iter()
            .map(|n| {
                let key = format!("{g}/{n}");
                tensors
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| Error::format(&tensors_path, format!("tensor `{key}` missing")))
            })
            .collect()
    };
    let tracker = |g: &str, updates: u64, names: &[String]| -> Result<ImportanceState> {
        let prefix = format!("{g}/");
        let flat: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone())))
            .collect();
        ImportanceState::from_named_tensors(updates, names, &flat)
    };
    let adapter = group("adapter")?;
    let anchor = group("anchor")?;
    let start = group("start")?;
    let best = match state.best {
        Some((step, bits)) => Some(Best {
            step,
            loss: f64::from_bits(bits),
            values: group("best")?,
        }),
        None => None,
    };
    let accumulated = if state.has_accumulated {
        Some(
            group("acc_in")?
                .into_iter()
                .zip(group("acc_out")?)
                .collect(),
        )
    } else {
        None
    };
    let inner = tracker("inner", state.inner_updates, &state.inner_names)?;
    let outer = tracker("outer", state.outer_updates, &state.outer_names)?;
    let opt_state = AdamW::read_state(&dir.join(OPTIMIZER))?;
    let outer_path = dir.join(OUTER_OPTIMIZER);
    let outer_opt_state = if outer_path.is_file() {
        Some(AdamW::read_state(&outer_path)?)
    } else {
        None
    };

    s.learner.restore(&adapter)?;
    s.learner.optimizer_mut().restore(&opt_state)?;
    s.learner.set_task_steps(state.task_steps);
    s.model().rng().restore(state.dropout_rng.clone());
    let st = s.current_mut()?;
    if st.index != state.task {
        return Err(Error::format(
            dir.join(STATE),
            format!(
                "checkpoint of task {}, resuming task {}",
                state.task, st.index
            ),
        ));
    }
    if let (Some(opt), Some(saved)) = (st.outer_opt.as_mut(), outer_opt_state.as_ref()) {
        opt.restore(saved)?;
    }
    st.set_position(state.position.clone())?;
    st.inner.restore(inner)?;
    st.outer.restore(outer)?;
    st.anchor = anchor;
    st.start_values = start;
    st.best = best;
    st.accumulated = accumulated;
    st.theta_k = None;
    st.step = state.step;
    st.outer_steps = state.outer_steps;
    st.round = state.round;
    st.skipped = state.skipped;
    st.last_checkpoint = state.step;
    st.val_history = state.val_history.clone();
    st.recent = state.recent.clone();
    st.fusions = state.fusions.clone();
    Ok(())
}
