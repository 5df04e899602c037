//! `manifest.json`: what a run was, so that it can be reproduced and compared.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::report::schema::Artifact;
use crate::{Error, Result};

/// The run's identity card: config, seeds, versions, device, data hashes, timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of this file's shape ([`Manifest::SCHEMA_VERSION`] when written by this rkif).
    pub schema_version: u32,
    /// The rkif version that wrote the run.
    pub rkif_version: String,
    /// The run's name (usually its folder name).
    pub run_name: String,
    /// The method: `seq-lora`, `replay`, `mtl`, `tasl`, `recurrent-kif`, ...
    pub method: String,
    /// The full run configuration as JSON (its typed form lives in the config module).
    pub config: serde_json::Value,
    /// Every seed the run used, by purpose (`init`, `shuffle`, `memory`, ...).
    pub seeds: BTreeMap<String, u64>,
    /// Versions of the crates that shape the numbers (`candle-core`, ...).
    pub crate_versions: BTreeMap<String, String>,
    /// The device the run used, as text (`cpu`, `cuda:0 (NVIDIA H200)`).
    pub device: String,
    /// Examples per optimiser step: micro-batch size times accumulation steps.
    pub effective_batch: usize,
    /// The data files read, with their sizes and SHA-256 hashes.
    pub data_files: Vec<DataFileHash>,
    /// Named wall-clock durations, in the order they were recorded.
    pub timings: Vec<Timing>,
    /// When the run was created, as the caller wrote it (RFC 3339 recommended). Supplied by
    /// the caller because wasm has no clock.
    pub created: String,
}

impl Artifact for Manifest {
    const SCHEMA_VERSION: u32 = 1;

    fn validate(&self) -> std::result::Result<(), String> {
        if self.run_name.trim().is_empty() {
            return Err("run_name: empty".into());
        }
        for (i, file) in self.data_files.iter().enumerate() {
            if !is_sha256_hex(&file.sha256) {
                return Err(format!(
                    "data_files[{i}] ({}): sha256 `{}` is not 64 lower-case hex digits",
                    file.path, file.sha256
                ));
            }
        }
        for (i, timing) in self.timings.iter().enumerate() {
            if !(timing.seconds.is_finite() && timing.seconds >= 0.0) {
                return Err(format!(
                    "timings[{i}] ({}): {} is not a duration in seconds",
                    timing.name, timing.seconds
                ));
            }
        }
        Ok(())
    }
}

impl Manifest {
    /// A manifest with this rkif's version and schema, and empty config, seeds, versions,
    /// data files and timings for the caller to fill.
    pub fn new(
        run_name: impl Into<String>,
        method: impl Into<String>,
        device: impl Into<String>,
        effective_batch: usize,
        created: impl Into<String>,
    ) -> Self {
        Self {
            schema_version: Self::SCHEMA_VERSION,
            rkif_version: env!("CARGO_PKG_VERSION").to_owned(),
            run_name: run_name.into(),
            method: method.into(),
            config: serde_json::Value::Null,
            seeds: BTreeMap::new(),
            crate_versions: BTreeMap::new(),
            device: device.into(),
            effective_batch,
            data_files: Vec::new(),
            timings: Vec::new(),
            created: created.into(),
        }
    }

    /// Adds (or replaces) a named duration, keeping first-recorded order.
    pub fn record_timing(&mut self, name: impl Into<String>, seconds: f64) {
        let name = name.into();
        match self.timings.iter_mut().find(|t| t.name == name) {
            Some(timing) => timing.seconds = seconds,
            None => self.timings.push(Timing { name, seconds }),
        }
    }
}

/// One named duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// What was timed (`load-model`, `task-0/train`, ...).
    pub name: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A data file's identity: where it was, its size and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFileHash {
    /// The path as the run named it (relative to the data root, preferably).
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, 64 lower-case hex digits.
    pub sha256: String,
}

impl DataFileHash {
    /// Hashes the file at `file`, streaming, and records it under `recorded_path` (so a
    /// manifest need not hold machine-specific absolute paths).
    pub fn compute(file: &Path, recorded_path: impl Into<String>) -> Result<Self> {
        let mut reader = File::open(file).map_err(|e| Error::io(file, e))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = reader.read(&mut buffer).map_err(|e| Error::io(file, e))?;
            if n == 0 {
                break;
            }
            let chunk = buffer
                .get(..n)
                .ok_or_else(|| Error::format(file, "read returned more bytes than asked"))?;
            hasher.update(chunk);
            bytes += n as u64;
        }
        Ok(Self {
            path: recorded_path.into(),
            bytes,
            sha256: to_hex(&hasher.finalize()),
        })
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_a_file_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.json");
        std::fs::write(&path, b"abc").unwrap();
        let hash = DataFileHash::compute(&path, "agnews/train.json").unwrap();
        assert_eq!(hash.path, "agnews/train.json");
        assert_eq!(hash.bytes, 3);
        // SHA-256("abc"), FIPS 180-2 appendix B.1
        assert_eq!(
            hash.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn missing_data_file_names_it() {
        let err = DataFileHash::compute(Path::new("/no/such/file.json"), "x").unwrap_err();
        assert!(err.to_string().contains("/no/such/file.json"), "{err}");
    }

    #[test]
    fn record_timing_replaces_by_name_in_order() {
        let mut m = Manifest::new("demo", "recurrent-kif", "cpu", 8, "2026-01-01T00:00:00Z");
        m.record_timing("load", 1.0);
        m.record_timing("train", 2.0);
        m.record_timing("load", 1.5);
        let names: Vec<_> = m
            .timings
            .iter()
            .map(|t| (t.name.as_str(), t.seconds))
            .collect();
        assert_eq!(names, vec![("load", 1.5), ("train", 2.0)]);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut m = Manifest::new("demo", "tasl", "cpu", 8, "now");
        m.data_files.push(DataFileHash {
            path: "a.json".into(),
            bytes: 1,
            sha256: "XYZ".into(),
        });
        let err = m.validate().unwrap_err();
        assert!(err.starts_with("data_files[0] (a.json)"), "{err}");
    }
}
