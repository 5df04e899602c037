#!/usr/bin/env python3
"""Writes notebooks/*.ipynb (without outputs) from the cell lists below.

The notebooks are committed; edit them here and rerun `python3 tests/notebooks/make_notebooks.py`
so that every notebook keeps the same setup cell. Standard library only.
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]

# The kernel runs in notebooks/, so the crate is one folder up.
#
# Training happens in the cell that creates its Session. evcxr links the dependencies statically
# into every cell, so each cell has its own copy of candle's statics, among them the counter that
# numbers tensors: a backward pass in a later cell would mix up tensors of two numberings.
# Later cells only display and measure (no backward pass). (`:allow_static_linking 0`, which would
# share one copy, fails to build with this toolchain.)
DEP = ':dep rkif-core = { path = "../rkif-core", features = ["evcxr"] }'

SETUP = """use std::path::{Path, PathBuf};
use rkif_core::config::Method;
use rkif_core::display::{self, notebook_config, notebook_model};
use rkif_core::session::Session;
// The embedded base model (built into notebooks/.cache the first time when the tree has none).
let model = notebook_model(Path::new(".cache"))?;
display::load_plotly()"""


def md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text.strip("\n")}


def code(text):
    # A cell's last expression is displayed; evcxr moves a value displayed by name, so the
    # cells display `&name` to keep the variable for later cells.
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": text.strip("\n"),
    }


def notebook(stem, cells):
    for i, c in enumerate(cells):
        c["id"] = f"{stem}-{i:02d}"
        lines = c["source"].split("\n")
        c["source"] = [l + "\n" for l in lines[:-1]] + [lines[-1]]
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Rust", "language": "rust", "name": "rust"},
            "language_info": {
                "codemirror_mode": "rust",
                "file_extension": ".rs",
                "mimetype": "text/rust",
                "name": "Rust",
                "pygment_lexer": "rust",
                "version": "",
            },
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def setup_cells():
    return [
        code(DEP),
        code(SETUP),
    ]


QUICKSTART = [
    md("""
# 01 · Quickstart: forgetting, and what Recurrent-KIF does about it

A language model learns a **sequence of tasks** through one LoRA adapter: task 0, then task 1, and
so on, never seeing an old task's training data again. Plain sequential fine-tuning (**SeqLoRA**)
overwrites what the adapter knew: accuracy on old tasks drops. That drop is *catastrophic
forgetting*.

**Recurrent-KIF** (Recurrent Knowledge Identification and Fusion) keeps, while a new task trains,
two element-wise estimates of which LoRA weights matter: for the new task (*inner* importance, from
new-task steps) and for the old tasks (*outer* importance, from steps on a small replay memory).
Every few steps it **fuses** the two kinds of update with those estimates, so the weights that old
tasks rely on are protected. Notebooks 02 and 03 take one round apart.

This notebook runs both methods on the project's small built-in benchmark, `rkif-mini` (the
default benchmark's tasks, listed below, share one vocabulary) with a small built-in base model,
and compares their **accuracy matrices**. Budgets are tiny so it finishes in a few minutes on a CPU.
"""),
    *setup_cells(),
    md("""
## The tasks

The default benchmark's tasks in training order, with the answers each allows (the model has to
generate one as text) and a training record. This session only loads the tasks and the model; the
next cell trains.
"""),
    code("""
display::tasks(&Session::new(notebook_config(Method::SeqLora, &model, 96, 2, 24))?)"""),
    md("""
## The run configuration

`notebook_config(method, model, train, epochs, eval)` is the `quick` preset on `model` with the given
budgets: `train` training examples per task, `epochs` passes over them, `eval` test examples per task.
This notebook uses the preset's full training budget (600 examples, three epochs: 225 steps a task),
the least with which the base model learns every task (with 300 examples it learnt two of four); each
method takes a minute or two on a CPU. The other notebooks use far smaller budgets, to look inside
the steps rather than at the final accuracies.
A `Session` loads the model and the tasks; displaying it shows the run's settings.
"""),
    code("""
// One cell: a session trains in the cell that created it (see the README, "evcxr and candle").
let mut seq = Session::new(notebook_config(Method::SeqLora, &model, 600, 3, 48))?;
let plan = seq.start_task()?;
seq.run_all(|summary, row| println!("{}: {} steps, accuracy row {:?}", summary.name, summary.steps, row.accuracy))?;
&seq"""),
    md("""
`start_task` prepared the first task (its data, the replay memory of earlier tasks, a fresh
optimiser), then `run_all` trained and evaluated every task. A few of the first task's records:
"""),
    code("""
&plan"""),
    md("""
## SeqLoRA: the tasks one after another

After training task *j* the model was evaluated on every task seen so far: that filled row *j* of
the accuracy matrix `a[j][i]`.
"""),
    code("""
display::accuracy_matrix(seq.matrix(), "SeqLoRA")"""),
    md("""
Read the matrix column by column: the diagonal `a[i][i]` is a task just after it was learnt;
the cells below it are the same task later. A column that fades downwards is forgetting.

- **OP** (overall performance) = mean over i of `a[T-1][i]`: the final row's average.
- **BWT** (backward transfer) = mean over i < T-1 of `a[T-1][i] - a[i][i]`: negative when old
  tasks were forgotten.
- **FWT** needs the zero-shot row and the upper triangle, which these runs do not evaluate (n/a).

## Recurrent-KIF on the same sequence

Same model, same data, same budgets; only the method changes. This session also writes a run
folder (manifest, metrics, event log, adapters) that `rkif report` and the viewer read.
"""),
    code("""
let run_dir = std::env::temp_dir().join(format!("rkif-notebook-01-{}", std::process::id()));
let mut rk = Session::with_run_dir(notebook_config(Method::Rkif, &model, 600, 3, 48), &run_dir)?;
rk.run_all(|summary, row| println!("{}: {} steps, {} rounds, accuracy row {:?}", summary.name, summary.steps, summary.rounds, row.accuracy))?;
display::accuracy_matrix(rk.matrix(), "Recurrent-KIF")"""),
    md("""
## Side by side

The two matrices, their metrics, and the forgetting of each task
(`f_i` = best accuracy task i ever had after its training, minus its final accuracy).
"""),
    code("""
display::compare_runs(&[("SeqLoRA", seq.matrix()), ("Recurrent-KIF", rk.matrix())])"""),
    md("""
## Inside the Recurrent-KIF run

The run folder's event log drawn by the same figures as the viewer (`rkif report`): the training
loss over the whole run (dotted lines separate the tasks) and, for every fusion round, the share
of LoRA elements in each of the four fusion cases (notebook 03 explains them) with the overlap of
the two masks.
"""),
    code("""
display::run_folder_charts(&run_dir)?"""),
    md("""
What to look for: SeqLoRA learns each task (the diagonal) and loses it on the next one (its
columns drop to zero below the diagonal); Recurrent-KIF learns them too and keeps much more of
the earlier ones, at some cost on the newest. These are the same runs as `rkif run` (same
preset and seeds), scored on the first 48 test examples of each task instead of 200. Notebook 04 adds the other methods;
notebook 05 does the same on a real model and benchmark.
"""),
]

IDENTIFY = [
    md("""
# 02 · Identify: one round by hand

Recurrent-KIF works in **rounds**. While task *k > 0* trains, each round is:

1. **Inner steps** (Q of them, Q = 8 by default): optimiser steps on task-*k* batches. After each,
   the *inner* importance tracker is updated.
2. **Outer steps** (M = 4): steps on random batches of the **replay memory** (2% of each old task's
   training set, class-balanced). After each, the *outer* tracker is updated.
3. **Fusion** (notebook 03): the two updates are combined element by element using masks derived
   from the two importance scores.

This notebook runs one round with the stepwise API and looks at the scores.
"""),
    *setup_cells(),
    md("""
## Task 0: plain LoRA

The first task has no old tasks to protect: no memory, no rounds. `train_task` trains it with the
configured method (here: Recurrent-KIF, which on task 0 is plain fine-tuning) and `evaluate` fills
the first row of the accuracy matrix.
"""),
    code("""
// The whole round in the cell that creates the session (see the README, "evcxr and candle");
// the cells below look at what each call returned.
let mut s = Session::new(notebook_config(Method::Rkif, &model, 96, 2, 24))?;
let first = s.train_task()?;
let first_row = s.evaluate()?;
let plan = s.start_task()?;
let inner = s.inner_steps(8)?;
let outer = s.outer_steps(4)?;
&first_row"""),
    md("""
## Task 1 starts

Now there is an old task. `start_task` built the replay memory from task 0's training set.
"""),
    code("""
&plan"""),
    md("""
## Inner steps and the inner importance

After each optimiser step, for every LoRA element with value `p` (after the step) and gradient `g`
(the one the step used):

$$I = |p \\cdot g|$$
$$\\bar I \\leftarrow \\beta_1 \\bar I + (1-\\beta_1) I, \\qquad
  \\bar U \\leftarrow \\beta_2 \\bar U + (1-\\beta_2)\\,|I - \\bar I|, \\qquad S = \\bar I \\cdot \\bar U$$

with β₁ = β₂ = 0.85. `I` is a first-order estimate of how much the loss would change if the element
were removed; `Ī` smooths it over steps, `Ū` tracks how much it fluctuates, and the score `S` is large
for elements that are *consistently and strongly* sensitive. The display shows, per LoRA matrix
(`q_proj.A`, `v_proj.B`, ...) and layer, the share of elements whose score is above the global
threshold τ.
"""),
    code("""
&inner"""),
    md("""
## Outer steps on the memory and the outer importance

The same optimiser now takes M steps on memory batches (the old tasks' examples). The outer tracker
applies the same formulas to these steps, so its score says which elements the **old tasks** are
sensitive to. Unlike the inner tracker, it is not reset between rounds of a task.
"""),
    code("""
&outer"""),
    md("""
## Inner vs outer

The masks: concatenate the scores of *all* LoRA elements of the model, take the 0.8 quantile τ,
and mark an element important where `S > τ`: about the top 20%, chosen globally, so some matrices
hold many important elements and others few. `importance_snapshot` reads both trackers as they
are now (after the round's outer steps, before fusion) and shows them with the viewer's figure:
the mean score `S` per LoRA matrix kind and layer, inner (left) and outer (right).
"""),
    code("""
let round = display::importance_snapshot(&s)?;
&round"""),
    md("""
What the numbers say: each tracker's threshold τ is printed above the panels; the table (open
"per LoRA matrix") gives the share of each matrix's elements above it. The masks come from these
thresholds; their overlap (elements important to both the new task and the old ones) is where
fusion has to compromise.

Element by element: the scores of the first adapted module's two matrices (A: `r × in`,
B: `out × r`), averaged over blocks so that a large matrix fits the picture. Important elements
are not spread evenly; they gather in rows and columns.
"""),
    code("""
display::element_maps(&round)"""),
    code("""
{
    // A block: evcxr cannot keep a closure between cells.
    let mean_share = |v: &rkif_core::session::ImportanceView| {
        v.modules.iter().map(|m| m.important_share).sum::<f64>() / v.modules.len().max(1) as f64
    };
    println!("{} LoRA matrices", inner.importance.modules.len());
    println!("mean important share: inner {:.3}, outer {:.3}", mean_share(&inner.importance), mean_share(&outer.importance));
    println!("inner tau {:?}, outer tau {:?}", inner.importance.threshold, outer.importance.threshold);
}"""),
    md("""
The round is not finished: notebook 03 fuses it.
"""),
]

FUSE = [
    md("""
# 03 · Fuse: pruning and merging

At the end of a round Recurrent-KIF has three adapters: the **anchor** θ₀ (the start of the round),
θ_k after the inner steps, and θ after the outer steps. It splits the round into two updates,

$$\\Delta_{in} = \\theta_k - \\theta_0 \\quad\\text{(new task)}, \\qquad
  \\Delta_{out} = \\theta - \\theta_k \\quad\\text{(old tasks, from the memory)},$$

and, element by element, writes back

$$\\theta \\leftarrow \\theta_0 + c_{in}\\,\\Delta_{in} + c_{out}\\,\\Delta_{out}$$

with coefficients chosen by the two masks (important = score above its 80% quantile):

| inner important | outer important | c_in | c_out | what happens |
|---|---|---|---|---|
| yes | no | 1.0 | 0.0 | **prune** the replay update: the element serves the new task |
| no | yes | 0.0 | 1.0 | **prune** the new-task update: the element serves old tasks |
| yes | yes | 0.4 | 0.6 | **merge**, old tasks weighted higher |
| no | no | 0.5 | 0.5 | plain average |

The result becomes the next round's anchor and the inner tracker restarts.
"""),
    *setup_cells(),
    md("""
## A round to fuse

Task 0 trained and evaluated, task 1 started, and its loss on the old task measured before the
round (mean loss on dev examples of task 0).
"""),
    code("""
// This session writes a run folder: its event log feeds the charts at the end.
let run_dir = std::env::temp_dir().join(format!("rkif-notebook-03-{}", std::process::id()));
let mut s = Session::with_run_dir(notebook_config(Method::Rkif, &model, 96, 2, 24), &run_dir)?;
s.train_task()?;
s.evaluate()?;
s.start_task()?;
let at_start = display::old_task_losses(&s, 32, "round start")?;
let inner = s.inner_steps(8)?;
let after_inner = display::old_task_losses(&s, 32, "after inner steps")?;
let outer = s.outer_steps(4)?;
let after_outer = display::old_task_losses(&s, 32, "after outer steps")?;
// Measure the two updates, then fuse (the next sections look at the result).
let weights = display::RoundWeights::before_fusion(&s)?;
let fused = s.fuse()?;
let weights = weights.after_fusion(&s)?;
let after_fusion = display::old_task_losses(&s, 32, "after fusion")?;
// Up to three more rounds (as many as the task's step budget allows): training happens in the
// cell that created the session (see the README, "evcxr and candle").
for _ in 0..3 {
    if s.inner_steps(8)?.records.is_empty() {
        break;
    }
    s.outer_steps(4)?;
    s.fuse()?;
}
display::compare_losses(&[&at_start, &after_inner, &after_outer])"""),
    md("""
The inner steps, which only see task 1, usually raise the loss on task 0; the outer steps on the
memory pull it back.

## Fuse

The cell above measured the two updates, fused, and measured again. The four cases:
"""),
    code("""
&fused"""),
    md("""
Each element falls in exactly one case, so the four shares add up to 100%. With both masks at
their top 20%, about 60% or more of the elements are in *neither* (plain average) unless the two
trackers agree a lot.

## What it did to the weights

L2 norms of the round's updates per LoRA matrix: the new-task update, the replay update, their
plain sum (what the weights would have become without fusion) and the fused update actually applied.
Pruning zeroes one of the two updates on an element, merging and averaging scale both down
(coefficients between 0 and 1), so the fused update is never larger than
`|delta_in| + |delta_out|`; where the two updates pull the same way it is clearly smaller than
their plain sum.
"""),
    code("""
&weights"""),
    md("""
## The effect on the old task
"""),
    code("""
display::compare_losses(&[&at_start, &after_inner, &after_outer, &after_fusion])"""),
    md("""
## More rounds

The first cell ran up to three more rounds with the same calls (as many as the task's step budget
allows). The run's event log, drawn by the viewer's figures: the training loss, then the share of
each case in every round of this task with the overlap of the two masks (dotted, right axis).
"""),
    code("""
display::session_charts(&s)?"""),
]

COMPARE = [
    md("""
# 04 · Compare: every method on the same sequence

- **SeqLoRA**: sequential fine-tuning, no memory (the lower bound).
- **Replay**: the replay memory mixed into the training batches, no fusion.
- **TaSL**: importance per LoRA matrix ("skill unit"), merged once after each task.
- **Recurrent-KIF**: inner and outer importance, element-wise fusion every round.
- **MTL**: all tasks trained jointly (the upper bound; not continual learning).

Same base model, data, seeds and budgets for all.
"""),
    *setup_cells(),
    code("""
let methods = [Method::SeqLora, Method::Replay, Method::Tasl, Method::Rkif, Method::Mtl];
let mut results: Vec<(String, rkif_core::eval::AccuracyMatrix)> = Vec::new();
for method in methods {
    let started = std::time::Instant::now();
    let mut s = Session::new(notebook_config(method, &model, 96, 2, 24))?;
    s.run_all(|_, _| {})?;
    println!("{:>14}: {:.0} s", method.name(), started.elapsed().as_secs_f64());
    results.push((method.name().to_string(), s.matrix().clone()));
}"""),
    md("""
## Metrics side by side

OP (final average accuracy), BWT (change on old tasks since each was learnt; negative = forgetting),
and mean forgetting F, then the per-task forgetting and every method's matrix. MTL trains once on
everything, so its matrix has a single row and no BWT.
"""),
    code("""
{
    // A block: evcxr cannot keep a value that borrows another between cells.
    let named: Vec<(&str, &rkif_core::eval::AccuracyMatrix)> = results.iter().map(|(n, m)| (n.as_str(), m)).collect();
    display::compare_runs(&named)
}"""),
    md("""
On the paper's T5 benchmarks the ordering is SeqLoRA < Replay < TaSL < Recurrent-KIF < MTL. With
this notebook's tiny budgets and 24 test examples per task the gaps are noisy; `rkif run` with the
`quick` preset and full budgets gives steadier numbers.
"""),
]

REAL = [
    md("""
# 05 · The same steps on a real model and benchmark

SmolLM2-135M-Instruct (a LLaMA-architecture decoder, read from a GGUF file and dequantised to f32)
on a small subset of the standard continual-learning benchmark (dbpedia, amazon, ...). The paths
come first; change them here or through the environment variables.

- `RKIF_SMOLLM2_GGUF`: the GGUF file (default `../.models/SmolLM2-135M-Instruct.Q4_1.gguf`, which
  `scripts/fetch-test-model.sh` downloads).
- `RKIF_DATA_DIR`: the benchmark folder (default `../../shared/data/cl_benchmark`, i.e.
  `../shared/data/cl_benchmark` next to the repository).
"""),
    *setup_cells(),
    code("""
let gguf = std::env::var("RKIF_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("../.models/SmolLM2-135M-Instruct.Q4_1.gguf"));
let data = std::env::var("RKIF_DATA_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("../../shared/data/cl_benchmark"));
println!("model: {} (exists: {})", gguf.display(), gguf.is_file());
println!("data:  {} (exists: {})", data.display(), data.is_dir());"""),
    md("""
## A small budget

Two tasks, 16 training examples each, one epoch of 4 steps of 4 examples, rounds of 2 inner and
1 outer step, a memory of a quarter of the old task's (reduced) training set, 8 test examples per
task, answers of at most 4 tokens. Enough to see every step work, not to measure the method.
"""),
    code("""
let source = rkif_core::config::ModelSource::Gguf { path: gguf.clone() };
let mut cfg = notebook_config(Method::Rkif, &source, 16, 1, 8);
cfg.model.max_source_len = 192;
cfg.data.dir = Some(data.clone());
cfg.data.tasks = Some(vec!["dbpedia".to_string(), "amazon".to_string()]);
cfg.optim.micro_batch = 4;
cfg.optim.grad_accum = 1;
cfg.optim.warmup_steps = 1;
cfg.kif.inner_steps = 2;
cfg.kif.outer_steps = 1;
cfg.kif.memory_batch = 4;
cfg.kif.memory_fraction = 0.25;
cfg.eval.select = rkif_core::config::Selection::Last;
// Everything that trains runs in this cell (see the README, "evcxr and candle"): task 0, then
// one round by hand on task 1, then the rest of task 1.
let mut s = Session::new(cfg)?;
let plan = s.start_task()?;
s.train_task()?;
let first_row = s.evaluate()?;
s.start_task()?;
let inner = s.inner_steps(2)?;
let outer = s.outer_steps(1)?;
// Both trackers before fusion resets the inner one.
let round = display::importance_snapshot(&s)?;
let fused = s.fuse()?;
s.train_task()?;
s.evaluate()?;
&s"""),
    code("""
&plan"""),
    code("""
&first_row"""),
    md("""
## One round by hand on the second task
"""),
    code("""
&inner"""),
    code("""
&round"""),
    code("""
&fused"""),
    md("""
## The rest of the task, and the matrix
"""),
    code("""
display::accuracy_matrix(s.matrix(), "SmolLM2-135M, dbpedia → amazon")"""),
]

NOTEBOOKS = {
    "01-quickstart.ipynb": QUICKSTART,
    "02-identify.ipynb": IDENTIFY,
    "03-fuse.ipynb": FUSE,
    "04-compare.ipynb": COMPARE,
    "05-real-model.ipynb": REAL,
}


def render(name):
    """The committed text of notebook `name` (e.g. `01-quickstart.ipynb`)."""
    cells = NOTEBOOKS[name]
    return json.dumps(notebook(name.split("-")[0], [dict(c) for c in cells]), indent=1, ensure_ascii=False) + "\n"


def main():
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    for name in NOTEBOOKS:
        (out / name).write_text(render(name), encoding="utf-8")
        print("wrote", out / name)


if __name__ == "__main__":
    main()
