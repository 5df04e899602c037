//! Schema versions of the run artifacts and the checks made when loading one.
//!
//! Every JSON artifact carries a `schema_version` (and `events.jsonl` a header line with it).
//! Any change to a file's shape that an older reader would misread bumps its version. A
//! reader accepts its own version and older ones, and refuses a newer one with
//! [`Error::SchemaVersion`] naming the file, before trying to parse the rest. Unknown fields
//! are ignored, so notes added by hand or by other tools do not break loading.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::report::atomic::{json_error, write_json};
use crate::{Error, Result};

/// A versioned JSON artifact of the run directory.
pub trait Artifact: Serialize + serde::de::DeserializeOwned {
    /// The newest schema version this rkif writes and reads.
    const SCHEMA_VERSION: u32;

    /// Checks what serde cannot (shapes, ranges). The message names the field.
    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// Just the version field, read before the rest so a newer file is refused by its version
/// rather than by whatever field it changed.
#[derive(Deserialize)]
struct VersionProbe {
    schema_version: Option<serde_json::Value>,
}

/// Parses an artifact from `bytes`; `source` names them in errors. Checks the schema version
/// first, then the content, then [`Artifact::validate`].
pub fn parse_artifact<T: Artifact>(source: &Path, bytes: &[u8]) -> Result<T> {
    let probe: VersionProbe = serde_json::from_slice(bytes).map_err(|e| json_error(source, &e))?;
    let found = match probe.schema_version {
        None => return Err(Error::format(source, "missing field `schema_version`")),
        Some(value) => value
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v >= 1)
            .ok_or_else(|| {
                Error::format(
                    source,
                    format!("`schema_version` is {value}, not a version number (1, 2, ...)"),
                )
            })?,
    };
    if found > T::SCHEMA_VERSION {
        return Err(Error::SchemaVersion {
            path: source.to_path_buf(),
            found,
            supported: T::SCHEMA_VERSION,
        });
    }
    let value: T = serde_json::from_slice(bytes).map_err(|e| json_error(source, &e))?;
    value
        .validate()
        .map_err(|what| Error::format(source, what))?;
    Ok(value)
}

/// Reads and checks an artifact file (see [`parse_artifact`]).
pub fn read_artifact<T: Artifact>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_artifact(path, &bytes)
}

/// Checks an artifact and writes it atomically as pretty JSON.
pub fn write_artifact<T: Artifact>(path: &Path, value: &T) -> Result<()> {
    value
        .validate()
        .map_err(|what| Error::format(path, format!("refusing to write: {what}")))?;
    write_json(path, value)
}
