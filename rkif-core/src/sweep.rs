//! Sweeps: every combination of methods × task orders × seeds, one run folder each.
//!
//! ```text
//! <out>/
//!   sweep.json                       the grid, the command and each run's state
//!   <order>/seed-<seed>/<method>/    one run folder (the layout of `rkif run --out <out>/<order>/seed-<seed>`)
//! ```
//!
//! The method is the last component so that a run folder's name (which names the run in the
//! viewer) says what it is, and so that `rkif run --out <out>/<order>/seed-<s>` and a sweep
//! write the same folders: either can continue the other's runs.
//!
//! This module plans a sweep and reads the state of its run folders without loading a
//! model; the `rkif sweep` command trains the runs. A sweep is resumable as a whole: a
//! finished run (its checkpoint covers every task) is skipped, an unfinished one resumes
//! from its checkpoint, a missing one starts. A run folder whose saved config differs from
//! the planned one is an error that names the folder and the first differing key, so a
//! rerun with other settings never mixes two protocols in one table.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Method, RunConfig};
use crate::report::run_dir::MANIFEST_FILE;
use crate::report::{read_json, write_json, RunDir};
use crate::{Error, Result};

/// Version of `sweep.json`'s shape.
pub const SWEEP_SCHEMA_VERSION: u32 = 1;

/// The file a sweep keeps in its output folder.
pub const SWEEP_FILE: &str = "sweep.json";

/// The grid of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepGrid {
    pub methods: Vec<Method>,
    /// Named task orders of the benchmark (`standard-1`, `long-1`, ...).
    pub orders: Vec<String>,
    pub seeds: Vec<u64>,
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    pub method: Method,
    pub order: String,
    pub seed: u64,
    /// `<out>/<order>/seed-<seed>/<method>`.
    pub dir: PathBuf,
}

impl PlannedRun {
    /// `base` with this run's method, order and seed.
    pub fn config(&self, base: &RunConfig) -> RunConfig {
        let mut c = base.clone();
        c.method = self.method;
        c.seed = self.seed;
        c.data.order = Some(self.order.clone());
        c.data.tasks = None;
        c
    }
}

/// The run folder of one combination.
pub fn run_folder(out: &Path, order: &str, seed: u64, method: Method) -> PathBuf {
    out.join(order)
        .join(format!("seed-{seed}"))
        .join(method.name())
}

impl SweepGrid {
    /// Checks the grid is non-empty, without duplicates, and that order names are plain
    /// folder names; the error names the offending list.
    pub fn validate(&self) -> Result<()> {
        if self.methods.is_empty() {
            return Err(Error::config("sweep.methods", "no method given"));
        }
        if self.orders.is_empty() {
            return Err(Error::config("sweep.orders", "no task order given"));
        }
        if self.seeds.is_empty() {
            return Err(Error::config("sweep.seeds", "no seed given"));
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                return Err(Error::config(
                    "sweep.methods",
                    format!("`{}` given twice", m.name()),
                ));
            }
        }
        for (i, o) in self.orders.iter().enumerate() {
            let plain = !o.is_empty()
                && o != "."
                && o != ".."
                && o.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !plain {
                return Err(Error::config(
                    "sweep.orders",
                    format!("`{o}` is not a plain order name (letters, digits, - _ .)"),
                ));
            }
            if self.orders[..i].contains(o) {
                return Err(Error::config("sweep.orders", format!("`{o}` given twice")));
            }
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(s) {
                return Err(Error::config(
                    "sweep.seeds",
                    format!("seed {s} given twice"),
                ));
            }
        }
        Ok(())
    }

    /// Every combination, orders outermost, then seeds, then methods (so that each order
    /// and seed completes a comparable set of methods before the next starts).
    pub fn runs(&self, out: &Path) -> Vec<PlannedRun> {
        let mut runs = Vec::new();
        for order in &self.orders {
            for &seed in &self.seeds {
                for &method in &self.methods {
                    runs.push(PlannedRun {
                        method,
                        order: order.clone(),
                        seed,
                        dir: run_folder(out, order, seed, method),
                    });
                }
            }
        }
        runs
    }
}

/// Where a run folder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RunStatus {
    /// No run folder yet.
    New,
    /// Started; its checkpoint covers `tasks_done` of `tasks` tasks.
    Unfinished { tasks_done: usize, tasks: usize },
    /// Every task trained and evaluated.
    Finished { tasks: usize },
}

/// The part of `checkpoint/state.json` a sweep reads.
#[derive(Deserialize)]
struct CheckpointProgress {
    tasks_done: usize,
}

/// The state of the run folder `dir`, read from its manifest (the task list) and its
/// checkpoint (tasks done), which is written last at every task boundary.
pub fn run_status(dir: &Path) -> Result<RunStatus> {
    if !dir.join(MANIFEST_FILE).is_file() {
        return Ok(RunStatus::New);
    }
    let run = RunDir::open(dir)?;
    let manifest = run.load_manifest()?;
    let tasks = manifest
        .config
        .pointer("/run/tasks")
        .and_then(|t| t.as_array())
        .map(Vec::len)
        .ok_or_else(|| Error::format(run.manifest_path(), "config.run.tasks: missing"))?;
    let state_path = run.checkpoint_dir().join("state.json");
    let tasks_done = if state_path.is_file() {
        read_json::<CheckpointProgress>(&state_path)?.tasks_done
    } else {
        0
    };
    Ok(if tasks > 0 && tasks_done >= tasks {
        RunStatus::Finished { tasks }
    } else {
        RunStatus::Unfinished { tasks_done, tasks }
    })
}

/// Checks that the config saved in the run folder `dir` is the one `planned` would write.
/// Fields the session derives (the benchmark folder when none was given) are taken from the
/// saved one. The error names the folder and the first key that differs.
pub fn check_saved_config(dir: &Path, planned: &RunConfig) -> Result<()> {
    let run = RunDir::open(dir)?;
    let manifest = run.load_manifest()?;
    let mut saved = manifest.config.clone();
    if let serde_json::Value::Object(map) = &mut saved {
        map.remove("run");
    }
    // Through the typed config and back, so that keys added to the config after the run was
    // made compare as their defaults (which is what resuming that run would use).
    let saved = serde_json::from_value::<RunConfig>(saved)
        .and_then(|c| serde_json::to_value(&c))
        .map_err(|e| Error::format(run.manifest_path(), format!("config: {e}")))?;
    let mut planned = planned.clone();
    if planned.data.dir.is_none() {
        if let Some(d) = saved.pointer("/data/dir").and_then(|d| d.as_str()) {
            planned.data.dir = Some(PathBuf::from(d));
        }
    }
    let planned =
        serde_json::to_value(&planned).map_err(|e| Error::config("<config>", e.to_string()))?;
    match first_difference(&saved, &planned, "") {
        None => Ok(()),
        Some((key, was, now)) => Err(Error::format(
            run.manifest_path(),
            format!(
                "this run was started with {key} = {was}, the sweep asks for {now}; \
                 use another --out or the same settings"
            ),
        )),
    }
}

/// The first key (as `a.b.c`) where two JSON values differ, with both values.
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: &str,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    let key = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(va), Some(vb)) => first_difference(va, vb, &key(k)),
                (va, vb) => Some((key(k), show(va), show(vb))),
            })
        }
        _ if a == b => None,
        _ => Some((
            if path.is_empty() { "<config>" } else { path }.to_string(),
            a.to_string(),
            b.to_string(),
        )),
    }
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(|| "(absent)".to_string(), |v| v.to_string())
}

/// One run's line in `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRunRecord {
    pub order: String,
    pub method: Method,
    pub seed: u64,
    /// The run folder relative to the sweep folder.
    pub dir: String,
    pub status: RunStatus,
}

/// `sweep.json`: what a sweep was asked to do and where each run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub schema_version: u32,
    /// The command line that last ran the sweep.
    pub command: String,
    pub grid: SweepGrid,
    pub runs: Vec<SweepRunRecord>,
}

impl SweepRecord {
    /// The record of `grid` in `out`, with every run's current state.
    pub fn collect(out: &Path, grid: &SweepGrid, command: &str) -> Result<Self> {
        let runs = grid
            .runs(out)
            .into_iter()
            .map(|r| {
                Ok(SweepRunRecord {
                    status: run_status(&r.dir)?,
                    dir: r
                        .dir
                        .strip_prefix(out)
                        .unwrap_or(&r.dir)
                        .to_string_lossy()
                        .replace('\\', "/"),
                    order: r.order,
                    method: r.method,
                    seed: r.seed,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schema_version: SWEEP_SCHEMA_VERSION,
            command: command.to_string(),
            grid: grid.clone(),
            runs,
        })
    }

    /// Write `<out>/sweep.json` atomically.
    pub fn save(&self, out: &Path) -> Result<()> {
        write_json(&out.join(SWEEP_FILE), self)
    }

    /// Read `<dir>/sweep.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        read_json(&dir.join(SWEEP_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Manifest;

    fn grid() -> SweepGrid {
        SweepGrid {
            methods: vec![Method::SeqLora, Method::Rkif],
            orders: vec!["standard-1".into(), "standard-2".into()],
            seeds: vec![1, 2],
        }
    }

    #[test]
    fn runs_cover_the_grid_with_one_folder_each() {
        let runs = grid().runs(Path::new("out"));
        assert_eq!(runs.len(), 8);
        assert_eq!(
            runs[0].dir,
            Path::new("out")
                .join("standard-1")
                .join("seed-1")
                .join("seq-lora")
        );
        assert_eq!(
            runs[7].dir,
            Path::new("out")
                .join("standard-2")
                .join("seed-2")
                .join("rkif")
        );
        let mut dirs: Vec<_> = runs.iter().map(|r| r.dir.clone()).collect();
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), 8);
        let c = runs[7].config(&RunConfig::default());
        assert_eq!(
            (c.method, c.seed, c.data.order.as_deref()),
            (Method::Rkif, 2, Some("standard-2"))
        );
    }

    #[test]
    fn bad_grids_name_the_list() {
        let mut g = grid();
        g.seeds = vec![1, 1];
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sweep.seeds"));
        let mut g = grid();
        g.orders = vec!["../x".into()];
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sweep.orders"));
        let mut g = grid();
        g.methods.clear();
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sweep.methods"));
        assert!(grid().validate().is_ok());
    }

    fn fake_run(dir: &Path, cfg: &RunConfig, tasks: usize, done: Option<usize>) {
        let run = RunDir::create(dir).unwrap();
        let mut m = Manifest::new("r", cfg.method.name(), "cpu", 1, "unix:0");
        m.config = serde_json::to_value(cfg).unwrap();
        let names: Vec<String> = (0..tasks).map(|i| format!("t{i}")).collect();
        if let serde_json::Value::Object(map) = &mut m.config {
            map.insert("run".into(), serde_json::json!({ "tasks": names }));
        }
        run.save_manifest(&m).unwrap();
        if let Some(done) = done {
            write_json(
                &run.checkpoint_dir().join("state.json"),
                &serde_json::json!({ "tasks_done": done, "other": 1 }),
            )
            .unwrap();
        }
    }

    #[test]
    fn status_follows_the_checkpoint() -> Result<()> {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = RunConfig::default();
        let dir = tmp.path().join("a");
        assert_eq!(run_status(&dir)?, RunStatus::New);
        fake_run(&dir, &cfg, 3, None);
        assert_eq!(
            run_status(&dir)?,
            RunStatus::Unfinished {
                tasks_done: 0,
                tasks: 3
            }
        );
        let dir = tmp.path().join("b");
        fake_run(&dir, &cfg, 3, Some(2));
        assert_eq!(
            run_status(&dir)?,
            RunStatus::Unfinished {
                tasks_done: 2,
                tasks: 3
            }
        );
        let dir = tmp.path().join("c");
        fake_run(&dir, &cfg, 3, Some(3));
        assert_eq!(run_status(&dir)?, RunStatus::Finished { tasks: 3 });
        Ok(())
    }

    #[test]
    fn a_changed_setting_is_refused_with_its_key() -> Result<()> {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = RunConfig::default();
        cfg.data.order = Some("standard-1".into());
        let mut saved = cfg.clone();
        // The session saves the folder it resolved; the plan may leave it to RKIF_DATA_DIR.
        saved.data.dir = Some(PathBuf::from("/data/cl"));
        let dir = tmp.path().join("r");
        fake_run(&dir, &saved, 4, Some(1));
        check_saved_config(&dir, &cfg)?;
        let mut other = cfg.clone();
        other.optim.lr = 1e-2;
        let err = check_saved_config(&dir, &other).unwrap_err().to_string();
        assert!(
            err.contains("optim.lr") && err.contains("manifest.json"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn a_run_saved_before_a_key_existed_matches_that_keys_default() -> Result<()> {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = RunConfig::default();
        let dir = tmp.path().join("old");
        fake_run(&dir, &cfg, 4, Some(4));
        // As a manifest written before `optim.checkpoint_every` was added.
        let run = RunDir::open(&dir)?;
        let mut m = run.load_manifest()?;
        let optim = m
            .config
            .pointer_mut("/optim")
            .and_then(|o| o.as_object_mut());
        assert!(optim.unwrap().remove("checkpoint_every").is_some());
        run.save_manifest(&m)?;
        check_saved_config(&dir, &cfg)?;
        let mut other = cfg.clone();
        other.optim.checkpoint_every += 1;
        let err = check_saved_config(&dir, &other).unwrap_err().to_string();
        assert!(err.contains("optim.checkpoint_every"), "{err}");
        Ok(())
    }

    #[test]
    fn record_lists_every_run_with_its_state() -> Result<()> {
        let tmp = tempfile::tempdir().unwrap();
        let g = grid();
        let first = &g.runs(tmp.path())[0];
        fake_run(&first.dir, &first.config(&RunConfig::default()), 4, Some(4));
        let rec = SweepRecord::collect(tmp.path(), &g, "rkif sweep")?;
        rec.save(tmp.path())?;
        let back = SweepRecord::load(tmp.path())?;
        assert_eq!(back, rec);
        assert_eq!(back.runs.len(), 8);
        assert_eq!(back.runs[0].dir, "standard-1/seed-1/seq-lora");
        assert_eq!(back.runs[0].status, RunStatus::Finished { tasks: 4 });
        assert_eq!(back.runs[1].status, RunStatus::New);
        Ok(())
    }
}
