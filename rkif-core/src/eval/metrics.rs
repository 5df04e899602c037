//! Continual-learning metrics from an [`AccuracyMatrix`].
//!
//! Notation: `a[j][i]` is the accuracy on task `i` after training task `j` (tasks in training
//! order, counted from 0), `b[i]` the zero-shot accuracy of the base model on task `i`, and
//! `k` the number of tasks trained so far (`T` once the run is complete). Every metric is over
//! the first `k` tasks, which makes a partial run report the metrics it would have if it had
//! stopped there.
//!
//! - OP  = mean over `i < k` of `a[k-1][i]`
//! - BWT = mean over `i < k-1` of `(a[k-1][i] - a[i][i])`
//! - FWT = mean over `0 < i < k` of `(a[i-1][i] - b[i])`
//! - `f_i` = max over `i <= l < k-1` of `a[l][i]`, minus `a[k-1][i]`, for `i < k-1`;
//!   F = mean over `i < k-1` of `f_i`
//!
//! Forgetting takes its maximum over rows `l >= i` only, the rows after task `i` was trained:
//! an upper-triangle cell (task `i` before its training) is not knowledge that can be forgotten,
//! and counting it would make `f_i` depend on whether the upper triangle was evaluated.
//!
//! Missing cells: a metric is a mean of terms (one per task `i` in its sum). A term is used
//! only when every cell it reads exists; the metric is the mean of the usable terms, records
//! `terms_used` of `terms_total`, and is `None` when no term is usable. `f_i` is usable when
//! `a[k-1][i]` and at least one `a[l][i]` (`i <= l < k-1`) exist; its maximum runs over the
//! rows that exist.

use serde::{Deserialize, Serialize};

use crate::eval::matrix::AccuracyMatrix;

/// What the symbols in the formulas mean; carried in every report.
pub const NOTATION: &str =
    "a[j][i] = accuracy on task i after training task j (tasks in training order, from 0); \
b[i] = accuracy on task i of the base model before any training; \
k = number of tasks trained so far (T when the run is complete)";

/// The missing-cell rule, carried in every report.
pub const MISSING_CELLS_RULE: &str = "a metric averages its terms (one per task i); a term is used only when every cell it reads exists; \
terms_used counts them; the metric is null when no term is usable; \
f_i is usable when a[k-1][i] and at least one a[l][i] with i <= l < k-1 exist";

/// Overall performance.
pub const OP_FORMULA: &str = "OP = mean over i < k of a[k-1][i]";
/// Backward transfer.
pub const BWT_FORMULA: &str = "BWT = mean over i < k-1 of (a[k-1][i] - a[i][i])";
/// Forward transfer.
pub const FWT_FORMULA: &str = "FWT = mean over 0 < i < k of (a[i-1][i] - b[i])";
/// Per-task forgetting.
pub const FORGETTING_FORMULA: &str =
    "f_i = max over i <= l < k-1 of a[l][i] - a[k-1][i], for i < k-1";
/// Mean forgetting.
pub const MEAN_FORGETTING_FORMULA: &str = "F = mean over i < k-1 of f_i";

/// One metric: its formula, its value, and how many of its terms the matrix could supply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The definition, in the notation of [`NOTATION`].
    pub formula: String,
    /// The mean of the usable terms; `None` when no term is usable.
    pub value: Option<f64>,
    /// Terms whose cells all exist.
    pub terms_used: usize,
    /// Terms the formula has for this `k`.
    pub terms_total: usize,
}

impl Metric {
    /// Whether every term of the formula was usable (and there was at least one).
    pub fn is_complete(&self) -> bool {
        self.terms_total > 0 && self.terms_used == self.terms_total
    }

    fn mean_of(formula: &str, terms: impl IntoIterator<Item = Option<f64>>) -> Self {
        let mut sum = 0.0;
        let mut used = 0;
        let mut total = 0;
        for term in terms {
            total += 1;
            if let Some(value) = term {
                sum += value;
                used += 1;
            }
        }
        Self {
            formula: formula.to_owned(),
            value: (used > 0).then(|| sum / used as f64),
            terms_used: used,
            terms_total: total,
        }
    }
}

/// The forgetting of one task `i < k-1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskForgetting {
    /// The task's name.
    pub task: String,
    /// `f_i`, or `None` when its cells are missing.
    pub value: Option<f64>,
    /// Cells read: the existing `a[l][i]` for `i <= l < k-1` plus `a[k-1][i]`; 0 when unusable.
    pub cells_used: usize,
}

/// Per-task forgetting and its mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forgetting {
    /// The definition of `f_i`.
    pub formula: String,
    /// One entry per task `i < k-1`, in training order.
    pub per_task: Vec<TaskForgetting>,
    /// The mean of the usable `f_i`.
    pub mean: Metric,
}

/// All metrics of a run after its first `tasks_trained` tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinualMetrics {
    /// `k`, the number of tasks the metrics cover.
    pub tasks_trained: usize,
    /// What the symbols in the formulas mean.
    pub notation: String,
    /// How missing cells are handled.
    pub missing_cells: String,
    /// Overall performance.
    pub op: Metric,
    /// Backward transfer (negative when old tasks were forgotten).
    pub bwt: Metric,
    /// Forward transfer (needs the upper triangle and the zero-shot row).
    pub fwt: Metric,
    /// Per-task forgetting and its mean.
    pub forgetting: Forgetting,
}

impl ContinualMetrics {
    /// The metrics of `matrix` over its first `k` tasks; `k` must be at most `T` (callers
    /// check). Cells outside the matrix read as missing.
    pub(crate) fn compute(matrix: &AccuracyMatrix, k: usize) -> Self {
        let a = |j: usize, i: usize| matrix.get(j, i);
        let last = k.checked_sub(1);
        let op = Metric::mean_of(OP_FORMULA, (0..k).map(|i| last.and_then(|l| a(l, i))));
        let seen_before_last = last.unwrap_or(0);
        let bwt = Metric::mean_of(
            BWT_FORMULA,
            (0..seen_before_last).map(|i| Some(a(k - 1, i)? - a(i, i)?)),
        );
        let fwt = Metric::mean_of(
            FWT_FORMULA,
            (1..k).map(|i| Some(a(i - 1, i)? - matrix.zero_shot(i)?)),
        );
        let per_task: Vec<TaskForgetting> = (0..seen_before_last)
            .map(|i| task_forgetting(matrix, k, i))
            .collect();
        let mean = Metric::mean_of(MEAN_FORGETTING_FORMULA, per_task.iter().map(|f| f.value));
        Self {
            tasks_trained: k,
            notation: NOTATION.to_owned(),
            missing_cells: MISSING_CELLS_RULE.to_owned(),
            op,
            bwt,
            fwt,
            forgetting: Forgetting {
                formula: FORGETTING_FORMULA.to_owned(),
                per_task,
                mean,
            },
        }
    }
}

/// `f_i` over the first `k` tasks, for `i < k-1`.
fn task_forgetting(matrix: &AccuracyMatrix, k: usize, i: usize) -> TaskForgetting {
    let task = matrix.tasks().get(i).cloned().unwrap_or_default();
    let history: Vec<f64> = (i..k - 1).filter_map(|l| matrix.get(l, i)).collect();
    let best = history.iter().copied().reduce(f64::max);
    match (best, matrix.get(k - 1, i)) {
        (Some(best), Some(now)) => TaskForgetting {
            task,
            value: Some(best - now),
            cells_used: history.len() + 1,
        },
        _ => TaskForgetting {
            task,
            value: None,
            cells_used: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("metric should have a value");
        assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
    }

    /// a = [[0.9, 0.2, 0.1], [0.7, 0.8, 0.3], [0.6, 0.4, 0.95]], b = [0.1, 0.15, 0.05]
    fn three_tasks() -> AccuracyMatrix {
        let rows = [[0.9, 0.2, 0.1], [0.7, 0.8, 0.3], [0.6, 0.4, 0.95]];
        let mut m =
            AccuracyMatrix::new(vec!["dbpedia".into(), "amazon".into(), "yahoo".into()]).unwrap();
        for (j, row) in rows.iter().enumerate() {
            for (i, value) in row.iter().enumerate() {
                m.set(j, i, *value).unwrap();
            }
        }
        for (i, value) in [0.1, 0.15, 0.05].iter().enumerate() {
            m.set_zero_shot(i, *value).unwrap();
        }
        m
    }

    #[test]
    fn full_matrix_by_hand() {
        let m = three_tasks().metrics();
        assert_eq!(m.tasks_trained, 3);
        // (0.6 + 0.4 + 0.95) / 3
        close(m.op.value, 0.65);
        assert!(m.op.is_complete());
        // ((0.6 - 0.9) + (0.4 - 0.8)) / 2
        close(m.bwt.value, -0.35);
        assert_eq!((m.bwt.terms_used, m.bwt.terms_total), (2, 2));
        // ((0.2 - 0.15) + (0.3 - 0.05)) / 2
        close(m.fwt.value, 0.15);
        // f_0 = max(0.9, 0.7) - 0.6, f_1 = 0.8 - 0.4
        let f = &m.forgetting.per_task;
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].task, "dbpedia");
        close(f[0].value, 0.3);
        assert_eq!(f[0].cells_used, 3);
        close(f[1].value, 0.4);
        assert_eq!(f[1].cells_used, 2);
        close(m.forgetting.mean.value, 0.35);
        assert_eq!(m.op.formula, OP_FORMULA);
    }

    #[test]
    fn partial_run_uses_the_first_k_rows() {
        let m = three_tasks().metrics_after(2).unwrap();
        assert_eq!(m.tasks_trained, 2);
        // (0.7 + 0.8) / 2
        close(m.op.value, 0.75);
        assert_eq!(m.op.terms_total, 2);
        // 0.7 - 0.9
        close(m.bwt.value, -0.2);
        // 0.2 - 0.15
        close(m.fwt.value, 0.05);
        assert_eq!(m.fwt.terms_total, 1);
        // max(0.9) - 0.7
        assert_eq!(m.forgetting.per_task.len(), 1);
        close(m.forgetting.per_task[0].value, 0.2);
        assert!(three_tasks().metrics_after(4).is_err());
    }

    #[test]
    fn partial_run_from_trained_count() {
        let mut m = AccuracyMatrix::new(vec!["a".into(), "b".into(), "c".into()]).unwrap();
        m.set(0, 0, 0.9).unwrap();
        m.set(1, 0, 0.5).unwrap();
        m.set(1, 1, 0.7).unwrap();
        let metrics = m.metrics();
        assert_eq!(metrics.tasks_trained, 2);
        close(metrics.op.value, 0.6);
        close(metrics.bwt.value, -0.4);
        assert_eq!(metrics.fwt.value, None);
    }

    #[test]
    fn missing_cells_drop_their_terms() {
        let mut m = three_tasks();
        // Rebuild without a[0][0] and a[2][1], and without the zero-shot row.
        let mut rows = m.rows().to_vec();
        rows[0][0] = None;
        rows[2][1] = None;
        m = AccuracyMatrix::from_parts(m.tasks().to_vec(), 3, rows, vec![vec![None; 3]; 3], None)
            .unwrap();
        let metrics = m.metrics();
        // (0.6 + 0.95) / 2, one of three final cells missing
        close(metrics.op.value, 0.775);
        assert_eq!((metrics.op.terms_used, metrics.op.terms_total), (2, 3));
        assert!(!metrics.op.is_complete());
        // i = 0 lacks a[0][0], i = 1 lacks a[2][1]: no usable term
        assert_eq!(metrics.bwt.value, None);
        assert_eq!((metrics.bwt.terms_used, metrics.bwt.terms_total), (0, 2));
        assert_eq!(metrics.fwt.value, None);
        assert_eq!((metrics.fwt.terms_used, metrics.fwt.terms_total), (0, 2));
        // f_0 = max(a[1][0]) - a[2][0] = 0.7 - 0.6 over the cells that exist; f_1 unusable
        let f = &metrics.forgetting.per_task;
        close(f[0].value, 0.1);
        assert_eq!(f[0].cells_used, 2);
        assert_eq!((f[1].value, f[1].cells_used), (None, 0));
        close(metrics.forgetting.mean.value, 0.1);
        assert_eq!(metrics.forgetting.mean.terms_used, 1);
    }

    #[test]
    fn bwt_uses_only_pairs_with_both_cells() {
        let mut m = AccuracyMatrix::new(vec!["a".into(), "b".into(), "c".into()]).unwrap();
        m.set(0, 0, 0.9).unwrap();
        m.set(2, 0, 0.8).unwrap();
        m.set(2, 1, 0.6).unwrap();
        m.set(2, 2, 0.7).unwrap();
        // a[1][1] missing: only i = 0 counts
        let metrics = m.metrics();
        close(metrics.bwt.value, 0.8 - 0.9);
        assert_eq!((metrics.bwt.terms_used, metrics.bwt.terms_total), (1, 2));
        // f_1 has no row between its training and the last
        assert_eq!(metrics.forgetting.per_task[1].value, None);
    }

    #[test]
    fn forgetting_ignores_the_upper_triangle() {
        let mut m = three_tasks();
        // Before training, task 1 scores higher than after: not forgetting.
        m.set(0, 1, 0.85).unwrap();
        let metrics = m.metrics();
        close(metrics.forgetting.per_task[1].value, 0.8 - 0.4);
        // but FWT reads that cell: ((0.85 - 0.15) + (0.3 - 0.05)) / 2
        close(metrics.fwt.value, 0.475);
    }

    #[test]
    fn one_task_run() {
        let mut m = AccuracyMatrix::new(vec!["agnews".into()]).unwrap();
        m.set(0, 0, 0.8).unwrap();
        m.set_zero_shot(0, 0.25).unwrap();
        let metrics = m.metrics();
        close(metrics.op.value, 0.8);
        assert_eq!((metrics.op.terms_used, metrics.op.terms_total), (1, 1));
        assert_eq!(metrics.bwt.value, None);
        assert_eq!(metrics.bwt.terms_total, 0);
        assert_eq!(metrics.fwt.value, None);
        assert_eq!(metrics.fwt.terms_total, 0);
        assert!(metrics.forgetting.per_task.is_empty());
        assert_eq!(metrics.forgetting.mean.value, None);
    }

    #[test]
    fn nothing_trained_has_no_values() {
        let m = AccuracyMatrix::new(vec!["a".into(), "b".into()]).unwrap();
        let metrics = m.metrics();
        assert_eq!(metrics.tasks_trained, 0);
        assert_eq!(metrics.op.value, None);
        assert_eq!(metrics.op.terms_total, 0);
        assert!(metrics.forgetting.per_task.is_empty());
    }

    #[test]
    fn formulas_travel_in_the_serialised_form() {
        let json = serde_json::to_value(three_tasks().metrics()).unwrap();
        assert_eq!(json["bwt"]["formula"], BWT_FORMULA);
        assert_eq!(json["fwt"]["formula"], FWT_FORMULA);
        assert_eq!(json["forgetting"]["formula"], FORGETTING_FORMULA);
        assert_eq!(
            json["forgetting"]["mean"]["formula"],
            MEAN_FORGETTING_FORMULA
        );
        assert_eq!(json["notation"], NOTATION);
    }
}
