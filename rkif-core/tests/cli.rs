//! The `rkif` command as a user runs it: a run killed with SIGKILL part-way resumes to the
//! same `metrics.json` as an uninterrupted run; bad configs give errors naming the field.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rkif_core::model::embedded::{build, Recipe};

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
    write_config_with(dir, model, 48)
}

fn write_config_with(dir: &Path, model: &Path, max_train: usize) -> PathBuf {
    let text = format!(
        r#"method = "rkif"
seed = 3
[model]
device = "cpu"
max_source_len = 96
max_target_len = 8
[model.source]
kind = "local"
path = "{}"
[model.lora]
rank = 4
alpha = 16.0
dropout = 0.05
targets = ["q_proj", "v_proj"]
[optim]
micro_batch = 4
grad_accum = 2
epochs = 1
warmup_steps = 1
lr = 0.001
[kif]
inner_steps = 2
outer_steps = 1
memory_batch = 4
memory_fraction = 0.25
[eval]
max_examples_per_task = 4
max_new_tokens = 2
val_every = 2
[data]
max_train_per_task = {}
dir = "{}"
"#,
        model.display(),
        max_train,
        rkif_core::session::default_benchmark_dir().display()
    );
    let path = dir.join(format!("run-{max_train}.toml"));
    std::fs::write(&path, text).expect("config");
    path
}

#[test]
fn killed_run_resumes_to_the_same_metrics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model");
    tiny_model(&model);
    let config = write_config(tmp.path(), &model);
    let run = |out: &Path| {
        rkif()
            .args(["run", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(out)
            .output()
            .expect("rkif runs")
    };

    let whole = tmp.path().join("whole");
    let out = run(&whole);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = std::fs::read_to_string(whole.join("rkif/metrics.json")).expect("metrics");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OP") && stdout.contains("BWT"), "{stdout}");

    // Start again elsewhere, kill -9 once the first task's checkpoint exists.
    let killed = tmp.path().join("killed");
    let mut child = rkif()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&killed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let state = killed.join("rkif/checkpoint/state.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !state.is_file() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("run ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let out = run(&killed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    let resumed = std::fs::read_to_string(killed.join("rkif/metrics.json")).expect("metrics");
    assert_eq!(resumed, expected);
    // A finished run is not redone.
    let out = run(&killed);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already finished"));
}

#[test]
fn bad_config_names_the_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, "[kif]\nquantile = 2.0\n").expect("write");
    let out = rkif()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("rkif runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kif.quantile"), "{err}");
    std::fs::write(&path, "[optim]\nlearning_rate = 2.0\n").expect("write");
    let out = rkif()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("rkif runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("learning_rate"),
        "{err}"
    );
}

#[test]
fn ctrl_c_saves_mid_task_and_a_rerun_resumes_to_the_same_metrics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model");
    tiny_model(&model);
    // Long enough tasks (20 steps) that the signal lands inside one.
    let config = write_config_with(tmp.path(), &model, 160);
    let run = |out: &Path| {
        rkif()
            .args(["run", "--method", "rkif", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(out)
            .output()
            .expect("rkif runs")
    };
    let whole = tmp.path().join("whole");
    let out = run(&whole);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = std::fs::read_to_string(whole.join("rkif/metrics.json")).expect("metrics");

    let stopped = tmp.path().join("stopped");
    let child = rkif()
        .args(["run", "--method", "rkif", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&stopped)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // SIGINT once the second task has taken a step.
    let events = stopped.join("rkif/events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if text.contains(r#""kind":"step","task":1"#) {
            break;
        }
        assert!(Instant::now() < deadline, "the second task never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("To resume, run the same command again"),
        "{stderr}"
    );
    let state = std::fs::read_to_string(stopped.join("rkif/checkpoint/state.json"))
        .expect("checkpoint state");
    let state: serde_json::Value = serde_json::from_str(&state).expect("json");
    assert!(
        state["mid_task"]
            .as_str()
            .is_some_and(|m| m.starts_with("task-1-")),
        "expected a mid-task checkpoint of task 1: {state}"
    );

    let out = run(&stopped);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    let resumed = std::fs::read_to_string(stopped.join("rkif/metrics.json")).expect("metrics");
    assert_eq!(resumed, expected);
}

#[test]
fn eval_of_a_saved_adapter_matches_the_runs_last_row() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model");
    tiny_model(&model);
    let config = write_config(tmp.path(), &model);
    let out_dir = tmp.path().join("runs");
    let out = rkif()
        .args(["run", "--method", "seq-lora", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("rkif runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = out_dir.join("seq-lora");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).expect("metrics"))
            .expect("json");
    let rows = metrics["accuracy"].as_array().expect("matrix");
    let last = rows.len() - 1;

    // The last adapter, with the run's own config (found from the adapter's folder), on
    // the same capped test subsets: exactly the last row of the run's accuracy matrix.
    let adapter = run.join(format!("adapters/task-{last:03}"));
    let out = rkif()
        .arg("eval")
        .arg(&adapter)
        .arg("--json")
        .output()
        .expect("rkif eval");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).expect("eval json");
    let accuracy: Vec<serde_json::Value> = eval["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["accuracy"].clone())
        .collect();
    assert_eq!(&accuracy, rows[last].as_array().expect("last row"));
    assert!(eval["tasks"][0]["examples"] == 4, "{eval}");

    // The bare base model on two named tasks, as a table.
    let names: Vec<String> = metrics["tasks"]
        .as_array()
        .expect("task names")
        .iter()
        .map(|t| t.as_str().expect("name").to_string())
        .collect();
    let out = rkif()
        .args(["eval", "--config"])
        .arg(&config)
        .args([
            "--tasks",
            &format!("{},{}", names[1], names[0]),
            "--max-eval",
            "3",
        ])
        .output()
        .expect("rkif eval");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the bare base model"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[2].trim_start().starts_with(&names[1]), "{stdout}");
    assert!(lines[3].trim_start().starts_with(&names[0]), "{stdout}");
    assert!(lines[2].trim_end().ends_with("/3"), "{stdout}");
    assert!(stdout.contains("mean"), "{stdout}");

    // A folder that is not an adapter is an error naming the file.
    let out = rkif().arg("eval").arg(&run).output().expect("rkif eval");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("adapter_config.json"),
        "{stderr}"
    );
}
