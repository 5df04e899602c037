//! Every notebook in `notebooks/` executed headless with the evcxr Jupyter kernel, its outputs
//! checked by `tests/notebooks/check_notebooks.py` (no error or panic in any cell, the tables and
//! figures there, the numbers in range).
//!
//! Needs Jupyter (`nbconvert`) and the evcxr kernel: `scripts/notebooks-setup.sh` installs both.
//! Without them the test fails with that instruction, unless `RKIF_SKIP_NOTEBOOKS=1`.
//!
//! Environment: `EVCXR_TMPDIR` (default `target/evcxr-notebooks`) keeps the kernel's compiled
//! dependencies between runs (the first run compiles candle and rkif-core inside the kernel);
//! `RAYON_NUM_THREADS` defaults to 1 for the kernel (faster than two on a busy 2-core machine);
//! `RKIF_SMOLLM2_GGUF` and `RKIF_DATA_DIR` point notebook 05 at its model and benchmark.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `program args` runs and exits 0; its stdout.
fn probe(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn missing_tools() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if probe("python3", &["-c", "import nbconvert, nbclient"]).is_none() {
        missing
            .push("Jupyter nbconvert (python3 -m pip install nbconvert nbclient jupyter_client)");
    }
    let kernels = probe(
        "python3",
        &["-m", "jupyter", "kernelspec", "list", "--json"],
    );
    if !kernels.is_some_and(|k| k.contains("\"rust\"")) {
        missing.push("the evcxr Jupyter kernel `rust` (cargo install evcxr_jupyter --locked && evcxr_jupyter --install)");
    }
    missing
}

#[test]
fn notebooks_run_top_to_bottom() {
    if std::env::var("RKIF_SKIP_NOTEBOOKS").is_ok_and(|v| v == "1") {
        eprintln!("notebooks skipped: RKIF_SKIP_NOTEBOOKS=1");
        return;
    }
    let missing = missing_tools();
    assert!(
        missing.is_empty(),
        "the notebook test needs {}.\nRun scripts/notebooks-setup.sh (installs them), or set \
         RKIF_SKIP_NOTEBOOKS=1 to skip this test.",
        missing.join(" and ")
    );
    let root = repo_root();
    let mut command = Command::new("python3");
    command
        .arg(root.join("tests/notebooks/check_notebooks.py"))
        .current_dir(&root);
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        command.env("RAYON_NUM_THREADS", "1");
    }
    let status = command.status().expect("python3 runs");
    assert!(
        status.success(),
        "a notebook failed (see the lines above; executed copies in target/notebooks-executed/)"
    );
}
