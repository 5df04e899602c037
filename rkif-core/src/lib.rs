//! # rkif-core
//!
//! Recurrent Knowledge Identification and Fusion (Recurrent-KIF, ACL 2025) for continual
//! learning of language models, on candle.
//!
//! Layers, from the bottom up (each module's doc says what it holds):
//!
//! - [`allocator`]: keep freed memory in the process (glibc), set by `rkif` at start.
//! - [`config`]: the run configuration, presets and validation.
//! - [`data`]: benchmark folders, examples, replay memory and validation sets.
//! - [`eval`]: exact-match accuracy, the accuracy matrix and the continual-learning metrics.
//! - [`report`]: the run-artifact schema (`manifest.json`, `metrics.json`, `events.jsonl`).
//! - [`sweep`]: methods × orders × seeds, one run folder each, and their state.
//! - [`results`]: the results folder (`rkif results`): tables over seeds and a viewer site.
//!
//! With the default `candle` feature:
//!
//! - [`model`]: LoRA layers and the T5 / LLaMA backbones, loading and generation.
//! - [`train`]: AdamW with restorable state, the learning-rate schedule, clipping.
//! - [`kif`]: importance trackers, quantile masks and the fusion rule.
//!
//! With the `evcxr` feature, `display` gives the session's values rich output in evcxr
//! (Rust Jupyter) notebooks.
//!
//! Without default features only `data`, `eval` and `report` build, and they build for
//! `wasm32-unknown-unknown` (the viewer uses them).

#[cfg(not(target_family = "wasm"))]
pub mod allocator;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod report;
#[cfg(not(target_family = "wasm"))]
pub mod results;
#[cfg(not(target_family = "wasm"))]
pub mod sweep;

#[cfg(feature = "evcxr")]
pub mod display;
#[cfg(feature = "candle")]
pub mod kif;
#[cfg(feature = "candle")]
pub mod methods;
#[cfg(feature = "candle")]
pub mod model;
#[cfg(feature = "candle")]
pub mod session;
#[cfg(feature = "candle")]
pub mod train;

pub use error::{Error, Result};
