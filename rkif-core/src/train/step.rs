//! One optimiser step as the reference Trainer takes it: clip the (accumulated) gradients,
//! read the scheduled learning rate, step AdamW.

use super::adamw::AdamW;
use super::grads::Gradients;
use super::schedule::LinearWarmupSchedule;
use crate::Result;

/// What one step did (for the event log).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The learning rate the step used.
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Clip `grads` to `max_grad_norm` (or only check them when `None`), then step `opt` at the
/// rate `schedule` gives after `opt.steps_taken()` steps.
///
/// `grads` is left clipped: the importance trackers score the gradient the step used. A
/// non-finite gradient is an error before anything changes.
pub fn clipped_step(
    opt: &mut AdamW,
    schedule: &LinearWarmupSchedule,
    grads: &mut Gradients,
    max_grad_norm: Option<f64>,
) -> Result<StepStats> {
    let grad_norm = match max_grad_norm {
        Some(max) => grads.clip_global_norm(max)?,
        None => grads.global_norm()?,
    };
    let lr = schedule.lr(opt.steps_taken());
    opt.step(grads, lr)?;
    Ok(StepStats { lr, grad_norm })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::AdamWConfig;
    use crate::Error;
    use candle_core::{Device, Tensor, Var};

    fn grads(values: &[f64]) -> Result<Gradients> {
        Gradients::from_named(vec![("p".into(), Tensor::new(values, &Device::Cpu)?)])
    }

    #[test]
    fn clips_then_steps_at_the_scheduled_rate() -> Result<()> {
        let p = ("p".to_string(), Var::new(&[0.0f64, 0.0], &Device::Cpu)?);
        let mut opt = AdamW::new(std::slice::from_ref(&p), AdamWConfig::default())?;
        // No warm-up, decay over 10 steps: lr 0.1 then 0.09.
        let schedule = LinearWarmupSchedule::new(0.1, 0, 10)?;

        let mut g = grads(&[3.0, 4.0])?;
        let stats = clipped_step(&mut opt, &schedule, &mut g, Some(1.0))?;
        assert_eq!(
            stats,
            StepStats {
                lr: 0.1,
                grad_norm: 5.0
            }
        );
        let coef = 1.0 / (5.0 + 1e-6);
        assert_eq!(
            g.get("p").unwrap().to_vec1::<f64>()?,
            vec![3.0 * coef, 4.0 * coef]
        );
        // First Adam step: m_hat / sqrt(v_hat) = sign(g), so each element moves by lr.
        for x in p.1.as_tensor().to_vec1::<f64>()? {
            assert!((x + 0.1).abs() < 1e-6, "{x}");
        }

        let stats = clipped_step(&mut opt, &schedule, &mut grads(&[0.3, 0.4])?, Some(1.0))?;
        assert!((stats.lr - 0.09).abs() < 1e-15 && (stats.grad_norm - 0.5).abs() < 1e-15);
        Ok(())
    }

    #[test]
    fn non_finite_gradients_stop_the_step() -> Result<()> {
        let p = ("p".to_string(), Var::new(&[1.0f64], &Device::Cpu)?);
        let mut opt = AdamW::new(std::slice::from_ref(&p), AdamWConfig::default())?;
        let schedule = LinearWarmupSchedule::new(0.1, 0, 10)?;
        let err = clipped_step(&mut opt, &schedule, &mut grads(&[f64::INFINITY])?, None);
        assert!(matches!(err, Err(Error::NonFinite { name, .. }) if name == "p"));
        assert_eq!(opt.steps_taken(), 0);
        assert_eq!(p.1.as_tensor().to_vec1::<f64>()?, vec![1.0]);
        Ok(())
    }
}
