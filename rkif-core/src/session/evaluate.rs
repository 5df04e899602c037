//! Evaluating a saved adapter (or the bare base model) on the test sets of a benchmark's
//! tasks, outside any training run: what `rkif eval` prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use super::Session;
use crate::config::RunConfig;
use crate::data::Example;
use crate::eval::score_predictions;
use crate::model::adapter::{load_adapter, read_adapter};
use crate::report::RunDir;
use crate::{Error, Result};

/// Accuracy on one task's test set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskScore {
    pub task: String,
    /// `correct / examples`; None when the task has no test example.
    pub accuracy: Option<f64>,
    pub correct: usize,
    pub examples: usize,
}

/// What [`evaluate_adapter`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterEvaluation {
    /// The adapter folder; None for the bare base model.
    pub adapter: Option<PathBuf>,
    /// Where the base model came from.
    pub model: String,
    /// The benchmark order's name (`custom` for an explicit task list).
    pub order: String,
    /// In task order.
    pub tasks: Vec<TaskScore>,
    /// Mean accuracy over the tasks that have one.
    pub mean_accuracy: Option<f64>,
    pub seconds: f64,
}

/// The config a run folder was trained with (from its manifest).
pub fn run_config(run_dir: &Path) -> Result<RunConfig> {
    let dir = RunDir::open(run_dir)?;
    let mut value = dir.load_manifest()?.config;
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("run");
    }
    serde_json::from_value(value)
        .map_err(|e| Error::format(dir.manifest_path(), format!("config: {e}")))
}

/// The run folder an adapter folder belongs to (`runs/x` for `runs/x/adapters/task-003`),
/// when it is one.
pub fn run_of_adapter(adapter: &Path) -> Option<PathBuf> {
    let run = adapter.parent()?.parent()?;
    run.join("manifest.json")
        .is_file()
        .then(|| run.to_path_buf())
}

/// Greedy answers of the model with `adapter` (a PEFT folder; None: the bare base model,
/// whose LoRA factors `B = 0` add nothing) on the test sets of `config`'s tasks, capped at
/// `eval.max_examples_per_task` (the same seeded subset a run with this config evaluates).
/// The LoRA shape (rank, alpha, targets) comes from the adapter's own config.
pub fn evaluate_adapter(
    mut config: RunConfig,
    adapter: Option<&Path>,
) -> Result<AdapterEvaluation> {
    let started = Instant::now();
    if let Some(dir) = adapter {
        config.model.lora = read_adapter(dir, &Device::Cpu)?.config.lora_config();
    }
    let mut s = Session::new(config)?;
    if let Some(dir) = adapter {
        load_adapter(s.learner.model_mut(), dir)?;
    }
    let mut tasks = Vec::with_capacity(s.tasks.len());
    for i in 0..s.tasks.len() {
        let examples: Vec<&Example> = s.eval_examples(i);
        let preds = s.learner.predict(
            &examples,
            s.config.eval.batch_size,
            s.config.eval.max_new_tokens,
        )?;
        let labels: Vec<&str> = examples.iter().map(|e| e.output.as_str()).collect();
        let name = s.tasks[i].name().to_string();
        let score = score_predictions(&name, &preds, &labels)?;
        tasks.push(TaskScore {
            task: name,
            accuracy: score.accuracy(),
            correct: score.correct,
            examples: score.total,
        });
    }
    let scored: Vec<f64> = tasks.iter().filter_map(|t| t.accuracy).collect();
    let mean_accuracy =
        (!scored.is_empty()).then(|| scored.iter().sum::<f64>() / scored.len() as f64);
    Ok(AdapterEvaluation {
        adapter: adapter.map(Path::to_path_buf),
        model: s.model().origin().to_string(),
        order: s.order_name().to_string(),
        tasks,
        mean_accuracy,
        seconds: started.elapsed().as_secs_f64(),
    })
}
