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
//!
//! ```
//! use rkif_core::eval::{score_predictions, AccuracyMatrix};
//!
//! let mut matrix = AccuracyMatrix::new(vec!["dbpedia".into(), "amazon".into()])?;
//! matrix.record(0, 0, score_predictions("dbpedia", &["Company"], &["company"])?)?;
//! matrix.set(1, 0, 0.5)?;
//! matrix.set(1, 1, 0.75)?;
//! let metrics = matrix.metrics();
//! assert_eq!(metrics.op.value, Some(0.625)); // (0.5 + 0.75) / 2
//! assert_eq!(metrics.bwt.value, Some(-0.5)); // 0.5 - 1.0
//! assert_eq!(metrics.fwt.value, None); // needs a[0][1] and the zero-shot row
//! # Ok::<(), rkif_core::Error>(())
//! ```

pub mod answer;
pub mod matrix;
pub mod metrics;

pub use answer::{exact_match, normalize_answer, score_predictions, TaskAccuracy};
pub use matrix::AccuracyMatrix;
pub use metrics::{ContinualMetrics, Forgetting, Metric, TaskForgetting};
