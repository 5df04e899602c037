//! Training machinery that knows nothing of continual learning: named parameters and their
//! gradients, gradient-norm clipping and accumulation, AdamW with a state that can be saved and
//! restored, and the learning-rate schedule.
//!
//! One optimiser step, as the reference (Hugging Face Trainer) takes it:
//!
//! ```no_run
//! # use rkif_core::train::{AdamW, AdamWConfig, Gradients, LinearWarmupSchedule};
//! # fn demo(params: Vec<rkif_core::model::LoraParam>, loss: candle_core::Tensor) -> rkif_core::Result<()> {
//! let schedule = LinearWarmupSchedule::new(3e-4, 50, 1250)?;
//! let mut opt = AdamW::new(&params, AdamWConfig::default())?;
//! let mut grads = Gradients::from_store(&params, &loss.backward()?);
//! let norm_before_clipping = grads.clip_global_norm(1.0)?;
//! opt.step(&grads, schedule.lr(opt.steps_taken()))?;
//! # let _ = norm_before_clipping; Ok(()) }
//! ```

pub mod adamw;
pub mod grads;
pub mod params;
pub mod schedule;

pub use adamw::{AdamW, AdamWConfig, AdamWState};
pub use grads::{GradAccumulator, Gradients};
pub use params::NamedParam;
pub use schedule::LinearWarmupSchedule;
