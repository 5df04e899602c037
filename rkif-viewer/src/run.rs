//! One run as the viewer holds it: the artifacts that parsed, and a message naming each file
//! that did not. Pure Rust (no browser), so it is tested natively and in the browser alike.

use std::collections::BTreeMap;
use std::path::Path;

use rkif_core::report::run_dir::{
    parse_importance_name, EVENTS_FILE, IMPORTANCE_DIR, MANIFEST_FILE, METRICS_FILE,
};
use rkif_core::report::{parse_artifact, parse_events, EventLog, Manifest, MetricsFile};

/// An importance snapshot file of a run, not yet read (snapshots load on demand).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotRef {
    /// Task index.
    pub task: usize,
    /// Round within the task; `None` for the end of the task.
    pub round: Option<usize>,
    /// Path relative to the run folder: `importance/task-000-round-0008.json`.
    pub path: String,
}

/// A run's parsed artifacts. Each is `None` when its file was missing or bad, and then
/// `problems` holds a message naming the file.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// Where the run came from (`runs/a`, a URL, `dropped files`); prefixes file names.
    pub origin: String,
    /// `manifest.json`.
    pub manifest: Option<Manifest>,
    /// `metrics.json`.
    pub metrics: Option<MetricsFile>,
    /// `events.jsonl`.
    pub events: Option<EventLog>,
    /// Importance snapshots present, by task then round (end of task last).
    pub snapshots: Vec<SnapshotRef>,
    /// One message per file that could not be used, naming it.
    pub problems: Vec<String>,
}

/// A file as fetched: its bytes, or why it could not be read (`HTTP 404`, ...).
pub type Fetched = Result<Vec<u8>, String>;

impl RunData {
    /// Parses the artifacts in `files` (keys are paths relative to the run folder; a key
    /// listed with an error was requested but could not be read). Snapshot files are only
    /// listed, not parsed: see [`RunData::snapshots`].
    pub fn parse(origin: &str, files: &BTreeMap<String, Fetched>) -> Self {
        let mut run = Self::parse_deferring_events(origin, files);
        if let Some(Ok(bytes)) = files.get(EVENTS_FILE) {
            run.read_events(bytes);
        }
        run
    }

    /// Like [`RunData::parse`] but leaves `events.jsonl` unparsed (the largest file of a long
    /// run, and only needed by views below the first): hand its bytes to
    /// [`RunData::read_events`] when needed. Only a missing or unreadable `events.jsonl` is
    /// in `problems` already; its bytes in `files` are not looked at (they may be a
    /// placeholder for a file listed but not fetched yet).
    pub fn parse_deferring_events(origin: &str, files: &BTreeMap<String, Fetched>) -> Self {
        let mut run = RunData {
            origin: origin.to_owned(),
            ..RunData::default()
        };
        let name = |file: &str| format!("{origin}/{file}");
        let get = |file: &str, problems: &mut Vec<String>| -> Option<Vec<u8>> {
            match files.get(file) {
                Some(Ok(bytes)) => Some(bytes.clone()),
                Some(Err(why)) => {
                    problems.push(format!("{}: cannot read ({why})", name(file)));
                    None
                }
                None => {
                    problems.push(format!("{}: missing from the run", name(file)));
                    None
                }
            }
        };
        let mut problems = Vec::new();
        if let Some(bytes) = get(MANIFEST_FILE, &mut problems) {
            run.manifest = keep(
                parse_artifact(Path::new(&name(MANIFEST_FILE)), &bytes),
                &mut problems,
            );
        }
        if let Some(bytes) = get(METRICS_FILE, &mut problems) {
            run.metrics = keep(
                parse_artifact(Path::new(&name(METRICS_FILE)), &bytes),
                &mut problems,
            );
        }
        if let Some(Err(why)) = files.get(EVENTS_FILE) {
            problems.push(format!("{}: cannot read ({why})", name(EVENTS_FILE)));
        } else if !files.contains_key(EVENTS_FILE) {
            problems.push(format!("{}: missing from the run", name(EVENTS_FILE)));
        }
        run.snapshots = snapshot_refs(files.keys().map(String::as_str));
        run.problems = problems;
        run
    }

    /// Parses `events.jsonl` (its `bytes`) into [`RunData::events`]; a bad log, or one whose
    /// last line was cut off, adds a problem naming the file.
    pub fn read_events(&mut self, bytes: &[u8]) {
        let source = format!("{}/{EVENTS_FILE}", self.origin);
        self.events = keep(parse_events(Path::new(&source), bytes), &mut self.problems);
        if let Some(log) = &self.events {
            if log.truncated_lines > 0 {
                self.problems.push(format!(
                    "{source}: the last line was cut off (a crash mid-write?) and is ignored"
                ));
            }
        }
    }

    /// The name to show: the manifest's run name, else the origin.
    pub fn label(&self) -> String {
        match &self.manifest {
            Some(m) => m.run_name.clone(),
            None => self.origin.clone(),
        }
    }

    /// The rounds with a snapshot for `task`, in order (end of task last).
    pub fn snapshots_of(&self, task: usize) -> Vec<&SnapshotRef> {
        self.snapshots.iter().filter(|s| s.task == task).collect()
    }

    /// Tasks with at least one snapshot.
    pub fn snapshot_tasks(&self) -> Vec<usize> {
        let mut tasks: Vec<usize> = self.snapshots.iter().map(|s| s.task).collect();
        tasks.dedup();
        tasks
    }
}

fn keep<T>(parsed: rkif_core::Result<T>, problems: &mut Vec<String>) -> Option<T> {
    match parsed {
        Ok(value) => Some(value),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    }
}

/// The snapshot files among `paths`, sorted by task then round, the end of a task last.
pub fn snapshot_refs<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<SnapshotRef> {
    let prefix = format!("{IMPORTANCE_DIR}/");
    let mut refs: Vec<SnapshotRef> = paths
        .filter_map(|path| {
            let file = path.strip_prefix(&prefix)?;
            let (task, round) = parse_importance_name(file)?;
            Some(SnapshotRef {
                task,
                round,
                path: path.to_owned(),
            })
        })
        .collect();
    // `None` (end of task) sorts first as an Option; show it after the rounds.
    refs.sort_by_key(|s| (s.task, s.round.is_none(), s.round));
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_and_missing_files_are_named_and_the_rest_kept() {
        let mut files = BTreeMap::new();
        files.insert(
            "metrics.json".to_owned(),
            Ok(b"{\"schema_version\": 1, \"tasks\": [".to_vec()),
        );
        files.insert("events.jsonl".to_owned(), Err("HTTP 404".to_owned()));
        files.insert("importance/task-001-end.json".to_owned(), Ok(vec![]));
        files.insert("importance/task-001-round-0002.json".to_owned(), Ok(vec![]));
        files.insert("importance/notes.txt".to_owned(), Ok(vec![]));
        let run = RunData::parse("runs/x", &files);
        assert!(run.metrics.is_none());
        assert_eq!(run.problems.len(), 3, "{:?}", run.problems);
        assert_eq!(
            run.problems[0],
            "runs/x/manifest.json: missing from the run"
        );
        assert!(
            run.problems[1].starts_with("runs/x/metrics.json: truncated JSON"),
            "{}",
            run.problems[1]
        );
        assert_eq!(
            run.problems[2],
            "runs/x/events.jsonl: cannot read (HTTP 404)"
        );
        let rounds: Vec<_> = run.snapshots.iter().map(|s| s.round).collect();
        assert_eq!(rounds, [Some(2), None]);
        assert_eq!(run.label(), "runs/x");
    }

    #[test]
    fn events_wait_for_read_events_but_a_missing_log_is_named_at_once() {
        let header = "{\"kind\":\"header\",\"schema_version\":2,\"rkif_version\":\"0.1.0\"}\n";
        let mut files = BTreeMap::new();
        files.insert(
            "events.jsonl".to_owned(),
            Ok(format!("{header}{{\"kind\":\"task_end\"").into_bytes()),
        );
        let mut run = RunData::parse_deferring_events("runs/x", &files);
        assert!(run.events.is_none());
        // Manifest and metrics are missing; the log's cut-off line is not known yet.
        assert_eq!(run.problems.len(), 2, "{:?}", run.problems);
        let Some(Ok(bytes)) = files.get("events.jsonl") else {
            unreachable!()
        };
        run.read_events(bytes);
        assert_eq!(run.events.as_ref().map(|e| e.truncated_lines), Some(1));
        assert_eq!(
            run.problems[2],
            "runs/x/events.jsonl: the last line was cut off (a crash mid-write?) and is ignored"
        );

        files.clear();
        let run = RunData::parse_deferring_events("runs/y", &files);
        assert_eq!(run.problems[2], "runs/y/events.jsonl: missing from the run");
        files.insert("events.jsonl".to_owned(), Err("HTTP 500".to_owned()));
        let run = RunData::parse_deferring_events("runs/y", &files);
        assert_eq!(
            run.problems[2],
            "runs/y/events.jsonl: cannot read (HTTP 500)"
        );
    }

    #[test]
    fn a_newer_schema_is_refused_by_name() {
        let mut files = BTreeMap::new();
        files.insert(
            "manifest.json".to_owned(),
            Ok(b"{\"schema_version\": 99}".to_vec()),
        );
        let run = RunData::parse("r", &files);
        assert!(run.problems[0].contains("r/manifest.json: schema version 99 is newer"));
    }
}
