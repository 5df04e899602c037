//! Rich display of the stepwise API's values in evcxr (Rust Jupyter) notebooks.
//!
//! Every value a [`Session`](crate::session::Session) returns gets an `evcxr_display(&self)`
//! method, which evcxr calls when the value ends a cell: it prints the evcxr protocol block
//! (`EVCXR_BEGIN_CONTENT text/html` ... `EVCXR_END_CONTENT`) holding an HTML table with the
//! numbers and, where a picture helps, a plotly figure.
//!
//! One set of figures. Every figure is built by [`crate::report::figures`], the code the viewer
//! draws with; this module only converts the session's values into the report's types
//! ([`MetricsFile`](crate::report::MetricsFile), [`EventLog`](crate::report::EventLog),
//! [`ImportanceSnapshot`](crate::report::ImportanceSnapshot)) and writes each figure as a
//! `<div>` plus a `Plotly.newPlot` script ([`figure_html`]).
//!
//! Offline figures. plotly.js comes from the `plotly` crate (which bundles `plotly.min.js`) and
//! is written into the notebook once, by [`load_plotly`] in its setup cell; every figure waits
//! for `window.Plotly` before drawing: nothing is fetched from a CDN. (Figures cannot load it
//! on first use: evcxr gives every cell its own copy of this crate's statics, so "first" would
//! be every cell.)
//!
//! Untrusted text. Task names, labels and records are data: every string is HTML-escaped, and
//! figure JSON is written into `<script>` with `<` as `\u003c`, so no string can close the
//! script element.
//!
//! Besides the displays, the module holds the few helpers the notebooks need so that they
//! stay thin: [`notebook_config`] (small budgets), [`notebook_model`] (the embedded base model,
//! built into a cache folder when the source tree has none), [`old_task_losses`] and
//! [`RoundWeights`] (what a fusion did to the weights).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::report::figures::Figure;

mod fusion;
mod importance;
mod matrix;
mod notebook;
mod session;

pub use fusion::{run_charts, run_folder_charts, session_charts};
pub use importance::{element_maps, importance, importance_snapshot};
pub use matrix::{accuracy_matrix, compare_runs};
pub use notebook::{
    compare_losses, notebook_config, notebook_model, old_task_losses, RoundWeights, TaskLosses,
};
pub use session::{records, session_summary, tasks};

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

// ---------------------------------------------------------------------------------------------
// plotly.js and figures

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

/// Numbers the figures of one cell (evcxr resets it per cell; the id adds time and process).
static FIGURE_COUNT: AtomicUsize = AtomicUsize::new(0);

/// A report figure as a `<div>` and the script that draws it with `Plotly.newPlot` once
/// plotly.js is there (written by [`load_plotly`]). `kind` tags the div (`data-rkif-figure`)
/// so tests can find it.
pub fn figure_html(figure: &Figure, kind: &str, height_px: u32) -> String {
    let n = FIGURE_COUNT.fetch_add(1, Ordering::SeqCst);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let id = format!("rkif-fig-{}-{stamp}-{n}", std::process::id());
    format!(
        "<div id=\"{id}\" data-rkif-figure=\"{kind}\" style=\"width:100%;max-width:860px;height:{height_px}px\"></div>\
         <script type=\"text/javascript\">(function(){{var fig={json};var tries=0;\
         function draw(){{var el=document.getElementById(\"{id}\");\
         if(window.Plotly&&el){{window.Plotly.newPlot(el,fig.data,fig.layout,{{responsive:true,displaylogo:false}});}}\
         else if(tries++<200){{setTimeout(draw,100);}}\
         else if(el){{el.textContent=\"plotly.js is not loaded: run display::load_plotly() first\";}}}}draw();}})();</script>",
        kind = escape(kind),
        json = script_json(&figure.to_json()),
    )
}

// ---------------------------------------------------------------------------------------------
// Tables

const TABLE: &str = "style=\"border-collapse:collapse;font-family:monospace;font-size:12px\"";
const CELL: &str = "border:1px solid #ccc;padding:2px 6px;text-align:right";

/// An HTML table tagged `data-rkif="kind"` from a header and rows of already escaped cells.
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

/// A number for people and, in `data-value`, for machines: `<span data-value="v">text</span>`.
fn value_span(value: f64, text: &str) -> String {
    format!("<span data-value=\"{value:.6}\">{}</span>", escape(text))
}

/// Left-aligned, wrapping text in a table cell.
fn left(html: &str) -> String {
    format!("<div style=\"text-align:left;white-space:pre-wrap\">{html}</div>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            data: vec![json!({"name": "</script><script>alert(1)</script>"})],
            layout: json!({}),
        };
        let html = figure_html(&fig, "t", 100);
        assert_eq!(html.matches("</script>").count(), 1, "{html}");
        assert!(html.contains("\\u003c/script>"));
        assert!(html.contains("Plotly.newPlot(el,fig.data,fig.layout"));
        assert!(html.contains("data-rkif-figure=\"t\""));
    }

    #[test]
    fn plotly_comes_from_load_plotly_only() {
        let first = plotly_script();
        assert!(first.starts_with("<script") && first.ends_with("</script>"));
        assert!(
            first.contains("window.Plotly = Plotly"),
            "plotly.js defines window.Plotly"
        );
        assert!(!first.contains("<script src"), "inline, not from a URL");
        assert_eq!(first.matches("<script").count(), 1, "MathJax left out");
        assert!(load_plotly().0.contains("window.Plotly = Plotly"));
        let fig = Figure {
            data: Vec::new(),
            layout: json!({}),
        };
        assert!(!figure_html(&fig, "t", 100).contains("window.Plotly = Plotly"));
    }

    #[test]
    fn tables_escape_headers_and_tag_their_kind() {
        let html = table("k", &["<h>"], &[vec![value_span(0.25, "25.0")]]);
        assert!(html.starts_with("<table data-rkif=\"k\""));
        assert!(html.contains("&lt;h&gt;"));
        assert!(html.contains("<span data-value=\"0.250000\">25.0</span>"));
    }
    /// A two-task session on a tiny model built by the embedded recipe, writing `dir/run`.
    fn tiny_session(dir: &std::path::Path) -> crate::Result<crate::session::Session> {
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
        let source = crate::config::ModelSource::Local { path: model_dir };
        let mut c = notebook_config(crate::config::Method::Rkif, &source, 16, 1, 4);
        // The default benchmark's first two tasks, whichever they are.
        let bench = crate::data::Benchmark::open(crate::session::default_benchmark_dir())?;
        let order = bench
            .orders()
            .first()
            .ok_or_else(|| crate::Error::Data("the default benchmark has no order".into()))?;
        c.data.tasks = Some(order.tasks.iter().take(2).cloned().collect());
        c.model.lora.rank = 2;
        c.optim.micro_batch = 4;
        c.kif.memory_fraction = 0.25;
        c.kif.memory_batch = 4;
        c.eval.max_new_tokens = 2;
        crate::session::Session::with_run_dir(c, &dir.join("run"))
    }

    /// Notebooks 02 and 03 in small: every display of a round, and the measurements.
    #[test]
    fn a_round_by_hand_displays_and_measures() -> crate::Result<()> {
        use crate::Error;
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut s = tiny_session(tmp.path())?;
        assert!(session_summary(&s).0.contains("data-rkif=\"session\""));
        let listed = tasks(&s).0;
        assert_eq!(listed.matches("data-task=").count(), 2);
        for name in s.task_names() {
            assert!(listed.contains(&format!("data-task=\"{}\"", escape(&name))));
        }
        s.train_task()?;
        s.evaluate()?;
        assert!(importance_snapshot(&s).is_err(), "no task in training");
        s.start_task()?;
        let start = old_task_losses(&s, 8, "start")?;
        assert_eq!(start.losses.len(), 1, "one old task");
        assert!(start.mean().is_some_and(f64::is_finite));
        let inner = s.inner_steps(2)?;
        let steps = importance::steps(&inner).0;
        assert_eq!(steps.matches("data-rkif-figure=\"loss-curve\"").count(), 1);
        let outer = s.outer_steps(1)?;
        assert_eq!(outer.records.len(), 1);
        let snap = importance_snapshot(&s)?;
        let html = importance::snapshot_html(&snap).0;
        assert_eq!(
            html.matches("\"type\":\"heatmap\"").count(),
            2,
            "inner and outer"
        );
        assert_eq!(
            element_maps(&snap)
                .0
                .matches("data-rkif-figure=\"element-map\"")
                .count(),
            4
        );
        let weights = RoundWeights::before_fusion(&s)?;
        let fused = s.fuse()?;
        // The run folder stored round 1's snapshot just before fusing, made by the same
        // function: written the same way, the two files agree byte for byte.
        let run = crate::report::RunDir::open(tmp.path().join("run"))?;
        let copy = crate::report::RunDir::create(tmp.path().join("copy"))?;
        let read = |p: std::path::PathBuf| std::fs::read(&p).map_err(|e| Error::io(&p, e));
        assert_eq!(
            read(copy.save_importance(&snap)?)?,
            read(run.importance_path(1, Some(1)))?
        );
        // The snapshot counted the elements above each threshold that fusion then masked.
        let important = |inner: bool| -> usize {
            snap.modules
                .iter()
                .filter_map(|m| {
                    if inner {
                        m.inner.as_ref()
                    } else {
                        m.outer.as_ref()
                    }
                })
                .map(|s| s.important.unwrap_or(0))
                .sum()
        };
        assert_eq!(important(true) as u64, fused.inner_selected);
        assert_eq!(important(false) as u64, fused.outer_selected);
        assert_eq!(snap.modules.len(), s.learner().params().len());
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
        let charts = session_charts(&s)?.0;
        let manifest = crate::report::RunDir::open(tmp.path().join("run"))?.load_manifest()?;
        assert_eq!(manifest.method, "rkif");
        for (label, text) in crate::report::figures::run_summary(&manifest) {
            let row = format!(
                "{}</td><td style=\"{CELL}\">{}",
                escape(label),
                left(&escape(&text))
            );
            assert!(charts.contains(&row), "summary row {label}: {charts}");
        }
        assert_eq!(
            charts.matches("data-rkif-figure=\"fusion-shares\"").count(),
            1
        );
        assert_eq!(
            charts.matches("data-case=\"neither\"").count(),
            1,
            "one round"
        );
        Ok(())
    }
}
