//! Recurrent-KIF (METHOD.md section 2) and its two ablations.
//!
//! For a task with a replay memory, rounds of `Q` new-task (inner) steps, then `M` memory
//! (outer) steps, then a fusion of the two updates by the importance masks. The first task
//! has no memory and trains like [`super::seq_lora`]. A last round shorter than `Q` steps
//! takes no outer steps and no fusion (the reference fuses only when `t % Q == 0`).
//!
//! - `rkif`: fuse every round.
//! - `rkif-no-fusion`: the outer steps alone; the adapter keeps the outer steps' result.
//! - `rkif-fuse-once`: the rounds' updates are summed and fused once, at the task's end.
//!
//! The end of each round is a safe point: a checkpoint when due, a stop when asked.

use crate::config::Method;
use crate::session::Session;
use crate::{Error, Result};

pub(crate) fn train(s: &mut Session) -> Result<()> {
    let method = s.config().method;
    let q = s.config().kif.inner_steps;
    let m = s.config().kif.outer_steps;
    let has_memory = s.current().is_some_and(|t| t.memory_len() > 0);
    if !has_memory {
        return super::seq_lora::train(s);
    }
    loop {
        let st = s
            .current()
            .ok_or_else(|| Error::Data("no task is being trained".into()))?;
        let remaining = st.planned.saturating_sub(st.step);
        if remaining == 0 {
            break;
        }
        let n = remaining.min(q);
        s.run_inner(n)?;
        if n < q {
            break;
        }
        s.run_outer(m)?;
        match method {
            Method::RkifNoFusion => s.end_round_without_fusion(false)?,
            Method::RkifFuseOnce => s.end_round_without_fusion(true)?,
            _ => {
                s.fuse()?;
            }
        }
        // The end of a round: the one safe point of Recurrent-KIF's loop.
        s.safe_point()?;
    }
    if method == Method::RkifFuseOnce {
        s.fuse_accumulated()?;
    }
    Ok(())
}
