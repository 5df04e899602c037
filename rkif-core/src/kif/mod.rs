//! Recurrent-KIF's identification and fusion as pure tensor functions (METHOD.md sections
//! 3 and 4):
//!
//! - [`importance`]: element-wise importance trackers (EMA sensitivity times EMA uncertainty),
//!   one for the new-task (inner) steps and one for the replay (outer) steps.
//! - [`mask`]: the exact global (or per-tensor) quantile threshold and the `score > tau` masks.
//! - [`fusion`]: the coefficient table and `anchor + (c_in * delta_in + c_out * delta_out)`,
//!   with per-case statistics.
//!
//! A round, with these pieces:
//!
//! ```text
//! inner.update(&[ParamGrad { name, param, grad }, ...])      after each new-task step
//! outer.update(...)                                            after each replay step
//! let m_in  = global_mask(&inner.scores(), 0.8)?;
//! let m_out = global_mask(&outer.scores(), 0.8)?;
//! let fused = fuse(&FusionTable::default(), &[FusionTensor { .. }, ...])?;
//! fused.write_into(&params)?;  inner.reset();
//! ```
//!
//! Nothing here reads files or knows about models beyond parameter names; every non-finite
//! value is an error that names its tensor.

pub mod fusion;
mod host;
pub mod importance;
pub mod mask;

pub use fusion::{
    coefficients, fuse, CaseWeights, FusedTensor, Fusion, FusionCase, FusionStats, FusionTable,
    FusionTensor,
};
pub use importance::{
    ImportanceConfig, ImportanceState, ImportanceTracker, ParamGrad, SavedImportance, Sensitivity,
    TensorImportance,
};
pub use mask::{
    global_mask, importance_mask, local_mask, quantile, ImportanceMask, MaskScope, TensorMask,
    DEFAULT_QUANTILE,
};
