//! TaSL (METHOD.md section 7), Recurrent-KIF's predecessor: no replay and no rounds. The
//! importance score accumulates while a task trains; after the task, each skill unit (one
//! LoRA matrix) is merged between its value before the task (`prev`) and after it (`cur`)
//! by how important the unit is to the old tasks and to the new one:
//!
//! | cur important | prev important | value |
//! |---|---|---|
//! | yes | yes | 0.3 cur + 0.7 prev |
//! | no | yes | prev |
//! | yes | no | cur |
//! | no | no | 0.5 cur + 0.5 prev |
//!
//! Importance per unit is the mean element score, min-max normalised over units, and
//! "important" means above its own 0.8 quantile. The accumulated score becomes
//! `normalise(0.3 cur + 0.7 prev)`.

use crate::kif::quantile;
use crate::session::Session;
use crate::{Error, Result};

/// Weights `(w_cur, w_prev)` of one unit.
pub fn unit_weights(cur_important: bool, prev_important: bool) -> (f64, f64) {
    match (cur_important, prev_important) {
        (true, true) => (0.3, 0.7),
        (false, true) => (0.0, 1.0),
        (true, false) => (1.0, 0.0),
        (false, false) => (0.5, 0.5),
    }
}

/// Min-max normalisation; all zeros when the values are all equal.
pub fn normalise(v: &[f64]) -> Vec<f64> {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![0.0; v.len()];
    }
    v.iter().map(|x| (x - lo) / (hi - lo)).collect()
}

/// Which units are above their own `q` quantile.
pub fn important_units(v: &[f64], q: f64) -> Result<Vec<bool>> {
    let as_f32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    let tau = quantile(&as_f32, q)?.unwrap_or(f32::INFINITY);
    Ok(as_f32.iter().map(|&x| x > tau).collect())
}

/// The merge after a task (the first task only records its scores).
pub(crate) fn merge(s: &mut Session) -> Result<()> {
    let q = s.config().kif.quantile;
    let (st, learner) = s.parts()?;
    if st.inner.updates() == 0 {
        return Ok(());
    }
    let scores = st.inner.scores();
    let mut cur_units = Vec::with_capacity(scores.len());
    for (_, t) in &scores {
        cur_units.push(
            t.mean_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?,
        );
    }
    let cur = normalise(&cur_units);
    let prev_values = st.task_start_values().to_vec();
    let params = learner.params().to_vec();
    let Some(prev) = s.tasl_scores().cloned() else {
        *s.tasl_scores_mut() = Some(cur);
        return Ok(());
    };
    if prev.len() != cur.len() {
        return Err(Error::Model(format!(
            "TaSL: {} accumulated unit scores for {} LoRA matrices",
            prev.len(),
            cur.len()
        )));
    }
    let cur_imp = important_units(&cur, q)?;
    let prev_imp = important_units(&prev, q)?;
    let mut merged = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let (wc, wp) = unit_weights(cur_imp[i], prev_imp[i]);
        let value = ((p.var.as_tensor() * wc)? + (&prev_values[i] * wp)?)?;
        merged.push(value);
    }
    learner_restore(s, &merged)?;
    let acc: Vec<f64> = cur
        .iter()
        .zip(&prev)
        .map(|(c, p)| 0.3 * c + 0.7 * p)
        .collect();
    *s.tasl_scores_mut() = Some(normalise(&acc));
    Ok(())
}

fn learner_restore(s: &mut Session, values: &[candle_core::Tensor]) -> Result<()> {
    let (_, learner) = s.parts()?;
    learner.restore(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_normalisation() -> Result<()> {
        assert_eq!(unit_weights(true, true), (0.3, 0.7));
        assert_eq!(unit_weights(false, true), (0.0, 1.0));
        assert_eq!(unit_weights(true, false), (1.0, 0.0));
        assert_eq!(unit_weights(false, false), (0.5, 0.5));
        assert_eq!(normalise(&[2.0, 4.0, 3.0]), vec![0.0, 1.0, 0.5]);
        assert_eq!(normalise(&[1.0, 1.0]), vec![0.0, 0.0]);
        // 0.8 quantile of 0..=4 is 3.2: only the top unit is above it.
        let imp = important_units(&[0.0, 1.0, 2.0, 3.0, 4.0], 0.8)?;
        assert_eq!(imp, vec![false, false, false, false, true]);
        Ok(())
    }
}
