//! The one error type of rkif. Every variant names what was wrong and where (a file, a
//! field, a tensor), so that a notebook user can fix the input without reading our code.

use std::path::PathBuf;

/// Errors from any layer of rkif.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its content is not what we expected (bad JSON, a missing field,
    /// a value out of range). `what` says which record or field.
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },

    /// A run artifact was written by a newer rkif than this one.
    #[error(
        "{path}: schema version {found} is newer than the newest this rkif reads ({supported})"
    )]
    SchemaVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// A configuration value is missing or out of range. `field` is its dotted path.
    #[error("config field `{field}`: {what}")]
    Config { field: String, what: String },

    /// Data are valid files but cannot be used as asked (an unknown task, an empty split).
    #[error("data: {0}")]
    Data(String),

    /// A tensor has the wrong shape or dtype, or a checkpoint does not match its config.
    #[error("tensor `{name}`: {what}")]
    Tensor { name: String, what: String },

    /// A loss, gradient or score that should be finite is not.
    #[error("non-finite value in `{name}` ({what})")]
    NonFinite { name: String, what: String },

    /// Training stopped at a safe point because a stop was requested (Ctrl-C). A checkpoint
    /// was written first when the session has a run folder; resuming continues from it.
    #[error("interrupted at task {task}, step {step}: a stop was requested")]
    Interrupted { task: usize, step: usize },

    /// A model or tokenizer could not be loaded.
    #[error("model: {0}")]
    Model(String),

    /// Anything candle reports.
    #[cfg(feature = "candle")]
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with rkif's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A content error in `path`.
    pub fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            what: what.into(),
        }
    }

    /// A configuration error on `field`.
    pub fn config(field: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            what: what.into(),
        }
    }

    /// A tensor error on `name`.
    pub fn tensor(name: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            what: what.into(),
        }
    }
}
