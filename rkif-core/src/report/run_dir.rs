//! The run directory: where each artifact of a run lives.
//!
//! ```text
//! runs/<name>/
//!   manifest.json    Manifest
//!   metrics.json     MetricsFile
//!   events.jsonl     header + Event lines
//!   importance/      task-000-round-0008.json, task-000-end.json (ImportanceSnapshot)
//!   adapters/        task-000/ ... (PEFT layout, one folder per trained task)
//!   checkpoint/      what resume needs (written by the training side)
//! ```

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::report::events::{read_events, EventLog, EventWriter};
use crate::report::importance::ImportanceSnapshot;
use crate::report::manifest::Manifest;
use crate::report::metrics_file::MetricsFile;
use crate::report::schema::{read_artifact, write_artifact};
use crate::{Error, Result};

/// File name of the manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the metrics.
pub const METRICS_FILE: &str = "metrics.json";
/// File name of the event log.
pub const EVENTS_FILE: &str = "events.jsonl";
/// Folder of importance snapshots.
pub const IMPORTANCE_DIR: &str = "importance";
/// Folder of per-task adapters.
pub const ADAPTERS_DIR: &str = "adapters";
/// Folder of the resume checkpoint.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// The paths of one run's artifacts, and their loading and saving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

/// Where an importance snapshot was taken, as read from its file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImportanceEntry {
    /// Task index.
    pub task: usize,
    /// Round within the task; `None` for the end of the task (sorts first).
    pub round: Option<usize>,
    /// The snapshot file.
    pub path: PathBuf,
}

impl RunDir {
    /// Creates a new run folder at `root` with its sub-folders. Refuses a folder that
    /// already holds a run (a `manifest.json`): open that one to resume it instead.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let run = Self { root: root.into() };
        fs::create_dir_all(&run.root).map_err(|e| Error::io(&run.root, e))?;
        let manifest = run.manifest_path();
        if manifest.exists() {
            return Err(Error::io(
                manifest,
                std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    "a run already exists here; open it to resume, or choose another folder",
                ),
            ));
        }
        for dir in [
            run.importance_dir(),
            run.adapters_dir(),
            run.checkpoint_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(run)
    }

    /// Opens an existing run: `root` must be a folder holding a `manifest.json`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let run = Self { root: root.into() };
        let manifest = run.manifest_path();
        if !manifest.is_file() {
            return Err(Error::io(
                manifest,
                std::io::Error::new(ErrorKind::NotFound, "not a run folder (no manifest.json)"),
            ));
        }
        Ok(run)
    }

    /// The run folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `manifest.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST_FILE)
    }

    /// `metrics.json`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join(METRICS_FILE)
    }

    /// `events.jsonl`.
    pub fn events_path(&self) -> PathBuf {
        self.root.join(EVENTS_FILE)
    }

    /// `importance/`.
    pub fn importance_dir(&self) -> PathBuf {
        self.root.join(IMPORTANCE_DIR)
    }

    /// `adapters/`.
    pub fn adapters_dir(&self) -> PathBuf {
        self.root.join(ADAPTERS_DIR)
    }

    /// `checkpoint/`.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join(CHECKPOINT_DIR)
    }

    /// The adapter folder after training task `task`: `adapters/task-000/`.
    pub fn adapter_dir(&self, task: usize) -> PathBuf {
        self.adapters_dir().join(format!("task-{task:03}"))
    }

    /// The importance snapshot of `task` at `round` (`None`: end of task):
    /// `importance/task-000-round-0008.json` or `importance/task-000-end.json`.
    pub fn importance_path(&self, task: usize, round: Option<usize>) -> PathBuf {
        let name = match round {
            Some(round) => format!("task-{task:03}-round-{round:04}.json"),
            None => format!("task-{task:03}-end.json"),
        };
        self.importance_dir().join(name)
    }

    /// Writes `manifest.json` atomically.
    pub fn save_manifest(&self, manifest: &Manifest) -> Result<()> {
        write_artifact(&self.manifest_path(), manifest)
    }

    /// Reads and checks `manifest.json`.
    pub fn load_manifest(&self) -> Result<Manifest> {
        read_artifact(&self.manifest_path())
    }

    /// Writes `metrics.json` atomically.
    pub fn save_metrics(&self, metrics: &MetricsFile) -> Result<()> {
        write_artifact(&self.metrics_path(), metrics)
    }

    /// Reads and checks `metrics.json`.
    pub fn load_metrics(&self) -> Result<MetricsFile> {
        read_artifact(&self.metrics_path())
    }

    /// Opens `events.jsonl` for appending (see [`EventWriter::open`]).
    pub fn events_writer(&self) -> Result<EventWriter> {
        EventWriter::open(&self.events_path())
    }

    /// Reads `events.jsonl` (see [`read_events`]).
    pub fn load_events(&self) -> Result<EventLog> {
        read_events(&self.events_path())
    }

    /// Writes an importance snapshot atomically under its task and round; returns its path.
    pub fn save_importance(&self, snapshot: &ImportanceSnapshot) -> Result<PathBuf> {
        let dir = self.importance_dir();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = self.importance_path(snapshot.task, snapshot.round);
        write_artifact(&path, snapshot)?;
        Ok(path)
    }

    /// Reads the importance snapshot of `task` at `round`.
    pub fn load_importance(&self, task: usize, round: Option<usize>) -> Result<ImportanceSnapshot> {
        read_artifact(&self.importance_path(task, round))
    }

    /// The importance snapshots present, by task then round (end of task first). Files whose
    /// names do not follow the pattern are ignored; a missing folder means none.
    pub fn importance_entries(&self) -> Result<Vec<ImportanceEntry>> {
        let dir = self.importance_dir();
        let reader = match fs::read_dir(&dir) {
            Ok(reader) => reader,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut entries = Vec::new();
        for item in reader {
            let item = item.map_err(|e| Error::io(&dir, e))?;
            let name = item.file_name();
            if let Some((task, round)) = name.to_str().and_then(parse_importance_name) {
                entries.push(ImportanceEntry {
                    task,
                    round,
                    path: item.path(),
                });
            }
        }
        entries.sort();
        Ok(entries)
    }
}

/// `task-000-round-0008.json` -> `(0, Some(8))`, `task-000-end.json` -> `(0, None)`.
pub fn parse_importance_name(name: &str) -> Option<(usize, Option<usize>)> {
    let stem = name.strip_prefix("task-")?.strip_suffix(".json")?;
    let (task, rest) = stem.split_once('-')?;
    let task = task.parse().ok()?;
    if rest == "end" {
        return Some((task, None));
    }
    let round = rest.strip_prefix("round-")?.parse().ok()?;
    Some((task, Some(round)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{AccuracyMatrix, TaskAccuracy};
    use crate::report::events::{Event, StepEvent};
    use crate::report::importance::{
        downsample_mean, ImportanceMap, LoraFactor, ModuleImportance, ScoreKind, ScoreSummary,
    };
    use crate::report::manifest::DataFileHash;
    use crate::report::schema::Artifact;

    fn manifest() -> Manifest {
        let mut m = Manifest::new("demo", "recurrent-kif", "cpu", 8, "2026-11-30T12:00:00Z");
        m.config = serde_json::json!({ "lora": { "r": 8, "alpha": 32 } });
        m.seeds.insert("init".into(), 42);
        m.seeds.insert("shuffle".into(), u64::MAX);
        m.crate_versions
            .insert("candle-core".into(), "0.11.1".into());
        m.data_files.push(DataFileHash {
            path: "agnews/train.json".into(),
            bytes: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        });
        m.record_timing("train", 12.5);
        m
    }

    fn metrics() -> MetricsFile {
        let mut m = AccuracyMatrix::new(vec!["dbpedia".into(), "amazon".into()]).unwrap();
        m.record(
            0,
            0,
            TaskAccuracy {
                correct: 9,
                total: 10,
            },
        )
        .unwrap();
        m.set(1, 0, 0.7).unwrap();
        m.set_zero_shot(1, 0.1).unwrap();
        let mut file = MetricsFile::from_matrix(&m);
        file.caveats.push("yahoo test set is its dev set".into());
        file
    }

    fn snapshot() -> ImportanceSnapshot {
        let mut s = ImportanceSnapshot::new(1, Some(8), 64);
        s.inner_threshold = Some(0.5);
        let scores: Vec<f32> = (0..16).map(|v| v as f32 / 16.0).collect();
        s.modules.push(ModuleImportance {
            module: "encoder.block.0.layer.0.SelfAttention.q".into(),
            layer: 0,
            kind: "q".into(),
            factor: LoraFactor::A,
            shape: [2, 8],
            inner: Some(ScoreSummary::of("q.A", &scores, Some(0.5)).unwrap()),
            outer: None,
        });
        s.maps.push(ImportanceMap {
            module: "encoder.block.0.layer.0.SelfAttention.q".into(),
            factor: LoraFactor::A,
            score: ScoreKind::Inner,
            grid: downsample_mean("q.A", &scores, [2, 8], [2, 4]).unwrap(),
        });
        s
    }

    /// Every file under `root`, as paths relative to it, sorted.
    fn all_files(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut folders = vec![root.to_path_buf()];
        while let Some(dir) = folders.pop() {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    found.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn artifacts_round_trip_and_leave_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path().join("demo")).unwrap();
        run.save_manifest(&manifest()).unwrap();
        run.save_metrics(&metrics()).unwrap();
        // Rewrite: the second write replaces the first atomically.
        run.save_metrics(&metrics()).unwrap();
        let path = run.save_importance(&snapshot()).unwrap();
        run.save_importance(&ImportanceSnapshot::new(1, None, 80))
            .unwrap();
        let mut events = run.events_writer().unwrap();
        let step = Event::Step(StepEvent {
            task: 0,
            step: 1,
            loss: 2.0,
            lr: 1e-4,
            grad_norm: 0.3,
        });
        events.append(&step).unwrap();
        drop(events);

        let run = RunDir::open(run.root()).unwrap();
        assert_eq!(run.load_manifest().unwrap(), manifest());
        assert_eq!(run.load_metrics().unwrap(), metrics());
        assert_eq!(run.load_importance(1, Some(8)).unwrap(), snapshot());
        assert_eq!(run.load_events().unwrap().events, vec![step]);
        assert_eq!(run.load_manifest().unwrap().seeds["shuffle"], u64::MAX);

        let entries = run.importance_entries().unwrap();
        let keys: Vec<_> = entries.iter().map(|e| (e.task, e.round)).collect();
        assert_eq!(keys, vec![(1, None), (1, Some(8))]);
        assert_eq!(entries[1].path, path);

        assert_eq!(
            all_files(run.root()),
            vec![
                "events.jsonl",
                "importance/task-001-end.json",
                "importance/task-001-round-0008.json",
                "manifest.json",
                "metrics.json",
            ]
        );
        assert!(run.checkpoint_dir().is_dir() && run.adapters_dir().is_dir());
        assert_eq!(run.adapter_dir(2), run.root().join("adapters/task-002"));
    }

    #[test]
    fn create_refuses_an_existing_run_and_open_a_non_run() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path().join("demo")).unwrap();
        run.save_manifest(&manifest()).unwrap();
        let err = RunDir::create(run.root()).unwrap_err();
        assert!(err.to_string().contains("manifest.json"), "{err}");
        let err = RunDir::open(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("not a run folder"), "{err}");
    }

    #[test]
    fn newer_schema_is_refused_with_the_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path()).unwrap();
        let mut value = serde_json::to_value(metrics()).unwrap();
        value["schema_version"] = serde_json::json!(MetricsFile::SCHEMA_VERSION + 1);
        // A newer version may change anything; the version is checked before the fields.
        value["op"] = serde_json::json!("renamed");
        fs::write(run.metrics_path(), value.to_string()).unwrap();
        match run.load_metrics().unwrap_err() {
            Error::SchemaVersion {
                path,
                found,
                supported,
            } => {
                assert_eq!(path, run.metrics_path());
                assert_eq!((found, supported), (2, 1));
            }
            other => panic!("expected a schema-version error, got {other:?}"),
        }
    }

    #[test]
    fn truncated_or_incomplete_files_are_refused_with_the_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path()).unwrap();
        run.save_manifest(&manifest()).unwrap();
        let text = fs::read_to_string(run.manifest_path()).unwrap();
        fs::write(run.manifest_path(), &text[..text.len() / 2]).unwrap();
        match run.load_manifest().unwrap_err() {
            Error::Format { path, what } => {
                assert_eq!(path, run.manifest_path());
                assert!(what.starts_with("truncated JSON"), "{what}");
            }
            other => panic!("expected a format error, got {other:?}"),
        }

        let mut value = serde_json::to_value(manifest()).unwrap();
        value.as_object_mut().unwrap().remove("device");
        fs::write(run.manifest_path(), value.to_string()).unwrap();
        let err = run.load_manifest().unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("manifest.json") && text.contains("missing field `device`"),
            "{text}"
        );

        let mut value = serde_json::to_value(manifest()).unwrap();
        value.as_object_mut().unwrap().remove("schema_version");
        fs::write(run.manifest_path(), value.to_string()).unwrap();
        let err = run.load_manifest().unwrap_err();
        assert!(
            err.to_string().contains("missing field `schema_version`"),
            "{err}"
        );
    }

    #[test]
    fn inconsistent_metrics_are_refused_on_load_and_save() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path()).unwrap();
        let mut bad = metrics();
        bad.accuracy[1].pop();
        let err = run.save_metrics(&bad).unwrap_err();
        assert!(
            err.to_string().contains("accuracy[1]: 1 cells for 2 tasks"),
            "{err}"
        );
        assert!(!run.metrics_path().exists());
        fs::write(run.metrics_path(), serde_json::to_string(&bad).unwrap()).unwrap();
        let err = run.load_metrics().unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("metrics.json") && text.contains("accuracy[1]"),
            "{text}"
        );
    }

    #[test]
    fn importance_names_parse_strictly() {
        assert_eq!(
            parse_importance_name("task-002-round-0015.json"),
            Some((2, Some(15)))
        );
        assert_eq!(parse_importance_name("task-010-end.json"), Some((10, None)));
        assert_eq!(parse_importance_name("task-1-round-x.json"), None);
        assert_eq!(parse_importance_name(".task-001-end.json.tmp-1-0"), None);
    }
}
