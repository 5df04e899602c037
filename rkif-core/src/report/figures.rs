//! Figures of a run as plotly JSON, shared by the viewer and notebooks.
//!
//! Each builder returns a [`Figure`]: `{"data": [...], "layout": {...}}` as plotly.js takes it
//! (`Plotly.newPlot(div, figure.data, figure.layout)`). The JSON is built with `serde_json`
//! rather than the `plotly` crate: that crate brings templating and its own wasm-bindgen /
//! web-sys stack into every user of `rkif-core` (the CLI included), while the handful of trace
//! types used here (heatmap, scatter, bar) are a small, stable part of plotly's schema.
//!
//! Untrusted text. Task names, module names and labels come from run files. Plotly renders a
//! few HTML-like tags inside text (`<b>`, `<a href=...>`), so every such string goes through
//! [`plotly_text`], which escapes `&`, `<` and `>` as entities: plotly shows them literally.
//! User strings never go into `hovertemplate` (whose `%{...}` would be interpreted); hover text
//! is passed as plain `text` with `hoverinfo: "text"`.

use serde::Serialize;
use serde_json::{json, Value};

use crate::report::events::{Event, EventLog, FusionShares};
use crate::report::importance::{ImportanceMap, ImportanceSnapshot, LoraFactor, ScoreKind};
use crate::report::manifest::Manifest;
use crate::report::metrics_file::MetricsFile;

/// A plotly figure: traces and layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// The traces.
    pub data: Vec<Value>,
    /// The layout.
    pub layout: Value,
}

impl Figure {
    /// The figure as one JSON value `{"data": ..., "layout": ...}`.
    pub fn to_json(&self) -> Value {
        json!({ "data": self.data, "layout": self.layout })
    }
}

/// Escapes `&`, `<`, `>` so plotly shows `text` literally instead of as markup.
pub fn plotly_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// One accuracy-matrix cell: `a[row][col]`, or `b[col]` (zero-shot) when `row` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// Row `j` (after training task `j`); `None` for the zero-shot row `b`.
    pub row: Option<usize>,
    /// Column `i` (the evaluated task).
    pub col: usize,
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.row {
            Some(row) => write!(f, "a[{row}][{}]", self.col),
            None => write!(f, "b[{}]", self.col),
        }
    }
}

/// A metric with the cells it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricCells {
    /// `OP`, `BWT`, `FWT` or `F` (mean forgetting).
    pub name: &'static str,
    /// The formula as stored in `metrics.json`.
    pub formula: String,
    /// The value as stored in `metrics.json` (a fraction), `None` when no term was usable.
    pub value: Option<f64>,
    /// Usable terms.
    pub terms_used: usize,
    /// Terms of the formula.
    pub terms_total: usize,
    /// The cells the usable terms read, in term order, each once.
    pub cells: Vec<Cell>,
}

/// OP, BWT, FWT and mean forgetting of `metrics`, each with the matrix cells its usable terms
/// read (the rules of `eval::metrics`: a term is used only when all its cells exist).
pub fn metric_cells(metrics: &MetricsFile) -> Vec<MetricCells> {
    let k = metrics.tasks_trained.min(metrics.tasks.len());
    let a = |j: usize, i: usize| -> Option<f64> {
        metrics
            .accuracy
            .get(j)
            .and_then(|row| row.get(i))
            .copied()
            .flatten()
    };
    let b = |i: usize| -> Option<f64> {
        metrics
            .zero_shot
            .as_ref()
            .and_then(|row| row.get(i))
            .copied()
            .flatten()
    };
    let at = |row: usize, col: usize| Cell {
        row: Some(row),
        col,
    };
    let mut op = Vec::new();
    let mut bwt = Vec::new();
    let mut fwt = Vec::new();
    let mut forgetting = Vec::new();
    if let Some(last) = k.checked_sub(1) {
        for i in 0..k {
            if a(last, i).is_some() {
                op.push(at(last, i));
            }
            if i < last && a(last, i).is_some() && a(i, i).is_some() {
                bwt.extend([at(last, i), at(i, i)]);
            }
            if i > 0 && a(i - 1, i).is_some() && b(i).is_some() {
                fwt.extend([at(i - 1, i), Cell { row: None, col: i }]);
            }
            if i < last && a(last, i).is_some() {
                let earlier: Vec<Cell> = (i..last)
                    .filter(|&l| a(l, i).is_some())
                    .map(|l| at(l, i))
                    .collect();
                if !earlier.is_empty() {
                    forgetting.extend(earlier);
                    forgetting.push(at(last, i));
                }
            }
        }
    }
    let entry = |name, metric: &crate::eval::metrics::Metric, cells| MetricCells {
        name,
        formula: metric.formula.clone(),
        value: metric.value,
        terms_used: metric.terms_used,
        terms_total: metric.terms_total,
        cells,
    };
    vec![
        entry("OP", &metrics.op, op),
        entry("BWT", &metrics.bwt, bwt),
        entry("FWT", &metrics.fwt, fwt),
        entry("F", &metrics.forgetting.mean, forgetting),
    ]
}

/// The run-summary lines of a manifest, as (label, text) pairs in display order: method,
/// backbone, benchmark and order, seeds, device, effective batch, wall time, created, version.
/// Config values are read by their path in the config JSON; absent ones read `–`.
pub fn run_summary(manifest: &Manifest) -> Vec<(&'static str, String)> {
    let config = |path: &[&str]| -> String {
        let mut value = &manifest.config;
        for key in path {
            match value.get(key) {
                Some(next) => value = next,
                None => return "–".to_owned(),
            }
        }
        match value {
            Value::String(s) => s.clone(),
            Value::Null => "–".to_owned(),
            other => other.to_string(),
        }
    };
    let seeds = manifest
        .seeds
        .iter()
        .map(|(purpose, seed)| format!("{purpose}={seed}"))
        .collect::<Vec<_>>()
        .join(", ");
    let wall: f64 = manifest.timings.iter().map(|t| t.seconds).sum();
    let timings = manifest
        .timings
        .iter()
        .map(|t| format!("{} {:.1} s", t.name, t.seconds))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        ("run", manifest.run_name.clone()),
        ("method", manifest.method.clone()),
        ("backbone", config(&["model", "source"])),
        ("benchmark", config(&["data", "dir"])),
        ("task order", config(&["data", "order"])),
        ("seeds", seeds),
        ("device", manifest.device.clone()),
        ("effective batch", manifest.effective_batch.to_string()),
        ("wall time", format!("{wall:.1} s ({timings})")),
        ("created", manifest.created.clone()),
        ("rkif version", manifest.rkif_version.clone()),
    ]
}

/// `0.8734` -> `"87.3"`; `None` -> `"–"`.
pub fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) => format!("{:.1}", v * 100.0),
        None => "–".to_owned(),
    }
}

/// Row labels of the accuracy matrix: `after 0: dbpedia`, ... (escaped for plotly).
fn row_labels(tasks: &[String]) -> Vec<String> {
    tasks
        .iter()
        .enumerate()
        .map(|(j, t)| plotly_text(&format!("after {j}: {t}")))
        .collect()
}

fn column_labels(tasks: &[String]) -> Vec<String> {
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| plotly_text(&format!("{i}: {t}")))
        .collect()
}

/// The accuracy-matrix heatmap trace of `metrics` on axes `x{axis}`/`y{axis}` (`axis` empty
/// for the first pair). `z` is `T x T` in percent, null where not evaluated.
fn matrix_trace(metrics: &MetricsFile, axis: &str, show_scale: bool) -> Value {
    let tasks = &metrics.tasks;
    let z: Vec<Vec<Option<f64>>> = metrics
        .accuracy
        .iter()
        .map(|row| row.iter().map(|c| c.map(|v| v * 100.0)).collect())
        .collect();
    let text: Vec<Vec<String>> = metrics
        .accuracy
        .iter()
        .map(|row| row.iter().map(|c| percent(*c)).collect())
        .collect();
    let hover: Vec<Vec<String>> = metrics
        .accuracy
        .iter()
        .enumerate()
        .map(|(j, row)| {
            row.iter()
                .enumerate()
                .map(|(i, cell)| {
                    let examples = metrics
                        .task_details
                        .get(i)
                        .and_then(|d| d.examples_evaluated.get(j))
                        .copied()
                        .flatten()
                        .map(|n| format!(" on {n} examples"))
                        .unwrap_or_default();
                    let train = tasks.get(j).map(String::as_str).unwrap_or("?");
                    let test = tasks.get(i).map(String::as_str).unwrap_or("?");
                    plotly_text(&format!(
                        "a[{j}][{i}] = {}%{examples}<br>after training {train}, tested on {test}",
                        percent(*cell)
                    ))
                    // The line break is ours: put it back after escaping.
                    .replace("&lt;br&gt;", "<br>")
                })
                .collect()
        })
        .collect();
    json!({
        "type": "heatmap",
        "z": z,
        "x": column_labels(tasks),
        "y": row_labels(tasks),
        "text": text,
        "texttemplate": "%{text}",
        "hovertext": hover,
        "hoverinfo": "text",
        "zmin": 0,
        "zmax": 100,
        "colorscale": "Viridis",
        "showscale": show_scale,
        "xaxis": format!("x{axis}"),
        "yaxis": format!("y{axis}"),
    })
}

/// The accuracy matrix as a heatmap with values (percent) and hover details (cell name,
/// examples, tasks). Rows: after training task `j`; columns: task `i`; row 0 at the top.
pub fn accuracy_heatmap(metrics: &MetricsFile) -> Figure {
    Figure {
        data: vec![matrix_trace(metrics, "", true)],
        layout: json!({
            "title": { "text": "Accuracy matrix a[j][i] (%): columns i = evaluated task", "y": 0.98 },
            "xaxis": { "side": "top" },
            "yaxis": { "title": { "text": "after training task j" }, "autorange": "reversed" },
            "margin": { "l": 160, "t": 90 },
        }),
    }
}

/// Per-task forgetting `f_i` (percentage points) as bars; null bars where unusable.
pub fn forgetting_bars(metrics: &MetricsFile) -> Figure {
    let per_task = &metrics.forgetting.per_task;
    let x: Vec<String> = per_task.iter().map(|f| plotly_text(&f.task)).collect();
    let y: Vec<Option<f64>> = per_task
        .iter()
        .map(|f| f.value.map(|v| v * 100.0))
        .collect();
    let text: Vec<String> = per_task.iter().map(|f| percent(f.value)).collect();
    Figure {
        data: vec![json!({
            "type": "bar", "x": x, "y": y, "text": text, "textposition": "auto",
            "hoverinfo": "x+text", "name": "forgetting",
        })],
        layout: json!({
            "title": { "text": plotly_text(&format!("Forgetting per task ({})", metrics.forgetting.formula)) },
            "yaxis": { "title": { "text": "f_i (points)" } },
            "xaxis": { "type": "category" },
        }),
    }
}

/// Accuracy matrices of several runs side by side, one subplot each, titled by run name.
pub fn comparison_heatmaps(runs: &[(&str, &MetricsFile)]) -> Figure {
    let n = runs.len().max(1);
    let gap = 0.04;
    let width = (1.0 - gap * (n as f64 - 1.0)) / n as f64;
    let mut data = Vec::new();
    let mut layout = serde_json::Map::new();
    let mut annotations = Vec::new();
    for (index, (name, metrics)) in runs.iter().enumerate() {
        let axis = if index == 0 {
            String::new()
        } else {
            (index + 1).to_string()
        };
        data.push(matrix_trace(metrics, &axis, index == 0));
        let start = index as f64 * (width + gap);
        layout.insert(
            format!("xaxis{axis}"),
            json!({ "domain": [start, start + width], "side": "top", "anchor": format!("y{axis}") }),
        );
        layout.insert(
            format!("yaxis{axis}"),
            json!({ "autorange": "reversed", "anchor": format!("x{axis}"), "showticklabels": index == 0 }),
        );
        annotations.push(json!({
            "text": plotly_text(name), "showarrow": false, "xref": "paper", "yref": "paper",
            "x": start + width / 2.0, "y": -0.08, "xanchor": "center",
        }));
    }
    layout.insert("annotations".into(), Value::Array(annotations));
    layout.insert(
        "title".into(),
        json!({ "text": "Accuracy matrices side by side (%)" }),
    );
    layout.insert("margin".into(), json!({ "l": 160, "t": 90, "b": 60 }));
    Figure {
        data,
        layout: Value::Object(layout),
    }
}

/// One row of the comparison table per run: name, method, OP, BWT, FWT, F (percent text).
pub fn metrics_table(runs: &[(&str, &str, &MetricsFile)]) -> Vec<[String; 6]> {
    runs.iter()
        .map(|(name, method, m)| {
            [
                (*name).to_owned(),
                (*method).to_owned(),
                percent(m.op.value),
                percent(m.bwt.value),
                percent(m.fwt.value),
                percent(m.forgetting.mean.value),
            ]
        })
        .collect()
}

/// The row label of a LoRA matrix in the module x layer map: `q.A`, `v_proj.B`, ...
fn module_row(kind: &str, factor: LoraFactor) -> String {
    let factor = match factor {
        LoraFactor::A => "A",
        LoraFactor::B => "B",
    };
    format!("{kind}.{factor}")
}

/// Mean score per (module kind and factor) x layer of one tracker, as `z[row][layer]`; several
/// matrices in one cell (T5 encoder, decoder self- and cross-attention) are averaged.
fn layer_grid(
    snapshot: &ImportanceSnapshot,
    score: ScoreKind,
) -> (Vec<String>, Vec<Vec<Option<f64>>>) {
    let mut rows: Vec<String> = Vec::new();
    for m in &snapshot.modules {
        let row = module_row(&m.kind, m.factor);
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    rows.sort();
    let layers = snapshot
        .modules
        .iter()
        .map(|m| m.layer + 1)
        .max()
        .unwrap_or(0);
    let mut sums = vec![vec![(0.0f64, 0usize); layers]; rows.len()];
    for m in &snapshot.modules {
        let summary = match score {
            ScoreKind::Inner => m.inner.as_ref(),
            ScoreKind::Outer => m.outer.as_ref(),
        };
        let row = module_row(&m.kind, m.factor);
        let cell = rows
            .iter()
            .position(|r| *r == row)
            .and_then(|r| sums.get_mut(r))
            .and_then(|r| r.get_mut(m.layer));
        if let (Some(summary), Some(cell)) = (summary, cell) {
            cell.0 += summary.mean;
            cell.1 += 1;
        }
    }
    let z = sums
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(s, n)| (n > 0).then(|| s / n as f64))
                .collect()
        })
        .collect();
    (rows.iter().map(|r| plotly_text(r)).collect(), z)
}

/// Importance per module x layer, inner (left) and outer (right), of one snapshot. Cells are
/// the mean score of the matrices of that kind in that layer; empty where a tracker has no
/// score yet (the outer tracker on the first task).
pub fn importance_layers(snapshot: &ImportanceSnapshot) -> Figure {
    let place = match snapshot.round {
        Some(round) => format!("round {round}"),
        None => "end of task".to_owned(),
    };
    let mut data = Vec::new();
    for (index, (score, title)) in [(ScoreKind::Inner, "inner"), (ScoreKind::Outer, "outer")]
        .into_iter()
        .enumerate()
    {
        let (rows, z) = layer_grid(snapshot, score);
        let axis = if index == 0 { "" } else { "2" };
        let layers: Vec<usize> = (0..z.first().map_or(0, Vec::len)).collect();
        data.push(json!({
            "type": "heatmap", "name": title, "z": z, "x": layers, "y": rows,
            "colorscale": if index == 0 { "Blues" } else { "Oranges" },
            "colorbar": { "x": if index == 0 { 0.46 } else { 1.02 }, "title": { "text": title } },
            "xaxis": format!("x{axis}"), "yaxis": format!("y{axis}"),
        }));
    }
    Figure {
        data,
        layout: json!({
            "title": { "text": format!("Mean importance per module and layer: task {}, {place} (step {})", snapshot.task, snapshot.step) },
            "xaxis": { "domain": [0.0, 0.42], "title": { "text": "layer (inner)" }, "dtick": 1 },
            "yaxis": { "anchor": "x" },
            "xaxis2": { "domain": [0.56, 0.98], "title": { "text": "layer (outer)" }, "dtick": 1, "anchor": "y2" },
            "yaxis2": { "anchor": "x2", "showticklabels": false },
        }),
    }
}

/// The down-sampled element map of one LoRA matrix: `grid.rows x grid.cols` mean-pooled cells
/// of a `source_rows x source_cols` matrix.
pub fn element_map(map: &ImportanceMap) -> Figure {
    let grid = &map.grid;
    let z: Vec<Vec<f32>> = grid
        .values
        .chunks(grid.cols.max(1))
        .map(<[f32]>::to_vec)
        .collect();
    let score = match map.score {
        ScoreKind::Inner => "inner",
        ScoreKind::Outer => "outer",
    };
    let title = format!(
        "{} {:?} ({score}): {}x{} matrix as {}x{} block means",
        map.module, map.factor, grid.source_rows, grid.source_cols, grid.rows, grid.cols
    );
    Figure {
        data: vec![json!({ "type": "heatmap", "z": z, "colorscale": "Viridis" })],
        layout: json!({
            "title": { "text": plotly_text(&title) },
            "yaxis": { "autorange": "reversed", "title": { "text": "row block" } },
            "xaxis": { "title": { "text": "column block" } },
        }),
    }
}

/// Where each task's steps start on a run-wide step axis: task `t` starts after the largest
/// step seen (or planned) in tasks before it.
fn step_offsets(events: &EventLog) -> Vec<usize> {
    let mut last_step: Vec<usize> = Vec::new();
    let mut note = |task: usize, step: usize| {
        if last_step.len() <= task {
            last_step.resize(task + 1, 0);
        }
        if let Some(s) = last_step.get_mut(task) {
            *s = (*s).max(step);
        }
    };
    for event in &events.events {
        match event {
            Event::TaskStart(s) => note(s.task, s.planned_steps),
            Event::Step(s) => note(s.task, s.step),
            Event::OuterStep(s) => note(s.task, s.step),
            Event::Round(r) => note(r.task, r.step),
            Event::SkippedStep(s) => note(s.task, s.step),
            Event::ValLoss(v) => note(v.task, v.step),
            Event::Eval(_) | Event::TaskEnd(_) => {}
        }
    }
    let mut offsets = Vec::with_capacity(last_step.len());
    let mut total = 0;
    for steps in last_step {
        offsets.push(total);
        total += steps;
    }
    offsets
}

fn global_step(offsets: &[usize], task: usize, step: usize) -> usize {
    offsets.get(task).copied().unwrap_or(0) + step
}

/// Reads one fusion case's share.
type ShareOf = fn(&FusionShares) -> f64;

/// The share of LoRA elements in each fusion case per round (stacked), and the inner/outer
/// mask overlap (Jaccard) on a second axis. x: the run-wide step at which the round fused.
pub fn fusion_shares(events: &EventLog) -> Figure {
    let offsets = step_offsets(events);
    let rounds: Vec<_> = events
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Round(r) => Some(r),
            _ => None,
        })
        .collect();
    let x: Vec<usize> = rounds
        .iter()
        .map(|r| global_step(&offsets, r.task, r.step))
        .collect();
    let hover: Vec<String> = rounds
        .iter()
        .map(|r| format!("task {} round {} (step {})", r.task, r.round, r.step))
        .collect();
    let cases: [(&str, ShareOf); 4] = [
        ("inner only (keep new-task update)", |s| s.inner_only),
        ("outer only (keep replay update)", |s| s.outer_only),
        ("both (merge 0.4/0.6)", |s| s.both),
        ("neither (average)", |s| s.neither),
    ];
    let mut data: Vec<Value> = cases
        .iter()
        .map(|(name, share)| {
            let y: Vec<f64> = rounds.iter().map(|r| share(&r.shares)).collect();
            json!({
                "type": "scatter", "mode": "lines", "stackgroup": "shares", "name": name,
                "x": x, "y": y, "hovertext": hover, "hoverinfo": "text+y+name",
            })
        })
        .collect();
    let overlap: Vec<Option<f64>> = rounds.iter().map(|r| r.overlap).collect();
    data.push(json!({
        "type": "scatter", "mode": "lines", "name": "inner/outer overlap (Jaccard)",
        "x": x, "y": overlap, "yaxis": "y2", "line": { "color": "black", "dash": "dot" },
    }));
    Figure {
        data,
        layout: json!({
            "title": { "text": format!("Fusion cases over {} rounds", rounds.len()) },
            "xaxis": { "title": { "text": "step (run-wide)" } },
            "yaxis": { "title": { "text": "share of LoRA elements" }, "range": [0, 1] },
            "yaxis2": { "title": { "text": "overlap" }, "overlaying": "y", "side": "right", "range": [0, 1] },
            "legend": { "orientation": "h", "y": -0.2 },
        }),
    }
}

/// Most points a training curve draws; longer runs are averaged over bins of steps.
pub const MAX_CURVE_POINTS: usize = 2000;

/// Means of consecutive chunks of `bin` values (the last chunk may be shorter).
fn bin_mean(values: &[f64], bin: usize) -> Vec<f64> {
    values
        .chunks(bin)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

/// The last value of each chunk of `bin` values (a bin is placed at its last step).
fn bin_last(values: &[usize], bin: usize) -> Vec<usize> {
    values
        .chunks(bin)
        .filter_map(|c| c.last().copied())
        .collect()
}

/// Training loss per inner step and per outer (replay-memory) step, each averaged over bins
/// of steps beyond [`MAX_CURVE_POINTS`] steps, validation loss where measured, and the
/// learning rate (second axis), on the run-wide step axis (an outer step sits at the inner
/// step it follows); dotted lines mark task boundaries.
pub fn training_curves(events: &EventLog) -> Figure {
    let offsets = step_offsets(events);
    let (mut sx, mut loss, mut lr) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ox, mut outer) = (Vec::new(), Vec::new());
    let (mut vx, mut val) = (Vec::new(), Vec::new());
    for event in &events.events {
        match event {
            Event::Step(s) => {
                sx.push(global_step(&offsets, s.task, s.step));
                loss.push(s.loss);
                lr.push(s.lr);
            }
            Event::OuterStep(s) => {
                ox.push(global_step(&offsets, s.task, s.step));
                outer.push(s.loss);
            }
            Event::ValLoss(v) => {
                vx.push(global_step(&offsets, v.task, v.step));
                val.push(v.loss);
            }
            _ => {}
        }
    }
    // Thousands of SVG points make the page slow to draw and no easier to read.
    let bin = sx.len().div_ceil(MAX_CURVE_POINTS).max(1);
    let (sx, loss, lr) = (bin_last(&sx, bin), bin_mean(&loss, bin), bin_mean(&lr, bin));
    let outer_bin = ox.len().div_ceil(MAX_CURVE_POINTS).max(1);
    let (ox, outer) = (bin_last(&ox, outer_bin), bin_mean(&outer, outer_bin));
    let title = match bin {
        1 => "Training curves".to_owned(),
        n => format!("Training curves (loss and learning rate: means over {n} steps)"),
    };
    let shapes: Vec<Value> = offsets
        .iter()
        .skip(1)
        .map(|&x| {
            json!({ "type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                    "line": { "dash": "dot", "width": 1, "color": "grey" } })
        })
        .collect();
    Figure {
        data: vec![
            json!({ "type": "scatter", "mode": "lines", "name": "training loss (inner steps)", "x": sx, "y": loss }),
            json!({ "type": "scatter", "mode": "markers", "name": "replay loss (outer steps)", "x": ox, "y": outer,
                    "marker": { "size": 4 } }),
            json!({ "type": "scatter", "mode": "lines+markers", "name": "validation loss", "x": vx, "y": val }),
            json!({ "type": "scatter", "mode": "lines", "name": "learning rate", "x": sx, "y": lr, "yaxis": "y2",
                    "line": { "dash": "dash" } }),
        ],
        layout: json!({
            "title": { "text": title },
            "xaxis": { "title": { "text": "step (run-wide)" } },
            "yaxis": { "title": { "text": "loss" } },
            "yaxis2": { "title": { "text": "learning rate" }, "overlaying": "y", "side": "right", "exponentformat": "e" },
            "shapes": shapes,
            "legend": { "orientation": "h", "y": -0.2 },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{AccuracyMatrix, TaskAccuracy};
    use crate::report::events::{OuterStepEvent, RoundEvent, RoundTimings, StepEvent, ValLoss};
    use crate::report::importance::{downsample_mean, ModuleImportance, ScoreSummary};

    fn metrics() -> MetricsFile {
        let tasks = vec!["dbpedia".into(), "<b>amazon</b>".into(), "yahoo".into()];
        let mut m = AccuracyMatrix::new(tasks).unwrap();
        let cells = [
            (0, 0, 0.9),
            (1, 0, 0.8),
            (1, 1, 0.7),
            (2, 0, 0.6),
            (2, 1, 0.65),
            (2, 2, 0.5),
        ];
        for (j, i, v) in cells {
            m.set(j, i, v).unwrap();
        }
        m.record(
            0,
            1,
            TaskAccuracy {
                correct: 1,
                total: 10,
            },
        )
        .unwrap();
        m.set_zero_shot(1, 0.05).unwrap();
        MetricsFile::from_matrix(&m)
    }

    #[test]
    fn escaping_makes_markup_literal() {
        assert_eq!(plotly_text("<a href='x'>&"), "&lt;a href='x'&gt;&amp;");
    }

    #[test]
    fn metric_cells_name_the_cells_each_metric_reads() {
        let cells = metric_cells(&metrics());
        let text = |name: &str| -> Vec<String> {
            let m = cells.iter().find(|c| c.name == name).unwrap();
            m.cells.iter().map(ToString::to_string).collect()
        };
        assert_eq!(text("OP"), ["a[2][0]", "a[2][1]", "a[2][2]"]);
        assert_eq!(text("BWT"), ["a[2][0]", "a[0][0]", "a[2][1]", "a[1][1]"]);
        // FWT: only task 1 has both a[0][1] and b[1].
        assert_eq!(text("FWT"), ["a[0][1]", "b[1]"]);
        assert_eq!(
            text("F"),
            ["a[0][0]", "a[1][0]", "a[2][0]", "a[1][1]", "a[2][1]"]
        );
        let op = cells.iter().find(|c| c.name == "OP").unwrap();
        assert!((op.value.unwrap() - (0.6 + 0.65 + 0.5) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn heatmap_carries_percent_values_escaped_labels_and_examples() {
        let figure = accuracy_heatmap(&metrics());
        let trace = &figure.data[0];
        assert_eq!(trace["z"][1][0], json!(80.0));
        assert_eq!(trace["z"][0][2], Value::Null);
        assert_eq!(trace["text"][2][1], json!("65.0"));
        assert_eq!(trace["x"][1], json!("1: &lt;b&gt;amazon&lt;/b&gt;"));
        let hover = trace["hovertext"][0][1].as_str().unwrap();
        assert!(
            hover.starts_with("a[0][1] = 10.0% on 10 examples<br>"),
            "{hover}"
        );
        assert!(!hover.contains("<b>"), "{hover}");
    }

    #[test]
    fn comparison_places_one_subplot_per_run() {
        let m = metrics();
        let figure = comparison_heatmaps(&[("a", &m), ("<i>b</i>", &m)]);
        assert_eq!(figure.data.len(), 2);
        assert_eq!(figure.data[1]["xaxis"], json!("x2"));
        assert_eq!(
            figure.layout["annotations"][1]["text"],
            json!("&lt;i&gt;b&lt;/i&gt;")
        );
        let rows = metrics_table(&[("a", "recurrent-kif", &m)]);
        assert_eq!(rows[0][2], percent(m.op.value));
    }

    #[test]
    fn layer_map_averages_matrices_of_a_kind_per_layer() {
        let mut s = ImportanceSnapshot::new(1, Some(3), 24);
        for (layer, module, value) in [
            (0, "enc.0.q", 1.0f32),
            (0, "dec.0.q", 3.0),
            (1, "enc.1.q", 5.0),
        ] {
            s.modules.push(ModuleImportance {
                module: module.into(),
                layer,
                kind: "q".into(),
                factor: LoraFactor::A,
                shape: [1, 2],
                inner: Some(ScoreSummary::of(module, &[value, value], None).unwrap()),
                outer: None,
            });
        }
        let figure = importance_layers(&s);
        assert_eq!(figure.data[0]["y"], json!(["q.A"]));
        assert_eq!(figure.data[0]["z"], json!([[2.0, 5.0]]));
        assert_eq!(figure.data[1]["z"], json!([[null, null]]));
    }

    #[test]
    fn element_map_reshapes_the_grid() {
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let map = ImportanceMap {
            module: "q".into(),
            factor: LoraFactor::B,
            score: ScoreKind::Outer,
            grid: downsample_mean("q", &values, [2, 4], [2, 2]).unwrap(),
        };
        let figure = element_map(&map);
        assert_eq!(figure.data[0]["z"], json!([[0.5, 2.5], [4.5, 6.5]]));
    }

    fn log() -> EventLog {
        let shares = FusionShares {
            inner_only: 0.1,
            outer_only: 0.2,
            both: 0.3,
            neither: 0.4,
        };
        let round = |task, step| {
            Event::Round(RoundEvent {
                task,
                round: 1,
                step,
                elements: 10,
                inner_mask: 2,
                outer_mask: 2,
                shares,
                overlap: Some(0.25),
                timings: RoundTimings {
                    inner_seconds: 0.0,
                    outer_seconds: 0.0,
                    fusion_seconds: 0.0,
                },
            })
        };
        let step = |task, step| {
            Event::Step(StepEvent {
                task,
                step,
                loss: 1.0,
                lr: 1e-4,
                grad_norm: 1.0,
            })
        };
        EventLog {
            header: None,
            events: vec![
                step(0, 1),
                step(0, 2),
                step(1, 1),
                Event::OuterStep(OuterStepEvent {
                    task: 1,
                    step: 1,
                    outer_step: 1,
                    loss: 0.7,
                    lr: 1e-4,
                    grad_norm: 1.0,
                }),
                round(1, 1),
                Event::ValLoss(ValLoss {
                    task: 1,
                    step: 1,
                    loss: 0.5,
                    examples: 50,
                }),
            ],
            truncated_lines: 0,
        }
    }

    #[test]
    fn long_curves_are_binned_by_mean() {
        let events = (1..=2 * MAX_CURVE_POINTS + 2)
            .map(|step| {
                Event::Step(StepEvent {
                    task: 0,
                    step,
                    loss: step as f64,
                    lr: 1.0,
                    grad_norm: 1.0,
                })
            })
            .collect();
        let log = EventLog {
            header: None,
            events,
            truncated_lines: 0,
        };
        let curves = training_curves(&log);
        // 4002 steps in bins of 3: 1334 points, the first the mean of steps 1..=3.
        let x = curves.data[0]["x"].as_array().unwrap();
        assert_eq!(x.len(), 1334);
        assert_eq!(x[0], json!(3));
        assert_eq!(curves.data[0]["y"][0], json!(2.0));
        assert_eq!(curves.data[0]["y"][1333], json!(4001.0));
    }

    #[test]
    fn curves_and_fusion_use_a_run_wide_step_axis() {
        let curves = training_curves(&log());
        assert_eq!(curves.data[0]["x"], json!([1, 2, 3]));
        // Outer steps sit at the inner step they follow; validation after them.
        assert_eq!(curves.data[1]["x"], json!([3]));
        assert_eq!(curves.data[1]["y"], json!([0.7]));
        assert_eq!(curves.data[2]["x"], json!([3]));
        assert_eq!(curves.layout["shapes"][0]["x0"], json!(2));
        let fusion = fusion_shares(&log());
        assert_eq!(fusion.data.len(), 5);
        assert_eq!(fusion.data[0]["x"], json!([3]));
        assert_eq!(fusion.data[3]["y"], json!([0.4]));
        assert_eq!(fusion.data[4]["y"], json!([0.25]));
    }
}
