//! Helpers the notebooks call, so that they stay thin: budgets, the base model, old-task
//! losses and what a fusion did to the weights.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use super::{escape, heading, table, Html};
use crate::config::{Method, ModelSource, RunConfig};
use crate::data::Example;
use crate::session::Session;
use crate::{Error, Result};

/// The quick preset with notebook budgets: `method` on `model`, `train` examples per task,
/// `epochs`, `eval` test examples per task, answers of at most 4 tokens, on the embedded
/// default benchmark (`data.dir` set to it, so that `RKIF_DATA_DIR`, which notebook 05 reads
/// for the real benchmark, does not change notebooks 01-04).
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
    c.data.dir = Some(crate::session::default_benchmark_dir());
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
    fn compare_losses_reports_means() {
        let a = TaskLosses {
            label: "before".into(),
            losses: vec![("x".into(), 1.0), ("<y>".into(), 3.0)],
        };
        assert_eq!(a.mean(), Some(2.0));
        let empty = TaskLosses {
            label: "none".into(),
            losses: Vec::new(),
        };
        assert_eq!(empty.mean(), None);
        let html = compare_losses(&[&a, &empty]).0;
        assert!(html.contains("<b data-value=\"2.000000\">2.0000</b>"));
        assert!(html.contains("&lt;y&gt;") && html.contains("data-value=\"3.000000\""));
    }

    #[test]
    fn notebook_config_sets_the_budgets() {
        let c = notebook_config(Method::SeqLora, &ModelSource::Embedded, 7, 3, 5);
        assert_eq!(c.method, Method::SeqLora);
        assert_eq!(c.data.max_train_per_task, Some(7));
        assert_eq!(c.optim.epochs, 3);
        assert_eq!(c.eval.max_examples_per_task, Some(5));
        assert_eq!(c.eval.max_new_tokens, 4);
        assert_eq!(
            c.data.dir,
            Some(crate::session::default_benchmark_dir()),
            "the embedded benchmark, whatever RKIF_DATA_DIR says"
        );
    }
}
