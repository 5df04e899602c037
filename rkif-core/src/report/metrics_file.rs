//! `metrics.json`: the accuracy matrix and the metrics derived from it.

use serde::{Deserialize, Serialize};

use crate::eval::metrics::{ContinualMetrics, Forgetting, Metric};
use crate::eval::AccuracyMatrix;
use crate::report::schema::Artifact;

/// What an accuracy is; carried in every `metrics.json`.
pub const ACCURACY_DEFINITION: &str =
    "fraction (0..1) of test examples whose greedy answer, lower-cased and trimmed, \
equals the lower-cased, trimmed label";

/// The results of a run, complete or partial. `T` is the number of tasks.
///
/// The matrix fields are those of [`AccuracyMatrix`]; the metric fields are a
/// [`ContinualMetrics`] over the first `tasks_trained` tasks, each with its formula.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsFile {
    /// Version of this file's shape.
    pub schema_version: u32,
    /// Task names in training order (length `T`).
    pub tasks: Vec<String>,
    /// `k`: tasks trained so far; the metrics cover tasks `0..k`.
    pub tasks_trained: usize,
    /// What an accuracy value means.
    pub accuracy_definition: String,
    /// `a[j][i]`, shape `T x T`: accuracy on task `i` after training task `j`; null where not
    /// evaluated.
    pub accuracy: Vec<Vec<Option<f64>>>,
    /// `b[i]`, length `T`: zero-shot accuracy of the base model; null when not evaluated.
    pub zero_shot: Option<Vec<Option<f64>>>,
    /// What the symbols in the formulas mean.
    pub notation: String,
    /// How missing cells are handled.
    pub missing_cells: String,
    /// Overall performance.
    pub op: Metric,
    /// Backward transfer.
    pub bwt: Metric,
    /// Forward transfer.
    pub fwt: Metric,
    /// Per-task forgetting and its mean.
    pub forgetting: Forgetting,
    /// Per task, in training order (length `T`).
    pub task_details: Vec<TaskDetail>,
    /// Caveats a results table must carry (e.g. a test set that is a stand-in).
    #[serde(default)]
    pub caveats: Vec<String>,
}

/// Evaluation details of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The task's name.
    pub task: String,
    /// Length `T`: entry `j` is how many test examples the accuracy after training task `j`
    /// was computed on; null where not evaluated or not recorded.
    pub examples_evaluated: Vec<Option<usize>>,
}

impl Artifact for MetricsFile {
    const SCHEMA_VERSION: u32 = 1;

    fn validate(&self) -> Result<(), String> {
        self.matrix().map(|_| ())
    }
}

impl MetricsFile {
    /// The file for `matrix`, with its metrics over the tasks trained so far.
    pub fn from_matrix(matrix: &AccuracyMatrix) -> Self {
        let metrics = matrix.metrics();
        let task_details = matrix
            .tasks()
            .iter()
            .enumerate()
            .map(|(i, task)| TaskDetail {
                task: task.clone(),
                examples_evaluated: (0..matrix.len()).map(|j| matrix.examples(j, i)).collect(),
            })
            .collect();
        Self {
            schema_version: Self::SCHEMA_VERSION,
            tasks: matrix.tasks().to_vec(),
            tasks_trained: matrix.trained_tasks(),
            accuracy_definition: ACCURACY_DEFINITION.to_owned(),
            accuracy: matrix.rows().to_vec(),
            zero_shot: matrix.zero_shot_row().map(<[_]>::to_vec),
            notation: metrics.notation,
            missing_cells: metrics.missing_cells,
            op: metrics.op,
            bwt: metrics.bwt,
            fwt: metrics.fwt,
            forgetting: metrics.forgetting,
            task_details,
            caveats: Vec::new(),
        }
    }

    /// Rebuilds the accuracy matrix (to recompute metrics, e.g. after fewer tasks). The
    /// error names the field that is inconsistent.
    pub fn matrix(&self) -> Result<AccuracyMatrix, String> {
        let t = self.tasks.len();
        if self.task_details.len() != t {
            return Err(format!(
                "task_details: {} entries for {t} tasks",
                self.task_details.len()
            ));
        }
        let mut examples = vec![vec![None; t]; t];
        for (i, detail) in self.task_details.iter().enumerate() {
            if self.tasks.get(i) != Some(&detail.task) {
                return Err(format!(
                    "task_details[{i}]: task `{}` where `tasks` has `{}`",
                    detail.task,
                    self.tasks.get(i).map(String::as_str).unwrap_or("?")
                ));
            }
            if detail.examples_evaluated.len() != t {
                return Err(format!(
                    "task_details[{i}].examples_evaluated: {} entries for {t} tasks",
                    detail.examples_evaluated.len()
                ));
            }
            for (row, count) in examples.iter_mut().zip(&detail.examples_evaluated) {
                if let Some(cell) = row.get_mut(i) {
                    *cell = *count;
                }
            }
        }
        AccuracyMatrix::from_parts(
            self.tasks.clone(),
            self.tasks_trained,
            self.accuracy.clone(),
            examples,
            self.zero_shot.clone(),
        )
    }

    /// The metric fields as one value.
    pub fn metrics(&self) -> ContinualMetrics {
        ContinualMetrics {
            tasks_trained: self.tasks_trained,
            notation: self.notation.clone(),
            missing_cells: self.missing_cells.clone(),
            op: self.op.clone(),
            bwt: self.bwt.clone(),
            fwt: self.fwt.clone(),
            forgetting: self.forgetting.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::TaskAccuracy;

    fn matrix() -> AccuracyMatrix {
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
        m.record(
            1,
            1,
            TaskAccuracy {
                correct: 4,
                total: 5,
            },
        )
        .unwrap();
        m
    }

    #[test]
    fn file_carries_matrix_metrics_and_details() {
        let file = MetricsFile::from_matrix(&matrix());
        assert_eq!(file.tasks_trained, 2);
        assert_eq!(file.accuracy[0], vec![Some(0.9), None]);
        assert_eq!(
            file.task_details[0].examples_evaluated,
            vec![Some(10), None]
        );
        assert_eq!(file.task_details[1].examples_evaluated, vec![None, Some(5)]);
        // BWT = 0.7 - 0.9
        let bwt = file.bwt.value.unwrap();
        assert!((bwt + 0.2).abs() < 1e-12, "{bwt}");
        assert_eq!(file.metrics(), matrix().metrics());
    }

    #[test]
    fn matrix_round_trips_through_the_file() {
        let original = matrix();
        let file = MetricsFile::from_matrix(&original);
        assert_eq!(file.matrix().unwrap(), original);
    }

    #[test]
    fn inconsistent_details_are_named() {
        let mut file = MetricsFile::from_matrix(&matrix());
        file.task_details[1].task = "yahoo".into();
        let err = file.validate().unwrap_err();
        assert!(err.starts_with("task_details[1]"), "{err}");
    }
}
