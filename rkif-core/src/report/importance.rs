//! `importance/*.json`: what the importance scores looked like at sampled rounds.
//!
//! A full score map is as large as the adapter, so a snapshot keeps per-module summary
//! statistics of the inner (new-task) and outer (memory) scores, plus a few down-sampled
//! element maps: small mean-pooled grids of one LoRA matrix that a heatmap can show.

use serde::{Deserialize, Serialize};

use crate::report::schema::Artifact;
use crate::{Error, Result};

/// The default largest side of a down-sampled map.
pub const DEFAULT_MAP_SIDE: usize = 32;

/// The importance state at one point of a task: a sampled round or the task's end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportanceSnapshot {
    /// Version of this file's shape.
    pub schema_version: u32,
    /// Task index in training order.
    pub task: usize,
    /// Round within the task (from 1); `None` for the end of the task.
    pub round: Option<usize>,
    /// Optimiser step within the task at which the snapshot was taken.
    pub step: usize,
    /// The global inner-mask threshold `tau` (0.8 quantile of all inner scores), if computed.
    pub inner_threshold: Option<f32>,
    /// The global outer-mask threshold `tau`, if computed.
    pub outer_threshold: Option<f32>,
    /// One entry per LoRA matrix.
    pub modules: Vec<ModuleImportance>,
    /// Down-sampled maps of a few LoRA matrices.
    pub maps: Vec<ImportanceMap>,
}

impl Artifact for ImportanceSnapshot {
    const SCHEMA_VERSION: u32 = 1;

    fn validate(&self) -> std::result::Result<(), String> {
        for (i, map) in self.maps.iter().enumerate() {
            map.grid
                .check()
                .map_err(|what| format!("maps[{i}] ({}): {what}", map.module))?;
        }
        Ok(())
    }
}

impl ImportanceSnapshot {
    /// An empty snapshot for `task` at `round` (`None`: end of task) and `step`.
    pub fn new(task: usize, round: Option<usize>, step: usize) -> Self {
        Self {
            schema_version: Self::SCHEMA_VERSION,
            task,
            round,
            step,
            inner_threshold: None,
            outer_threshold: None,
            modules: Vec::new(),
            maps: Vec::new(),
        }
    }
}

/// Which of a LoRA pair's matrices: `A` (shape `r x in`) or `B` (shape `out x r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoraFactor {
    /// The down projection, `r x in`.
    A,
    /// The up projection, `out x r`.
    B,
}

/// Which importance tracker a score comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// Scores from new-task batches.
    Inner,
    /// Scores from replay-memory batches.
    Outer,
}

/// Score statistics of one LoRA matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleImportance {
    /// The module's full name (`encoder.block.0.layer.0.SelfAttention.q`).
    pub module: String,
    /// Transformer block index.
    pub layer: usize,
    /// Module kind as the backbone names it (`q`, `v`, `q_proj`, ...).
    pub kind: String,
    /// `A` or `B`.
    pub factor: LoraFactor,
    /// The matrix shape `[rows, cols]`.
    pub shape: [usize; 2],
    /// Inner-score statistics; `None` before the tracker has seen a step.
    pub inner: Option<ScoreSummary>,
    /// Outer-score statistics; `None` on the first task (no memory) or before any round.
    pub outer: Option<ScoreSummary>,
}

/// Summary statistics of one matrix's scores, computed in f64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    /// Elements summarised.
    pub count: usize,
    /// Smallest score.
    pub min: f64,
    /// Largest score.
    pub max: f64,
    /// Mean score.
    pub mean: f64,
    /// Population standard deviation (divides by `count`).
    pub std: f64,
    /// Median (mean of the two middle values for an even count, as numpy does).
    pub median: f64,
    /// Elements above the global mask threshold, when one was given.
    pub important: Option<usize>,
}

impl ScoreSummary {
    /// Summarises `scores` (any shape, flattened); `threshold` is the global mask threshold
    /// `tau`, and elements with score `> tau` count as important. `name` names the tensor in
    /// errors: empty or non-finite scores are refused.
    pub fn of(name: &str, scores: &[f32], threshold: Option<f32>) -> Result<Self> {
        check_finite(name, scores)?;
        let count = scores.len();
        if count == 0 {
            return Err(Error::tensor(name, "no scores to summarise"));
        }
        let n = count as f64;
        let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
        let variance = scores
            .iter()
            .map(|&s| (f64::from(s) - mean).powi(2))
            .sum::<f64>()
            / n;
        let (min, max) = scores
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| {
                (lo.min(s), hi.max(s))
            });
        Ok(Self {
            count,
            min: f64::from(min),
            max: f64::from(max),
            mean,
            std: variance.sqrt(),
            median: median(scores).ok_or_else(|| Error::tensor(name, "no median"))?,
            important: threshold.map(|tau| scores.iter().filter(|&&s| s > tau).count()),
        })
    }
}

/// A down-sampled map of one LoRA matrix's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportanceMap {
    /// The module's full name.
    pub module: String,
    /// `A` or `B`.
    pub factor: LoraFactor,
    /// Inner or outer scores.
    pub score: ScoreKind,
    /// The mean-pooled grid.
    pub grid: ElementGrid,
}

/// A small row-major grid of f32, mean-pooled from a larger matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElementGrid {
    /// Rows of the matrix the grid summarises.
    pub source_rows: usize,
    /// Columns of the matrix the grid summarises.
    pub source_cols: usize,
    /// Grid rows (`<= source_rows`).
    pub rows: usize,
    /// Grid columns (`<= source_cols`).
    pub cols: usize,
    /// `rows * cols` values, row-major; cell `(r, c)` is the mean of its block.
    pub values: Vec<f32>,
}

impl ElementGrid {
    /// The value at grid cell `(row, col)`.
    pub fn get(&self, row: usize, col: usize) -> Option<f32> {
        if row >= self.rows || col >= self.cols {
            return None;
        }
        let index = row.checked_mul(self.cols)?.checked_add(col)?;
        self.values.get(index).copied()
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.rows > self.source_rows || self.cols > self.source_cols {
            return Err(format!(
                "grid {}x{} is larger than its source {}x{}",
                self.rows, self.cols, self.source_rows, self.source_cols
            ));
        }
        if self.rows.checked_mul(self.cols) != Some(self.values.len()) {
            return Err(format!(
                "{} values for a {}x{} grid",
                self.values.len(),
                self.rows,
                self.cols
            ));
        }
        Ok(())
    }
}

/// Mean-pools a row-major matrix of shape `[rows, cols]` into a grid of at most
/// `[max_rows, max_cols]` (each side is `min(source side, max side)`).
///
/// Source row `s` goes to grid row `floor(s * grid_rows / rows)` (columns alike), so blocks
/// are contiguous, never empty, and differ in size by at most one. `name` names the matrix
/// in errors: a length that does not match the shape, an empty shape, a zero maximum or a
/// non-finite value is refused.
pub fn downsample_mean(
    name: &str,
    values: &[f32],
    shape: [usize; 2],
    max: [usize; 2],
) -> Result<ElementGrid> {
    let [rows, cols] = shape;
    let [max_rows, max_cols] = max;
    if rows == 0 || cols == 0 {
        return Err(Error::tensor(name, format!("empty shape {rows}x{cols}")));
    }
    if max_rows == 0 || max_cols == 0 {
        return Err(Error::tensor(
            name,
            format!("grid limit {max_rows}x{max_cols} has a zero side"),
        ));
    }
    if rows.checked_mul(cols) != Some(values.len()) {
        return Err(Error::tensor(
            name,
            format!("{} values for shape {rows}x{cols}", values.len()),
        ));
    }
    check_finite(name, values)?;
    let grid_rows = rows.min(max_rows);
    let grid_cols = cols.min(max_cols);
    let mut sums = vec![0f64; grid_rows * grid_cols];
    let mut counts = vec![0u32; grid_rows * grid_cols];
    for (s, row) in values.chunks_exact(cols).enumerate() {
        let r = s * grid_rows / rows;
        for (t, &value) in row.iter().enumerate() {
            let cell = r * grid_cols + t * grid_cols / cols;
            if let (Some(sum), Some(count)) = (sums.get_mut(cell), counts.get_mut(cell)) {
                *sum += f64::from(value);
                *count += 1;
            }
        }
    }
    let values = sums
        .iter()
        .zip(&counts)
        .map(|(&sum, &count)| (sum / f64::from(count.max(1))) as f32)
        .collect();
    Ok(ElementGrid {
        source_rows: rows,
        source_cols: cols,
        rows: grid_rows,
        cols: grid_cols,
        values,
    })
}

fn check_finite(name: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(at) => Err(Error::NonFinite {
            name: name.to_owned(),
            what: format!("importance score at flat index {at}"),
        }),
        None => Ok(()),
    }
}

/// The median of finite `values`, `None` when empty.
fn median(values: &[f32]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut copy = values.to_vec();
    let mid = copy.len() / 2;
    let (lower, upper, _) = copy.select_nth_unstable_by(mid, f32::total_cmp);
    let upper = f64::from(*upper);
    if values.len() % 2 == 1 {
        return Some(upper);
    }
    let below = lower.iter().copied().reduce(f32::max)?;
    Some((f64::from(below) + upper) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_blocks_by_hand() {
        // 4 x 6 matrix holding 0..24, pooled to 2 x 3: blocks of 2 x 2.
        let values: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let grid = downsample_mean("m", &values, [4, 6], [2, 3]).unwrap();
        assert_eq!((grid.rows, grid.cols), (2, 3));
        // (0 + 1 + 6 + 7) / 4, (4 + 5 + 10 + 11) / 4, (16 + 17 + 22 + 23) / 4
        assert_eq!(grid.get(0, 0), Some(3.5));
        assert_eq!(grid.get(0, 2), Some(7.5));
        assert_eq!(grid.get(1, 2), Some(19.5));
        assert_eq!(grid.get(2, 0), None);
    }

    #[test]
    fn uneven_blocks_stay_contiguous() {
        // 3 rows into 2: rows {0, 1} and {2}.
        let grid = downsample_mean("m", &[1.0, 2.0, 4.0], [3, 1], [2, 32]).unwrap();
        assert_eq!(grid.values, vec![1.5, 4.0]);
        // 5 columns into 3: {0, 1}, {2, 3}, {4}.
        let grid = downsample_mean("m", &[1.0, 3.0, 5.0, 7.0, 9.0], [1, 5], [1, 3]).unwrap();
        assert_eq!(grid.values, vec![2.0, 6.0, 9.0]);
    }

    #[test]
    fn small_matrix_is_kept_as_is() {
        let grid = downsample_mean("m", &[1.0, 2.0, 3.0, 4.0], [2, 2], [32, 32]).unwrap();
        assert_eq!(grid.values, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!((grid.source_rows, grid.source_cols), (2, 2));
    }

    #[test]
    fn lora_a_shape_pools_to_the_limit() {
        // A of rank 8 over 1024 inputs: 8 x 32 cells of 32 elements each.
        let values: Vec<f32> = (0..8 * 1024).map(|i| (i % 1024 / 32) as f32).collect();
        let grid = downsample_mean("lora_A", &values, [8, 1024], [32, 32]).unwrap();
        assert_eq!((grid.rows, grid.cols), (8, 32));
        assert_eq!(grid.get(3, 5), Some(5.0));
    }

    #[test]
    fn bad_input_names_the_matrix() {
        let err = downsample_mean("enc.q.lora_A", &[1.0; 5], [2, 3], [32, 32]).unwrap_err();
        assert!(err.to_string().contains("enc.q.lora_A") && err.to_string().contains("5 values"));
        let err = downsample_mean("x", &[1.0, f32::NAN], [1, 2], [1, 1]).unwrap_err();
        assert!(matches!(err, Error::NonFinite { .. }), "{err}");
        assert!(downsample_mean("x", &[], [0, 3], [1, 1]).is_err());
        assert!(downsample_mean("x", &[1.0], [1, 1], [0, 1]).is_err());
    }

    #[test]
    fn summary_by_hand() {
        let s = ScoreSummary::of("m", &[4.0, 1.0, 3.0, 2.0], Some(2.0)).unwrap();
        assert_eq!((s.count, s.min, s.max), (4, 1.0, 4.0));
        assert_eq!(s.mean, 2.5);
        // population variance: (2.25 + 0.25 + 0.25 + 2.25) / 4
        assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.median, 2.5);
        // strictly above tau = 2
        assert_eq!(s.important, Some(2));
        let odd = ScoreSummary::of("m", &[5.0, 1.0, 3.0], None).unwrap();
        assert_eq!((odd.median, odd.important), (3.0, None));
    }

    #[test]
    fn summary_refuses_empty_and_non_finite() {
        assert!(ScoreSummary::of("m", &[], None).is_err());
        let err = ScoreSummary::of("dec.v.lora_B", &[1.0, f32::INFINITY], None).unwrap_err();
        assert!(err.to_string().contains("dec.v.lora_B"), "{err}");
    }

    #[test]
    fn damaged_grid_fails_validation() {
        let mut snapshot = ImportanceSnapshot::new(1, Some(3), 24);
        snapshot.maps.push(ImportanceMap {
            module: "enc.q".into(),
            factor: LoraFactor::A,
            score: ScoreKind::Inner,
            grid: ElementGrid {
                source_rows: 8,
                source_cols: 64,
                rows: 8,
                cols: 32,
                values: vec![0.0; 10],
            },
        });
        let err = snapshot.validate().unwrap_err();
        assert!(err.starts_with("maps[0] (enc.q): 10 values"), "{err}");
    }
}
