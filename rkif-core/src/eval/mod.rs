//! Evaluation: exact-match scoring and the continual-learning metrics.
//!
//! - [`answer`]: answer normalisation, exact match and per-task accuracy.
//! - [`matrix`]: the [`AccuracyMatrix`] `a[j][i]` (accuracy on task `i` after training task
//!   `j`) with its optional zero-shot row `b[i]`.
//! - [`metrics`]: OP, BWT, FWT and forgetting computed from the matrix, each carrying its
//!   formula and how many terms it could use.
//!
//! Accuracies are fractions in `0..=1`, never percentages; reports scale them for display.
//! Nothing here depends on candle, so the viewer (wasm32) uses the same code.

pub mod answer;
pub mod matrix;
pub mod metrics;

pub use answer::{exact_match, normalize_answer, score_predictions, TaskAccuracy};
pub use matrix::AccuracyMatrix;
pub use metrics::{ContinualMetrics, Forgetting, Metric, TaskForgetting};
