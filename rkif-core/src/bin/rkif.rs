//! The `rkif` command line: whole continual-learning runs, data checks, the embedded base
//! model's recipe.
//!
//! `rkif run` with no arguments trains SeqLoRA and Recurrent-KIF on the embedded default
//! (the `rkif-mini` benchmark and base model) and prints both accuracy matrices.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use rkif_core::config::{Method, ModelSource, RunConfig};
use rkif_core::data::Benchmark;
use rkif_core::eval::AccuracyMatrix;
use rkif_core::session::{RunOutcome, Session};

#[derive(Parser)]
#[command(
    name = "rkif",
    version,
    about = "Recurrent-KIF continual learning for language models"
)]
struct Cli {
    /// CPU threads for tensor work (sets RAYON_NUM_THREADS when that is unset). One thread
    /// was measured 8x faster than two for the embedded model on a busy 2-core machine;
    /// raise it for large models on many cores.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Train one or more methods over a task sequence (default: SeqLoRA and Recurrent-KIF
    /// on the embedded rkif-mini benchmark and base model).
    Run(Box<RunArgs>),
    /// Evaluate a saved adapter (`runs/x/adapters/task-003`, PEFT layout) or the bare base
    /// model on the test sets of a benchmark's tasks; prints an accuracy table.
    Eval(Box<EvalArgs>),
    /// Train every combination of methods × task orders × seeds, one run folder each
    /// (`<out>/<order>/seed-<seed>/<method>`). Rerunning the same command skips finished
    /// runs and resumes unfinished ones.
    Sweep(Box<SweepArgs>),
    /// Summarise run folders (or sweep folders) into `<out>/README.md`, a markdown table with
    /// mean and spread over seeds, and `<out>/report/`, the viewer site of those runs.
    Results {
        /// Run folders, or folders to search for run folders (e.g. a sweep's output).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// The command that produced the runs, quoted in the README (default: the command
        /// recorded in a sweep folder's sweep.json, else the runs' configs).
        #[arg(long)]
        command: Option<String>,
    },
    /// List the benchmarks, tasks and orders of a data folder and check its files.
    Data {
        /// The benchmark folder (default: RKIF_DATA_DIR, else the embedded rkif-mini).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write a static report folder (open its index.html from a local web server) for run
    /// folders: `rkif report runs/seq-lora runs/rkif --out site/`.
    Report {
        /// Run folders.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "site")]
        out: PathBuf,
    },
    /// Rebuild the embedded base model from its recipe (bit for bit on the same CPU kernels).
    BaseModel {
        /// Output folder.
        #[arg(long, default_value = "data/base-model")]
        out: PathBuf,
    },
}

#[derive(clap::Args, Default)]
struct RunArgs {
    #[command(flatten)]
    base: BaseConfigArgs,
    /// Methods to run, each into its own run folder (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    method: Vec<String>,
    /// A task order of the benchmark (e.g. mini-1, standard-1, long-1, superni-1).
    #[arg(long)]
    order: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
    /// The root seed.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    budget: BudgetArgs,
    /// Where run folders go (one per method).
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Print the resolved config as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(clap::Args, Default)]
struct EvalArgs {
    /// The adapter folder (adapter_config.json + adapter_model.safetensors). Without it, the
    /// bare base model is evaluated. An adapter inside a run folder takes that run's config
    /// (model, benchmark, order, caps) unless --config or --preset is given.
    adapter: Option<PathBuf>,
    #[command(flatten)]
    base: BaseConfigArgs,
    /// Tasks to evaluate, in this order (repeat or comma-separate); overrides --order.
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// A task order of the benchmark (e.g. mini-1, standard-1).
    #[arg(long)]
    order: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
    /// The root seed (chooses the capped test subset).
    #[arg(long)]
    seed: Option<u64>,
    /// At most this many test examples per task.
    #[arg(long)]
    max_eval: Option<usize>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SweepArgs {
    #[command(flatten)]
    base: BaseConfigArgs,
    /// Methods (repeat or comma-separate; default: seq-lora,rkif).
    #[arg(long, value_delimiter = ',')]
    method: Vec<String>,
    /// Task orders of the benchmark (repeat or comma-separate; default: the config's order,
    /// else the benchmark's first).
    #[arg(long, value_delimiter = ',')]
    order: Vec<String>,
    /// Root seeds (repeat or comma-separate; default: the config's seed).
    #[arg(long, value_delimiter = ',')]
    seed: Vec<u64>,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    budget: BudgetArgs,
    /// The sweep folder.
    #[arg(long, default_value = "sweeps")]
    out: PathBuf,
    /// Check the settings against existing run folders and print each run's state; train
    /// nothing and write nothing.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    // Before any tensor is allocated; RKIF_MALLOC=default opts out (see `allocator`).
    rkif_core::allocator::keep_freed_memory();
    let cli = Cli::parse();
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Before any tensor work: candle and rayon read it once.
        std::env::set_var("RAYON_NUM_THREADS", cli.threads.max(1).to_string());
    }
    let result = match cli.command.unwrap_or(Command::Run(Box::new(RunArgs {
        out: PathBuf::from("runs"),
        ..RunArgs::default()
    }))) {
        Command::Run(args) => run(*args),
        Command::Eval(args) => eval(*args),
        Command::Sweep(args) => sweep(*args),
        Command::Results { runs, out, command } => results(&runs, &out, command.as_deref()),
        Command::Data { data_dir } => data(data_dir),
        Command::BaseModel { out } => base_model(&out),
        Command::Report { runs, out } => report(&runs, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("rkif: {e}");
            ExitCode::from(INTERRUPTED_EXIT)
        }
        Err(e) => {
            eprintln!("rkif: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The exit status after Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED_EXIT: u8 = 130;

/// A run stopped by Ctrl-C at a safe point, its checkpoint written.
#[derive(Debug)]
struct Interrupted {
    run_dir: PathBuf,
    task: usize,
    step: usize,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let command: Vec<String> = std::env::args().collect();
        write!(
            f,
            "interrupted in task {} after step {}; checkpoint saved in {}.\n\
             To resume, run the same command again: {}",
            self.task,
            self.step,
            self.run_dir.display(),
            command.join(" ")
        )
    }
}

impl std::error::Error for Interrupted {}

/// A flag that the first Ctrl-C sets (the run stops at its next safe point, after a
/// checkpoint); a second Ctrl-C ends the process at once.
fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>, ctrlc::Error> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(INTERRUPTED_EXIT));
        }
        eprintln!("\nrkif: stopping at the next safe point (Ctrl-C again to quit at once)");
    })?;
    Ok(flag)
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Where the settings start from: the flags `run`, `eval` and `sweep` share.
#[derive(clap::Args, Clone, Default)]
struct BaseConfigArgs {
    /// A TOML config file (see `rkif run --print-config` for every key; `eval` uses its
    /// model, data and eval settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A preset: reference-t5, reference-llama, quick, cpu-smollm2 (default: quick; for `eval`
    /// of an adapter inside a run folder, that run's config).
    #[arg(long)]
    preset: Option<String>,
}

impl BaseConfigArgs {
    /// The config file or preset asked for, `None` when neither was given.
    fn load(&self) -> rkif_core::Result<Option<RunConfig>> {
        match (&self.config, &self.preset) {
            (Some(path), _) => RunConfig::from_toml_file(path).map(Some),
            (None, Some(p)) => RunConfig::preset(p).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// How much of each task is trained on and tested: the flags `run` and `sweep` share.
#[derive(clap::Args, Clone, Default)]
struct BudgetArgs {
    /// At most this many training examples per task.
    #[arg(long)]
    max_train: Option<usize>,
    /// At most this many test examples per task.
    #[arg(long)]
    max_eval: Option<usize>,
    /// Epochs per task.
    #[arg(long)]
    epochs: Option<usize>,
}

impl BudgetArgs {
    fn apply(&self, cfg: &mut RunConfig) {
        if let Some(n) = self.max_train {
            cfg.data.max_train_per_task = Some(n);
        }
        if let Some(n) = self.max_eval {
            cfg.eval.max_examples_per_task = Some(n);
        }
        if let Some(n) = self.epochs {
            cfg.optim.epochs = n;
        }
    }
}

/// Where the benchmark and the model come from: the flags `run`, `eval` and `sweep` share.
#[derive(clap::Args, Clone, Default)]
struct SourceArgs {
    /// The benchmark folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A local Hugging Face model folder.
    #[arg(long, conflicts_with = "gguf")]
    model_dir: Option<PathBuf>,
    /// A GGUF model file (dequantised to f32).
    #[arg(long)]
    gguf: Option<PathBuf>,
}

impl SourceArgs {
    /// Override the config's benchmark folder and model source with the given flags.
    fn apply(&self, cfg: &mut RunConfig) {
        if let Some(d) = &self.data_dir {
            cfg.data.dir = Some(d.clone());
        }
        if let Some(d) = &self.model_dir {
            cfg.model.source = ModelSource::Local { path: d.clone() };
        }
        if let Some(g) = &self.gguf {
            cfg.model.source = ModelSource::Gguf { path: g.clone() };
        }
    }
}

fn resolve_config(args: &RunArgs) -> rkif_core::Result<RunConfig> {
    let mut cfg = match args.base.load()? {
        Some(cfg) => cfg,
        None => RunConfig::preset("quick")?,
    };
    if let Some(o) = &args.order {
        cfg.data.order = Some(o.clone());
    }
    args.source.apply(&mut cfg);
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    args.budget.apply(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

fn run(args: RunArgs) -> CliResult {
    let base = resolve_config(&args)?;
    let methods: Vec<Method> = if args.method.is_empty() {
        vec![Method::SeqLora, Method::Rkif]
    } else {
        args.method
            .iter()
            .map(|m| Method::parse(m.trim()))
            .collect::<rkif_core::Result<_>>()?
    };
    if args.print_config {
        print!("{}", base.to_toml()?);
        return Ok(());
    }
    let stop = stop_on_ctrl_c()?;
    let mut results = Vec::new();
    for method in methods {
        let mut cfg = base.clone();
        cfg.method = method;
        let dir = args.out.join(method.name());
        let started = Instant::now();
        let matrix = run_one(cfg, &dir, &stop)?;
        results.push((method, matrix, started.elapsed().as_secs_f64(), dir));
    }
    println!();
    print_summary(&results);
    let dirs: Vec<&PathBuf> = results.iter().map(|r| &r.3).collect();
    let site = args.out.join("report");
    rkif_core::report::site::write_site(&dirs, &site)?;
    println!(
        "\nreport: {} (serve it, e.g. `python3 -m http.server -d {}`, and open index.html)",
        site.display(),
        site.display()
    );
    Ok(())
}

/// Train one method into `dir`, resuming it when it holds an unfinished run. Setting
/// `stop` ends it at the next safe point with an [`Interrupted`] error.
fn run_one(
    cfg: RunConfig,
    dir: &Path,
    stop: &Arc<AtomicBool>,
) -> Result<AccuracyMatrix, Box<dyn std::error::Error>> {
    let mut session = if dir.join("manifest.json").is_file() {
        eprintln!("{}: resuming", dir.display());
        Session::resume(dir)?
    } else {
        Session::with_run_dir(cfg, dir)?
    };
    if session.is_finished() {
        eprintln!("{}: already finished", dir.display());
        return Ok(session.matrix().clone());
    }
    let method = session.config().method.name();
    let total: usize = (session.next_task()..session.tasks().len())
        .map(|i| {
            rkif_core::session::planned_steps(session.config(), session.tasks()[i].train.len())
        })
        .sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} steps {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(method.to_string());
    let names = session.task_names();
    let hook_bar = bar.clone();
    session.set_step_hook(Box::new(move |task, _step, _planned, loss| {
        hook_bar.inc(1);
        hook_bar.set_message(format!("task {task} loss {loss:.3}"));
    }));
    session.set_stop_flag(stop.clone());
    let outcome = session.run_all(|summary, row| {
        let acc: Vec<String> = row
            .accuracy
            .iter()
            .zip(&names)
            .filter_map(|(a, n)| a.map(|a| format!("{n} {:.1}", a * 100.0)))
            .collect();
        let skipped = match summary.skipped_steps {
            0 => String::new(),
            n => format!(" ({n} skipped: non-finite values)"),
        };
        bar.println(format!(
            "{method}: task {} ({}) {} steps{skipped}, {:.1}s; accuracy: {}",
            summary.task,
            summary.name,
            summary.steps,
            summary.seconds,
            acc.join(", ")
        ));
    })?;
    bar.finish_and_clear();
    if let RunOutcome::Interrupted { task, step, .. } = outcome {
        return Err(Box::new(Interrupted {
            run_dir: dir.to_path_buf(),
            task,
            step,
        }));
    }
    Ok(session.matrix().clone())
}

fn sweep(args: SweepArgs) -> CliResult {
    use rkif_core::sweep::{check_saved_config, run_status, RunStatus, SweepGrid, SweepRecord};
    let run_args = RunArgs {
        base: args.base.clone(),
        source: args.source.clone(),
        budget: args.budget.clone(),
        order: args.order.first().cloned(),
        ..RunArgs::default()
    };
    let base = resolve_config(&run_args)?;
    let methods = if args.method.is_empty() {
        vec![Method::SeqLora, Method::Rkif]
    } else {
        args.method
            .iter()
            .map(|m| Method::parse(m.trim()))
            .collect::<rkif_core::Result<_>>()?
    };
    let orders = if args.order.is_empty() {
        vec![default_order(&base)?]
    } else {
        args.order.iter().map(|o| o.trim().to_string()).collect()
    };
    let seeds = if args.seed.is_empty() {
        vec![base.seed]
    } else {
        args.seed.clone()
    };
    let grid = SweepGrid {
        methods,
        orders,
        seeds,
    };
    grid.validate()?;
    let command = command_line();
    let runs = grid.runs(&args.out);
    // Refuse a rerun with other settings before training anything.
    for r in &runs {
        if r.dir.join("manifest.json").is_file() {
            check_saved_config(&r.dir, &r.config(&base))?;
        }
    }
    if args.dry_run {
        for r in &runs {
            let state = match run_status(&r.dir)? {
                RunStatus::New => "new".to_string(),
                RunStatus::Unfinished { tasks_done, tasks } => {
                    format!("unfinished ({tasks_done} of {tasks} tasks)")
                }
                RunStatus::Finished { .. } => "finished".to_string(),
            };
            println!("{}: {state}", r.dir.display());
        }
        return Ok(());
    }
    std::fs::create_dir_all(&args.out).map_err(|e| rkif_core::Error::io(&args.out, e))?;
    SweepRecord::collect(&args.out, &grid, &command)?.save(&args.out)?;
    let total = runs.len();
    let stop = stop_on_ctrl_c()?;
    for (i, r) in runs.iter().enumerate() {
        let label = format!(
            "[{}/{total}] {} {} seed {}",
            i + 1,
            r.order,
            r.method.name(),
            r.seed
        );
        match run_status(&r.dir)? {
            RunStatus::Finished { .. } => {
                eprintln!("{label}: finished, skipped ({})", r.dir.display());
                continue;
            }
            RunStatus::Unfinished { tasks_done, tasks } => {
                eprintln!("{label}: resuming after {tasks_done} of {tasks} tasks");
            }
            RunStatus::New => eprintln!("{label}: starting ({})", r.dir.display()),
        }
        run_one(r.config(&base), &r.dir, &stop)?;
        SweepRecord::collect(&args.out, &grid, &command)?.save(&args.out)?;
    }
    println!();
    print_sweep_summary(&args.out, &runs)?;
    Ok(())
}

/// The config's task order, else the benchmark's first (what `rkif run` would train).
fn default_order(cfg: &RunConfig) -> rkif_core::Result<String> {
    if let Some(o) = &cfg.data.order {
        return Ok(o.clone());
    }
    let dir = match (
        &cfg.data.dir,
        std::env::var_os(rkif_core::data::DATA_DIR_ENV),
    ) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) if !d.is_empty() => PathBuf::from(d),
        _ => rkif_core::session::default_benchmark_dir(),
    };
    let bench = Benchmark::open(&dir)?;
    bench
        .orders()
        .first()
        .map(|o| o.name.clone())
        .ok_or_else(|| {
            rkif_core::Error::config(
                "data.order",
                format!("{}: the benchmark has no task order", dir.display()),
            )
        })
}

/// One line per run of a sweep: OP, BWT and train + evaluation time, from its files.
fn print_sweep_summary(out: &Path, runs: &[rkif_core::sweep::PlannedRun]) -> rkif_core::Result<()> {
    println!(
        "{:<14} {:<16} {:>5} {:>8} {:>8} {:>9}",
        "order", "method", "seed", "OP", "BWT", "time"
    );
    for r in runs {
        let record = rkif_core::results::load_run(&r.dir)?;
        let fmt =
            |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{:.1}", x * 100.0));
        println!(
            "{:<14} {:<16} {:>5} {:>8} {:>8} {:>8.0}s",
            r.order,
            r.method.name(),
            r.seed,
            fmt(record.metrics.op.value),
            fmt(record.metrics.bwt.value),
            record.seconds
        );
    }
    println!(
        "\nsweep: {} (summarise with `rkif results {} --out results`)",
        out.display(),
        out.display()
    );
    Ok(())
}

/// The command line as typed (arguments with spaces quoted), for the records.
fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 { "rkif".to_string() } else { a };
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                format!("{a:?}")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn results(runs: &[PathBuf], out: &Path, command: Option<&str>) -> CliResult {
    let written = rkif_core::results::write_results(runs, out, command)?;
    println!(
        "wrote {} ({} runs in {} groups) and {}",
        out.join("README.md").display(),
        written.runs,
        written.groups,
        out.join("report").display()
    );
    Ok(())
}

fn print_summary(results: &[(Method, AccuracyMatrix, f64, PathBuf)]) {
    for (method, m, secs, dir) in results {
        println!("{} ({:.0}s, {})", method.name(), secs, dir.display());
        let tasks = m.tasks();
        print!("  {:>10}", "after \\ on");
        for t in tasks {
            print!(" {:>9}", truncate(t, 9));
        }
        println!();
        for (j, row) in m.rows().iter().enumerate() {
            if row.iter().all(Option::is_none) {
                continue;
            }
            print!("  {:>10}", truncate(&tasks[j], 10));
            for cell in row {
                match cell {
                    Some(a) => print!(" {:>9.1}", a * 100.0),
                    None => print!(" {:>9}", "."),
                }
            }
            println!();
        }
        println!();
    }
    println!("{:<16} {:>8} {:>8}", "method", "OP", "BWT");
    for (method, m, _, _) in results {
        let metrics = m.metrics();
        let fmt =
            |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{:.1}", x * 100.0));
        println!(
            "{:<16} {:>8} {:>8}",
            method.name(),
            fmt(metrics.op.value),
            fmt(metrics.bwt.value)
        );
    }
}

/// The config `rkif eval` uses: --config or --preset, else the adapter's run, else quick;
/// then the command-line overrides.
fn resolve_eval_config(args: &EvalArgs) -> rkif_core::Result<RunConfig> {
    let run = args
        .adapter
        .as_deref()
        .and_then(rkif_core::session::run_of_adapter);
    let mut cfg = match (args.base.load()?, run) {
        (Some(cfg), _) => cfg,
        (None, Some(run)) => rkif_core::session::run_config(&run)?,
        (None, None) => RunConfig::preset("quick")?,
    };
    if let Some(o) = &args.order {
        cfg.data.order = Some(o.clone());
        cfg.data.tasks = None;
    }
    if !args.tasks.is_empty() {
        cfg.data.tasks = Some(args.tasks.iter().map(|t| t.trim().to_string()).collect());
    }
    args.source.apply(&mut cfg);
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(n) = args.max_eval {
        cfg.eval.max_examples_per_task = Some(n);
    }
    cfg.validate()?;
    Ok(cfg)
}

fn eval(args: EvalArgs) -> CliResult {
    let cfg = resolve_eval_config(&args)?;
    let result = rkif_core::session::evaluate_adapter(cfg, args.adapter.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    let what = match &result.adapter {
        Some(a) => format!("adapter {}", a.display()),
        None => "the bare base model".to_string(),
    };
    println!(
        "{what} on {} ({}), {:.0}s",
        result.order, result.model, result.seconds
    );
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{:.1}", x * 100.0));
    println!("  {:<24} {:>9} {:>10}", "task", "accuracy%", "correct");
    for t in &result.tasks {
        println!(
            "  {:<24} {:>9} {:>10}",
            truncate(&t.task, 24),
            pct(t.accuracy),
            format!("{}/{}", t.correct, t.examples)
        );
    }
    println!("  {:<24} {:>9}", "mean", pct(result.mean_accuracy));
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn data(dir: Option<PathBuf>) -> CliResult {
    let dir = match dir.or_else(|| std::env::var_os("RKIF_DATA_DIR").map(PathBuf::from)) {
        Some(d) => d,
        None => rkif_core::session::default_benchmark_dir(),
    };
    let bench = Benchmark::open(&dir)?;
    print!("{bench}");
    Ok(())
}

fn report(runs: &[PathBuf], out: &Path) -> CliResult {
    let index = rkif_core::report::site::write_site(runs, out)?;
    println!(
        "wrote {} ({} runs); serve it, e.g. `python3 -m http.server -d {}`, and open index.html",
        out.display(),
        index.runs.len(),
        out.display()
    );
    Ok(())
}

fn base_model(out: &Path) -> CliResult {
    let recipe = rkif_core::model::embedded::Recipe::default();
    let started = Instant::now();
    let loss = rkif_core::model::embedded::build(&recipe, out, |step, loss| {
        eprintln!("step {step:5}  loss {loss:.4}");
    })?;
    println!(
        "wrote {} (final loss {loss:.4}, {:.0}s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
