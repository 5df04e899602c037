//! Training machinery that knows nothing of continual learning: named parameters and their
//! gradients, gradient-norm clipping and accumulation, AdamW with a state that can be saved and
//! restored, and the learning-rate schedule.
//!
//! One optimiser step, as the reference (Hugging Face Trainer) takes it:
//!
//! ```no_run
//! # use rkif_core::train::{clipped_step, AdamW, AdamWConfig, Gradients, LinearWarmupSchedule};
//! # fn demo(params: Vec<rkif_core::model::LoraParam>, loss: candle_core::Tensor) -> rkif_core::Result<()> {
//! let schedule = LinearWarmupSchedule::new(3e-4, 50, 1250)?;
//! let mut opt = AdamW::new(&params, AdamWConfig::default())?;
//! let mut grads = Gradients::from_store(&params, &loss.backward()?);
//! let stats = clipped_step(&mut opt, &schedule, &mut grads, Some(1.0))?;
//! println!("lr {} grad norm {}", stats.lr, stats.grad_norm);
//! # Ok(()) }
//! ```

pub mod adamw;
pub mod grads;
pub mod learner;
pub mod params;
pub mod schedule;
pub mod step;

pub use adamw::{AdamW, AdamWConfig, AdamWState};
pub use grads::{GradAccumulator, Gradients};
pub use learner::{Learner, LearnerMark, StepOptimizer, StepRecord};
pub use params::NamedParam;
pub use schedule::LinearWarmupSchedule;
pub use step::{clipped_step, StepStats};
