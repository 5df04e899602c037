//! The run-artifact schema: what a run writes, and what notebooks, the CLI and the viewer
//! read. Plain serde types and pure functions; no candle, builds for wasm32.
//!
//! - [`run_dir`]: the [`RunDir`] layout and loading / saving of each artifact.
//! - [`manifest`]: `manifest.json`, the run's identity (config, seeds, versions, data hashes).
//! - [`metrics_file`]: `metrics.json`, the accuracy matrix and metrics with their formulas.
//! - [`events`]: `events.jsonl`, per-step and per-round training events.
//! - [`importance`]: `importance/*.json`, score summaries and down-sampled maps.
//! - [`schema`]: versioning and the checks made on load.
//! - [`figures`]: plotly figures of a run, shared by the viewer and notebooks.
//! - [`site`]: the static report folder (`rkif report`), not on wasm.
//! - [`atomic`]: crash-safe writes and JSON reading with errors that name the file.
//!
//! ```
//! use rkif_core::eval::AccuracyMatrix;
//! use rkif_core::report::{Event, Manifest, MetricsFile, RunDir, StepEvent};
//!
//! # let tmp = tempfile::tempdir()?;
//! # let folder = tmp.path().join("demo");
//! let run = RunDir::create(&folder)?;
//! run.save_manifest(&Manifest::new("demo", "recurrent-kif", "cpu", 8, "2026-11-30T12:00:00Z"))?;
//! let mut events = run.events_writer()?;
//! events.append(&Event::Step(StepEvent { task: 0, step: 1, loss: 2.3, lr: 6e-6, grad_norm: 0.8 }))?;
//! let mut matrix = AccuracyMatrix::new(vec!["agnews".into()])?;
//! matrix.set(0, 0, 0.9)?;
//! run.save_metrics(&MetricsFile::from_matrix(&matrix))?;
//!
//! let run = RunDir::open(&folder)?;
//! assert_eq!(run.load_metrics()?.op.value, Some(0.9));
//! assert_eq!(run.load_events()?.events.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod atomic;
pub mod events;
pub mod figures;
pub mod importance;
pub mod manifest;
pub mod metrics_file;
pub mod run_dir;
pub mod schema;
#[cfg(not(target_family = "wasm"))]
pub mod site;

pub use atomic::{parse_json, read_json, write_atomic, write_json};
pub use events::{
    parse_events, read_events, EvalEvent, Event, EventLog, EventWriter, FusionShares, LogHeader,
    RoundEvent, RoundTimings, SkippedStep, StepEvent, TaskEnd, TaskStart, ValLoss,
    EVENTS_SCHEMA_VERSION,
};
pub use importance::{
    downsample_mean, ElementGrid, ImportanceMap, ImportanceSnapshot, LoraFactor, ModuleImportance,
    ScoreKind, ScoreSummary, DEFAULT_MAP_SIDE,
};
pub use manifest::{DataFileHash, Manifest, Timing};
pub use metrics_file::{MetricsFile, TaskDetail};
pub use run_dir::{ImportanceEntry, RunDir};
pub use schema::{parse_artifact, read_artifact, write_artifact, Artifact};
