//! Crash-safe file writes and JSON reading with errors that name the file.
//!
//! Every JSON artifact goes through [`write_atomic`]: a reader (the viewer, a resumed run)
//! sees either the old file or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Temp-file names tried before giving up (each taken name means another writer, or a
/// leftover from a crash, holds it).
const TEMP_NAME_ATTEMPTS: u64 = 64;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically: writes a temp file in the same folder, syncs it
/// to disk, renames it over `path`, then (on Unix) syncs the folder so the rename survives
/// a power cut. On failure the temp file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let folder = parent_folder(path);
    let (temp_path, file) = create_temp_beside(path, &folder)?;
    let written = fill_and_close(file, bytes)
        .map_err(|e| Error::io(&temp_path, e))
        .and_then(|()| fs::rename(&temp_path, path).map_err(|e| Error::io(path, e)));
    if let Err(e) = written {
        // Best effort: the write already failed, a leftover temp file is the lesser problem.
        let _ = fs::remove_file(&temp_path);
        return Err(e);
    }
    sync_folder(&folder)
}

/// Serialises `value` as pretty JSON (with a final newline) and writes it with
/// [`write_atomic`].
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::format(path, format!("cannot serialise as JSON: {e}")))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads `path` as JSON into `T`. A missing file is [`Error::Io`]; bad or truncated JSON, a
/// missing field or a wrong type is [`Error::Format`] naming the file, line and column.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_json(path, &bytes)
}

/// Parses `bytes` as JSON into `T`; `source` names them in errors (a path, or a name the
/// viewer was given with the bytes).
pub fn parse_json<T: DeserializeOwned>(source: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| json_error(source, &e))
}

/// A [`Error::Format`] that says what kind of JSON problem `error` is.
pub(crate) fn json_error(source: &Path, error: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    let kind = match error.classify() {
        Category::Eof => "truncated JSON (the file ends early)",
        Category::Syntax => "not valid JSON",
        Category::Data => "unexpected content",
        Category::Io => "read error",
    };
    Error::format(source, format!("{kind}: {error}"))
}

/// Writes `bytes`, syncs them to disk and closes the file (Windows cannot rename an open file).
fn fill_and_close(mut file: File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

fn parent_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates a fresh temp file next to `path`, named `.{file name}.tmp-{id}`.
fn create_temp_beside(path: &Path, folder: &Path) -> Result<(PathBuf, File)> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::format(path, "not a file path (no file name)"))?
        .to_string_lossy();
    let mut last_error = None;
    for _ in 0..TEMP_NAME_ATTEMPTS {
        let id = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = folder.join(format!(".{name}.tmp-{}-{id}", process_tag()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(Error::io(temp, e)),
        }
    }
    Err(Error::io(
        path,
        last_error.unwrap_or_else(|| std::io::Error::other("no free temp-file name")),
    ))
}

/// Distinguishes processes writing into the same folder. wasm32 has no process id (asking
/// for one panics there), and one writer per page is all it has.
fn process_tag() -> u32 {
    #[cfg(not(target_family = "wasm"))]
    {
        std::process::id()
    }
    #[cfg(target_family = "wasm")]
    {
        0
    }
}

/// Makes a rename in `folder` durable. Only Unix can open a folder to sync it; elsewhere
/// the rename is as durable as the platform makes it.
fn sync_folder(folder: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(folder)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| Error::io(folder, e))?;
    }
    #[cfg(not(unix))]
    let _ = folder;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        values: Vec<Option<f64>>,
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn json_round_trip_and_no_temp_files_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.json");
        let first = Sample {
            name: "one".into(),
            values: vec![Some(0.5), None],
        };
        write_json(&path, &first).unwrap();
        let second = Sample {
            name: "two".into(),
            values: vec![],
        };
        write_json(&path, &second).unwrap();
        assert_eq!(read_json::<Sample>(&path).unwrap(), second);
        assert_eq!(files_in(dir.path()), vec!["sample.json".to_string()]);
    }

    #[test]
    fn failed_write_leaves_target_untouched_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty folder: the rename must fail.
        let target = dir.path().join("busy");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"x").unwrap();
        let err = write_atomic(&target, b"data").unwrap_err();
        assert!(err.to_string().contains("busy"), "{err}");
        assert_eq!(files_in(dir.path()), vec!["busy".to_string()]);
        assert_eq!(fs::read(target.join("keep")).unwrap(), b"x");
    }

    #[test]
    fn missing_folder_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("x.json");
        let err = write_atomic(&path, b"{}").unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn truncated_json_is_a_format_error_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.json");
        fs::write(&path, b"{\"name\": \"one\", \"values\": [0.5,").unwrap();
        let err = read_json::<Sample>(&path).unwrap_err();
        match &err {
            Error::Format { path: p, what } => {
                assert_eq!(p, &path);
                assert!(what.starts_with("truncated JSON"), "{what}");
            }
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn missing_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial.json");
        fs::write(&path, b"{\"name\": \"one\"}").unwrap();
        let err = read_json::<Sample>(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("partial.json") && text.contains("missing field `values`"),
            "{text}"
        );
    }
}
