//! Importance: a tracker's view after some steps, and a snapshot of both trackers of a round
//! (per module x layer, inner vs outer, drawn by the viewer's figures).

use super::{escape, figure_html, heading, table, value_span, Html};
use crate::kif::ImportanceTracker;
use crate::model::{LoraFactor, LoraParam};
use crate::report::figures::{element_map, importance_layers, training_curves};
use crate::report::{
    downsample_mean, Event, EventLog, ImportanceMap, ImportanceSnapshot, ModuleImportance,
    ScoreKind, ScoreSummary, StepEvent, DEFAULT_MAP_SIDE,
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

/// The steps' losses as the report's training curve (`x`: the task step; outer steps, which
/// do not advance it, are numbered 1..n).
fn steps_log(report: &StepsReport) -> EventLog {
    let first = if report.phase == "inner" {
        report.first_step
    } else {
        1
    };
    let events = report
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Event::Step(StepEvent {
                task: 0,
                step: first + i,
                loss: r.loss,
                lr: r.lr,
                grad_norm: r.grad_norm,
            })
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

/// One tracker's state: its view (threshold, layer and kind of each matrix) and, per LoRA
/// matrix by name, its scores flattened row-major.
struct TrackerScores {
    view: ImportanceView,
    scores: Vec<(String, Vec<f32>)>,
}

/// [`TrackerScores`] of `tracker`; `None` before its first update.
fn tracker_scores(
    tracker: &ImportanceTracker,
    params: &[LoraParam],
    q: f64,
) -> Result<Option<TrackerScores>> {
    if tracker.updates() == 0 {
        return Ok(None);
    }
    let view = ImportanceView::of(tracker, params, q)?;
    let scores = tracker
        .scores()
        .into_iter()
        .map(|(name, t)| {
            let values = t
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            Ok((name, values))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(TrackerScores { view, scores }))
}

/// Both trackers of the task being trained, now: per LoRA matrix the score statistics with
/// the count above each global threshold, and block-mean maps of the first adapted module's
/// matrices (at most `DEFAULT_MAP_SIDE` square). Take it after the round's outer steps and
/// before `fuse` (which resets the inner tracker) to see the masks fusion will use.
pub fn importance_snapshot(s: &Session) -> Result<ImportanceSnapshot> {
    let st = s
        .current()
        .ok_or_else(|| Error::Data("no task is being trained: start a round first".into()))?;
    let q = s.config().kif.quantile;
    let params = s.learner().params();
    let inner = tracker_scores(&st.inner, params, q)?;
    let outer = tracker_scores(&st.outer, params, q)?;
    if inner.is_none() && outer.is_none() {
        return Err(Error::Data(
            "no importance yet: run inner or outer steps first".into(),
        ));
    }
    let mut snap = ImportanceSnapshot::new(st.index, Some(st.round + 1), st.step);
    snap.inner_threshold = inner.as_ref().and_then(|t| t.view.threshold);
    snap.outer_threshold = outer.as_ref().and_then(|t| t.view.threshold);
    let first_module = params.first().map(|p| p.module.as_str());
    for p in params {
        let shape = p.var.as_tensor().dims2()?;
        let mut entry = ModuleImportance {
            module: p.module.clone(),
            layer: 0,
            kind: String::new(),
            factor: match p.factor {
                LoraFactor::A => crate::report::LoraFactor::A,
                LoraFactor::B => crate::report::LoraFactor::B,
            },
            shape: [shape.0, shape.1],
            inner: None,
            outer: None,
        };
        for (kind, tracker) in [(ScoreKind::Inner, &inner), (ScoreKind::Outer, &outer)] {
            let Some(TrackerScores { view, scores }) = tracker else {
                continue;
            };
            let Some((_, values)) = scores.iter().find(|(n, _)| *n == p.name) else {
                continue;
            };
            if let Some(m) = view.modules.iter().find(|m| m.name == p.name) {
                entry.layer = m.layer.unwrap_or(0);
                // `q_proj.A` -> `q_proj`: the factor has its own field.
                entry.kind = m
                    .kind
                    .rsplit_once('.')
                    .map_or_else(|| m.kind.clone(), |(k, _)| k.to_string());
            }
            let summary = ScoreSummary::of(&p.name, values, view.threshold)?;
            match kind {
                ScoreKind::Inner => entry.inner = Some(summary),
                ScoreKind::Outer => entry.outer = Some(summary),
            }
            if Some(p.module.as_str()) == first_module {
                snap.maps.push(ImportanceMap {
                    module: p.module.clone(),
                    factor: entry.factor,
                    score: kind,
                    grid: downsample_mean(
                        &p.name,
                        values,
                        entry.shape,
                        [DEFAULT_MAP_SIDE, DEFAULT_MAP_SIDE],
                    )?,
                });
            }
        }
        snap.modules.push(entry);
    }
    Ok(snap)
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
