//! The in-memory form of a benchmark task: examples, splits and what was left out.

use serde::{Deserialize, Serialize};

use super::files::FileHash;

/// One text-to-text record. The target is `output`; what the model reads is built from
/// `instruction` and `input` by the functions in [`super::prompt`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Unique within its split file, e.g. `agnews_17`.
    pub id: String,
    /// The task's instruction (for the `kif` tasks it ends in a line break).
    pub instruction: String,
    /// The instance text.
    pub input: String,
    /// The expected answer: a label string for classification tasks.
    pub output: String,
}

/// The three splits of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Split {
    /// All splits, in the order train, dev, test.
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];

    /// The folder name of the split (`train`, `dev`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a task is, independent of its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task id used in task orders, e.g. `agnews` or `task363`.
    pub name: String,
    /// The task type: `SC`, `TC`, `NLI`, ... for the `kif` tasks, the SuperNI category
    /// (e.g. `Summarization`) for SuperNI tasks.
    pub kind: String,
    /// The instruction shared by every record of the task.
    pub instruction: String,
    /// The allowed outputs, in their canonical order; `None` for tasks without a label set
    /// (SuperNI tasks), for which the label check and class balancing are skipped.
    pub labels: Option<Vec<String>>,
}

/// A record left out while loading, kept so that runs can report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    /// The file, relative to the benchmark folder.
    pub file: String,
    /// Position of the record in the file (0-based).
    pub record: usize,
    /// The record's id.
    pub id: String,
    /// Why it was left out.
    pub reason: String,
}

/// A loaded task: its metadata, its three splits, what was excluded, and the files read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskData {
    pub info: TaskInfo,
    pub train: Vec<Example>,
    pub dev: Vec<Example>,
    pub test: Vec<Example>,
    /// Records dropped on load (see [`super::Benchmark::load_task`] for the rule).
    pub excluded: Vec<Exclusion>,
    /// Caveats that must travel with results on this task: notes on its files from the
    /// folder's `MANIFEST.json` (a rebuilt or stand-in test set) and format facts such as
    /// "dev is the test split".
    pub caveats: Vec<String>,
    /// Every file read to build this task.
    pub files: Vec<FileHash>,
}

impl TaskData {
    /// The task id, e.g. `agnews`.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The examples of `split`.
    pub fn split(&self, split: Split) -> &[Example] {
        match split {
            Split::Train => &self.train,
            Split::Dev => &self.dev,
            Split::Test => &self.test,
        }
    }
}

/// An example together with the task it comes from (replay memory, validation set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExample {
    /// The task id.
    pub task: String,
    pub example: Example,
}
