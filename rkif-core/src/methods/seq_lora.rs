//! SeqLoRA: one LoRA adapter fine-tuned on each task in turn, nothing else. The lower bound
//! of continual learning: what it forgets, the other methods try to keep.
//!
//! The loop is also the training of Replay, MTL and TaSL, whose differences lie in the data
//! the session prepares ([`super::replay`], [`super::mtl`]) or in what happens after the task
//! ([`super::tasl`]).

use crate::session::Session;
use crate::{Error, Result};

/// Optimiser steps until the task's budget is spent; every step ends at a safe point
/// (checkpoint when due, stop when asked).
pub(crate) fn train(s: &mut Session) -> Result<()> {
    loop {
        let st = s
            .current()
            .ok_or_else(|| Error::Data("no task is being trained".into()))?;
        if st.step >= st.planned {
            return Ok(());
        }
        s.run_inner(1)?;
        s.safe_point()?;
    }
}
