//! The learning-rate schedule: linear warm-up from 0, then linear decay to 0 (transformers'
//! `get_linear_schedule_with_warmup`).

use crate::{Error, Result};

/// `lr(step) = base * step / warmup` while `step < warmup`, then
/// `base * max(0, (total - step) / (total - warmup))`, where `step` is the number of optimiser
/// steps already taken (so the very first step uses `lr(0)`, which is 0 when `warmup > 0`).
/// Like transformers, both denominators are at least 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearWarmupSchedule {
    base_lr: f64,
    warmup: u64,
    total: u64,
}

impl LinearWarmupSchedule {
    /// `base_lr` must be finite and non-negative.
    pub fn new(base_lr: f64, warmup: u64, total: u64) -> Result<Self> {
        if !base_lr.is_finite() || base_lr < 0.0 {
            return Err(Error::config(
                "lr",
                format!("learning rate must be finite and >= 0, got {base_lr}"),
            ));
        }
        Ok(Self {
            base_lr,
            warmup,
            total,
        })
    }

    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    pub fn warmup(&self) -> u64 {
        self.warmup
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The learning rate of the step taken after `step` earlier steps.
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }

    fn factor(&self, step: u64) -> f64 {
        if step < self.warmup {
            return step as f64 / self.warmup.max(1) as f64;
        }
        // Signed arithmetic, as in Python: past `total` the ratio is negative and clamps to 0.
        let remaining = self.total as f64 - step as f64;
        let span = (self.total as f64 - self.warmup as f64).max(1.0);
        (remaining / span).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay_hand_computed() -> Result<()> {
        // base 3e-4, warmup 50, total 1250 (the T5 reference: 1000 examples, batch 8, 10 epochs).
        let s = LinearWarmupSchedule::new(3e-4, 50, 1250)?;
        let cases = [
            (0, 0.0),
            (1, 3e-4 / 50.0),
            (25, 1.5e-4),
            (49, 3e-4 * 49.0 / 50.0),
            (50, 3e-4),
            (650, 1.5e-4),         // (1250 - 650) / 1200 = 0.5
            (1249, 3e-4 / 1200.0), // one step before the end
            (1250, 0.0),
            (2000, 0.0),
        ];
        for (step, want) in cases {
            let got = s.lr(step);
            assert!((got - want).abs() <= 1e-18, "step {step}: {got} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn degenerate_spans_follow_transformers() -> Result<()> {
        // warmup 0: full rate at step 0, decay over `total`.
        let s = LinearWarmupSchedule::new(1.0, 0, 4)?;
        assert_eq!([s.lr(0), s.lr(1), s.lr(3), s.lr(4)], [1.0, 0.75, 0.25, 0.0]);
        // total <= warmup: the decay denominator is clamped to 1, so the rate drops to 0.
        let s = LinearWarmupSchedule::new(1.0, 4, 4)?;
        assert_eq!([s.lr(2), s.lr(4), s.lr(5)], [0.5, 0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn negative_rate_is_refused() {
        let err = LinearWarmupSchedule::new(-1.0, 1, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lr"), "{err}");
    }
}
