//! The `superni_raw/` format: the original Super-NaturalInstructions task files, one
//! object per task and split (`superni_raw/{train,test}/<taskNNN_name>.json`) with keys
//! `Definition` (list of strings), `Categories`, `Instances` = `[{id, input, output}]`
//! and metadata that rkif does not use. An instance `output` is a list of reference
//! answers in most files and a single string in the classification files (task363,
//! task875, task1687).
//!
//! The task id is the file-name prefix before the first `_` (`task363`), as in the task
//! orders. There is no dev file: as in the TaSL / Recurrent-KIF source, the dev split of a
//! SuperNI task is its test split.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use super::files::{read_json, FileHash};
use super::records::{type_name, Record};
use super::task::{Example, TaskInfo};
use crate::{Error, Result};

/// Folder of the training files, relative to the benchmark folder.
const TRAIN_DIR: &str = "superni_raw/train";
/// Folder of the test files, relative to the benchmark folder.
const TEST_DIR: &str = "superni_raw/test";

/// Task kind used when a file has no `Categories`.
const DEFAULT_KIND: &str = "SuperNI";

/// Finds the SuperNI tasks: task id -> file name (the same in `train/` and `test/`).
/// A folder without `superni_raw/train` has no SuperNI tasks.
pub(crate) fn discover(root: &Path) -> Result<BTreeMap<String, String>> {
    let dir = root.join(TRAIN_DIR);
    if !dir.is_dir() {
        return Ok(BTreeMap::new());
    }
    let mut tasks = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file_name.strip_suffix(".json") else {
            continue;
        };
        let task = stem.split('_').next().unwrap_or(stem).to_string();
        if let Some(other) = tasks.insert(task.clone(), file_name.clone()) {
            return Err(Error::format(
                &dir,
                format!("task `{task}` has two files: {other} and {file_name}"),
            ));
        }
    }
    Ok(tasks)
}

/// A SuperNI task as loaded.
pub(crate) struct LoadedTask {
    pub info: TaskInfo,
    pub train: Vec<Example>,
    pub test: Vec<Example>,
    pub files: Vec<FileHash>,
}

/// Loads task `name` from `train/<file_name>` and `test/<file_name>`.
///
/// The instruction of every example is the task's `Definition` (its strings joined by
/// line breaks), the input the instance input, and the output the instance's output, or
/// the first of its reference outputs when it has a list. The task metadata (kind = `Categories`, instruction) comes from the
/// training file; SuperNI tasks have no label list.
pub(crate) fn load(root: &Path, name: &str, file_name: &str) -> Result<LoadedTask> {
    let (info, train, train_file) = load_file(root, name, &format!("{TRAIN_DIR}/{file_name}"))?;
    let (_, test, test_file) = load_file(root, name, &format!("{TEST_DIR}/{file_name}"))?;
    Ok(LoadedTask {
        info,
        train,
        test,
        files: vec![train_file, test_file],
    })
}

fn load_file(
    root: &Path,
    name: &str,
    relative: &str,
) -> Result<(TaskInfo, Vec<Example>, FileHash)> {
    let (json, file) = read_json(root, relative)?;
    let path = root.join(relative);
    let task = json.as_object().ok_or_else(|| {
        Error::format(
            &path,
            format!("expected a SuperNI task object, found {}", type_name(&json)),
        )
    })?;
    let field = |key: &str| {
        task.get(key)
            .ok_or_else(|| Error::format(&path, format!("field `{key}` is missing")))
    };
    let instruction = joined_strings(&path, "Definition", field("Definition")?, "\n")?;
    let kind = match task.get("Categories") {
        Some(categories) => joined_strings(&path, "Categories", categories, ", ")?,
        None => DEFAULT_KIND.to_string(),
    };
    let instances = field("Instances")?
        .as_array()
        .ok_or_else(|| Error::format(&path, "field `Instances` is not an array of instances"))?;

    let mut examples = Vec::with_capacity(instances.len());
    let mut first_use: HashMap<&str, usize> = HashMap::with_capacity(instances.len());
    for (index, value) in instances.iter().enumerate() {
        let record = Record::new(&path, index, value)?;
        let id = record.string("id")?;
        let input = record.string("input")?;
        let output = match record.field("output")? {
            Value::String(only) => only,
            Value::Array(items) => match items.first() {
                Some(Value::String(first)) => first,
                Some(other) => {
                    return Err(record.error(format!(
                        "field `output` holds {}, expected strings",
                        type_name(other)
                    )))
                }
                None => return Err(record.error("field `output` is an empty list")),
            },
            other => {
                return Err(record.error(format!(
                    "field `output` is {}, expected a string or a list of strings",
                    type_name(other)
                )))
            }
        };
        if let Some(first) = first_use.insert(id, index) {
            return Err(record.error(format!("duplicate id, also used by instance {first}")));
        }
        examples.push(Example {
            id: id.to_string(),
            instruction: instruction.clone(),
            input: input.to_string(),
            output: output.clone(),
        });
    }
    if examples.is_empty() {
        return Err(Error::format(&path, "no instances"));
    }
    let info = TaskInfo {
        name: name.to_string(),
        kind,
        instruction,
        labels: None,
    };
    Ok((info, examples, file))
}

/// A string, or a list of strings joined by `separator` (SuperNI uses both shapes).
fn joined_strings(path: &Path, key: &str, value: &Value, separator: &str) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => {
            let parts = items
                .iter()
                .map(|item| {
                    item.as_str().ok_or_else(|| {
                        Error::format(
                            path,
                            format!("field `{key}` holds {}, expected strings", type_name(item)),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(parts.join(separator))
        }
        other => Err(Error::format(
            path,
            format!(
                "field `{key}` is {}, expected a string or a list of strings",
                type_name(other)
            ),
        )),
    }
}
