//! Benchmark folders, examples, replay memory and validation sets.
//!
//! - [`Benchmark`] opens a benchmark folder (`.../cl_benchmark`, see
//!   `shared/data/README.md`), lists its benchmarks ([`Suite`]) and task orders
//!   ([`Order`]), and loads a task's three splits as a validated [`TaskData`].
//! - [`replay_memory`] and [`validation_set`] pick the seeded subsets a continual-learning
//!   run needs; [`prompt`] turns an [`Example`] into model text.
//! - Every file read is hashed ([`FileHash`]) for the run manifest.
//!
//! This module does not use candle; it builds for `wasm32` too.
//!
//! ```no_run
//! # fn main() -> rkif_core::Result<()> {
//! use rkif_core::data::{replay_memory, Benchmark, DEFAULT_REPLAY_FRACTION};
//! let bench = Benchmark::open("shared/data/cl_benchmark")?;
//! let order = bench.order("standard-1")?;
//! let tasks = order
//!     .tasks
//!     .iter()
//!     .map(|name| bench.load_task(name))
//!     .collect::<rkif_core::Result<Vec<_>>>()?;
//! let memory = replay_memory(&tasks[..2], DEFAULT_REPLAY_FRACTION, 42)?;
//! # Ok(())
//! # }
//! ```

mod benchmark;
mod files;
mod kif;
mod memory;
mod orders;
pub mod prompt;
mod records;
mod superni;
pub mod synthetic;
mod task;

use std::path::PathBuf;

pub use benchmark::Benchmark;
pub use files::FileHash;
pub use memory::{
    replay_memory, replay_size, validation_set, DEFAULT_REPLAY_FRACTION,
    DEFAULT_VALIDATION_PER_TASK,
};
pub use orders::{Order, Suite};
pub use task::{Example, Exclusion, Split, TaskData, TaskExample, TaskInfo};

use crate::{Error, Result};

/// Environment variable naming the benchmark folder.
pub const DATA_DIR_ENV: &str = "RKIF_DATA_DIR";

/// The benchmark folder named by `RKIF_DATA_DIR`, or an error saying to set it.
pub fn default_data_dir() -> Result<PathBuf> {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Err(Error::Data(format!(
            "{DATA_DIR_ENV} is not set; set it to a benchmark folder such as \
             shared/data/cl_benchmark, or pass the folder explicitly"
        ))),
    }
}
