//! The accuracy matrix, its metrics, several runs side by side, and one evaluation row.

use std::fmt::Write as _;

use super::{escape, figure_html, heading, table, value_span, Html, CELL, TABLE};
use crate::eval::AccuracyMatrix;
use crate::report::figures::{
    accuracy_heatmap, comparison_heatmaps, forgetting_bars, metric_cells, metrics_table, percent,
};
use crate::report::MetricsFile;
use crate::session::EvalRow;

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

/// The `T x T` matrix `a[j][i]` as a table of percentages with shaded cells; every number
/// cell carries `data-value` (a fraction) for machine reading.
fn matrix_table(file: &MetricsFile) -> String {
    let mut s = format!(
        "<table data-rkif=\"accuracy-table\" {TABLE}><thead><tr><th style=\"{CELL}\">a[j][i] %</th>"
    );
    for t in &file.tasks {
        let _ = write!(s, "<th style=\"{CELL}\">{}</th>", escape(t));
    }
    s.push_str("</tr></thead><tbody>");
    for (j, row) in file.accuracy.iter().enumerate() {
        let name = file.tasks.get(j).map_or("", String::as_str);
        let _ = write!(s, "<tr><th style=\"{CELL}\">after {}</th>", escape(name));
        for v in row {
            let data = v.map_or_else(String::new, |x| format!(" data-value=\"{x:.6}\""));
            let _ = write!(
                s,
                "<td style=\"{CELL};{}\"{data}>{}</td>",
                shade(*v),
                v.map_or_else(String::new, |x| percent(Some(x)))
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// `<span data-metric="name" data-value="v">percent</span>` (no `data-value` when undefined).
fn metric_span(name: &str, value: Option<f64>) -> String {
    let data = value.map_or_else(String::new, |v| format!(" data-value=\"{v:.6}\""));
    format!(
        "<span data-metric=\"{}\"{data}>{}</span>",
        escape(name),
        percent(value)
    )
}

/// OP, BWT, FWT and mean forgetting with their formulas and the matrix cells each one read
/// ([`metric_cells`], as the viewer lists them).
fn metrics_block(file: &MetricsFile) -> String {
    let rows: Vec<Vec<String>> = metric_cells(file)
        .iter()
        .map(|m| {
            let cells: Vec<String> = m.cells.iter().map(ToString::to_string).collect();
            vec![
                escape(m.name),
                metric_span(m.name, m.value),
                format!("{}/{}", m.terms_used, m.terms_total),
                format!("<code>{}</code>", escape(&m.formula)),
                super::left(&escape(&cells.join(" "))),
            ]
        })
        .collect();
    format!(
        "{}<p style=\"font-size:11px;color:#555\">{} f_i = <code>{}</code>. {}</p>",
        table(
            "metrics",
            &["metric", "value (%)", "terms", "formula", "cells read"],
            &rows
        ),
        escape(&file.notation),
        escape(&file.forgetting.formula),
        escape(&file.missing_cells),
    )
}

/// The matrix (table and heatmap) and its metrics.
pub fn accuracy_matrix(matrix: &AccuracyMatrix, title: &str) -> Html {
    let file = MetricsFile::from_matrix(matrix);
    Html(format!(
        "<div data-rkif=\"accuracy-matrix\">{}{}{}{}</div>",
        heading(title),
        matrix_table(&file),
        figure_html(&accuracy_heatmap(&file), "accuracy-heatmap", 340),
        metrics_block(&file),
    ))
}

impl AccuracyMatrix {
    /// The matrix as a heatmap with its numbers, and OP / BWT / FWT / F with their formulas.
    pub fn evcxr_display(&self) {
        accuracy_matrix(self, "Accuracy matrix").evcxr_display();
    }
}

/// Several runs side by side: a metrics table (OP, BWT, FWT, F, one row per run), the
/// matrices as heatmaps next to each other, then each run's forgetting per task and matrix.
pub fn compare_runs(runs: &[(&str, &AccuracyMatrix)]) -> Html {
    let files: Vec<(&str, MetricsFile)> = runs
        .iter()
        .map(|(name, m)| (*name, MetricsFile::from_matrix(m)))
        .collect();
    let named: Vec<(&str, &str, &MetricsFile)> = files.iter().map(|(n, f)| (*n, "", f)).collect();
    let rows: Vec<Vec<String>> = metrics_table(&named)
        .iter()
        .zip(&files)
        .map(|(text, (_, f))| {
            let [name, _, ..] = text;
            vec![
                escape(name),
                metric_span("OP", f.op.value),
                metric_span("BWT", f.bwt.value),
                metric_span("FWT", f.fwt.value),
                metric_span("F", f.forgetting.mean.value),
            ]
        })
        .collect();
    let mut s = String::from("<div data-rkif=\"comparison\">");
    s.push_str(&heading("Methods on the same task sequence"));
    s.push_str(&table(
        "comparison-metrics",
        &["run", "OP %", "BWT", "FWT", "F"],
        &rows,
    ));
    let pairs: Vec<(&str, &MetricsFile)> = files.iter().map(|(n, f)| (*n, f)).collect();
    s.push_str(&figure_html(
        &comparison_heatmaps(&pairs),
        "accuracy-comparison",
        360,
    ));
    for (name, file) in &files {
        s.push_str(&heading(name));
        s.push_str(&matrix_table(file));
        s.push_str(&figure_html(&forgetting_bars(file), "forgetting-bars", 260));
    }
    s.push_str("</div>");
    Html(s)
}

impl EvalRow {
    /// One row of the accuracy matrix with a few answers per task.
    pub fn evcxr_display(&self) {
        eval_row(self).evcxr_display();
    }
}

/// The accuracy per evaluated task, with its `label → prediction` samples.
fn eval_row(row: &EvalRow) -> Html {
    let mut rows = Vec::new();
    for (i, task) in row.tasks.iter().enumerate() {
        let Some(acc) = row.accuracy.get(i).copied().flatten() else {
            continue;
        };
        let samples = row
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
            value_span(acc, &percent(Some(acc))),
            super::left(&samples),
        ]);
    }
    Html(format!(
        "<div data-rkif=\"eval-row\">{}{}<p>{:.1} s</p></div>",
        heading(&format!("Accuracy after task {}", row.after_task)),
        table(
            "eval-row",
            &["task", "accuracy %", "label → prediction"],
            &rows
        ),
        row.seconds
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    fn two_tasks() -> Result<AccuracyMatrix> {
        let mut m = AccuracyMatrix::new(vec!["a<b>".into(), "c".into()])?;
        m.set(0, 0, 0.9)?;
        m.mark_trained(1)?;
        m.set(1, 0, 0.6)?;
        m.set(1, 1, 0.8)?;
        m.mark_trained(2)?;
        Ok(m)
    }

    #[test]
    fn matrix_display_shows_cells_metrics_and_escaped_names() -> Result<()> {
        let m = two_tasks()?;
        let html = accuracy_matrix(&m, "t").0;
        assert!(html.contains("a&lt;b&gt;") && !html.contains("a<b>"));
        assert!(html.contains("data-value=\"0.600000\">60.0<"));
        // The heatmap is the report's: its trace and its escaped axis labels.
        let report = accuracy_heatmap(&MetricsFile::from_matrix(&m)).to_json();
        assert!(html.contains(&report.to_string().replace('<', "\\u003c")));
        assert!(html.contains("\"type\":\"heatmap\""));
        // OP = (0.6 + 0.8) / 2, BWT = 0.6 - 0.9, F = 0.9 - 0.6.
        assert!(html.contains("data-metric=\"OP\" data-value=\"0.700000\""));
        assert!(html.contains("data-metric=\"BWT\" data-value=\"-0.300000\""));
        assert!(html.contains("data-metric=\"F\" data-value=\"0.300000\""));
        assert!(html.contains("a[1][0] a[0][0]"), "BWT's cells: {html}");
        Ok(())
    }

    #[test]
    fn comparison_has_one_heatmap_per_run_and_the_metrics() -> Result<()> {
        let m = two_tasks()?;
        let html = compare_runs(&[("x", &m), ("<y>", &m)]).0;
        assert_eq!(
            html.matches("data-rkif-figure=\"accuracy-comparison\"")
                .count(),
            1
        );
        assert_eq!(
            html.matches("data-rkif-figure=\"forgetting-bars\"").count(),
            2
        );
        assert_eq!(html.matches("\"type\":\"heatmap\"").count(), 2);
        assert_eq!(
            html.matches("data-metric=\"OP\" data-value=\"0.700000\"")
                .count(),
            2
        );
        assert!(html.contains("&lt;y&gt;") && !html.contains("<y>"));
        Ok(())
    }

    #[test]
    fn eval_row_marks_right_and_wrong_answers() {
        let row = EvalRow {
            after_task: 0,
            tasks: vec!["t".into(), "u".into()],
            accuracy: vec![Some(0.5), None],
            samples: vec![(
                0,
                vec![("Yes".into(), "yes ".into()), ("a".into(), "<b>".into())],
            )],
            seconds: 1.0,
        };
        let html = eval_row(&row).0;
        assert!(html.contains("✓ Yes → yes") && html.contains("✗ a → &lt;b&gt;"));
        assert!(html.contains("data-value=\"0.500000\">50.0<"));
        assert_eq!(
            html.matches("<tr>").count(),
            2,
            "header and the evaluated task"
        );
    }
}
