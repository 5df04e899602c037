//! Writing a session's run folder: the manifest, the event log, metrics, adapters after each
//! task, importance snapshots and the checkpoint a run resumes from.
//!
//! Checkpoints are taken at task boundaries (the adapter after task k, the dropout
//! generator's state, TaSL's accumulated scores, the accuracy matrix and the length of the
//! event log) and inside a task at safe points ([`super::checkpoint`]). Resuming continues
//! from the latest, redoing the steps after it, so a resumed run follows exactly the same
//! computation as an uninterrupted one.

use std::path::Path;
use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::state::TaskState;
use super::values::{kind_of, layer_of};
use super::Session;
use crate::model::adapter::{load_adapter, save_adapter, AdapterConfig, TaskType};
use crate::model::backbone::Family;
use crate::model::{LoraFactor, LoraParam};
use crate::report::{
    downsample_mean, write_json, DataFileHash, Event, EventWriter, ImportanceMap,
    ImportanceSnapshot, Manifest, MetricsFile, ModuleImportance, RunDir, ScoreKind, ScoreSummary,
    DEFAULT_MAP_SIDE,
};
use crate::{Error, Result};

/// Every how many rounds an importance snapshot is written.
const ROUND_SNAPSHOT_EVERY: usize = 4;

/// The checkpoint's own record (`checkpoint/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub schema_version: u32,
    /// Tasks trained and evaluated.
    pub tasks_done: usize,
    /// The adapter folder (relative to `checkpoint/`).
    pub adapter: String,
    pub dropout_rng: ChaCha8Rng,
    pub tasl_scores: Option<Vec<f64>>,
    pub metrics: MetricsFile,
    /// Bytes of `events.jsonl` that belong to the finished tasks.
    pub events_bytes: u64,
    /// The latest mid-task checkpoint's folder (relative to `checkpoint/`), if the task
    /// after `tasks_done` had one.
    #[serde(default)]
    pub mid_task: Option<String>,
}

/// A mid-task checkpoint's folder and record.
pub(crate) type MidTask = (std::path::PathBuf, super::checkpoint::MidTaskState);

/// Names of mid-task checkpoint folders start with this.
const MID_TASK_PREFIX: &str = "task-";

/// A session's run folder and its open event log.
#[derive(Debug)]
pub struct RunWriter {
    dir: RunDir,
    events: EventWriter,
    manifest: Manifest,
    started: Instant,
    /// The latest task-boundary checkpoint record (None before the first task ends).
    last_state: Option<CheckpointState>,
}

impl RunWriter {
    /// Create the folder and write the manifest.
    pub(crate) fn create(root: &Path, s: &Session) -> Result<Self> {
        let dir = RunDir::create(root)?;
        let cfg = s.config();
        let mut manifest = Manifest::new(
            run_name(root),
            cfg.method.name(),
            cfg.model.device.clone(),
            cfg.optim.effective_batch(),
            now_string(),
        );
        manifest.config =
            serde_json::to_value(cfg).map_err(|e| Error::config("<config>", e.to_string()))?;
        manifest.seeds = s.seeds().clone();
        manifest.seeds.insert("root".into(), cfg.seed);
        for (name, version) in crate_versions() {
            manifest.crate_versions.insert(name.into(), version.into());
        }
        manifest.data_files = s
            .data_files()
            .iter()
            .map(|f| DataFileHash {
                path: f.path.clone(),
                bytes: f.bytes,
                sha256: f.sha256.clone(),
            })
            .collect();
        let extra = serde_json::json!({
            "model": s.model().origin(),
            "family": s.model().family(),
            "order": s.order_name(),
            "tasks": s.task_names(),
        });
        if let serde_json::Value::Object(map) = &mut manifest.config {
            map.insert("run".into(), extra);
        }
        dir.save_manifest(&manifest)?;
        let events = dir.events_writer()?;
        Ok(Self {
            dir,
            events,
            manifest,
            started: Instant::now(),
            last_state: None,
        })
    }

    /// Reopen a run folder to resume it: the event log is cut back to what the checkpoint
    /// covers. Returns the writer, the checkpoint (None when none was written) and the
    /// mid-task checkpoint's folder and record, if any.
    pub(crate) fn reopen(root: &Path) -> Result<(Self, Option<CheckpointState>, Option<MidTask>)> {
        let dir = RunDir::open(root)?;
        let manifest = dir.load_manifest()?;
        let state_path = dir.checkpoint_dir().join("state.json");
        let state: Option<CheckpointState> = if state_path.is_file() {
            Some(crate::report::read_json(&state_path)?)
        } else {
            None
        };
        let mid = match state.as_ref().and_then(|s| s.mid_task.as_ref()) {
            Some(name) => {
                let mid_dir = dir.checkpoint_dir().join(name);
                let mid = super::checkpoint::read_state(&mid_dir)?;
                Some((mid_dir, mid))
            }
            None => None,
        };
        let events_path = dir.events_path();
        let keep = match &mid {
            Some((_, m)) => m.events_bytes,
            None => state.as_ref().map_or(0, |s| s.events_bytes),
        };
        if keep == 0 {
            // Nothing finished: start the log afresh.
            let _ = std::fs::remove_file(&events_path);
        } else {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&events_path)
                .map_err(|e| Error::io(&events_path, e))?;
            f.set_len(keep).map_err(|e| Error::io(&events_path, e))?;
        }
        let events = dir.events_writer()?;
        Ok((
            Self {
                dir,
                events,
                manifest,
                started: Instant::now(),
                last_state: state.clone(),
            },
            state,
            mid,
        ))
    }

    /// A mid-task checkpoint of `s`'s current task (see [`super::checkpoint`]); the previous
    /// one is removed once the new one is recorded.
    pub(crate) fn save_mid_task(&mut self, s: &Session) -> Result<()> {
        let st = s
            .current()
            .ok_or_else(|| Error::Data("no task is being trained: nothing to checkpoint".into()))?;
        self.events.sync()?;
        let events_bytes = std::fs::metadata(self.dir.events_path())
            .map_err(|e| Error::io(self.dir.events_path(), e))?
            .len();
        let ckpt = self.dir.checkpoint_dir();
        std::fs::create_dir_all(&ckpt).map_err(|e| Error::io(&ckpt, e))?;
        let name = format!("{MID_TASK_PREFIX}{}-step-{}", st.index, st.step);
        super::checkpoint::save(s, &ckpt.join(&name), events_bytes)?;
        let mut state = match &self.last_state {
            Some(state) => state.clone(),
            None => CheckpointState {
                schema_version: 1,
                tasks_done: 0,
                adapter: String::new(),
                dropout_rng: s.model().rng().state(),
                tasl_scores: None,
                metrics: metrics_file(s),
                events_bytes: 0,
                mid_task: None,
            },
        };
        state.mid_task = Some(name.clone());
        write_json(&ckpt.join("state.json"), &state)?;
        remove_mid_task_folders(&ckpt, Some(&name));
        Ok(())
    }

    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub(crate) fn event(&mut self, e: &Event) -> Result<()> {
        self.events.append(e)
    }

    /// After task `row` was evaluated: the adapter, `metrics.json` and the checkpoint.
    pub(crate) fn after_task(&mut self, s: &Session, row: usize) -> Result<()> {
        let adapter_cfg = adapter_config(s);
        save_adapter(s.model(), &self.dir.adapter_dir(row), &adapter_cfg)?;
        let metrics = metrics_file(s);
        self.dir.save_metrics(&metrics)?;
        self.events.sync()?;
        let events_bytes = std::fs::metadata(self.dir.events_path())
            .map_err(|e| Error::io(self.dir.events_path(), e))?
            .len();
        // Adapter first, then the state that points at it: a crash between the two leaves
        // the previous checkpoint intact.
        let ckpt = self.dir.checkpoint_dir();
        let adapter_name = format!("adapter-after-task-{row}");
        save_adapter(s.model(), &ckpt.join(&adapter_name), &adapter_cfg)?;
        let state = CheckpointState {
            schema_version: 1,
            tasks_done: row + 1,
            adapter: adapter_name.clone(),
            dropout_rng: s.model().rng().state(),
            tasl_scores: s.tasl_scores().cloned(),
            metrics,
            events_bytes,
            mid_task: None,
        };
        write_json(&ckpt.join("state.json"), &state)?;
        self.last_state = Some(state);
        remove_mid_task_folders(&ckpt, None);
        // Older checkpoint adapters are no longer referenced.
        if let Ok(entries) = std::fs::read_dir(&ckpt) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("adapter-after-task-") && name != adapter_name {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        self.manifest
            .record_timing(format!("task_{row}"), self.started.elapsed().as_secs_f64());
        self.dir.save_manifest(&self.manifest)?;
        Ok(())
    }

    pub(crate) fn finish(&mut self) -> Result<()> {
        self.events.sync()?;
        self.manifest
            .record_timing("total", self.started.elapsed().as_secs_f64());
        self.dir.save_manifest(&self.manifest)
    }

    /// A snapshot of both trackers at sampled rounds (round 1 and every few rounds), taken
    /// just before the fusion resets the inner tracker.
    pub(crate) fn maybe_save_round_importance(
        &mut self,
        task: usize,
        round: usize,
        step: usize,
        state: &TaskState,
        params: &[LoraParam],
        q: f64,
    ) -> Result<()> {
        if round != 1 && round % ROUND_SNAPSHOT_EVERY != 0 {
            return Ok(());
        }
        let snap = importance_snapshot(task, Some(round), step, state, params, q)?;
        self.dir.save_importance(&snap)?;
        Ok(())
    }

    /// The end-of-task snapshot.
    pub(crate) fn save_task_importance(
        &mut self,
        task: usize,
        step: usize,
        state: Option<&TaskState>,
        params: &[LoraParam],
        q: f64,
    ) -> Result<()> {
        let Some(st) = state else { return Ok(()) };
        let snap = importance_snapshot(task, None, step, st, params, q)?;
        self.dir.save_importance(&snap)?;
        Ok(())
    }
}

/// Score statistics of both trackers of `st` per LoRA matrix (the count above each tracker's
/// global `q` quantile among them), and block-mean maps (at most [`DEFAULT_MAP_SIDE`] square)
/// of the first adapted module's `r x in` and `out x r` matrices. A tracker without updates
/// contributes no statistics. The run folder stores these; notebooks display them.
pub(crate) fn importance_snapshot(
    task: usize,
    round: Option<usize>,
    step: usize,
    st: &TaskState,
    params: &[LoraParam],
    q: f64,
) -> Result<ImportanceSnapshot> {
    let mut snap = ImportanceSnapshot::new(task, round, step);
    let inner = scores_if_any(&st.inner);
    let outer = scores_if_any(&st.outer);
    let threshold = |s: &Option<Vec<(String, candle_core::Tensor)>>| -> Result<Option<f32>> {
        Ok(match s {
            Some(s) => crate::kif::global_mask(s, q)?.global_threshold(),
            None => None,
        })
    };
    snap.inner_threshold = threshold(&inner)?;
    snap.outer_threshold = threshold(&outer)?;
    let first_module = params.first().map(|p| p.module.clone());
    for p in params {
        let (rows, cols) = p.var.as_tensor().dims2()?;
        let values_of =
            |all: &Option<Vec<(String, candle_core::Tensor)>>| -> Result<Option<Vec<f32>>> {
                match all
                    .as_ref()
                    .and_then(|v| v.iter().find(|(n, _)| n == &p.name))
                {
                    Some((_, t)) => Ok(Some(
                        t.flatten_all()?
                            .to_dtype(candle_core::DType::F32)?
                            .to_vec1::<f32>()?,
                    )),
                    None => Ok(None),
                }
            };
        let iv = values_of(&inner)?;
        let ov = values_of(&outer)?;
        let is = iv
            .as_ref()
            .map(|v| ScoreSummary::of(&p.name, v, snap.inner_threshold))
            .transpose()?;
        let os = ov
            .as_ref()
            .map(|v| ScoreSummary::of(&p.name, v, snap.outer_threshold))
            .transpose()?;
        snap.modules.push(module_entry(p, [rows, cols], is, os));
        if Some(&p.module) == first_module.as_ref() {
            for (kind, vals) in [(ScoreKind::Inner, &iv), (ScoreKind::Outer, &ov)] {
                if let Some(v) = vals {
                    snap.maps.push(ImportanceMap {
                        module: p.module.clone(),
                        factor: report_factor(p.factor),
                        score: kind,
                        grid: downsample_mean(
                            &p.name,
                            v,
                            [rows, cols],
                            [DEFAULT_MAP_SIDE, DEFAULT_MAP_SIDE],
                        )?,
                    });
                }
            }
        }
    }
    Ok(snap)
}

fn scores_if_any(t: &crate::kif::ImportanceTracker) -> Option<Vec<(String, candle_core::Tensor)>> {
    (t.updates() > 0).then(|| t.scores())
}

fn module_entry(
    p: &LoraParam,
    shape: [usize; 2],
    inner: Option<ScoreSummary>,
    outer: Option<ScoreSummary>,
) -> ModuleImportance {
    ModuleImportance {
        module: p.module.clone(),
        layer: layer_of(&p.module).unwrap_or(0),
        kind: kind_of(p)
            .rsplit_once('.')
            .map_or_else(String::new, |(k, _)| k.to_string()),
        factor: report_factor(p.factor),
        shape,
        inner,
        outer,
    }
}

fn report_factor(f: LoraFactor) -> crate::report::LoraFactor {
    match f {
        LoraFactor::A => crate::report::LoraFactor::A,
        LoraFactor::B => crate::report::LoraFactor::B,
    }
}

pub(crate) fn adapter_config(s: &Session) -> AdapterConfig {
    let task_type = match s.model().family() {
        Family::T5 => TaskType::Seq2SeqLm,
        Family::Llama => TaskType::CausalLm,
    };
    AdapterConfig::new(&s.config().model.lora, task_type, s.model().origin())
}

pub(crate) fn metrics_file(s: &Session) -> MetricsFile {
    let mut m = MetricsFile::from_matrix(s.matrix());
    for t in s.tasks() {
        for c in &t.caveats {
            m.caveats.push(format!("{}: {c}", t.name()));
        }
    }
    m
}

/// Restore the adapter saved in a checkpoint.
pub(crate) fn load_checkpoint_adapter(
    s: &mut Session,
    root: &Path,
    state: &CheckpointState,
) -> Result<()> {
    let dir = RunDir::open(root)?.checkpoint_dir().join(&state.adapter);
    load_adapter(s.learner.model_mut(), &dir)?;
    Ok(())
}

/// Remove mid-task checkpoint folders other than `keep` (best effort: a leftover folder is
/// never read, since `state.json` names the one in use).
fn remove_mid_task_folders(ckpt: &Path, keep: Option<&str>) {
    if let Ok(entries) = std::fs::read_dir(ckpt) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(MID_TASK_PREFIX) && Some(name.as_str()) != keep {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn run_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "run".into())
}

/// Seconds since the Unix epoch, as text (the manifest's creation time).
fn now_string() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("unix:{secs}")
}

fn crate_versions() -> [(&'static str, &'static str); 2] {
    [
        ("rkif-core", env!("CARGO_PKG_VERSION")),
        ("candle-core", "0.11.1"),
    ]
}
