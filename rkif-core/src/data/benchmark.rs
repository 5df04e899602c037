//! [`Benchmark`]: a benchmark folder (`.../cl_benchmark`), its tasks and orders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

use super::files::{read_json, FileHash};
use super::orders::{named_orders, Order, Suite, ORDERS_CONFIG, STANDARD_TASKS};
use super::synthetic;
use super::task::{Split, TaskData, TaskInfo};
use super::{kif, superni};
use crate::{Error, Result};

/// The folder's own file list, relative to the benchmark folder (optional).
const MANIFEST: &str = "MANIFEST.json";

/// What `MANIFEST.json` says about one file.
#[derive(Debug, Clone)]
struct ManifestEntry {
    sha256: Option<String>,
    note: Option<String>,
}

/// A benchmark folder, laid out as `shared/data/README.md` describes:
///
/// ```text
/// configs/kif_tasks.json, configs/task_orders.json   required
/// kif/{train,dev,test}/<task>.json                    Standard and Long Sequence tasks
/// superni_raw/{train,test}/<taskNNN_name>.json        SuperNI tasks (optional)
/// MANIFEST.json                                       per-file sha256 and notes (optional)
/// ```
///
/// Opening reads only the configs (and the manifest); [`Benchmark::load_task`] reads a
/// task's files. Every file read is hashed; when `MANIFEST.json` lists the file, its
/// sha256 must match, so results never silently come from edited data.
///
/// ```no_run
/// # fn main() -> rkif_core::Result<()> {
/// use rkif_core::data::Benchmark;
/// let bench = Benchmark::open(rkif_core::data::default_data_dir()?)?;
/// let order = bench.order("long-1")?;
/// let task = bench.load_task(&order.tasks[0])?;
/// println!("{}: {} train examples", task.name(), task.train.len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Benchmark {
    root: PathBuf,
    kif_tasks: BTreeMap<String, TaskInfo>,
    /// SuperNI task id -> file name in `superni_raw/{train,test}/`.
    superni_tasks: BTreeMap<String, String>,
    orders: Vec<Order>,
    manifest: BTreeMap<String, ManifestEntry>,
    files_read: Mutex<Vec<FileHash>>,
}

impl Benchmark {
    /// Opens the benchmark folder `dir` and checks its configs: every named order must
    /// list known tasks of its benchmark.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::io(
                &root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a benchmark folder"),
            ));
        }
        let mut files = Vec::new();
        let manifest = if root.join(MANIFEST).is_file() {
            let (json, hash) = read_json(&root, MANIFEST)?;
            files.push(hash);
            read_manifest(&root.join(MANIFEST), &json)?
        } else {
            BTreeMap::new()
        };
        let (kif_tasks, tasks_hash) = kif::read_task_infos(&root)?;
        files.push(tasks_hash);
        let superni_tasks = superni::discover(&root)?;
        let (orders_json, orders_hash) = read_json(&root, ORDERS_CONFIG)?;
        files.push(orders_hash);

        let mut bench = Benchmark {
            root,
            kif_tasks,
            superni_tasks,
            orders: Vec::new(),
            manifest,
            files_read: Mutex::new(Vec::new()),
        };
        let orders_path = bench.root.join(ORDERS_CONFIG);
        bench.orders = named_orders(&orders_path, &orders_json, |suite| {
            bench.tasks(suite).into_iter().map(str::to_string).collect()
        })?;
        for file in files {
            bench.check_file(file)?;
        }
        Ok(bench)
    }

    /// The folder this benchmark was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The task ids of `suite` present in this folder, sorted.
    pub fn tasks(&self, suite: Suite) -> Vec<&str> {
        match suite {
            Suite::Standard => STANDARD_TASKS
                .into_iter()
                .filter(|task| self.kif_tasks.contains_key(*task))
                .collect(),
            Suite::Long => self
                .kif_tasks
                .keys()
                .map(String::as_str)
                .filter(|task| !synthetic::TASKS.contains(task))
                .collect(),
            Suite::Mini => self
                .kif_tasks
                .keys()
                .map(String::as_str)
                .filter(|task| synthetic::TASKS.contains(task))
                .collect(),
            Suite::SuperNi => self.superni_tasks.keys().map(String::as_str).collect(),
        }
    }

    /// The named task orders found in `configs/task_orders.json`: `standard-1..3`
    /// (Recurrent-KIF orders 4-6), `long-1..3` (Recurrent-KIF orders 1-3) and
    /// `superni-1..2` (TaSL), those the file holds.
    pub fn orders(&self) -> &[Order] {
        &self.orders
    }

    /// The order called `name` (e.g. `long-2`).
    pub fn order(&self, name: &str) -> Result<&Order> {
        self.orders
            .iter()
            .find(|order| order.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.orders.iter().map(|o| o.name.as_str()).collect();
                Error::Data(format!(
                    "unknown task order `{name}`; known: {}",
                    known.join(", ")
                ))
            })
    }

    /// Loads and validates task `name` (a `kif` task such as `agnews` or a SuperNI task
    /// such as `task363`).
    ///
    /// Validation: every file must exist and be valid JSON; every record must have its
    /// fields with the right types and a unique id; no split may be empty. For `kif`
    /// tasks the output must be one of the task's labels: a dev record with another output
    /// is **excluded** and listed in [`TaskData::excluded`] with its file and id (MNLI dev
    /// has six records labelled `-`, annotator disagreement with no gold label; dev only
    /// drives model selection, so dropping them is harmless), while in train or test such a
    /// record is an error (it would train a wrong target or change what accuracy counts).
    /// SuperNI tasks have no label list and skip that check; their dev split is a copy of
    /// their test split, as in the source (TaSL), and a caveat says so.
    pub fn load_task(&self, name: &str) -> Result<TaskData> {
        if let Some(info) = self.kif_tasks.get(name) {
            self.load_kif(info)
        } else if let Some(file_name) = self.superni_tasks.get(name) {
            self.load_superni(name, file_name)
        } else {
            let known: Vec<&str> = self
                .kif_tasks
                .keys()
                .chain(self.superni_tasks.keys())
                .map(String::as_str)
                .collect();
            Err(Error::Data(format!(
                "unknown task `{name}` in {}; known: {}",
                self.root.display(),
                known.join(", ")
            )))
        }
    }

    /// Every file read so far (configs at open, then each loaded task's files), each once,
    /// in the order first read: the list a run manifest records.
    pub fn files_read(&self) -> Vec<FileHash> {
        self.files_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn load_kif(&self, info: &TaskInfo) -> Result<TaskData> {
        let train = kif::load_split(&self.root, info, Split::Train)?;
        let dev = kif::load_split(&self.root, info, Split::Dev)?;
        let test = kif::load_split(&self.root, info, Split::Test)?;
        let files = vec![train.file, dev.file.clone(), test.file.clone()];
        let mut caveats = self.check_files(&files)?;
        if dev.file.sha256 == test.file.sha256 {
            caveats.push(format!(
                "the test split ({}) is identical to the dev split ({})",
                test.file.path, dev.file.path
            ));
        }
        let excluded = [train.excluded, dev.excluded, test.excluded].concat();
        Ok(TaskData {
            info: info.clone(),
            train: train.examples,
            dev: dev.examples,
            test: test.examples,
            excluded,
            caveats,
            files,
        })
    }

    fn load_superni(&self, name: &str, file_name: &str) -> Result<TaskData> {
        let loaded = superni::load(&self.root, name, file_name)?;
        let mut caveats = self.check_files(&loaded.files)?;
        caveats.push(
            "dev split = test split (SuperNI has no separate dev set in the source)".to_string(),
        );
        Ok(TaskData {
            info: loaded.info,
            train: loaded.train,
            dev: loaded.test.clone(),
            test: loaded.test,
            excluded: Vec::new(),
            caveats,
            files: loaded.files,
        })
    }

    /// Checks `files` against the manifest and logs them; returns their manifest notes.
    fn check_files(&self, files: &[FileHash]) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for file in files {
            if let Some(note) = self.check_file(file.clone())? {
                notes.push(format!("{}: {note}", file.path));
            }
        }
        Ok(notes)
    }

    /// Compares `file` with its manifest entry (if any), logs it in `files_read`, and
    /// returns the manifest's note on it.
    fn check_file(&self, file: FileHash) -> Result<Option<String>> {
        let entry = self.manifest.get(&file.path);
        if let Some(expected) = entry.and_then(|e| e.sha256.as_deref()) {
            if expected != file.sha256 {
                return Err(Error::format(
                    self.root.join(&file.path),
                    format!(
                        "sha256 {} differs from {expected} in {MANIFEST}: the file changed \
                         after the manifest was written",
                        file.sha256
                    ),
                ));
            }
        }
        let mut log = self
            .files_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !log.iter().any(|f| f.path == file.path) {
            log.push(file);
        }
        Ok(entry.and_then(|e| e.note.clone()))
    }
}

/// Reads `{"files": {"<relative path>": {"sha256": "...", "note": "..."}}}`; other keys
/// are metadata rkif does not need.
fn read_manifest(path: &Path, json: &Value) -> Result<BTreeMap<String, ManifestEntry>> {
    let files = json
        .get("files")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::format(path, "field `files` is missing or not an object"))?;
    let optional_string = |file: &str, entry: &Value, key: &str| -> Result<Option<String>> {
        match entry.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::format(
                path,
                format!("file `{file}`: field `{key}` is not a string"),
            )),
        }
    };
    files
        .iter()
        .map(|(file, entry)| {
            Ok((
                file.clone(),
                ManifestEntry {
                    sha256: optional_string(file, entry, "sha256")?,
                    note: optional_string(file, entry, "note")?,
                },
            ))
        })
        .collect()
}

impl std::fmt::Display for Benchmark {
    /// A listing of the benchmarks, their tasks and their orders (what `rkif data` prints).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "benchmark folder {}", self.root.display())?;
        for suite in Suite::ALL {
            let tasks = self.tasks(suite);
            if tasks.is_empty() {
                continue;
            }
            writeln!(
                f,
                "\n{} `{}` ({} tasks): {}",
                suite.title(),
                suite.name(),
                tasks.len(),
                tasks.join(", ")
            )?;
            for order in self.orders.iter().filter(|o| o.suite == suite) {
                writeln!(f, "  {order}")?;
            }
        }
        Ok(())
    }
}
