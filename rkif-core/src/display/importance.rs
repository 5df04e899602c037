//! Importance: a tracker's view after some steps, and a snapshot of both trackers of a round
//! (per module x layer, inner vs outer, drawn by the viewer's figures).

use super::{escape, figure_html, heading, table, value_span, Html};
use crate::report::figures::{element_map, importance_layers, training_curves};
use crate::report::{
    Event, EventLog, ImportanceSnapshot, OuterStepEvent, ScoreSummary, StepEvent, StepPhase,
};
use crate::session::{ImportanceView, Session, StepsReport};
use crate::{Error, Result};

fn layer_label(l: Option<usize>) -> String {
    l.map_or_else(|| "-".into(), |n| format!("layer {n}"))
}

fn threshold_line(view: &ImportanceView) -> String {
    format!(
        "<p data-rkif=\"threshold\">{} updates; global threshold tau = {}</p>",
        view.updates,
        view.threshold
            .map_or_else(|| "none yet".into(), |t| format!("{t:.3e}"))
    )
}

/// One tracker's scores: its threshold and, per LoRA matrix, the mean and largest score and
/// the share of elements above the threshold.
pub fn importance(view: &ImportanceView, name: &str) -> Html {
    if view.modules.is_empty() {
        return Html(format!(
            "<div data-rkif=\"importance\">{}<p>No update yet: no scores.</p></div>",
            heading(name)
        ));
    }
    let rows: Vec<Vec<String>> = view
        .modules
        .iter()
        .map(|m| {
            vec![
                escape(&m.kind),
                layer_label(m.layer),
                format!("{:.3e}", m.mean),
                format!("{:.3e}", m.max),
                value_span(
                    m.important_share,
                    &format!("{:.1}", 100.0 * m.important_share),
                ),
            ]
        })
        .collect();
    Html(format!(
        "<div data-rkif=\"importance\">{}{}<details><summary>per LoRA matrix ({})</summary>{}</details></div>",
        heading(name),
        threshold_line(view),
        view.modules.len(),
        table(
            "importance",
            &["matrix", "layer", "mean S", "max S", "important %"],
            &rows
        ),
    ))
}

impl ImportanceView {
    /// The tracker's threshold and the important share per LoRA matrix.
    pub fn evcxr_display(&self) {
        importance(self, "Importance").evcxr_display();
    }
}

/// The steps as the events the run's log holds for them, so that the report's training curve
/// draws them as the viewer does: inner steps as `step` events at their task step, outer
/// steps as `outer_step` events at the inner step they follow (the replay-loss markers).
fn steps_log(report: &StepsReport) -> EventLog {
    let outer = report.phase == StepPhase::Outer.name();
    let events = report
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if outer {
                Event::OuterStep(OuterStepEvent {
                    task: report.task,
                    step: report.first_step,
                    outer_step: i + 1,
                    loss: r.loss,
                    lr: r.lr,
                    grad_norm: r.grad_norm,
                })
            } else {
                Event::Step(StepEvent {
                    task: report.task,
                    step: report.first_step + i,
                    loss: r.loss,
                    lr: r.lr,
                    grad_norm: r.grad_norm,
                })
            }
        })
        .collect();
    EventLog {
        header: None,
        events,
        truncated_lines: 0,
    }
}

/// The steps' losses (table and curve) and the phase's importance after them.
pub(super) fn steps(report: &StepsReport) -> Html {
    let rows: Vec<Vec<String>> = report
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                value_span(r.loss, &format!("{:.4}", r.loss)),
                format!("{:.2e}", r.lr),
                format!("{:.3}", r.grad_norm),
            ]
        })
        .collect();
    let title = format!(
        "{} {} steps on task {}",
        report.records.len(),
        report.phase,
        report.task
    );
    let curve = if report.records.is_empty() {
        "<p>No step: the task's step budget is spent.</p>".to_string()
    } else {
        figure_html(&training_curves(&steps_log(report)), "loss-curve", 280)
    };
    Html(format!(
        "<div data-rkif=\"steps\">{}{}{}{}</div>",
        heading(&title),
        table("steps", &["#", "loss", "lr", "grad norm"], &rows),
        curve,
        importance(&report.importance, &format!("{} importance", report.phase)).0,
    ))
}

impl StepsReport {
    /// The steps' losses (table and curve) and the phase's importance after them.
    pub fn evcxr_display(&self) {
        steps(self).evcxr_display();
    }
}

/// Both trackers of the task being trained, now: per LoRA matrix the score statistics with
/// the count above each global threshold, and block-mean maps of the first adapted module's
/// matrices (at most `DEFAULT_MAP_SIDE` square), exactly as the run folder stores them. Take it
/// after the round's outer steps and before `fuse` (which resets the inner tracker) to see the
/// masks fusion will use.
pub fn importance_snapshot(s: &Session) -> Result<ImportanceSnapshot> {
    let st = s
        .current()
        .ok_or_else(|| Error::Data("no task is being trained: start a round first".into()))?;
    if st.inner.updates() == 0 && st.outer.updates() == 0 {
        return Err(Error::Data(
            "no importance yet: run inner or outer steps first".into(),
        ));
    }
    crate::session::importance_snapshot(
        st.index,
        Some(st.round + 1),
        st.step,
        st,
        s.learner().params(),
        s.config().kif.quantile,
    )
}

/// `important / count` of a summary (0 when no threshold was given).
fn important_share(s: &ScoreSummary) -> f64 {
    s.important.unwrap_or(0) as f64 / s.count.max(1) as f64
}

/// The snapshot's thresholds, the viewer's module x layer heatmaps (inner and outer mean
/// score) and, per LoRA matrix, the mean score and the share above each threshold.
pub(super) fn snapshot_html(snap: &ImportanceSnapshot) -> Html {
    let tau = |t: Option<f32>| t.map_or_else(|| "none yet".into(), |t| format!("{t:.3e}"));
    let stat = |s: &Option<ScoreSummary>| -> [String; 2] {
        match s {
            Some(s) => [
                format!("{:.3e}", s.mean),
                value_span(
                    important_share(s),
                    &format!("{:.1}", 100.0 * important_share(s)),
                ),
            ],
            None => [String::new(), String::new()],
        }
    };
    let rows: Vec<Vec<String>> = snap
        .modules
        .iter()
        .map(|m| {
            let [im, is] = stat(&m.inner);
            let [om, os] = stat(&m.outer);
            vec![
                escape(&m.kind),
                format!("{:?}", m.factor),
                m.layer.to_string(),
                im,
                is,
                om,
                os,
            ]
        })
        .collect();
    let round = snap
        .round
        .map_or_else(|| "end of task".into(), |r| format!("round {r}"));
    Html(format!(
        "<div data-rkif=\"importance-snapshot\">{}<p data-rkif=\"threshold\">inner tau = {}, outer tau = {}</p>{}<details><summary>per LoRA matrix ({})</summary>{}</details></div>",
        heading(&format!(
            "Importance of task {}, {round} (step {}): inner (new task) vs outer (memory)",
            snap.task, snap.step
        )),
        tau(snap.inner_threshold),
        tau(snap.outer_threshold),
        figure_html(&importance_layers(snap), "importance-layers", 360),
        snap.modules.len(),
        table(
            "importance-snapshot",
            &["matrix", "factor", "layer", "inner mean S", "inner important %", "outer mean S", "outer important %"],
            &rows
        ),
    ))
}

impl ImportanceSnapshot {
    /// Inner and outer importance per module x layer, and per LoRA matrix.
    pub fn evcxr_display(&self) {
        snapshot_html(self).evcxr_display();
    }
}

/// The snapshot's element maps: each score of the first adapted module's matrices as block
/// means, the viewer's element-map figure.
pub fn element_maps(snap: &ImportanceSnapshot) -> Html {
    let mut html = String::from("<div data-rkif=\"element-maps\">");
    html.push_str(&heading("Scores element by element (block means)"));
    if snap.maps.is_empty() {
        html.push_str("<p>No map: no scores yet.</p>");
    }
    for map in &snap.maps {
        html.push_str(&figure_html(&element_map(map), "element-map", 320));
    }
    html.push_str("</div>");
    Html(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::StepRecord;

    fn report(phase: StepPhase, first_step: usize, losses: &[f64]) -> StepsReport {
        StepsReport {
            phase: phase.name().into(),
            task: 2,
            first_step,
            records: losses
                .iter()
                .map(|&loss| StepRecord {
                    loss,
                    lr: 1e-3,
                    grad_norm: 1.0,
                })
                .collect(),
            importance: ImportanceView {
                updates: 0,
                threshold: None,
                modules: Vec::new(),
            },
        }
    }

    /// The run's log holds inner steps at their task step and outer steps at the inner step
    /// they follow; the steps display draws the same events.
    #[test]
    fn steps_become_the_events_the_run_logs() {
        let inner = steps_log(&report(StepPhase::Inner, 5, &[2.0, 1.5]));
        let logged: Vec<(usize, usize, f64)> = inner
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Step(s) => Some((s.task, s.step, s.loss)),
                _ => None,
            })
            .collect();
        assert_eq!(logged, vec![(2, 5, 2.0), (2, 6, 1.5)]);

        let outer = steps_log(&report(StepPhase::Outer, 6, &[0.5, 0.25, 0.125]));
        let logged: Vec<(usize, usize, usize, f64)> = outer
            .events
            .iter()
            .filter_map(|e| match e {
                Event::OuterStep(s) => Some((s.task, s.step, s.outer_step, s.loss)),
                _ => None,
            })
            .collect();
        assert_eq!(
            logged,
            vec![(2, 6, 1, 0.5), (2, 6, 2, 0.25), (2, 6, 3, 0.125)]
        );
        // Drawn as the viewer's replay-loss markers, not as the training loss.
        let curves = training_curves(&outer).to_json();
        let y_of = |name: &str| {
            curves["data"]
                .as_array()
                .and_then(|d| d.iter().find(|t| t["name"] == name))
                .map(|t| t["y"].clone())
        };
        assert_eq!(
            y_of("replay loss (outer steps)"),
            Some(serde_json::json!([0.5, 0.25, 0.125]))
        );
        assert_eq!(
            y_of("training loss (inner steps)"),
            Some(serde_json::json!([]))
        );
    }
}
