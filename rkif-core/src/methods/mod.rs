//! The continual-learning methods, one file each, all over the same step API of
//! [`crate::session::Session`] with the same data and step budget, so that comparisons are
//! fair:
//!
//! - [`seq_lora`]: sequential LoRA fine-tuning, the lower bound.
//! - [`replay`]: the replay memory mixed into the training pool, no fusion.
//! - [`mtl`]: joint training on all tasks at once, the upper bound.
//! - [`tasl`]: TaSL, skill-unit importance and a merge after each task.
//! - [`rkif`]: Recurrent-KIF and its two ablations (no fusion, one fusion per task).

pub mod mtl;
pub mod replay;
pub mod rkif;
pub mod seq_lora;
pub mod tasl;

use crate::config::Method;
use crate::session::Session;
use crate::Result;

/// Train the session's current task to its budget with the configured method.
pub(crate) fn train_task(s: &mut Session) -> Result<()> {
    match s.config().method {
        Method::SeqLora | Method::Replay | Method::Mtl | Method::Tasl => seq_lora::train(s),
        Method::Rkif | Method::RkifNoFusion | Method::RkifFuseOnce => rkif::train(s),
    }
}

/// What a method does once the final state of the task is selected.
pub(crate) fn finish_task(s: &mut Session) -> Result<()> {
    match s.config().method {
        Method::Tasl => tasl::merge(s),
        _ => Ok(()),
    }
}
