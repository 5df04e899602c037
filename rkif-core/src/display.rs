//! Rich display of the stepwise API's values in evcxr (Rust Jupyter) notebooks.
//!
//! Every value a [`Session`] returns gets an `evcxr_display(&self)` method, which evcxr calls
//! when the value ends a cell: it prints the evcxr protocol block
//! (`EVCXR_BEGIN_CONTENT text/html` ... `EVCXR_END_CONTENT`) holding an HTML table with the
//! numbers and, where a picture helps, a plotly figure.
//!
//! Offline figures. plotly.js comes from the `plotly` crate (which ships `plotly.min.js`) and is
//! written into the notebook once, by [`load_plotly`] in its setup cell; every figure waits for
//! `window.Plotly` before drawing: nothing is fetched from a CDN. (Figures cannot load it on
//! first use: evcxr gives every cell its own copy of this crate's statics, so "first" would be
//! every cell.) Figures are `{"data": [...], "layout": {...}}` JSON as plotly.js takes
//! it, the form the viewer uses.
//!
//! Untrusted text. Task names, labels and records are data: every string is HTML-escaped, and
//! figure JSON is written into `<script>` with `<` as `\u003c`, so no string can close the
//! script element.
//!
//! Besides the displays, the module holds the few helpers the notebooks need so that they stay
//! thin: [`notebook_config`] (small budgets), [`notebook_model`] (the embedded base model, built
//! into a cache folder when the source tree has none), [`old_task_losses`] and
//! [`RoundWeights`] (what a fusion did to the weights).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Tensor};
use serde_json::{json, Value};

use crate::config::{Method, ModelSource, RunConfig};
use crate::data::Example;
use crate::eval::{AccuracyMatrix, ContinualMetrics, Metric};
use crate::report::{Event, EventLog, FusionShares};
use crate::session::{
    EvalRow, FusionReport, ImportanceView, Session, StepsReport, TaskPlan, TaskSummary,
};
use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------
// HTML and figures

/// A piece of HTML that displays itself in a notebook.
#[derive(Debug, Clone, PartialEq)]
pub struct Html(pub String);

impl Html {
    /// Print the evcxr protocol block (what evcxr calls on a cell's last value).
    pub fn evcxr_display(&self) {
        evcxr_runtime::mime_type("text/html").text(&self.0);
    }
}

impl std::fmt::Display for Html {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` with `&`, `<`, `>`, `"` and `'` as HTML entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A plotly figure: `data` (the traces) and `layout`, as plotly.js takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub data: Value,
    pub layout: Value,
}

static FIGURE_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The `<script>` element that defines `window.Plotly`, from the `plotly` crate's copy of
/// plotly.js (about 4.6 MB; MathJax, which the crate bundles after it, is left out).
pub fn plotly_script() -> String {
    let sources = plotly::Plot::offline_js_sources();
    let end = "</script>";
    match sources.find(end) {
        Some(i) => sources[..i + end.len()].to_string(),
        None => sources,
    }
}

/// Write plotly.js into the notebook: call it once, in the setup cell, before any figure.
pub fn load_plotly() -> Html {
    Html(format!(
        "{}<p data-rkif=\"plotly\">plotly.js loaded (offline, from the plotly crate).</p>",
        plotly_script()
    ))
}

/// JSON safe inside `<script>`: `<` only occurs in strings, where `\u003c` means the same.
fn script_json(value: &Value) -> String {
    value.to_string().replace('<', "\\u003c")
}

impl Figure {
    /// The figure as a `<div>` and the script that draws into it once plotly.js is there.
    /// `kind` tags the div (`data-rkif-figure`) so tests can find it.
    pub fn to_html(&self, kind: &str, height_px: u32) -> String {
        let n = FIGURE_COUNT.fetch_add(1, Ordering::SeqCst);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let id = format!("rkif-fig-{}-{stamp}-{n}", std::process::id());
        let fig = json!({ "data": self.data, "layout": self.layout });
        format!(
            "<div id=\"{id}\" data-rkif-figure=\"{kind}\" style=\"width:100%;max-width:760px;height:{height_px}px\"></div>\
             <script type=\"text/javascript\">(function(){{var fig={json};var tries=0;\
             function draw(){{var el=document.getElementById(\"{id}\");\
             if(window.Plotly&&el){{window.Plotly.newPlot(el,fig.data,fig.layout,{{responsive:true,displaylogo:false}});}}\
             else if(tries++<200){{setTimeout(draw,100);}}\
             else if(el){{el.textContent=\"plotly.js is not loaded: run display::load_plotly() first\";}}}}draw();}})();</script>",
            kind = escape(kind),
            json = script_json(&fig),
        )
    }
}

/// Percent with one decimal, or an empty string.
fn pct(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{:.1}", 100.0 * x))
}

/// Signed percentage points, or `n/a`.
fn points(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{:+.1}", 100.0 * x))
}

/// A cell background from white (0) to blue (1) for an accuracy in `[0, 1]`.
fn shade(v: Option<f64>) -> String {
    match v {
        Some(x) => {
            let t = x.clamp(0.0, 1.0);
            let r = (255.0 - 190.0 * t) as u8;
            let g = (255.0 - 120.0 * t) as u8;
            format!("background:rgb({r},{g},255)")
        }
        None => "background:#eee".into(),
    }
}

const TABLE: &str = "style=\"border-collapse:collapse;font-family:monospace;font-size:12px\"";
const CELL: &str = "border:1px solid #ccc;padding:2px 6px;text-align:right";

/// An HTML table from a header and rows of already escaped cells.
fn table(kind: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("<table data-rkif=\"{}\" {TABLE}><thead><tr>", escape(kind));
    for h in header {
        let _ = write!(s, "<th style=\"{CELL}\">{}</th>", escape(h));
    }
    s.push_str("</tr></thead><tbody>");
    for row in rows {
        s.push_str("<tr>");
        for c in row {
            let _ = write!(s, "<td style=\"{CELL}\">{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn heading(text: &str) -> String {
    format!("<h4 style=\"margin:8px 0 4px\">{}</h4>", escape(text))
}

// ---------------------------------------------------------------------------------------------
// The accuracy matrix and its metrics

/// The heatmap figure of `a[j][i]` (percent), numbers written in the cells.
pub fn accuracy_figure(matrix: &AccuracyMatrix, title: &str) -> Figure {
    let tasks: Vec<String> = matrix.tasks().iter().map(|t| escape(t)).collect();
    let after: Vec<String> = tasks.iter().map(|t| format!("after {t}")).collect();
    let z: Vec<Vec<Option<f64>>> = matrix
        .rows()
        .iter()
        .map(|r| r.iter().map(|v| v.map(|x| 100.0 * x)).collect())
        .collect();
    let text: Vec<Vec<String>> = matrix
        .rows()
        .iter()
        .map(|r| r.iter().map(|v| pct(*v)).collect())
        .collect();
    Figure {
        data: json!([{
            "type": "heatmap", "x": tasks, "y": after, "z": z, "text": text,
            "texttemplate": "%{text}", "hoverinfo": "text",
            "zmin": 0, "zmax": 100, "colorscale": "Blues", "colorbar": {"title": {"text": "%"}}
        }]),
        layout: json!({
            "title": {"text": escape(title)},
            "xaxis": {"title": {"text": "evaluated on task i"}, "side": "top"},
            "yaxis": {"title": {"text": "after training task j"}, "autorange": "reversed"},
            "margin": {"l": 140, "t": 90}
        }),
    }
}

/// The matrix as a table with shaded cells; every number cell carries `data-value` (a
/// fraction) for machine reading.
fn matrix_table(matrix: &AccuracyMatrix) -> String {
    let tasks = matrix.tasks();
    let mut s = format!("<table data-rkif=\"accuracy-table\" {TABLE}><thead><tr><th style=\"{CELL}\">a[j][i] %</th>");
    for t in tasks {
        let _ = write!(s, "<th style=\"{CELL}\">{}</th>", escape(t));
    }
    s.push_str("</tr></thead><tbody>");
    for (j, row) in matrix.rows().iter().enumerate() {
        let name = tasks.get(j).map_or("", String::as_str);
        let _ = write!(s, "<tr><th style=\"{CELL}\">after {}</th>", escape(name));
        for v in row {
            let data = v.map_or_else(String::new, |x| format!(" data-value=\"{x:.6}\""));
            let _ = write!(
                s,
                "<td style=\"{CELL};{}\"{data}>{}</td>",
                shade(*v),
                pct(*v)
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn metric_row(name: &str, m: &Metric) -> Vec<String> {
    let data = m
        .value
        .map_or_else(String::new, |v| format!(" data-value=\"{v:.6}\""));
    vec![
        escape(name),
        format!(
            "<span data-metric=\"{}\"{data}>{}</span>",
            escape(name),
            points(m.value).trim_start_matches('+')
        ),
        format!("{}/{}", m.terms_used, m.terms_total),
        format!("<code>{}</code>", escape(&m.formula)),
    ]
}

/// OP, BWT, FWT and mean forgetting with their formulas.
fn metrics_table(m: &ContinualMetrics) -> String {
    let rows = vec![
        metric_row("OP", &m.op),
        metric_row("BWT", &m.bwt),
        metric_row("FWT", &m.fwt),
        metric_row("F", &m.forgetting.mean),
    ];
    format!(
        "{}<p style=\"font-size:11px;color:#555\">{} f_i = <code>{}</code>. {}</p>",
        table(
            "metrics",
            &["metric", "value (%)", "terms", "formula"],
            &rows
        ),
        escape(&m.notation),
        escape(&m.forgetting.formula),
        escape(&m.missing_cells),
    )
}

/// The matrix (table and heatmap) and its metrics.
pub fn accuracy_matrix(matrix: &AccuracyMatrix, title: &str) -> Html {
    let metrics = matrix.metrics();
    Html(format!(
        "<div data-rkif=\"accuracy-matrix\">{}{}{}{}</div>",
        heading(title),
        matrix_table(matrix),
        accuracy_figure(matrix, title).to_html("accuracy-heatmap", 320),
        metrics_table(&metrics),
    ))
}

impl AccuracyMatrix {
    /// The matrix as a heatmap with its numbers, and OP / BWT / FWT / F with their formulas.
    pub fn evcxr_display(&self) {
        accuracy_matrix(self, "Accuracy matrix").evcxr_display();
    }
}

/// Several runs side by side: one heatmap per run, a metrics table (OP, BWT, FWT, F, one row
/// per run) and the forgetting of each task per run as grouped bars.
pub fn compare_runs(runs: &[(&str, &AccuracyMatrix)]) -> Html {
    let mut s = String::from("<div data-rkif=\"comparison\">");
    s.push_str(&heading("Methods on the same task sequence"));
    let mut rows = Vec::new();
    let mut bars = Vec::new();
    for (name, matrix) in runs {
        let m = matrix.metrics();
        let cell = |metric: &Metric, key: &str| {
            let data = metric
                .value
                .map_or_else(String::new, |v| format!(" data-value=\"{v:.6}\""));
            format!(
                "<span data-metric=\"{key}\"{data}>{}</span>",
                points(metric.value).trim_start_matches('+')
            )
        };
        rows.push(vec![
            escape(name),
            cell(&m.op, "OP"),
            cell(&m.bwt, "BWT"),
            cell(&m.fwt, "FWT"),
            cell(&m.forgetting.mean, "F"),
        ]);
        let tasks: Vec<String> = m
            .forgetting
            .per_task
            .iter()
            .map(|t| escape(&t.task))
            .collect();
        let values: Vec<Option<f64>> = m
            .forgetting
            .per_task
            .iter()
            .map(|t| t.value.map(|v| 100.0 * v))
            .collect();
        bars.push(json!({"type": "bar", "name": escape(name), "x": tasks, "y": values}));
    }
    s.push_str(&table(
        "comparison-metrics",
        &["method", "OP %", "BWT", "FWT", "F"],
        &rows,
    ));
    let forgetting = Figure {
        data: Value::Array(bars),
        layout: json!({
            "title": {"text": "Forgetting per task (f_i, points; higher is worse)"},
            "barmode": "group", "yaxis": {"title": {"text": "points"}}
        }),
    };
    s.push_str(&forgetting.to_html("forgetting-bars", 320));
    for (name, matrix) in runs {
        s.push_str(&heading(name));
        s.push_str(&matrix_table(matrix));
        s.push_str(&accuracy_figure(matrix, name).to_html("accuracy-heatmap", 300));
    }
    s.push_str("</div>");
    Html(s)
}

impl EvalRow {
    /// One row of the accuracy matrix with a few answers per task.
    pub fn evcxr_display(&self) {
        let mut rows = Vec::new();
        for (i, task) in self.tasks.iter().enumerate() {
            let acc = self.accuracy.get(i).copied().flatten();
            let Some(acc) = acc else { continue };
            let samples = self
                .samples
                .iter()
                .find(|(t, _)| *t == i)
                .map(|(_, pairs)| {
                    pairs
                        .iter()
                        .map(|(label, pred)| {
                            let mark = if label.trim().eq_ignore_ascii_case(pred.trim()) {
                                "✓"
                            } else {
                                "✗"
                            };
                            format!("{mark} {} → {}", escape(label), escape(pred))
                        })
                        .collect::<Vec<_>>()
                        .join("<br>")
                })
                .unwrap_or_default();
            rows.push(vec![
                escape(task),
                format!("<span data-value=\"{acc:.6}\">{}</span>", pct(Some(acc))),
                format!("<div style=\"text-align:left\">{samples}</div>"),
            ]);
        }
        let html = format!(
            "<div data-rkif=\"eval-row\">{}{}<p>{:.1} s</p></div>",
            heading(&format!("Accuracy after task {}", self.after_task)),
            table(
                "eval-row",
                &["task", "accuracy %", "label → prediction"],
                &rows
            ),
            self.seconds
        );
        Html(html).evcxr_display();
    }
}

// ---------------------------------------------------------------------------------------------
// Importance

/// Row labels (module kinds) and column labels (layers) of an importance grid.
fn grid_axes(views: &[&ImportanceView]) -> (Vec<String>, Vec<Option<usize>>) {
    let kinds: BTreeSet<String> = views
        .iter()
        .flat_map(|v| v.modules.iter().map(|m| m.kind.clone()))
        .collect();
    let layers: BTreeSet<Option<usize>> = views
        .iter()
        .flat_map(|v| v.modules.iter().map(|m| m.layer))
        .collect();
    (kinds.into_iter().collect(), layers.into_iter().collect())
}

/// `z[kind][layer]` of `value` over the view's modules (None where no module).
fn grid(
    view: &ImportanceView,
    kinds: &[String],
    layers: &[Option<usize>],
    value: impl Fn(&crate::session::ModuleScore) -> f64,
) -> Vec<Vec<Option<f64>>> {
    kinds
        .iter()
        .map(|k| {
            layers
                .iter()
                .map(|l| {
                    view.modules
                        .iter()
                        .find(|m| &m.kind == k && m.layer == *l)
                        .map(&value)
                })
                .collect()
        })
        .collect()
}

fn layer_label(l: &Option<usize>) -> String {
    l.map_or_else(|| "-".into(), |n| format!("layer {n}"))
}

/// Heatmaps of the share of important elements (above the global threshold) per LoRA matrix
/// kind x layer, one panel per named view (e.g. inner and outer of one round).
pub fn importance_figure(views: &[(&str, &ImportanceView)]) -> Figure {
    let only: Vec<&ImportanceView> = views.iter().map(|(_, v)| *v).collect();
    let (kinds, layers) = grid_axes(&only);
    let x: Vec<String> = layers.iter().map(layer_label).collect();
    let y: Vec<String> = kinds.iter().map(|k| escape(k)).collect();
    let n = views.len().max(1) as f64;
    let mut data = Vec::new();
    let mut layout = json!({
        "title": {"text": "Share of elements above the global threshold tau (%)"},
        "margin": {"l": 90, "t": 70}
    });
    for (i, (name, view)) in views.iter().enumerate() {
        let z = grid(view, &kinds, &layers, |m| 100.0 * m.important_share);
        let text: Vec<Vec<String>> = z
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| v.map_or_else(String::new, |x| format!("{x:.0}")))
                    .collect()
            })
            .collect();
        let axis = if i == 0 {
            String::new()
        } else {
            (i + 1).to_string()
        };
        data.push(json!({
            "type": "heatmap", "name": escape(name), "x": x, "y": y, "z": z, "text": text,
            "texttemplate": "%{text}", "hoverinfo": "text", "zmin": 0, "zmax": 100,
            "colorscale": "YlOrRd", "showscale": i + 1 == views.len(),
            "xaxis": format!("x{axis}"), "yaxis": format!("y{axis}")
        }));
        let lo = i as f64 / n + 0.02;
        let hi = (i + 1) as f64 / n - 0.02;
        if let Value::Object(map) = &mut layout {
            map.insert(
                format!("xaxis{axis}"),
                json!({"domain": [lo, hi], "title": {"text": escape(name)}, "anchor": format!("y{axis}")}),
            );
            map.insert(
                format!("yaxis{axis}"),
                json!({"anchor": format!("x{axis}"), "showticklabels": i == 0}),
            );
        }
    }
    Figure {
        data: Value::Array(data),
        layout,
    }
}

fn importance_table(view: &ImportanceView) -> String {
    let rows: Vec<Vec<String>> = view
        .modules
        .iter()
        .map(|m| {
            vec![
                escape(&m.kind),
                layer_label(&m.layer),
                format!("{:.3e}", m.mean),
                format!("{:.3e}", m.max),
                format!(
                    "<span data-value=\"{:.6}\">{:.1}</span>",
                    m.important_share,
                    100.0 * m.important_share
                ),
            ]
        })
        .collect();
    table(
        "importance",
        &["matrix", "layer", "mean S", "max S", "important %"],
        &rows,
    )
}

fn threshold_line(view: &ImportanceView) -> String {
    format!(
        "<p data-rkif=\"threshold\">{} updates; global threshold tau = {}</p>",
        view.updates,
        view.threshold
            .map_or_else(|| "none yet".into(), |t| format!("{t:.3e}"))
    )
}

/// One tracker's scores: threshold, per-matrix table and the kind x layer heatmap.
pub fn importance(view: &ImportanceView, name: &str) -> Html {
    if view.modules.is_empty() {
        return Html(format!(
            "<div data-rkif=\"importance\">{}<p>No update yet: no scores.</p></div>",
            heading(name)
        ));
    }
    Html(format!(
        "<div data-rkif=\"importance\">{}{}{}<details><summary>per LoRA matrix</summary>{}</details></div>",
        heading(name),
        threshold_line(view),
        importance_figure(&[(name, view)]).to_html("importance-heatmap", 300),
        importance_table(view),
    ))
}

/// Inner and outer importance of one round side by side.
pub fn compare_importance(inner: &ImportanceView, outer: &ImportanceView) -> Html {
    Html(format!(
        "<div data-rkif=\"importance\">{}<p>inner: {} ; outer: {}</p>{}</div>",
        heading("Inner (new task) vs outer (memory) importance"),
        threshold_line(inner),
        threshold_line(outer),
        importance_figure(&[("inner", inner), ("outer", outer)]).to_html("importance-heatmap", 320),
    ))
}

impl ImportanceView {
    /// The tracker's threshold and the important share per matrix kind x layer.
    pub fn evcxr_display(&self) {
        importance(self, "Importance").evcxr_display();
    }
}

// ---------------------------------------------------------------------------------------------
// Steps and loss curves

/// A line per named series of `(step, loss)` points.
pub fn loss_figure(series: &[(String, Vec<(f64, f64)>)], title: &str) -> Figure {
    let data: Vec<Value> = series
        .iter()
        .map(|(name, pts)| {
            let x: Vec<f64> = pts.iter().map(|p| p.0).collect();
            let y: Vec<f64> = pts.iter().map(|p| p.1).collect();
            json!({"type": "scatter", "mode": "lines+markers", "name": escape(name), "x": x, "y": y})
        })
        .collect();
    Figure {
        data: Value::Array(data),
        layout: json!({
            "title": {"text": escape(title)},
            "xaxis": {"title": {"text": "step"}},
            "yaxis": {"title": {"text": "loss"}}
        }),
    }
}

impl StepsReport {
    /// The steps' losses (table and curve) and the phase's importance after them.
    pub fn evcxr_display(&self) {
        let rows: Vec<Vec<String>> = self
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                vec![
                    (i + 1).to_string(),
                    format!("<span data-value=\"{:.6}\">{:.4}</span>", r.loss, r.loss),
                    format!("{:.2e}", r.lr),
                    format!("{:.3}", r.grad_norm),
                ]
            })
            .collect();
        let pts: Vec<(f64, f64)> = self
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| ((i + 1) as f64, r.loss))
            .collect();
        let title = format!("{} steps on task {}", self.phase, self.task);
        let html = format!(
            "<div data-rkif=\"steps\">{}{}{}{}</div>",
            heading(&title),
            table("steps", &["#", "loss", "lr", "grad norm"], &rows),
            loss_figure(&[(self.phase.clone(), pts)], &title).to_html("loss-curve", 260),
            importance(&self.importance, &format!("{} importance", self.phase)).0,
        );
        Html(html).evcxr_display();
    }
}

// ---------------------------------------------------------------------------------------------
// Fusion

const CASES: [(&str, &str); 4] = [
    (
        "inner only",
        "c_in=1, c_out=0: keep the new-task update, prune the replay update",
    ),
    (
        "outer only",
        "c_in=0, c_out=1: keep the replay update, prune the new-task update",
    ),
    (
        "both",
        "c_in=0.4, c_out=0.6: merge, old tasks weighted higher",
    ),
    ("neither", "c_in=0.5, c_out=0.5: plain average"),
];

fn share_values(s: &FusionShares) -> [f64; 4] {
    [s.inner_only, s.outer_only, s.both, s.neither]
}

/// Stacked bars of the four case shares, one bar per named entry (rounds or matrices).
pub fn fusion_figure(entries: &[(String, FusionShares)], title: &str, x_title: &str) -> Figure {
    let x: Vec<String> = entries.iter().map(|(n, _)| escape(n)).collect();
    let data: Vec<Value> = CASES
        .iter()
        .enumerate()
        .map(|(c, (case, _))| {
            let y: Vec<f64> = entries
                .iter()
                .map(|(_, s)| 100.0 * share_values(s)[c])
                .collect();
            json!({"type": "bar", "name": case, "x": x, "y": y})
        })
        .collect();
    Figure {
        data: Value::Array(data),
        layout: json!({
            "title": {"text": escape(title)}, "barmode": "stack",
            "xaxis": {"title": {"text": escape(x_title)}},
            "yaxis": {"title": {"text": "% of elements"}, "range": [0, 100]}
        }),
    }
}

fn shares_table(shares: &FusionShares, counts: Option<[u64; 4]>) -> String {
    let values = share_values(shares);
    let rows: Vec<Vec<String>> = CASES
        .iter()
        .enumerate()
        .map(|(i, (case, rule))| {
            let v = values.get(i).copied().unwrap_or(0.0);
            let count = counts
                .and_then(|c| c.get(i).copied())
                .map_or_else(String::new, |c| c.to_string());
            vec![
                escape(case),
                count,
                format!(
                    "<span data-case=\"{}\" data-value=\"{v:.6}\">{:.1}</span>",
                    escape(case),
                    100.0 * v
                ),
                format!("<div style=\"text-align:left\">{}</div>", escape(rule)),
            ]
        })
        .collect();
    table("fusion-shares", &["case", "elements", "%", "rule"], &rows)
}

impl FusionReport {
    /// The four cases' shares (whole adapter and per matrix), thresholds and overlap.
    pub fn evcxr_display(&self) {
        let per_module: Vec<(String, FusionShares)> = self
            .modules
            .iter()
            .map(|m| {
                let name = match m.layer {
                    Some(l) => format!("{} L{l}", m.kind),
                    None => m.kind.clone(),
                };
                (name, m.shares)
            })
            .collect();
        let html = format!(
            "<div data-rkif=\"fusion\">{}<p>{} elements; inner mask {} (tau {}), outer mask {} (tau {}); overlap |I∩O|/|I∪O| = {}</p>{}{}</div>",
            heading("Fusion of the round"),
            self.elements,
            self.inner_selected,
            self.inner_threshold.map_or_else(|| "-".into(), |t| format!("{t:.3e}")),
            self.outer_selected,
            self.outer_threshold.map_or_else(|| "-".into(), |t| format!("{t:.3e}")),
            self.overlap.map_or_else(|| "n/a".into(), |o| format!("{o:.3}")),
            shares_table(
                &self.shares(),
                Some([self.inner_only, self.outer_only, self.both, self.neither])
            ),
            fusion_figure(&per_module, "Fusion cases per LoRA matrix", "matrix")
                .to_html("fusion-modules", 320),
        );
        Html(html).evcxr_display();
    }
}

/// The case shares of every fusion so far, one bar per round (e.g. the current task's
/// `TaskState::fusions`).
pub fn fusion_rounds(shares: &[FusionShares]) -> Html {
    let entries: Vec<(String, FusionShares)> = shares
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("{}", i + 1), *s))
        .collect();
    Html(format!(
        "<div data-rkif=\"fusion-rounds\">{}</div>",
        fusion_figure(&entries, "Fusion cases per round", "round").to_html("fusion-rounds", 300)
    ))
}

/// [`fusion_rounds`] of the task being trained (empty when none is).
pub fn current_fusion_rounds(s: &Session) -> Html {
    fusion_rounds(s.current().map_or(&[], |t| t.fusions.as_slice()))
}

// ---------------------------------------------------------------------------------------------
// Tasks, summaries and runs

fn records_table(examples: &[Example]) -> String {
    let rows: Vec<Vec<String>> = examples
        .iter()
        .map(|e| {
            let left = |s: &str| {
                format!(
                    "<div style=\"text-align:left;white-space:pre-wrap\">{}</div>",
                    escape(s)
                )
            };
            vec![
                escape(&e.id),
                left(&e.instruction),
                left(&e.input),
                escape(&e.output),
            ]
        })
        .collect();
    table("records", &["id", "instruction", "input", "output"], &rows)
}

/// A few records of a task as a table.
pub fn records(examples: &[Example], n: usize) -> Html {
    let take = examples.len().min(n);
    Html(records_table(examples.get(..take).unwrap_or(&[])))
}

impl TaskPlan {
    /// What the task will train on, with sample records.
    pub fn evcxr_display(&self) {
        let rows = vec![
            vec![
                "task".into(),
                format!("{} ({})", escape(&self.name), self.task),
            ],
            vec!["method".into(), escape(&self.method)],
            vec!["training pool".into(), self.pool.to_string()],
            vec!["replay memory".into(), self.memory.to_string()],
            vec!["validation".into(), self.validation.to_string()],
            vec!["planned steps".into(), self.planned_steps.to_string()],
        ];
        let html = format!(
            "<div data-rkif=\"task-plan\">{}{}{}</div>",
            heading(&format!("Task {}: {}", self.task, self.name)),
            table("task-plan", &["", ""], &rows),
            records_table(&self.sample),
        );
        Html(html).evcxr_display();
    }
}

impl TaskSummary {
    /// Steps, rounds, last loss and the selected checkpoint of a trained task.
    pub fn evcxr_display(&self) {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
        let rows = vec![vec![
            escape(&self.name),
            self.steps.to_string(),
            self.outer_steps.to_string(),
            self.rounds.to_string(),
            opt(self.mean_loss_last),
            self.selected_step
                .map_or_else(|| "last".into(), |s| s.to_string()),
            opt(self.selected_val_loss),
            format!("{:.1}", self.seconds),
        ]];
        Html(table(
            "task-summary",
            &[
                "task",
                "steps",
                "outer steps",
                "rounds",
                "last loss",
                "kept step",
                "val loss",
                "s",
            ],
            &rows,
        ))
        .evcxr_display();
    }
}

/// The run so far: method, model, task order, progress and the matrix.
pub fn session_summary(s: &Session) -> Html {
    let c = s.config();
    let rows = vec![
        vec!["method".into(), escape(c.method.name())],
        vec!["model".into(), escape(s.model().origin())],
        vec![
            "LoRA".into(),
            format!(
                "rank {}, alpha {}, targets {}",
                c.model.lora.rank,
                c.model.lora.alpha,
                escape(&c.model.lora.targets.join(", "))
            ),
        ],
        vec![
            "LoRA elements".into(),
            s.learner()
                .params()
                .iter()
                .map(|p| p.var.as_tensor().elem_count())
                .sum::<usize>()
                .to_string(),
        ],
        vec!["order".into(), escape(s.order_name())],
        vec!["tasks".into(), escape(&s.task_names().join(" → "))],
        vec![
            "progress".into(),
            format!("{} of {} tasks done", s.next_task(), s.task_names().len()),
        ],
        vec![
            "round".into(),
            format!(
                "Q = {} inner steps, M = {} outer steps, memory batch {}, quantile {}",
                c.kif.inner_steps, c.kif.outer_steps, c.kif.memory_batch, c.kif.quantile
            ),
        ],
    ];
    let mut html = format!(
        "<div data-rkif=\"session\">{}{}",
        heading("Session"),
        table("session", &["", ""], &rows)
    );
    if s.matrix().trained_tasks() > 0 {
        html.push_str(&accuracy_matrix(s.matrix(), "Accuracy matrix so far").0);
    }
    html.push_str("</div>");
    Html(html)
}

impl Session {
    /// A run summary and the accuracy matrix so far.
    pub fn evcxr_display(&self) {
        session_summary(self).evcxr_display();
    }
}

/// Loss curves (one per task) and fusion shares per round from a run's event log.
pub fn run_charts(log: &EventLog, names: &[String]) -> Html {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut rounds: Vec<(String, FusionShares)> = Vec::new();
    for event in &log.events {
        match event {
            Event::Step(e) => {
                let name = names
                    .get(e.task)
                    .cloned()
                    .unwrap_or_else(|| format!("task {}", e.task));
                match series.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, pts)) => pts.push((e.step as f64, e.loss)),
                    None => series.push((name, vec![(e.step as f64, e.loss)])),
                }
            }
            Event::Round(e) => rounds.push((format!("t{} r{}", e.task, e.round), e.shares)),
            _ => {}
        }
    }
    let mut html = String::from("<div data-rkif=\"run-charts\">");
    html.push_str(&loss_figure(&series, "Training loss per task").to_html("loss-curve", 300));
    if !rounds.is_empty() {
        html.push_str(
            &fusion_figure(&rounds, "Fusion cases per round", "task, round")
                .to_html("fusion-rounds", 300),
        );
    }
    html.push_str("</div>");
    Html(html)
}

/// [`run_charts`] of the run folder `dir` (its `events.jsonl`).
pub fn run_folder_charts(dir: &Path, names: &[String]) -> Result<Html> {
    let log = crate::report::read_events(&dir.join("events.jsonl"))?;
    Ok(run_charts(&log, names))
}

// ---------------------------------------------------------------------------------------------
// Helpers the notebooks call

/// The quick preset with notebook budgets: `method` on `model`, `train` examples per task,
/// `epochs`, `eval` test examples per task, answers of at most 4 tokens.
pub fn notebook_config(
    method: Method,
    model: &ModelSource,
    train: usize,
    epochs: usize,
    eval: usize,
) -> RunConfig {
    let mut c = RunConfig::preset("quick").unwrap_or_default();
    c.method = method;
    c.model.source = model.clone();
    c.data.max_train_per_task = Some(train);
    c.optim.epochs = epochs;
    c.eval.max_examples_per_task = Some(eval);
    c.eval.max_new_tokens = 4;
    c
}

/// The base model the notebooks use: the embedded one when the source tree has it
/// (`data/base-model/` or `RKIF_BASE_MODEL`), else a model built by the embedded recipe into
/// `cache` (once; later calls reuse it). The build takes a few minutes.
pub fn notebook_model(cache: &Path) -> Result<ModelSource> {
    let embedded = crate::model::backbone::embedded_model_dir();
    if embedded.join("config.json").is_file() {
        return Ok(ModelSource::Embedded);
    }
    let dir: PathBuf = cache.join("base-model");
    if !dir.join("model.safetensors").is_file() {
        std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
        crate::model::embedded::build(&crate::model::embedded::Recipe::default(), &dir, |_, _| {})?;
    }
    Ok(ModelSource::Local { path: dir })
}

/// Mean loss of the current adapter on each task before `upto` (the old tasks), over the first
/// `per_task` dev examples of each.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskLosses {
    pub label: String,
    /// `(task, loss)` per old task.
    pub losses: Vec<(String, f64)>,
}

/// [`TaskLosses`] of the session's current adapter on the tasks before the current one.
pub fn old_task_losses(s: &Session, per_task: usize, label: &str) -> Result<TaskLosses> {
    let upto = s.current().map_or(s.next_task(), |t| t.index);
    let batch = s.config().eval.batch_size;
    let mut losses = Vec::new();
    for task in s.tasks().iter().take(upto) {
        let take = task.dev.len().min(per_task);
        let refs: Vec<&Example> = task.dev.iter().take(take).collect();
        if refs.is_empty() {
            continue;
        }
        let loss = s.learner().eval_loss(&refs, batch)?;
        losses.push((task.name().to_string(), loss));
    }
    Ok(TaskLosses {
        label: label.to_string(),
        losses,
    })
}

impl TaskLosses {
    /// The mean over the old tasks (None when there is none).
    pub fn mean(&self) -> Option<f64> {
        (!self.losses.is_empty())
            .then(|| self.losses.iter().map(|(_, l)| l).sum::<f64>() / self.losses.len() as f64)
    }

    pub fn evcxr_display(&self) {
        compare_losses(&[self]).evcxr_display();
    }
}

/// Old-task losses at several moments (e.g. before the round, before fusion, after fusion).
pub fn compare_losses(moments: &[&TaskLosses]) -> Html {
    let tasks: Vec<String> = moments
        .first()
        .map(|m| m.losses.iter().map(|(t, _)| t.clone()).collect())
        .unwrap_or_default();
    let mut header: Vec<&str> = vec!["old task"];
    header.extend(moments.iter().map(|m| m.label.as_str()));
    let mut rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let mut row = vec![escape(t)];
            for m in moments {
                let v = m.losses.iter().find(|(n, _)| n == t).map(|(_, l)| *l);
                row.push(v.map_or_else(String::new, |l| {
                    format!("<span data-value=\"{l:.6}\">{l:.4}</span>")
                }));
            }
            row
        })
        .collect();
    let mut mean_row = vec!["<b>mean</b>".to_string()];
    for m in moments {
        mean_row.push(m.mean().map_or_else(String::new, |l| {
            format!("<b data-value=\"{l:.6}\">{l:.4}</b>")
        }));
    }
    rows.push(mean_row);
    Html(format!(
        "<div data-rkif=\"old-task-loss\">{}{}</div>",
        heading("Loss on the old tasks (dev examples)"),
        table("old-task-loss", &header, &rows)
    ))
}

/// What one round did to the weights, per LoRA matrix: the norms of the new-task update
/// `delta_in = theta_k - anchor`, of the replay update `delta_out = theta - theta_k`, of
/// their plain sum (what the weights would be without fusion) and of the fused update.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoundWeights {
    /// Per LoRA matrix, in adapter order.
    before: Vec<MatrixUpdate>,
    /// Per matrix `|fused - anchor|`, after [`RoundWeights::after_fusion`].
    fused: Vec<f64>,
    #[serde(skip)]
    anchor: Vec<Tensor>,
}

/// L2 norms of one LoRA matrix's round updates.
#[derive(Debug, Clone, serde::Serialize)]
struct MatrixUpdate {
    name: String,
    delta_in: f64,
    delta_out: f64,
    /// `|delta_in + delta_out|`: the update without fusion.
    sum: f64,
}

fn l2(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?
        .sqrt())
}

impl RoundWeights {
    /// Capture the round before [`Session::fuse`]: the anchor, `theta_k` and the current adapter.
    pub fn before_fusion(s: &Session) -> Result<Self> {
        let st = s
            .current()
            .ok_or_else(|| Error::Data("no task is being trained: start a round first".into()))?;
        let now = s.learner().snapshot()?;
        let theta_k = st.theta_k.clone().unwrap_or_else(|| now.clone());
        let mut before = Vec::with_capacity(now.len());
        for (((p, a), tk), cur) in s
            .learner()
            .params()
            .iter()
            .zip(&st.anchor)
            .zip(&theta_k)
            .zip(&now)
        {
            let d_in = (tk - a)?;
            let d_out = (cur - tk)?;
            let sum = (&d_in + &d_out)?;
            before.push(MatrixUpdate {
                name: p.name.clone(),
                delta_in: l2(&d_in)?,
                delta_out: l2(&d_out)?,
                sum: l2(&sum)?,
            });
        }
        Ok(Self {
            before,
            fused: Vec::new(),
            anchor: st.anchor.clone(),
        })
    }

    /// Measure the fused update after [`Session::fuse`].
    pub fn after_fusion(mut self, s: &Session) -> Result<Self> {
        let now = s.learner().snapshot()?;
        self.fused = now
            .iter()
            .zip(&self.anchor)
            .map(|(n, a)| l2(&(n - a)?))
            .collect::<Result<Vec<f64>>>()?;
        Ok(self)
    }

    /// Whole-adapter norms `(|delta_in|, |delta_out|, |sum|, |fused|)` (fused is None before
    /// [`RoundWeights::after_fusion`]).
    pub fn totals(&self) -> (f64, f64, f64, Option<f64>) {
        let sq = |f: fn(&MatrixUpdate) -> f64| {
            self.before.iter().map(|r| f(r).powi(2)).sum::<f64>().sqrt()
        };
        let fused =
            (!self.fused.is_empty()).then(|| self.fused.iter().map(|v| v * v).sum::<f64>().sqrt());
        (
            sq(|r| r.delta_in),
            sq(|r| r.delta_out),
            sq(|r| r.sum),
            fused,
        )
    }

    pub fn evcxr_display(&self) {
        let mut rows: Vec<Vec<String>> = self
            .before
            .iter()
            .enumerate()
            .map(|(i, r)| {
                vec![
                    escape(&r.name),
                    format!("{:.3e}", r.delta_in),
                    format!("{:.3e}", r.delta_out),
                    format!("{:.3e}", r.sum),
                    self.fused
                        .get(i)
                        .map_or_else(String::new, |f| format!("{f:.3e}")),
                ]
            })
            .collect();
        let (di, dout, sum, fused) = self.totals();
        rows.push(vec![
            "<b>whole adapter</b>".into(),
            format!("<b data-value=\"{di:.6e}\">{di:.3e}</b>"),
            format!("<b data-value=\"{dout:.6e}\">{dout:.3e}</b>"),
            format!("<b data-value=\"{sum:.6e}\">{sum:.3e}</b>"),
            fused.map_or_else(String::new, |f| {
                format!("<b data-value=\"{f:.6e}\">{f:.3e}</b>")
            }),
        ]);
        Html(format!(
            "<div data-rkif=\"round-weights\">{}{}</div>",
            heading("What the round did to the weights (L2 norms)"),
            table(
                "round-weights",
                &[
                    "matrix",
                    "|delta_in|",
                    "|delta_out|",
                    "|in + out| (no fusion)",
                    "|fused|"
                ],
                &rows
            )
        ))
        .evcxr_display();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_turns_markup_into_text() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn figure_json_cannot_close_its_script() {
        let fig = Figure {
            data: json!([{"name": "</script><script>alert(1)</script>"}]),
            layout: json!({}),
        };
        let html = fig.to_html("t", 100);
        // The only closing tags are the figure's own (and plotly's, when written first).
        let own = html.rsplit("<div").next().unwrap_or("");
        assert_eq!(own.matches("</script>").count(), 1, "{own}");
        assert!(own.contains("\\u003c/script>"));
    }

    #[test]
    fn plotly_comes_from_load_plotly_only() {
        let first = plotly_script();
        assert!(first.starts_with("<script") && first.ends_with("</script>"));
        assert!(
            first.contains("window.Plotly"),
            "plotly.js defines window.Plotly"
        );
        assert!(
            !first.contains("<script src"),
            "inline, not loaded from a URL"
        );
        assert!(load_plotly().0.contains("window.Plotly = Plotly"));
        let fig = Figure {
            data: json!([]),
            layout: json!({}),
        };
        assert!(!fig.to_html("t", 100).contains("window.Plotly = Plotly"));
    }

    #[test]
    fn matrix_display_shows_cells_metrics_and_escaped_names() -> Result<()> {
        let mut m = AccuracyMatrix::new(vec!["a<b>".into(), "c".into()])?;
        m.set(0, 0, 0.9)?;
        m.mark_trained(1)?;
        m.set(1, 0, 0.6)?;
        m.set(1, 1, 0.8)?;
        m.mark_trained(2)?;
        let html = accuracy_matrix(&m, "t").0;
        assert!(html.contains("a&lt;b&gt;") && !html.contains("a<b>"));
        assert!(html.contains("data-value=\"0.600000\">60.0<"));
        assert!(html.contains("\"type\":\"heatmap\""));
        // OP = (0.6 + 0.8) / 2, BWT = 0.6 - 0.9.
        assert!(
            html.contains("data-metric=\"OP\" data-value=\"0.700000\""),
            "{html}"
        );
        assert!(html.contains("data-metric=\"BWT\" data-value=\"-0.300000\""));
        assert!(html.contains(
            crate::eval::metrics::OP_FORMULA
                .split('=')
                .next()
                .unwrap_or("OP")
        ));
        Ok(())
    }

    #[test]
    fn fusion_shares_table_lists_the_four_cases() {
        let s = FusionShares {
            inner_only: 0.1,
            outer_only: 0.2,
            both: 0.05,
            neither: 0.65,
        };
        let html = shares_table(&s, Some([10, 20, 5, 65]));
        for (case, v) in [("inner only", "0.100000"), ("neither", "0.650000")] {
            assert!(html.contains(&format!("data-case=\"{case}\" data-value=\"{v}\"")));
        }
        let fig = fusion_figure(&[("1".into(), s)], "t", "round");
        assert_eq!(fig.data.as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn compare_losses_reports_means() {
        let a = TaskLosses {
            label: "before".into(),
            losses: vec![("x".into(), 1.0), ("y".into(), 3.0)],
        };
        assert_eq!(a.mean(), Some(2.0));
        let html = compare_losses(&[&a]).0;
        assert!(html.contains("data-value=\"2.000000\""));
    }

    /// A two-task session on a tiny model built by the embedded recipe.
    fn tiny_session(dir: &Path) -> Result<Session> {
        let recipe = crate::model::embedded::Recipe {
            hidden_size: 32,
            intermediate_size: 64,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            steps: 10,
            batch: 8,
            documents: 100,
            warmup: 2,
            ..Default::default()
        };
        let model_dir = dir.join("model");
        crate::model::embedded::build(&recipe, &model_dir, |_, _| {})?;
        let source = ModelSource::Local { path: model_dir };
        let mut c = notebook_config(Method::Rkif, &source, 16, 1, 4);
        c.data.tasks = Some(vec!["topic".into(), "sentiment".into()]);
        c.model.lora.rank = 2;
        c.optim.micro_batch = 4;
        c.kif.memory_fraction = 0.25;
        c.kif.memory_batch = 4;
        c.eval.max_new_tokens = 2;
        Session::new(c)
    }

    #[test]
    fn a_round_by_hand_displays_and_measures() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut s = tiny_session(tmp.path())?;
        assert!(session_summary(&s).0.contains("data-rkif=\"session\""));
        s.train_task()?;
        s.evaluate()?;
        s.start_task()?;
        let start = old_task_losses(&s, 8, "start")?;
        assert_eq!(start.losses.len(), 1, "one old task");
        assert!(start.mean().is_some_and(f64::is_finite));
        let inner = s.inner_steps(2)?;
        let outer = s.outer_steps(1)?;
        let both = compare_importance(&inner.importance, &outer.importance).0;
        assert_eq!(both.matches("\"type\":\"heatmap\"").count(), 2);
        let weights = RoundWeights::before_fusion(&s)?;
        let fused = s.fuse()?;
        let shares = fused.shares();
        let total = shares.inner_only + shares.outer_only + shares.both + shares.neither;
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let weights = weights.after_fusion(&s)?;
        let (d_in, d_out, _, applied) = weights.totals();
        let applied = applied.ok_or_else(|| Error::Data("no fused norm".into()))?;
        // Coefficients lie in [0, 1], so the fused update is bounded by the two updates.
        assert!(
            applied <= d_in + d_out + 1e-9,
            "{applied} > {d_in} + {d_out}"
        );
        assert!(d_in > 0.0 && applied > 0.0);
        assert!(current_fusion_rounds(&s).0.contains("fusion-rounds"));
        Ok(())
    }
}
