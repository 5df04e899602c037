//! The `kif/` format (Recurrent-KIF's data): `configs/kif_tasks.json` for the task
//! metadata and `kif/{train,dev,test}/<task>.json`, each a JSON array of
//! `{"id", "instruction", "input", "output"}` records.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use super::files::{read_json, FileHash};
use super::records::{array, type_name, Record};
use super::task::{Example, Exclusion, Split, TaskInfo};
use crate::{Error, Result};

/// Task metadata file, relative to the benchmark folder.
pub(crate) const TASKS_CONFIG: &str = "configs/kif_tasks.json";

/// The file of `split` of `task`, relative to the benchmark folder.
pub(crate) fn split_file(task: &str, split: Split) -> String {
    format!("kif/{split}/{task}.json")
}

/// Reads `configs/kif_tasks.json`: `{"<task>": {"type", "instruction", "labels": [...]}}`.
pub(crate) fn read_task_infos(root: &Path) -> Result<(BTreeMap<String, TaskInfo>, FileHash)> {
    let (json, hash) = read_json(root, TASKS_CONFIG)?;
    let path = root.join(TASKS_CONFIG);
    let tasks = json.as_object().ok_or_else(|| {
        Error::format(
            &path,
            format!("expected an object of tasks, found {}", type_name(&json)),
        )
    })?;
    let mut infos = BTreeMap::new();
    for (name, entry) in tasks {
        infos.insert(name.clone(), task_info(&path, name, entry)?);
    }
    if infos.is_empty() {
        return Err(Error::format(&path, "no tasks"));
    }
    Ok((infos, hash))
}

fn task_info(path: &Path, name: &str, entry: &Value) -> Result<TaskInfo> {
    let error = |what: String| Error::format(path, format!("task `{name}`: {what}"));
    let string = |field: &str| -> Result<String> {
        match entry.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(error(format!(
                "field `{field}` is {}, expected a string",
                type_name(other)
            ))),
            None => Err(error(format!("field `{field}` is missing"))),
        }
    };
    let kind = string("type")?;
    let instruction = string("instruction")?;
    let labels = match entry.get("labels") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_string).ok_or_else(|| {
                    error(format!(
                        "field `labels` holds {}, expected strings",
                        type_name(item)
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?,
        Some(other) => {
            return Err(error(format!(
                "field `labels` is {}, expected an array of strings",
                type_name(other)
            )))
        }
        None => return Err(error("field `labels` is missing".into())),
    };
    if labels.is_empty() {
        return Err(error("field `labels` is empty".into()));
    }
    for (i, label) in labels.iter().enumerate() {
        if labels[..i].contains(label) {
            return Err(error(format!("label {label:?} is listed twice")));
        }
    }
    Ok(TaskInfo {
        name: name.to_string(),
        kind,
        instruction,
        labels: Some(labels),
    })
}

/// One split as loaded: the kept examples, the excluded records and the file read.
pub(crate) struct LoadedSplit {
    pub examples: Vec<Example>,
    pub excluded: Vec<Exclusion>,
    pub file: FileHash,
}

/// Loads and validates `kif/<split>/<task>.json`.
///
/// Every record must be an object with string fields `id`, `instruction`, `input` and
/// `output`; ids must be unique; the output must be one of `info.labels`. A dev record
/// with another output is excluded (and returned in `excluded`); in train or test it is
/// an error. A split with no usable record is an error.
pub(crate) fn load_split(root: &Path, info: &TaskInfo, split: Split) -> Result<LoadedSplit> {
    let relative = split_file(&info.name, split);
    let (json, file) = read_json(root, &relative)?;
    let path = root.join(&relative);
    let records = array(&path, &json)?;

    let mut examples = Vec::with_capacity(records.len());
    let mut excluded = Vec::new();
    let mut first_use: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    for (index, value) in records.iter().enumerate() {
        let record = Record::new(&path, index, value)?;
        let id = record.string("id")?;
        let instruction = record.string("instruction")?;
        let input = record.string("input")?;
        let output = record.string("output")?;
        if let Some(first) = first_use.insert(id, index) {
            return Err(record.error(format!("duplicate id, also used by record {first}")));
        }
        if let Some(reason) = label_problem(info, output) {
            if split != Split::Dev {
                return Err(record.error(format!(
                    "{reason} (only dev records with an unknown label are excluded)"
                )));
            }
            excluded.push(Exclusion {
                file: relative.clone(),
                record: index,
                id: id.to_string(),
                reason,
            });
            continue;
        }
        examples.push(Example {
            id: id.to_string(),
            instruction: instruction.to_string(),
            input: input.to_string(),
            output: output.to_string(),
        });
    }
    if examples.is_empty() {
        let what = if records.is_empty() {
            "no records".to_string()
        } else {
            format!("no usable records: all {} were excluded", records.len())
        };
        return Err(Error::format(&path, what));
    }
    Ok(LoadedSplit {
        examples,
        excluded,
        file,
    })
}

/// Why `output` is not a valid answer of the task, or `None` when it is.
fn label_problem(info: &TaskInfo, output: &str) -> Option<String> {
    let labels = info.labels.as_ref()?;
    if labels.iter().any(|label| label == output) {
        return None;
    }
    Some(format!(
        "output {output:?} is not one of the labels of task `{}` ({})",
        info.name,
        labels.join(", ")
    ))
}
