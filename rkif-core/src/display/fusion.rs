//! Fusion: the four cases of one round, and the charts of a run's event log (training curves,
//! fusion cases per round), drawn by the viewer's figures.

use std::path::Path;

use super::{escape, figure_html, heading, left, table, Html};
use crate::report::figures::{fusion_shares, run_summary, training_curves};
use crate::report::{Event, EventLog, FusionShares, Manifest, RunDir};
use crate::session::{FusionReport, Session};
use crate::{Error, Result};

/// The four cases: name and rule.
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

/// The four cases with their rule, element counts (when given) and shares; every share is in
/// `data-case`/`data-value` (a fraction).
fn shares_table(shares: &FusionShares, counts: Option<[u64; 4]>) -> String {
    let rows: Vec<Vec<String>> = CASES
        .iter()
        .zip(share_values(shares))
        .enumerate()
        .map(|(i, ((case, rule), v))| {
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
                left(&escape(rule)),
            ]
        })
        .collect();
    table("fusion-shares", &["case", "elements", "%", "rule"], &rows)
}

/// Per LoRA matrix, the percentage of its elements in each case.
fn modules_table(report: &FusionReport) -> String {
    let rows: Vec<Vec<String>> = report
        .modules
        .iter()
        .map(|m| {
            let mut row = vec![
                escape(&m.kind),
                m.layer.map_or_else(|| "-".into(), |l| l.to_string()),
            ];
            row.extend(
                share_values(&m.shares)
                    .iter()
                    .map(|v| format!("{:.1}", 100.0 * v)),
            );
            row
        })
        .collect();
    table(
        "fusion-modules",
        &[
            "matrix",
            "layer",
            "inner only %",
            "outer only %",
            "both %",
            "neither %",
        ],
        &rows,
    )
}

/// The round's masks, the four cases' shares and the shares per LoRA matrix.
fn fusion(report: &FusionReport) -> Html {
    let tau = |t: Option<f32>| t.map_or_else(|| "-".into(), |t| format!("{t:.3e}"));
    Html(format!(
        "<div data-rkif=\"fusion\">{}<p>{} elements; inner mask {} (tau {}), outer mask {} (tau {}); overlap |I∩O|/|I∪O| = {}</p>{}<details><summary>per LoRA matrix ({})</summary>{}</details></div>",
        heading("Fusion of the round"),
        report.elements,
        report.inner_selected,
        tau(report.inner_threshold),
        report.outer_selected,
        tau(report.outer_threshold),
        report.overlap.map_or_else(|| "n/a".into(), |o| format!("{o:.3}")),
        shares_table(
            &report.shares(),
            Some([report.inner_only, report.outer_only, report.both, report.neither])
        ),
        report.modules.len(),
        modules_table(report),
    ))
}

impl FusionReport {
    /// The four cases' shares (whole adapter and per matrix), thresholds and overlap.
    pub fn evcxr_display(&self) {
        fusion(self).evcxr_display();
    }
}

/// The charts of a run's event log, as the viewer draws them: training and validation loss
/// on the run-wide step axis, and, when the run fused, the share of each case per round with
/// the masks' overlap. `rounds` lists every round's shares for machine reading.
pub fn run_charts(log: &EventLog) -> Html {
    let mut html = String::from("<div data-rkif=\"run-charts\">");
    html.push_str(&figure_html(&training_curves(log), "training-curves", 320));
    let rounds: Vec<&FusionShares> = log
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Round(r) => Some(&r.shares),
            _ => None,
        })
        .collect();
    if !rounds.is_empty() {
        html.push_str(&figure_html(&fusion_shares(log), "fusion-shares", 320));
        html.push_str("<details><summary>shares per round</summary>");
        for (i, shares) in rounds.iter().enumerate() {
            html.push_str(&format!("<p>round {}</p>", i + 1));
            html.push_str(&shares_table(shares, None));
        }
        html.push_str("</details>");
    }
    html.push_str("</div>");
    Html(html)
}

/// The run's identity as the viewer lists it ([`run_summary`]: method, backbone, benchmark,
/// seeds, device, wall time, ...).
fn summary_table(manifest: &Manifest) -> String {
    let rows: Vec<Vec<String>> = run_summary(manifest)
        .into_iter()
        .map(|(label, text)| vec![escape(label), left(&escape(&text))])
        .collect();
    table("run-summary", &["", ""], &rows)
}

/// The run folder `dir` as the viewer shows it: its summary (`manifest.json`) and
/// [`run_charts`] of its `events.jsonl`.
pub fn run_folder_charts(dir: &Path) -> Result<Html> {
    let run = RunDir::open(dir)?;
    let summary = summary_table(&run.load_manifest()?);
    let charts = run_charts(&run.load_events()?);
    Ok(Html(format!(
        "{}{summary}{}",
        heading(&format!("Run folder {}", dir.display())),
        charts.0
    )))
}

/// [`run_charts`] of a session that writes a run folder (`Session::with_run_dir`), so far.
pub fn session_charts(s: &Session) -> Result<Html> {
    let dir = s.run_dir().ok_or_else(|| {
        Error::Data("the session writes no run folder: create it with Session::with_run_dir".into())
    })?;
    run_folder_charts(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{OuterStepEvent, RoundEvent, RoundTimings, StepEvent};

    const SHARES: FusionShares = FusionShares {
        inner_only: 0.1,
        outer_only: 0.2,
        both: 0.05,
        neither: 0.65,
    };

    #[test]
    fn fusion_shares_table_lists_the_four_cases() {
        let html = shares_table(&SHARES, Some([10, 20, 5, 65]));
        for (case, v) in [("inner only", "0.100000"), ("neither", "0.650000")] {
            assert!(html.contains(&format!("data-case=\"{case}\" data-value=\"{v}\"")));
        }
        assert!(html.contains(
            "<td style=\"border:1px solid #ccc;padding:2px 6px;text-align:right\">20</td>"
        ));
    }

    #[test]
    fn run_charts_draw_the_report_figures() {
        let round = RoundEvent {
            task: 1,
            round: 1,
            step: 4,
            elements: 100,
            inner_mask: 20,
            outer_mask: 20,
            shares: SHARES,
            overlap: Some(0.25),
            timings: RoundTimings {
                inner_seconds: 0.0,
                outer_seconds: 0.0,
                fusion_seconds: 0.0,
            },
        };
        let step = StepEvent {
            task: 1,
            step: 4,
            loss: 1.25,
            lr: 1e-3,
            grad_norm: 0.5,
        };
        let outer = OuterStepEvent {
            task: 1,
            step: 4,
            outer_step: 1,
            loss: 0.75,
            lr: 1e-3,
            grad_norm: 0.5,
        };
        let log = EventLog {
            header: None,
            events: vec![
                Event::Step(step),
                Event::OuterStep(outer),
                Event::Round(round),
            ],
            truncated_lines: 0,
        };
        let html = run_charts(&log).0;
        for figure in [fusion_shares(&log), training_curves(&log)] {
            let expected = figure.to_json().to_string();
            assert!(html.contains(&expected), "the report's figure, as is");
        }
        // The outer (replay-memory) step's loss is drawn, as in the viewer.
        let curves = training_curves(&log).to_json();
        let replay = curves["data"]
            .as_array()
            .and_then(|d| d.iter().find(|t| t["name"] == "replay loss (outer steps)"))
            .map(|t| t["y"].clone());
        assert_eq!(replay, Some(serde_json::json!([0.75])));
        assert!(html.contains("data-rkif-figure=\"training-curves\""));
        assert!(html.contains("data-case=\"both\" data-value=\"0.050000\""));
        let empty = EventLog {
            header: None,
            events: Vec::new(),
            truncated_lines: 0,
        };
        assert!(!run_charts(&empty).0.contains("fusion-shares"));
    }
}
