//! The accuracy matrix of a continual-learning run.

use crate::eval::answer::TaskAccuracy;
use crate::eval::metrics::ContinualMetrics;
use crate::{Error, Result};

/// Accuracies of a run, tasks in training order.
///
/// - `a[j][i]` (shape `T x T`): accuracy on task `i`'s test set after training task `j`.
///   The lower triangle and diagonal (`i <= j`, tasks already seen) are what rkif evaluates by
///   default; the upper triangle (`i > j`, tasks not yet trained) only on request. Any cell
///   may be missing.
/// - `b[i]` (length `T`, optional): the zero-shot row, accuracy on task `i` of the base model
///   before any training. Needed for FWT only.
/// - `examples[j][i]` (shape `T x T`): how many test examples cell `a[j][i]` was computed on,
///   when the cell was filled by [`record`](Self::record).
/// - `trained`: how many tasks have been trained so far (`k`, `0..=T`). Metrics are computed
///   over the first `k` tasks, so a partial run reports meaningful numbers.
///
/// Accuracies are fractions in `0..=1`; anything else (a percentage, NaN) is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyMatrix {
    tasks: Vec<String>,
    trained: usize,
    accuracy: Vec<Vec<Option<f64>>>,
    examples: Vec<Vec<Option<usize>>>,
    zero_shot: Option<Vec<Option<f64>>>,
}

impl AccuracyMatrix {
    /// An empty matrix for `tasks` (names in training order, unique, at least one).
    pub fn new(tasks: Vec<String>) -> Result<Self> {
        check_task_names(&tasks).map_err(Error::Data)?;
        let t = tasks.len();
        Ok(Self {
            tasks,
            trained: 0,
            accuracy: vec![vec![None; t]; t],
            examples: vec![vec![None; t]; t],
            zero_shot: None,
        })
    }

    /// Rebuilds a matrix from its stored parts (as in `metrics.json`), checking shapes, value
    /// ranges and `trained <= T`. The error names the offending field and cell.
    pub fn from_parts(
        tasks: Vec<String>,
        trained: usize,
        accuracy: Vec<Vec<Option<f64>>>,
        examples: Vec<Vec<Option<usize>>>,
        zero_shot: Option<Vec<Option<f64>>>,
    ) -> std::result::Result<Self, String> {
        check_task_names(&tasks)?;
        let t = tasks.len();
        if trained > t {
            return Err(format!(
                "tasks_trained: {trained} is more than the {t} tasks"
            ));
        }
        check_square("accuracy", &accuracy, t)?;
        check_square("examples", &examples, t)?;
        for (j, row) in accuracy.iter().enumerate() {
            for (i, cell) in row.iter().enumerate() {
                if let Some(value) = cell {
                    check_accuracy(*value).map_err(|e| format!("accuracy[{j}][{i}]: {e}"))?;
                }
            }
        }
        if let Some(row) = &zero_shot {
            if row.len() != t {
                return Err(format!("zero_shot: {} values for {t} tasks", row.len()));
            }
            for (i, cell) in row.iter().enumerate() {
                if let Some(value) = cell {
                    check_accuracy(*value).map_err(|e| format!("zero_shot[{i}]: {e}"))?;
                }
            }
        }
        Ok(Self {
            tasks,
            trained,
            accuracy,
            examples,
            zero_shot,
        })
    }

    /// Task names in training order.
    pub fn tasks(&self) -> &[String] {
        &self.tasks
    }

    /// The number of tasks `T`.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Always false: a matrix has at least one task. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The index of task `name` in training order.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t == name)
    }

    /// How many tasks have been trained so far (`k`).
    pub fn trained_tasks(&self) -> usize {
        self.trained
    }

    /// Declares that the first `k` tasks have been trained, for a task whose evaluation row
    /// is entirely missing. `k` may not go down, nor exceed `T`.
    pub fn mark_trained(&mut self, k: usize) -> Result<()> {
        if k > self.len() {
            return Err(Error::Data(format!(
                "cannot mark {k} tasks trained: the run has {} tasks",
                self.len()
            )));
        }
        if k < self.trained {
            return Err(Error::Data(format!(
                "cannot mark {k} tasks trained: {} already are",
                self.trained
            )));
        }
        self.trained = k;
        Ok(())
    }

    /// Sets `a[after][on] = accuracy` (a fraction in `0..=1`) and marks tasks
    /// `0..=after` trained.
    pub fn set(&mut self, after: usize, on: usize, accuracy: f64) -> Result<()> {
        self.fill(after, on, accuracy, None)
    }

    /// Records the score of evaluating task `on` after training task `after`: the accuracy
    /// and the number of examples behind it. An evaluation of zero examples is refused.
    pub fn record(&mut self, after: usize, on: usize, score: TaskAccuracy) -> Result<()> {
        let accuracy = self.score_accuracy(on, score)?;
        self.fill(after, on, accuracy, Some(score.total))
    }

    /// Sets the zero-shot accuracy `b[on]` of the base model on task `on`.
    pub fn set_zero_shot(&mut self, on: usize, accuracy: f64) -> Result<()> {
        check_accuracy(accuracy)
            .map_err(|e| Error::Data(format!("zero-shot accuracy on task {on}: {e}")))?;
        let t = self.len();
        if on >= t {
            return Err(Error::Data(format!(
                "zero-shot task {on} is outside a run of {t} tasks"
            )));
        }
        let row = self.zero_shot.get_or_insert_with(|| vec![None; t]);
        if let Some(cell) = row.get_mut(on) {
            *cell = Some(accuracy);
        }
        Ok(())
    }

    /// Records the zero-shot score of the base model on task `on` (see [`set_zero_shot`](Self::set_zero_shot)).
    pub fn record_zero_shot(&mut self, on: usize, score: TaskAccuracy) -> Result<()> {
        let accuracy = self.score_accuracy(on, score)?;
        self.set_zero_shot(on, accuracy)
    }

    /// `a[after][on]`, or `None` when missing or out of range.
    pub fn get(&self, after: usize, on: usize) -> Option<f64> {
        self.accuracy.get(after)?.get(on).copied().flatten()
    }

    /// The number of test examples behind `a[after][on]`, when recorded.
    pub fn examples(&self, after: usize, on: usize) -> Option<usize> {
        self.examples.get(after)?.get(on).copied().flatten()
    }

    /// `b[on]`, the zero-shot accuracy on task `on`, when evaluated.
    pub fn zero_shot(&self, on: usize) -> Option<f64> {
        self.zero_shot.as_ref()?.get(on).copied().flatten()
    }

    /// All rows `a[j]`, shape `T x T`, `None` where not evaluated.
    pub fn rows(&self) -> &[Vec<Option<f64>>] {
        &self.accuracy
    }

    /// The example counts, shape `T x T`, `None` where not evaluated or not recorded.
    pub fn example_rows(&self) -> &[Vec<Option<usize>>] {
        &self.examples
    }

    /// The zero-shot row `b`, length `T`, if any zero-shot accuracy was set.
    pub fn zero_shot_row(&self) -> Option<&[Option<f64>]> {
        self.zero_shot.as_deref()
    }

    /// The metrics over the tasks trained so far (see [`ContinualMetrics`]).
    pub fn metrics(&self) -> ContinualMetrics {
        ContinualMetrics::compute(self, self.trained)
    }

    /// The metrics as they stood after the first `k` tasks (`0..=T`), from rows `0..k`.
    pub fn metrics_after(&self, k: usize) -> Result<ContinualMetrics> {
        if k > self.len() {
            return Err(Error::Data(format!(
                "metrics after {k} tasks asked of a run with {} tasks",
                self.len()
            )));
        }
        Ok(ContinualMetrics::compute(self, k))
    }

    /// Sets cell `(after, on)` and its example count, and marks tasks `0..=after` trained.
    fn fill(
        &mut self,
        after: usize,
        on: usize,
        accuracy: f64,
        examples: Option<usize>,
    ) -> Result<()> {
        check_accuracy(accuracy)
            .map_err(|e| Error::Data(format!("accuracy after task {after} on task {on}: {e}")))?;
        let t = self.len();
        let outside = || {
            Error::Data(format!(
                "accuracy cell (after task {after}, on task {on}) is outside a run of {t} tasks"
            ))
        };
        let cell = self
            .accuracy
            .get_mut(after)
            .and_then(|row| row.get_mut(on))
            .ok_or_else(outside)?;
        *cell = Some(accuracy);
        let count = self
            .examples
            .get_mut(after)
            .and_then(|row| row.get_mut(on))
            .ok_or_else(outside)?;
        *count = examples;
        self.trained = self.trained.max(after + 1);
        Ok(())
    }

    fn score_accuracy(&self, on: usize, score: TaskAccuracy) -> Result<f64> {
        let name = self.tasks.get(on).map(String::as_str).unwrap_or("?");
        if score.correct > score.total {
            return Err(Error::Data(format!(
                "task `{name}`: {} correct of {} examples",
                score.correct, score.total
            )));
        }
        score
            .accuracy()
            .ok_or_else(|| Error::Data(format!("task `{name}`: evaluated on zero examples")))
    }
}

fn check_task_names(tasks: &[String]) -> std::result::Result<(), String> {
    if tasks.is_empty() {
        return Err("tasks: a run needs at least one task".into());
    }
    for (i, name) in tasks.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(format!("tasks[{i}]: empty task name"));
        }
        if tasks.iter().take(i).any(|earlier| earlier == name) {
            return Err(format!("tasks[{i}]: task `{name}` appears twice"));
        }
    }
    Ok(())
}

fn check_square<T>(field: &str, rows: &[Vec<T>], t: usize) -> std::result::Result<(), String> {
    if rows.len() != t {
        return Err(format!("{field}: {} rows for {t} tasks", rows.len()));
    }
    for (j, row) in rows.iter().enumerate() {
        if row.len() != t {
            return Err(format!("{field}[{j}]: {} cells for {t} tasks", row.len()));
        }
    }
    Ok(())
}

fn check_accuracy(value: f64) -> std::result::Result<(), String> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("{value} is not a fraction in 0..=1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn set_fills_cells_and_counts_trained_tasks() {
        let mut m = AccuracyMatrix::new(names(&["a", "b", "c"])).unwrap();
        assert_eq!(m.trained_tasks(), 0);
        m.set(0, 0, 0.9).unwrap();
        m.set(1, 0, 0.8).unwrap();
        assert_eq!(m.trained_tasks(), 2);
        assert_eq!(m.get(1, 0), Some(0.8));
        assert_eq!(m.get(1, 1), None);
        assert_eq!(m.get(7, 0), None);
        m.record(
            1,
            1,
            TaskAccuracy {
                correct: 3,
                total: 4,
            },
        )
        .unwrap();
        assert_eq!(m.get(1, 1), Some(0.75));
        assert_eq!(m.examples(1, 1), Some(4));
        assert_eq!(m.examples(1, 0), None);
        assert_eq!(m.task_index("c"), Some(2));
    }

    #[test]
    fn refuses_bad_values_and_cells() {
        let mut m = AccuracyMatrix::new(names(&["a", "b"])).unwrap();
        assert!(m.set(0, 0, 78.5).is_err());
        assert!(m.set(0, 0, f64::NAN).is_err());
        assert!(m.set(2, 0, 0.5).is_err());
        assert!(m.set_zero_shot(2, 0.5).is_err());
        assert_eq!(m.zero_shot_row(), None);
        assert!(m
            .record(
                0,
                0,
                TaskAccuracy {
                    correct: 0,
                    total: 0
                }
            )
            .is_err());
        assert!(m
            .record(
                0,
                0,
                TaskAccuracy {
                    correct: 5,
                    total: 4
                }
            )
            .is_err());
        assert_eq!(m.trained_tasks(), 0);
    }

    #[test]
    fn refuses_bad_task_lists() {
        assert!(AccuracyMatrix::new(vec![]).is_err());
        assert!(AccuracyMatrix::new(names(&["a", "a"])).is_err());
        assert!(AccuracyMatrix::new(names(&["a", " "])).is_err());
    }

    #[test]
    fn mark_trained_only_moves_forward_within_the_run() {
        let mut m = AccuracyMatrix::new(names(&["a", "b"])).unwrap();
        m.set(0, 0, 0.5).unwrap();
        assert!(m.mark_trained(0).is_err());
        assert!(m.mark_trained(3).is_err());
        m.mark_trained(2).unwrap();
        assert_eq!(m.trained_tasks(), 2);
    }

    #[test]
    fn from_parts_names_the_bad_field() {
        let err = AccuracyMatrix::from_parts(
            names(&["a", "b"]),
            1,
            vec![vec![Some(0.5), None], vec![None]],
            vec![vec![None; 2]; 2],
            None,
        )
        .unwrap_err();
        assert_eq!(err, "accuracy[1]: 1 cells for 2 tasks");
        let err = AccuracyMatrix::from_parts(
            names(&["a", "b"]),
            1,
            vec![vec![Some(0.5), None], vec![None, Some(1.5)]],
            vec![vec![None; 2]; 2],
            None,
        )
        .unwrap_err();
        assert!(err.starts_with("accuracy[1][1]"), "{err}");
        let err = AccuracyMatrix::from_parts(
            names(&["a", "b"]),
            3,
            vec![vec![None; 2]; 2],
            vec![vec![None; 2]; 2],
            Some(vec![None]),
        )
        .unwrap_err();
        assert!(err.starts_with("tasks_trained"), "{err}");
    }
}
