//! `rkif sweep` and `rkif results` as a user runs them, on the embedded rkif-mini benchmark
//! with a tiny base model and tiny caps: a killed sweep resumes (the finished run is not
//! redone, the interrupted one resumes), a finished sweep redoes nothing, a rerun with other
//! settings is refused, and the results table shows the numbers of the runs' metrics.json.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use rkif_core::config::RunConfig;
use rkif_core::model::embedded::{build, Recipe};
use rkif_core::report::MetricsFile;
use rkif_core::results::one_decimal;
use rkif_core::sweep::{RunStatus, SweepRecord};

fn rkif() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rkif"))
}

fn tiny_model(dir: &Path) {
    let recipe = Recipe {
        hidden_size: 32,
        intermediate_size: 64,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        steps: 20,
        batch: 8,
        documents: 200,
        warmup: 4,
        ..Recipe::default()
    };
    build(&recipe, dir, |_, _| {}).expect("tiny model");
}

fn write_config(dir: &Path, model: &Path) -> PathBuf {
    let text = format!(
        r#"seed = 3
[model]
max_source_len = 64
max_target_len = 4
[model.source]
kind = "local"
path = "{}"
[model.lora]
rank = 4
alpha = 16.0
targets = ["q_proj", "v_proj"]
[optim]
micro_batch = 4
grad_accum = 1
epochs = 1
warmup_steps = 1
lr = 0.001
[kif]
inner_steps = 2
outer_steps = 1
memory_batch = 2
memory_fraction = 0.25
[eval]
max_examples_per_task = 4
max_new_tokens = 2
select = "last"
[data]
max_train_per_task = 16
dir = "{}"
"#,
        model.display(),
        rkif_core::session::default_benchmark_dir().display()
    );
    let path = dir.join("sweep.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn sweep(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = rkif();
    c.args(["sweep", "--config"])
        .arg(config)
        .args([
            "--method",
            "seq-lora,rkif",
            "--order",
            "mini-1",
            "--seed",
            "1,2",
        ])
        .args(extra)
        .arg("--out")
        .arg(out);
    c
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

fn metrics(dir: &Path) -> MetricsFile {
    rkif_core::report::read_json(&dir.join("metrics.json")).expect("metrics.json")
}

#[test]
fn killed_sweep_resumes_finished_runs_are_kept_and_results_match_metrics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model");
    tiny_model(&model);
    let config = write_config(tmp.path(), &model);
    let out = tmp.path().join("sweep");
    let run_dir =
        |seed: u64, method: &str| out.join("mini-1").join(format!("seed-{seed}")).join(method);

    // Kill the sweep (SIGKILL) once the second run has checkpointed its first task.
    let mut child = sweep(&config, &out, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let second = run_dir(1, "rkif").join("checkpoint/state.json");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !second.is_file() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sweep ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let first_metrics = run_dir(1, "seq-lora").join("metrics.json");
    let first_time = mtime(&first_metrics);
    let first_manifest = mtime(&run_dir(1, "seq-lora").join("manifest.json"));

    // The rerun skips the finished run, resumes the killed one and does the rest.
    let stderr = ok(&sweep(&config, &out, &[]).output().expect("sweep"));
    assert!(
        stderr.contains("mini-1 seq-lora seed 1: finished, skipped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("mini-1 rkif seed 1: resuming after"),
        "{stderr}"
    );
    assert!(stderr.contains("mini-1 rkif seed 2: starting"), "{stderr}");
    assert_eq!(
        mtime(&first_metrics),
        first_time,
        "a finished run was redone"
    );
    assert_eq!(
        mtime(&run_dir(1, "seq-lora").join("manifest.json")),
        first_manifest
    );
    let record = SweepRecord::load(&out).expect("sweep.json");
    assert_eq!(record.runs.len(), 4);
    for r in &record.runs {
        assert_eq!(r.status, RunStatus::Finished { tasks: 4 }, "{}", r.dir);
        assert_eq!(metrics(&out.join(&r.dir)).tasks_trained, 4);
    }
    assert!(record.command.starts_with("rkif sweep --config"));

    // A finished sweep redoes nothing.
    let times: Vec<SystemTime> = record
        .runs
        .iter()
        .map(|r| mtime(&out.join(&r.dir).join("metrics.json")))
        .collect();
    let stderr = ok(&sweep(&config, &out, &[]).output().expect("sweep"));
    assert_eq!(stderr.matches("finished, skipped").count(), 4, "{stderr}");
    let again: Vec<SystemTime> = record
        .runs
        .iter()
        .map(|r| mtime(&out.join(&r.dir).join("metrics.json")))
        .collect();
    assert_eq!(again, times);

    // A dry run reports the states and trains nothing.
    let dry = sweep(&config, &out, &["--dry-run"])
        .output()
        .expect("sweep");
    let listing = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(listing.matches(": finished").count(), 4, "{listing}");

    // Other settings over the same folder are refused, naming the key.
    let refused = sweep(&config, &out, &["--max-train", "12"])
        .output()
        .expect("sweep");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("data.max_train_per_task"),
        "{err}"
    );

    // The results table carries each group's numbers from metrics.json.
    let results = tmp.path().join("results");
    let o = rkif()
        .arg("results")
        .arg(&out)
        .arg("--out")
        .arg(&results)
        .output()
        .expect("results");
    ok(&o);
    let md = std::fs::read_to_string(results.join("README.md")).expect("README.md");
    for method in ["seq-lora", "rkif"] {
        let runs: Vec<MetricsFile> = [1, 2]
            .iter()
            .map(|&s| metrics(&run_dir(s, method)))
            .collect();
        let op: Vec<f64> = runs
            .iter()
            .map(|m| m.op.value.expect("op") * 100.0)
            .collect();
        let bwt: Vec<f64> = runs
            .iter()
            .map(|m| m.bwt.value.expect("bwt") * 100.0)
            .collect();
        let cell = |v: &[f64]| {
            let mean = (v[0] + v[1]) / 2.0;
            let sd = ((v[0] - mean).powi(2) + (v[1] - mean).powi(2)).sqrt();
            format!("{} ± {sd:.1}", one_decimal(mean))
        };
        let row = format!("| {method} | 1, 2 | {} | {} |", cell(&op), cell(&bwt));
        assert!(md.contains(&row), "missing `{row}` in\n{md}");
        // Per run, too.
        for (seed, m) in [1, 2].iter().zip(&runs) {
            let line = format!(
                "| mini-1 | {method} | {seed} | {} | {} |",
                one_decimal(m.op.value.expect("op") * 100.0),
                one_decimal(m.bwt.value.expect("bwt") * 100.0)
            );
            assert!(md.contains(&line), "missing `{line}` in\n{md}");
        }
    }
    assert!(md.contains("rkif sweep --config"), "{md}");
    // The config of each group reads back as a config.
    let cfg = RunConfig::from_toml_file(&results.join("configs/mini-1-rkif.toml")).expect("toml");
    assert_eq!(cfg.data.max_train_per_task, Some(16));
    // The site lists every run under a name that says what it is; no adapters copied.
    let index =
        std::fs::read_to_string(results.join("report/runs/index.json")).expect("index.json");
    for name in [
        "mini-1-seq-lora-seed-1",
        "mini-1-seq-lora-seed-2",
        "mini-1-rkif-seed-1",
        "mini-1-rkif-seed-2",
    ] {
        assert!(index.contains(name), "{index}");
        assert!(results
            .join("report/runs")
            .join(name)
            .join("metrics.json")
            .is_file());
        assert!(!results
            .join("report/runs")
            .join(name)
            .join("adapters")
            .exists());
    }
}
