//! What a task trains on, a trained task's summary, and the session so far.

use super::matrix::accuracy_matrix;
use super::{escape, heading, left, table, Html};
use crate::data::Example;
use crate::session::{Session, TaskPlan, TaskSummary};

fn records_table(examples: &[Example]) -> String {
    let rows: Vec<Vec<String>> = examples
        .iter()
        .map(|e| {
            vec![
                escape(&e.id),
                left(&escape(&e.instruction)),
                left(&escape(&e.input)),
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

/// The session's tasks in training order, one row each: index, name, task type, the allowed
/// answers, examples per split (training examples after `data.max_train_per_task`; test
/// examples as loaded, before `eval.max_examples_per_task` picks from them) and one training
/// record.
pub fn tasks(s: &Session) -> Html {
    let rows: Vec<Vec<String>> = s
        .tasks()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let labels = t
                .info
                .labels
                .as_ref()
                .map_or_else(|| "(free text)".to_string(), |l| l.join(", "));
            let sample = t
                .train
                .first()
                .map_or_else(String::new, |e| format!("{} → {}", e.input, e.output));
            vec![
                i.to_string(),
                format!(
                    "<span data-task=\"{}\">{}</span>",
                    escape(t.name()),
                    escape(t.name())
                ),
                escape(&t.info.kind),
                left(&escape(&labels)),
                t.train.len().to_string(),
                t.dev.len().to_string(),
                t.test.len().to_string(),
                left(&escape(&sample)),
            ]
        })
        .collect();
    Html(format!(
        "<div data-rkif=\"tasks\">{}{}</div>",
        heading(&format!(
            "{} tasks, in training order ({})",
            rows.len(),
            s.order_name()
        )),
        table(
            "tasks",
            &[
                "#",
                "task",
                "type",
                "answers",
                "train",
                "dev",
                "test",
                "a training record"
            ],
            &rows
        )
    ))
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
