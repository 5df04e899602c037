//! `rkif results`: a results folder from run folders.
//!
//! ```text
//! results/
//!   README.md                 per task order, a markdown table (method, seeds, OP and BWT as
//!                             mean ± standard deviation over seeds, final accuracy per task,
//!                             train + evaluation time), the data caveats next to it, the
//!                             paper's numbers as an ordering check, every run, and how to
//!                             reproduce them
//!   configs/<order>-<method>.toml   the exact config of each group (rerun it with `--seed`)
//!   report/                   the viewer site of the runs (summaries, events, down-sampled
//!                             importance maps; no adapters, no checkpoints)
//! ```
//!
//! Runs are grouped by task order, method and every other setting except the seed, so runs
//! of two different protocols never share a row. Numbers are read from each run's
//! `metrics.json` (accuracy in percent, one decimal) and its `events.jsonl` (the seconds
//! of every task's training and evaluation that the result contains, so a resumed run
//! counts the redone task once).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::config::{Method, RunConfig};
use crate::report::run_dir::{EVENTS_FILE, IMPORTANCE_DIR, MANIFEST_FILE, METRICS_FILE};
use crate::report::{Event, MetricsFile, RunDir};
use crate::{Error, Result};

/// How deep [`find_runs`] looks below a folder that is not itself a run.
const SEARCH_DEPTH: usize = 4;

/// The data caveats of the benchmark README that a table must carry, by task name.
const TASK_CAVEATS: [(&str, &str); 2] = [
    (
        "dbpedia",
        "dbpedia: the test set is rebuilt (the original file was not available): the first 500 \
         records of each of the 14 labels of O-LoRA's dbpedia test pool, in file order; same \
         population and size as the original, not the same selection.",
    ),
    (
        "yahoo",
        "yahoo: the test set is a stand-in, a copy of the dev set (500 random records of \
         yahoo's evaluation pool, 33-56 per label); no original test file was available, so \
         yahoo accuracy has more variance and comes from dev = test.",
    ),
];

/// The SuperNI note, shown when a SuperNI task (`taskNNN`) is in a table.
const SUPERNI_CAVEAT: &str = "SuperNI: in the source data (TaSL's T5 files) the outputs of \
classification tasks hold only the first character of the label (task363 P/N, task875 `s` \
for both sadness and surprise, task1687 p/n), so exact match on those tasks measures the \
first letter; dev = test.";

/// The Recurrent-KIF paper's main table (METHOD.md section 10, T5-large, mean of three
/// orders): method, Standard CL OP / BWT, Long Sequence OP / BWT.
const PAPER: [(&str, &str, &str); 5] = [
    ("SeqLoRA", "43.7 / −50.4", "11.6 / −73.4"),
    ("O-LoRA", "75.8 / −3.8", "69.6 / −4.1"),
    ("TaSL", "76.3 / −4.0", "74.4 / −5.3"),
    ("Recurrent-KIF", "78.4 / −2.8", "77.8 / −3.6"),
    ("MTL (joint, upper bound)", "80.3", "81.8"),
];

/// What the README reports of one run folder.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub dir: PathBuf,
    /// The method's name as the manifest gives it.
    pub method: String,
    /// The task order's name (`custom` for an explicit task list).
    pub order: String,
    pub seed: u64,
    /// The model the run loaded (a path or hub id).
    pub model: String,
    pub metrics: MetricsFile,
    /// Seconds of training and evaluation, summed over the tasks in the result.
    pub seconds: f64,
    /// The run's config without the seed (what a group shares).
    pub config: RunConfig,
}

/// Reads one run folder: manifest, metrics and the event log's timings. Errors name the
/// file.
pub fn load_run(dir: &Path) -> Result<RunRecord> {
    let run = RunDir::open(dir)?;
    let manifest = run.load_manifest()?;
    let metrics = if run.metrics_path().is_file() {
        run.load_metrics()?
    } else {
        // Started, no task finished yet: an empty matrix over the run's tasks.
        let tasks: Vec<String> = manifest
            .config
            .pointer("/run/tasks")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .ok_or_else(|| Error::format(run.manifest_path(), "config.run.tasks: missing"))?;
        let matrix = crate::eval::AccuracyMatrix::new(tasks)
            .map_err(|e| Error::format(run.manifest_path(), e.to_string()))?;
        MetricsFile::from_matrix(&matrix)
    };
    let text = |pointer: &str| {
        manifest
            .config
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let order = text("/run/order").unwrap_or_else(|| "custom".to_string());
    let model = text("/run/model").unwrap_or_else(|| "?".to_string());
    let mut config_value = manifest.config.clone();
    if let serde_json::Value::Object(map) = &mut config_value {
        map.remove("run");
    }
    let mut config: RunConfig = serde_json::from_value(config_value)
        .map_err(|e| Error::format(run.manifest_path(), format!("config: {e}")))?;
    let seed = config.seed;
    config.seed = 0;
    let seconds = if run.events_path().is_file() {
        run.load_events()?
            .events
            .iter()
            .map(|e| match e {
                Event::TaskEnd(t) => t.seconds,
                Event::Eval(v) => v.seconds,
                _ => 0.0,
            })
            .sum()
    } else {
        0.0
    };
    Ok(RunRecord {
        dir: dir.to_path_buf(),
        method: manifest.method,
        order,
        seed,
        model,
        metrics,
        seconds,
        config,
    })
}

/// The run folders in `paths`: a folder with a `manifest.json` is a run; any other folder
/// is searched (a few levels deep, skipping `report` sites and run internals) for runs.
/// Sorted and without duplicates; an empty result is an error naming the paths.
pub fn find_runs(paths: &[impl AsRef<Path>]) -> Result<Vec<PathBuf>> {
    let mut found = BTreeSet::new();
    for p in paths {
        let p = p.as_ref();
        if !p.is_dir() {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder"),
            ));
        }
        search(p, SEARCH_DEPTH, &mut found)?;
    }
    if found.is_empty() {
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.as_ref().display().to_string())
            .collect();
        return Err(Error::Data(format!(
            "no run folder (with a {MANIFEST_FILE}) in {}",
            names.join(", ")
        )));
    }
    Ok(found.into_iter().collect())
}

fn search(dir: &Path, depth: usize, found: &mut BTreeSet<PathBuf>) -> Result<()> {
    if dir.join(MANIFEST_FILE).is_file() {
        found.insert(dir.to_path_buf());
        return Ok(());
    }
    if depth == 0 {
        return Ok(());
    }
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() && name != "report" && !name.starts_with('.') {
            search(&path, depth - 1, found)?;
        }
    }
    Ok(())
}

/// Mean and sample standard deviation (n − 1) of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    /// `None` for a single value.
    pub sd: Option<f64>,
    pub n: usize,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = (n > 1).then(|| {
            let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Some(Spread { mean, sd, n })
    }

    /// As a percentage: `61.3 ± 2.0`, or `61.3` for one value.
    pub fn percent(&self) -> String {
        match self.sd {
            Some(sd) => format!("{} ± {:.1}", one_decimal(self.mean * 100.0), sd * 100.0),
            None => one_decimal(self.mean * 100.0),
        }
    }
}

/// `x` with one decimal; a value that rounds to zero is `0.0`, never `-0.0` (a sum of
/// accuracy differences can land a hair below zero).
pub fn one_decimal(x: f64) -> String {
    let text = format!("{x:.1}");
    if text == "-0.0" {
        "0.0".to_string()
    } else {
        text
    }
}

fn percent(s: Option<Spread>) -> String {
    s.map_or_else(|| "–".to_string(), |s| s.percent())
}

/// Runs that differ only in their seed.
#[derive(Debug, Clone)]
pub struct ResultGroup {
    pub order: String,
    pub method: String,
    pub tasks: Vec<String>,
    /// Indices into the records given to [`group_runs`], by seed.
    pub runs: Vec<usize>,
    pub seeds: Vec<u64>,
    pub op: Option<Spread>,
    pub bwt: Option<Spread>,
    /// Per task (training order): accuracy after the last trained task.
    pub final_accuracy: Vec<Option<Spread>>,
    /// Per task (training order): accuracy just after training it (`a[i][i]`); for joint
    /// training (one evaluation at the end) the same as `final_accuracy`.
    pub just_trained: Vec<Option<Spread>>,
    /// Seconds of training and evaluation per run.
    pub seconds: Option<Spread>,
    /// The runs' shared config (seed set to 0).
    pub config: RunConfig,
}

/// The rank of a method in the tables: baselines, Recurrent-KIF and its ablations, MTL.
fn method_rank(name: &str) -> usize {
    const ORDER: [Method; 7] = [
        Method::SeqLora,
        Method::Replay,
        Method::Tasl,
        Method::Rkif,
        Method::RkifNoFusion,
        Method::RkifFuseOnce,
        Method::Mtl,
    ];
    ORDER
        .iter()
        .position(|m| m.name() == name)
        .unwrap_or(ORDER.len())
}

/// Groups runs by order, method and config (everything but the seed); groups sorted by
/// order, then method (baselines first, MTL last), runs within a group by seed.
pub fn group_runs(records: &[RunRecord]) -> Vec<ResultGroup> {
    let mut groups: Vec<ResultGroup> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let existing = groups.iter_mut().find(|g| {
            g.order == r.order
                && g.method == r.method
                && g.tasks == r.metrics.tasks
                && g.config == r.config
        });
        match existing {
            Some(g) => g.runs.push(i),
            None => groups.push(ResultGroup {
                order: r.order.clone(),
                method: r.method.clone(),
                tasks: r.metrics.tasks.clone(),
                runs: vec![i],
                seeds: Vec::new(),
                op: None,
                bwt: None,
                final_accuracy: Vec::new(),
                just_trained: Vec::new(),
                seconds: None,
                config: r.config.clone(),
            }),
        }
    }
    for g in &mut groups {
        g.runs.sort_by_key(|&i| records[i].seed);
        let runs: Vec<&RunRecord> = g.runs.iter().map(|&i| &records[i]).collect();
        g.seeds = runs.iter().map(|r| r.seed).collect();
        let values = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Option<Spread> {
            let v: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
            // A statistic that some runs lack is not averaged over the others.
            if v.len() == runs.len() {
                Spread::of(&v)
            } else {
                None
            }
        };
        g.op = values(&|r| r.metrics.op.value);
        g.bwt = values(&|r| r.metrics.bwt.value);
        g.final_accuracy = (0..g.tasks.len())
            .map(|i| values(&|r| final_accuracy(&r.metrics, i)))
            .collect();
        g.just_trained = (0..g.tasks.len())
            .map(|i| values(&|r| just_trained(&r.metrics, i)))
            .collect();
        g.seconds = values(&|r| Some(r.seconds));
    }
    groups.sort_by(|a, b| {
        (a.order.as_str(), method_rank(&a.method)).cmp(&(b.order.as_str(), method_rank(&b.method)))
    });
    groups
}

/// Accuracy on task `i` after the last trained task (`a[k-1][i]`).
pub fn final_accuracy(m: &MetricsFile, i: usize) -> Option<f64> {
    let last = m.tasks_trained.checked_sub(1)?;
    m.accuracy.get(last)?.get(i).copied().flatten()
}

/// Accuracy on task `i` just after training it (`a[i][i]`), else the first evaluation of
/// it after that (joint training evaluates once, after the last task).
pub fn just_trained(m: &MetricsFile, i: usize) -> Option<f64> {
    m.accuracy
        .iter()
        .skip(i)
        .find_map(|row| row.get(i).copied().flatten())
}

/// The caveats a table over `tasks` must carry: the benchmark README's, then the runs' own
/// (`metrics.json`), without repeats.
fn caveats_for(tasks: &BTreeSet<String>, records: &[&RunRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (task, text) in TASK_CAVEATS {
        if tasks.contains(task) {
            out.push(text.to_string());
        }
    }
    if tasks.iter().any(|t| is_superni_task(t)) {
        out.push(SUPERNI_CAVEAT.to_string());
    }
    // The runs' own caveats, except for tasks whose README caveat is already shown.
    let covered = |c: &str| {
        TASK_CAVEATS
            .iter()
            .any(|(task, _)| tasks.contains(*task) && c.starts_with(&format!("{task}: ")))
    };
    for r in records {
        for c in &r.metrics.caveats {
            if !out.contains(c) && !covered(c) {
                out.push(c.clone());
            }
        }
    }
    out
}

fn is_superni_task(name: &str) -> bool {
    name.strip_prefix("task")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// The file name of a group's config in `configs/`.
pub fn config_file_name(g: &ResultGroup) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}-{}.toml", clean(&g.order), clean(&g.method))
}

/// The README: one table per task order, caveats, the paper's numbers, every run and how to
/// reproduce them. `command`, when given, is quoted as the command that produced the runs.
pub fn results_markdown(
    records: &[RunRecord],
    groups: &[ResultGroup],
    command: Option<&str>,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Results\n");
    let _ = writeln!(
        md,
        "Generated by `rkif results` from {} run folders. Accuracy is exact match of the \
         greedy answer (lower-cased, trimmed), in percent. Each cell is the mean ± sample \
         standard deviation over the seeds listed (one seed: the value alone). **OP** is the \
         mean accuracy over all tasks after the last task; **BWT** the mean change of each \
         earlier task's accuracy from just after it was trained to the end (negative = \
         forgetting; MTL trains all tasks at once, so it has none). Per-task columns are the \
         accuracy after the last task. Time is training plus evaluation per run.\n",
        records.len()
    );
    let orders: Vec<&str> = {
        let mut seen = Vec::new();
        for g in groups {
            if !seen.contains(&g.order.as_str()) {
                seen.push(g.order.as_str());
            }
        }
        seen
    };
    for order in orders {
        let in_order: Vec<&ResultGroup> = groups.iter().filter(|g| g.order == order).collect();
        let Some(first) = in_order.first() else {
            continue;
        };
        let _ = writeln!(md, "## Order `{order}`: {}\n", first.tasks.join(" → "));
        let models: BTreeSet<String> = in_order
            .iter()
            .flat_map(|g| g.runs.iter().map(|&i| model_name(&records[i].model)))
            .collect();
        let _ = writeln!(
            md,
            "Model: {}.\n",
            models.into_iter().collect::<Vec<_>>().join(", ")
        );
        let sizes: BTreeSet<usize> = in_order
            .iter()
            .flat_map(|g| g.runs.iter().map(|&i| &records[i]))
            .flat_map(|r| r.metrics.task_details.iter())
            .flat_map(|d| d.examples_evaluated.iter().flatten().copied())
            .collect();
        if !sizes.is_empty() {
            let list: Vec<String> = sizes.iter().map(usize::to_string).collect();
            let _ = writeln!(
                md,
                "Each accuracy is over {} test examples of the task (a cap takes the same \
                 seeded subset after every task).\n",
                list.join(" or ")
            );
        }
        let mut task_columns: Vec<String> = Vec::new();
        for g in &in_order {
            for t in &g.tasks {
                if !task_columns.contains(t) {
                    task_columns.push(t.clone());
                }
            }
        }
        let _ = write!(md, "| method | seeds | OP | BWT |");
        for t in &task_columns {
            let _ = write!(md, " {t} |");
        }
        let _ = writeln!(md, " time / run |");
        let _ = write!(md, "|---|---|---|---|");
        for _ in &task_columns {
            let _ = write!(md, "---|");
        }
        let _ = writeln!(md, "---|");
        for g in &in_order {
            let seeds: Vec<String> = g.seeds.iter().map(u64::to_string).collect();
            let _ = write!(
                md,
                "| {} | {} | {} | {} |",
                g.method,
                seeds.join(", "),
                percent(g.op),
                percent(g.bwt)
            );
            for t in &task_columns {
                let cell = g
                    .tasks
                    .iter()
                    .position(|x| x == t)
                    .and_then(|i| g.final_accuracy.get(i).copied().flatten());
                let _ = write!(md, " {} |", percent(cell));
            }
            let _ = writeln!(md, " {} |", minutes(g.seconds));
        }
        let _ = writeln!(
            md,
            "\nAccuracy on each task just after training it (`a[i][i]`; MTL: after joint \
             training), to see whether a task was learned at all:\n"
        );
        let _ = write!(md, "| method |");
        for t in &task_columns {
            let _ = write!(md, " {t} |");
        }
        let _ = writeln!(md);
        let _ = write!(md, "|---|");
        for _ in &task_columns {
            let _ = write!(md, "---|");
        }
        let _ = writeln!(md);
        for g in &in_order {
            let _ = write!(md, "| {} |", g.method);
            for t in &task_columns {
                let cell = g
                    .tasks
                    .iter()
                    .position(|x| x == t)
                    .and_then(|i| g.just_trained.get(i).copied().flatten());
                let _ = write!(md, " {} |", percent(cell));
            }
            let _ = writeln!(md);
        }
        let tasks: BTreeSet<String> = task_columns.iter().cloned().collect();
        let runs: Vec<&RunRecord> = in_order
            .iter()
            .flat_map(|g| g.runs.iter().map(|&i| &records[i]))
            .collect();
        let caveats = caveats_for(&tasks, &runs);
        if !caveats.is_empty() {
            let _ = writeln!(md, "\n**Data caveats for these numbers:**\n");
            for c in caveats {
                let _ = writeln!(md, "- {c}");
            }
        }
        let _ = writeln!(md);
    }
    paper_section(&mut md);
    runs_section(&mut md, records, groups);
    reproduce_section(&mut md, records, groups, command);
    md
}

fn minutes(s: Option<Spread>) -> String {
    match s {
        None => "–".to_string(),
        Some(s) => match s.sd {
            Some(sd) => format!("{:.1} ± {:.1} min", s.mean / 60.0, sd / 60.0),
            None => format!("{:.1} min", s.mean / 60.0),
        },
    }
}

/// The last path component of a model origin (the GGUF file or model folder).
fn model_name(origin: &str) -> String {
    Path::new(origin)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| origin.to_string())
}

fn paper_section(md: &mut String) {
    let _ = writeln!(
        md,
        "## The paper's numbers (an ordering check, not a level check)\n"
    );
    let _ = writeln!(
        md,
        "The Recurrent-KIF paper reports, for T5-large averaged over three task orders (OP / \
         BWT, %; second-hand transcription, `METHOD.md` §10). Our runs use a far smaller \
         model, a reduced protocol and one task order, so only the ordering of methods is \
         comparable (SeqLoRA forgets most, MTL is the upper bound, Recurrent-KIF above TaSL \
         and SeqLoRA), not the levels.\n"
    );
    let _ = writeln!(
        md,
        "| method | Standard CL | Long Sequence |\n|---|---|---|"
    );
    for (m, s, l) in PAPER {
        let _ = writeln!(md, "| {m} | {s} | {l} |");
    }
    let _ = writeln!(md);
}

fn runs_section(md: &mut String, records: &[RunRecord], groups: &[ResultGroup]) {
    let _ = writeln!(md, "## Runs\n");
    let _ = writeln!(
        md,
        "| order | method | seed | OP | BWT | time | run folder | config |\n|---|---|---|---|---|---|---|---|"
    );
    for g in groups {
        for &i in &g.runs {
            let r = &records[i];
            let one =
                |v: Option<f64>| v.map_or_else(|| "–".to_string(), |x| one_decimal(x * 100.0));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.1} min | `{}` | [{}](configs/{}) |",
                r.order,
                r.method,
                r.seed,
                one(r.metrics.op.value),
                one(r.metrics.bwt.value),
                r.seconds / 60.0,
                r.dir.display(),
                config_file_name(g),
                config_file_name(g)
            );
        }
    }
    let _ = writeln!(md);
}

fn reproduce_section(
    md: &mut String,
    records: &[RunRecord],
    groups: &[ResultGroup],
    command: Option<&str>,
) {
    let _ = writeln!(md, "## Reproduce\n");
    if let Some(c) = command {
        // One command per line, each indented as a code block.
        let block: Vec<&str> = c.lines().collect();
        let _ = writeln!(
            md,
            "The runs were made with:\n\n    {}\n",
            block.join("\n    ")
        );
    }
    let _ = writeln!(
        md,
        "Each group's exact config is in `configs/` (paths as on the machine that ran it); \
         one run again:\n"
    );
    for g in groups {
        let seeds: Vec<String> = g
            .runs
            .iter()
            .map(|&i| records[i].seed.to_string())
            .collect();
        let _ = writeln!(
            md,
            "    rkif run --config results/configs/{} --method {} --seed {} --out runs/{}/seed-{}",
            config_file_name(g),
            g.method,
            seeds.first().map(String::as_str).unwrap_or("1"),
            g.order,
            seeds.first().map(String::as_str).unwrap_or("1"),
        );
    }
    let _ = writeln!(
        md,
        "\nand this folder again from the run folders: `rkif results <run or sweep folders> \
         --out results`.\n"
    );
}

/// What [`write_results`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultsWritten {
    pub runs: usize,
    pub groups: usize,
}

/// Writes `<out>/README.md`, `<out>/configs/` and `<out>/report/` for the runs found in
/// `paths` (see [`find_runs`]). `command` is quoted in the README; without it, the command
/// recorded in a given sweep folder's `sweep.json` is used, if any.
pub fn write_results(
    paths: &[impl AsRef<Path>],
    out: &Path,
    command: Option<&str>,
) -> Result<ResultsWritten> {
    let dirs = find_runs(paths)?;
    let all = dirs
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<Vec<_>>>()?;
    // Metrics over fewer tasks are not comparable with finished runs: listed, not tabled.
    let (records, unfinished): (Vec<RunRecord>, Vec<RunRecord>) = all
        .into_iter()
        .partition(|r| r.metrics.tasks_trained == r.metrics.tasks.len());
    if records.is_empty() {
        return Err(Error::Data(format!(
            "none of the {} run folders found is finished",
            unfinished.len()
        )));
    }
    let groups = group_runs(&records);
    let recorded = if command.is_none() {
        sweep_commands(paths)
    } else {
        None
    };
    let command = command.map(str::to_string).or(recorded);
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let configs = out.join("configs");
    fs::create_dir_all(&configs).map_err(|e| Error::io(&configs, e))?;
    for g in &groups {
        let path = configs.join(config_file_name(g));
        let mut c = g.config.clone();
        c.seed = g.seeds.first().copied().unwrap_or(0);
        crate::report::write_atomic(&path, c.to_toml()?.as_bytes())?;
    }
    let mut md = results_markdown(&records, &groups, command.as_deref());
    if !unfinished.is_empty() {
        let _ = writeln!(md, "## Unfinished runs (not in the tables)\n");
        for r in &unfinished {
            let _ = writeln!(
                md,
                "- `{}`: {} seed {}, {} of {} tasks",
                r.dir.display(),
                r.method,
                r.seed,
                r.metrics.tasks_trained,
                r.metrics.tasks.len()
            );
        }
        let _ = writeln!(md);
    }
    crate::report::write_atomic(&out.join("README.md"), md.as_bytes())?;
    write_report(&records, &out.join("report"))?;
    Ok(ResultsWritten {
        runs: records.len(),
        groups: groups.len(),
    })
}

/// The commands recorded in `sweep.json` of the given folders, one per line.
fn sweep_commands(paths: &[impl AsRef<Path>]) -> Option<String> {
    let commands: Vec<String> = paths
        .iter()
        .filter_map(|p| crate::sweep::SweepRecord::load(p.as_ref()).ok())
        .map(|r| r.command)
        .collect();
    (!commands.is_empty()).then(|| commands.join("\n"))
}

/// The viewer site of `records`, each run named `<order>-<method>-seed-<seed>`: the runs'
/// small artifacts are staged under those names and [`crate::report::site::write_site`] copies them.
/// A previous site in `site` (a folder with `runs/index.json`) is replaced.
fn write_report(records: &[RunRecord], site: &Path) -> Result<()> {
    if crate::report::site::index_path(site).is_file() {
        fs::remove_dir_all(site).map_err(|e| Error::io(site, e))?;
    }
    // Staged next to the site (same file system), removed afterwards.
    let stage_dir = site.with_extension("stage");
    if stage_dir.exists() {
        fs::remove_dir_all(&stage_dir).map_err(|e| Error::io(&stage_dir, e))?;
    }
    let written = stage_and_write(records, &stage_dir, site);
    let _ = fs::remove_dir_all(&stage_dir);
    written
}

fn stage_and_write(records: &[RunRecord], stage: &Path, site: &Path) -> Result<()> {
    let mut staged = Vec::with_capacity(records.len());
    for r in records {
        let name = format!("{}-{}-seed-{}", r.order, r.method, r.seed);
        let to = stage.join(&name);
        fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))?;
        for file in [MANIFEST_FILE, METRICS_FILE, EVENTS_FILE] {
            let from = r.dir.join(file);
            if from.is_file() {
                fs::copy(&from, to.join(file)).map_err(|e| Error::io(&from, e))?;
            }
        }
        let imp = r.dir.join(IMPORTANCE_DIR);
        if imp.is_dir() {
            let to_imp = to.join(IMPORTANCE_DIR);
            fs::create_dir_all(&to_imp).map_err(|e| Error::io(&to_imp, e))?;
            for entry in fs::read_dir(&imp).map_err(|e| Error::io(&imp, e))? {
                let entry = entry.map_err(|e| Error::io(&imp, e))?;
                if entry.path().is_file() {
                    fs::copy(entry.path(), to_imp.join(entry.file_name()))
                        .map_err(|e| Error::io(entry.path(), e))?;
                }
            }
        }
        staged.push(to);
    }
    crate::report::site::write_site(&staged, site)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::AccuracyMatrix;

    fn record(method: &str, seed: u64, rows: &[&[f64]], tasks: &[&str]) -> RunRecord {
        let names: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
        let mut m = AccuracyMatrix::new(names).unwrap();
        for (j, row) in rows.iter().enumerate() {
            for (i, &a) in row.iter().enumerate() {
                m.set(j, i, a).unwrap();
            }
        }
        m.mark_trained(rows.len()).unwrap();
        RunRecord {
            dir: PathBuf::from(format!("runs/{method}/seed-{seed}")),
            method: method.into(),
            order: "o-1".into(),
            seed,
            model: "/m/SmolLM2.gguf".into(),
            metrics: MetricsFile::from_matrix(&m),
            seconds: 60.0 * seed as f64,
            config: RunConfig::default(),
        }
    }

    #[test]
    fn spread_is_mean_and_sample_sd() {
        let s = Spread::of(&[0.5, 0.7]).unwrap();
        assert!((s.mean - 0.6).abs() < 1e-12);
        // sqrt(((-0.1)^2 + 0.1^2) / 1) = 0.1414...
        assert!((s.sd.unwrap() - 0.02f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.percent(), "60.0 ± 14.1");
        assert_eq!(Spread::of(&[0.25]).unwrap().percent(), "25.0");
        assert!(Spread::of(&[]).is_none());
        assert_eq!(Spread::of(&[-1e-17]).unwrap().percent(), "0.0");
    }

    #[test]
    fn groups_average_seeds_and_the_table_shows_them() {
        let tasks = ["dbpedia", "yahoo"];
        // seq-lora seed 1: a = [[0.8, -], [0.2, 0.6]] -> OP 0.4, BWT -0.6.
        // seq-lora seed 2: a = [[0.9, -], [0.5, 0.7]] -> OP 0.6, BWT -0.4.
        let records = vec![
            record("rkif", 1, &[&[0.8], &[0.7, 0.6]], &tasks),
            record("seq-lora", 2, &[&[0.9], &[0.5, 0.7]], &tasks),
            record("seq-lora", 1, &[&[0.8], &[0.2, 0.6]], &tasks),
        ];
        let groups = group_runs(&records);
        assert_eq!(groups.len(), 2);
        let seq = &groups[0];
        assert_eq!(seq.method, "seq-lora");
        assert_eq!(seq.seeds, vec![1, 2]);
        assert_eq!(seq.op.unwrap().percent(), "50.0 ± 14.1");
        assert_eq!(seq.bwt.unwrap().percent(), "-50.0 ± 14.1");
        assert_eq!(seq.final_accuracy[0].unwrap().percent(), "35.0 ± 21.2");
        let md = results_markdown(&records, &groups, Some("rkif sweep --seed 1,2"));
        assert!(
            md.contains("| seq-lora | 1, 2 | 50.0 ± 14.1 | -50.0 ± 14.1 | 35.0 ± 21.2 | 65.0 ± 7.1 | 1.5 ± 0.7 min |"),
            "{md}"
        );
        assert!(
            md.contains("| rkif | 1 | 65.0 | -10.0 | 70.0 | 60.0 | 1.0 min |"),
            "{md}"
        );
        assert!(md.contains("dbpedia: the test set is rebuilt"));
        assert!(md.contains("yahoo: the test set is a stand-in"));
        assert!(!md.contains("SuperNI: in the source"));
        assert!(md.contains("78.4 / −2.8") && md.contains("ordering"));
        assert!(md.contains("    rkif sweep --seed 1,2"));
        assert!(md.contains("SmolLM2.gguf"));
    }

    #[test]
    fn different_settings_are_different_rows() {
        let mut a = record("rkif", 1, &[&[0.5]], &["cb"]);
        let b = record("rkif", 2, &[&[0.7]], &["cb"]);
        a.config.optim.lr = 1.0;
        let groups = group_runs(&[a, b]);
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().all(|g| g.seeds.len() == 1));
    }

    #[test]
    fn superni_tasks_carry_the_label_note() {
        let tasks: BTreeSet<String> = ["task363".to_string()].into();
        let c = caveats_for(&tasks, &[]);
        assert_eq!(c, vec![SUPERNI_CAVEAT.to_string()]);
        assert!(!is_superni_task("task"));
        assert!(!is_superni_task("tasks1"));
    }

    #[test]
    fn a_started_run_without_metrics_is_listed_as_unfinished() -> Result<()> {
        let tmp = tempfile::tempdir().unwrap();
        let save = |name: &str, rows: Option<&[&[f64]]>| -> Result<()> {
            let run = RunDir::create(tmp.path().join(name))?;
            let mut m = crate::report::Manifest::new(name, name, "cpu", 1, "unix:0");
            m.config = serde_json::to_value(RunConfig::default()).unwrap();
            if let serde_json::Value::Object(map) = &mut m.config {
                map.insert(
                    "run".into(),
                    serde_json::json!({"tasks": ["a", "b"], "order": "o"}),
                );
            }
            run.save_manifest(&m)?;
            if let Some(rows) = rows {
                run.save_metrics(&record(name, 1, rows, &["a", "b"]).metrics)?;
            }
            Ok(())
        };
        save("seq-lora", Some(&[&[0.5], &[0.25, 0.75]]))?;
        save("rkif", None)?;
        let out = tmp.path().join("results");
        let written = write_results(&[tmp.path()], &out, Some("rkif sweep a\nrkif sweep b"))?;
        assert_eq!(written, ResultsWritten { runs: 1, groups: 1 });
        let md = fs::read_to_string(out.join("README.md")).unwrap();
        assert!(
            md.contains("    rkif sweep a\n    rkif sweep b\n"),
            "each command line is indented as code: {md}"
        );
        let md = fs::read_to_string(out.join("README.md")).unwrap();
        assert!(
            md.contains("| seq-lora | 42 | 50.0 | -25.0 | 25.0 | 75.0 |"),
            "{md}"
        );
        assert!(md.contains("rkif seed 42, 0 of 2 tasks"), "{md}");
        assert!(out
            .join("report/runs/o-seq-lora-seed-42/metrics.json")
            .is_file());
        Ok(())
    }

    #[test]
    fn no_runs_is_an_error_naming_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let err = find_runs(&[tmp.path()]).unwrap_err().to_string();
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    }
}
