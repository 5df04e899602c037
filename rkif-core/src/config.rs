//! Run configuration: what to train, on what, and how. Serialised with every run (the manifest
//! holds the whole derived config), read from TOML with unknown keys refused, and validated
//! with errors that name the field.
//!
//! Defaults are the reference implementation's hyper-parameters (METHOD.md); presets derive
//! from them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The continual-learning method a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Sequential LoRA fine-tuning, no memory: the lower bound.
    SeqLora,
    /// The replay memory mixed into the training batches, no fusion.
    Replay,
    /// Joint training on all tasks at once: the upper bound.
    Mtl,
    /// TaSL (METHOD.md section 7): skill-unit importance, merge after each task.
    Tasl,
    /// Recurrent-KIF: inner steps, outer steps on the memory, fusion every round.
    Rkif,
    /// Ablation: Recurrent-KIF's outer steps without fusion.
    RkifNoFusion,
    /// Ablation: Recurrent-KIF fusing once per task instead of every round.
    RkifFuseOnce,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::SeqLora,
        Method::Replay,
        Method::Mtl,
        Method::Tasl,
        Method::Rkif,
        Method::RkifNoFusion,
        Method::RkifFuseOnce,
    ];

    /// The kebab-case name used in configs, on the command line and in run names.
    pub fn name(self) -> &'static str {
        match self {
            Method::SeqLora => "seq-lora",
            Method::Replay => "replay",
            Method::Mtl => "mtl",
            Method::Tasl => "tasl",
            Method::Rkif => "rkif",
            Method::RkifNoFusion => "rkif-no-fusion",
            Method::RkifFuseOnce => "rkif-fuse-once",
        }
    }

    /// Parse a method name (the kebab-case form).
    pub fn parse(name: &str) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
                Error::config(
                    "method",
                    format!("unknown method `{name}`; known: {}", known.join(", ")),
                )
            })
    }

    /// Whether the method reads the replay memory.
    pub fn uses_memory(self) -> bool {
        matches!(
            self,
            Method::Replay | Method::Rkif | Method::RkifNoFusion | Method::RkifFuseOnce
        )
    }
}

/// Where the base model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelSource {
    /// The small base model that ships with rkif (`data/base-model/`).
    Embedded,
    /// A local Hugging Face folder (`config.json`, safetensors, `tokenizer.json`).
    Local { path: PathBuf },
    /// A Hugging Face hub id (needs the `hub` feature and the network).
    Hub {
        id: String,
        #[serde(default)]
        revision: Option<String>,
    },
    /// A GGUF file, dequantised to f32 for training.
    Gguf { path: PathBuf },
}

/// LoRA hyper-parameters shared by every adapted layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r`.
    pub rank: usize,
    /// `alpha`; the update is scaled by `alpha / r`.
    pub alpha: f64,
    /// Dropout probability on the LoRA input (training only).
    pub dropout: f32,
    /// Module names to adapt: the last component of the Hugging Face name (`q`, `v`, `q_proj`,
    /// `v_proj`, ...) or a full module path.
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 32.0,
            dropout: 0.05,
            targets: vec!["q".into(), "v".into()],
        }
    }
}

impl LoraConfig {
    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// The model, its LoRA and where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub source: ModelSource,
    pub lora: LoraConfig,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// `f32`, or `bf16` (GPU only: on CPU bf16 is about twice as slow).
    pub dtype: String,
    /// Inputs longer than this many tokens are truncated (from the left for decoder prompts).
    pub max_source_len: usize,
    /// Targets longer than this many tokens are truncated.
    pub max_target_len: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            source: ModelSource::Embedded,
            lora: LoraConfig::default(),
            device: "cpu".into(),
            dtype: "f32".into(),
            max_source_len: 512,
            max_target_len: 50,
        }
    }
}

/// The optimiser and the training budget of one task (METHOD.md section 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Gradient-norm clipping threshold.
    pub max_grad_norm: f64,
    /// Examples per forward pass.
    pub micro_batch: usize,
    /// Micro-batches per optimiser step (effective batch = micro_batch * grad_accum).
    pub grad_accum: usize,
    pub epochs: usize,
    /// Optional cap on optimiser steps per task (reduced protocols).
    pub max_steps_per_task: Option<usize>,
    /// What a non-finite loss, gradient or importance score does: `error` stops with an
    /// error naming the tensor; `skip` drops the step (nothing is applied) and counts it.
    pub nonfinite: NonFinitePolicy,
    /// Under `skip`: the most steps one task may skip; one more is an error.
    pub max_skipped_steps: usize,
    /// A checkpoint is written at the first safe point (the end of a Recurrent-KIF round,
    /// any step for the other methods) at least this many optimiser steps after the last.
    pub checkpoint_every: usize,
}

/// What a non-finite loss, gradient or importance score does (METHOD.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonFinitePolicy {
    /// An error that names the tensor; the step is not applied.
    #[default]
    Error,
    /// The step is not applied (optimiser and trackers untouched), counted and logged.
    Skip,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            warmup_steps: 50,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: 1.0,
            micro_batch: 2,
            grad_accum: 4,
            epochs: 10,
            max_steps_per_task: None,
            nonfinite: NonFinitePolicy::Error,
            max_skipped_steps: 10,
            checkpoint_every: 8,
        }
    }
}

impl OptimConfig {
    /// Examples per optimiser step.
    pub fn effective_batch(&self) -> usize {
        self.micro_batch * self.grad_accum
    }
}

/// Which importance estimate the trackers use (METHOD.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportanceKind {
    /// `|p g|`, the reference default.
    FirstOrder,
    /// `|p g|^2`.
    SecondOrder,
    /// `|p g - (p g)^2 / 2|`.
    Mixed,
}

/// How outer (memory) steps update the adapter (METHOD.md section 2, "Outer optimiser").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OuterOptimizer {
    /// The task's AdamW at its current scheduled learning rate, sharing moments (the
    /// reference's T5 behaviour).
    Shared,
    /// A separate AdamW with its own constant learning rate.
    Separate { lr: f64 },
}

/// Which masks mark an element as important.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionCase {
    /// Important for the new task only.
    InnerOnly,
    /// Important for the old tasks (replay) only.
    OuterOnly,
    /// Important for both.
    Both,
    /// Important for neither.
    Neither,
}

impl FusionCase {
    /// The four cases, in table order.
    pub const ALL: [FusionCase; 4] = [Self::InnerOnly, Self::OuterOnly, Self::Both, Self::Neither];

    /// The case of an element from its two mask bits.
    pub fn of(inner: bool, outer: bool) -> Self {
        match (inner, outer) {
            (true, false) => Self::InnerOnly,
            (false, true) => Self::OuterOnly,
            (true, true) => Self::Both,
            (false, false) => Self::Neither,
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::InnerOnly => "inner_only",
            Self::OuterOnly => "outer_only",
            Self::Both => "both",
            Self::Neither => "neither",
        }
    }
}

/// The coefficients of one case.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseWeights {
    /// Weight of the new-task update `delta_in`.
    pub c_in: f64,
    /// Weight of the replay update `delta_out`.
    pub c_out: f64,
}

/// The coefficient table. The default is the reference's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FusionTable {
    /// Default 1.0 / 0.0: the replay update is pruned.
    pub inner_only: CaseWeights,
    /// Default 0.0 / 1.0: the new-task update is pruned.
    pub outer_only: CaseWeights,
    /// Default 0.4 / 0.6: merged, old tasks weighted higher.
    pub both: CaseWeights,
    /// Default 0.5 / 0.5: plain average.
    pub neither: CaseWeights,
}

impl Default for FusionTable {
    fn default() -> Self {
        let w = |c_in, c_out| CaseWeights { c_in, c_out };
        Self {
            inner_only: w(1.0, 0.0),
            outer_only: w(0.0, 1.0),
            both: w(0.4, 0.6),
            neither: w(0.5, 0.5),
        }
    }
}

impl FusionTable {
    /// The coefficients of `case`.
    pub fn weights(&self, case: FusionCase) -> CaseWeights {
        match case {
            FusionCase::InnerOnly => self.inner_only,
            FusionCase::OuterOnly => self.outer_only,
            FusionCase::Both => self.both,
            FusionCase::Neither => self.neither,
        }
    }

    /// Checks every coefficient is finite; the error names the field.
    pub fn validate(&self) -> Result<()> {
        for case in FusionCase::ALL {
            let w = self.weights(case);
            for (which, value) in [("c_in", w.c_in), ("c_out", w.c_out)] {
                if !value.is_finite() {
                    return Err(Error::config(
                        format!("kif.fusion.{}.{which}", case.field()),
                        format!("must be finite, got {value}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Recurrent-KIF's identification and fusion settings (METHOD.md sections 2-5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KifConfig {
    /// Inner optimiser steps per round (`Q`).
    pub inner_steps: usize,
    /// Outer (memory) steps per round (`M`).
    pub outer_steps: usize,
    /// Examples per outer step.
    pub memory_batch: usize,
    /// Share of each previous task's training set kept in the replay memory.
    pub memory_fraction: f64,
    /// EMA factor of the sensitivity.
    pub beta1: f64,
    /// EMA factor of the uncertainty.
    pub beta2: f64,
    /// The mask keeps elements whose score is above this quantile of all scores.
    pub quantile: f64,
    pub importance: ImportanceKind,
    pub outer_optimizer: OuterOptimizer,
    pub fusion: FusionTable,
}

impl Default for KifConfig {
    fn default() -> Self {
        Self {
            inner_steps: 8,
            outer_steps: 4,
            memory_batch: 8,
            memory_fraction: 0.02,
            beta1: 0.85,
            beta2: 0.85,
            quantile: 0.8,
            importance: ImportanceKind::FirstOrder,
            outer_optimizer: OuterOptimizer::Shared,
            fusion: FusionTable::default(),
        }
    }
}

/// Which adapter state ends a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// The checkpoint with the lowest validation loss (the reference default).
    BestVal,
    /// The state after the last round.
    Last,
}

/// Evaluation and model selection (METHOD.md sections 2 and 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub max_new_tokens: usize,
    pub batch_size: usize,
    /// At most this many test examples per task (None: the whole test set).
    pub max_examples_per_task: Option<usize>,
    /// Also evaluate tasks not trained yet (the upper triangle, for FWT).
    pub all_tasks: bool,
    pub select: Selection,
    /// Validation loss every this many optimiser steps.
    pub val_every: usize,
    /// Dev examples per seen task in the validation set.
    pub val_per_task: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            batch_size: 16,
            max_examples_per_task: None,
            all_tasks: false,
            select: Selection::BestVal,
            val_every: 40,
            val_per_task: 25,
        }
    }
}

/// The benchmark, its task order and any reduction of its data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// The benchmark folder; None: `RKIF_DATA_DIR`, else the embedded default benchmark.
    pub dir: Option<PathBuf>,
    /// A named task order of the benchmark (e.g. `standard-1`), or None for the default order.
    pub order: Option<String>,
    /// Explicit task list, overriding `order`.
    pub tasks: Option<Vec<String>>,
    /// At most this many training examples per task (None: all).
    pub max_train_per_task: Option<usize>,
}

/// Everything a run needs. Saved whole in the run manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub method: Method,
    /// The root seed; every generator of the run derives from it (recorded in the manifest).
    pub seed: u64,
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub kif: KifConfig,
    pub eval: EvalConfig,
    pub data: DataConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            method: Method::Rkif,
            seed: 42,
            model: ModelConfig::default(),
            optim: OptimConfig::default(),
            kif: KifConfig::default(),
            eval: EvalConfig::default(),
            data: DataConfig::default(),
        }
    }
}

/// The names of the built-in presets.
pub const PRESETS: [&str; 4] = ["reference-t5", "reference-llama", "quick", "cpu-smollm2"];

/// Where the `cpu-smollm2` preset looks for SmolLM2-135M-Instruct (relative to the working
/// directory; `--gguf` overrides it).
pub const SMOLLM2_GGUF: &str = ".models/SmolLM2-135M-Instruct.Q4_1.gguf";

impl RunConfig {
    /// A built-in preset:
    ///
    /// - `reference-t5`: the reference's T5 hyper-parameters (micro-batch 2 x 4 accumulation,
    ///   10 epochs, LoRA on `q`, `v`).
    /// - `reference-llama`: the reference's LLaMA setting (effective batch 64, `q_proj`, `v_proj`).
    /// - `quick`: the embedded default benchmark and base model, sized to finish in minutes on a
    ///   laptop CPU.
    /// - `cpu-smollm2`: the reduced CPU protocol on SmolLM2-135M-Instruct ([`SMOLLM2_GGUF`])
    ///   and Standard CL order 1 (the data folder from `--data-dir` or `RKIF_DATA_DIR`); see
    ///   [`RunConfig::cpu_smollm2`] for every number and why.
    pub fn preset(name: &str) -> Result<RunConfig> {
        let mut c = RunConfig::default();
        match name {
            "reference-t5" => {}
            "reference-llama" => {
                c.model.lora.targets = vec!["q_proj".into(), "v_proj".into()];
                c.optim.micro_batch = 8;
                c.optim.grad_accum = 8;
                c.model.max_source_len = 1024;
            }
            "quick" => {
                c.model.lora.targets = vec!["q_proj".into(), "v_proj".into()];
                c.optim.micro_batch = 8;
                c.optim.grad_accum = 1;
                c.optim.epochs = 3;
                c.optim.warmup_steps = 10;
                // Measured on the default: at lr 1e-3 and two epochs (150 steps a task) SeqLoRA
                // learnt one task of four; at 3e-3 with two epochs whether `place` was learnt
                // depended on the last bits of the base model's weights; three epochs at 3e-3
                // learnt all four (98-100%).
                c.optim.lr = 3e-3;
                c.eval.max_new_tokens = 8;
                c.eval.val_every = 20;
                // The adapter after the task's last step: best-validation selection over the
                // tasks seen so far picks early checkpoints that have not learned the new task
                // yet (measured on rkif-mini: SeqLoRA's later tasks stayed near chance).
                c.eval.select = Selection::Last;
                c.model.max_source_len = 128;
                c.model.max_target_len = 8;
            }
            "cpu-smollm2" => c = RunConfig::cpu_smollm2(),
            other => {
                return Err(Error::config(
                    "preset",
                    format!("unknown preset `{other}`; known: {}", PRESETS.join(", ")),
                ))
            }
        }
        Ok(c)
    }

    /// The reduced CPU protocol: SmolLM2-135M-Instruct on Standard CL order 1
    /// (dbpedia → amazon → yahoo → agnews), sized so that the five methods finish in about
    /// an hour and a half with one tensor thread on this project's busy 2-core machine.
    ///
    /// Measured there before choosing (SmolLM2 in f32, LoRA r 8 on `q_proj`/`v_proj`, one
    /// thread, load average 5-7 from other work): one optimiser step of 8 prompts of up to
    /// 128 tokens took 26 s; loading the GGUF 2 s; perf showed 80% of the time in f32
    /// matrix products at about half a core. Compute is set by tokens, so:
    ///
    /// - `data.max_train_per_task = 64` (the first 64 of each task's 1000 training records,
    ///   which the benchmark stores in random order), 1 epoch, micro-batch 4, no accumulation:
    ///   16 optimiser steps per task (8 s each with one run on the machine, 12-25 s with two
    ///   or three), 2 Recurrent-KIF rounds of 8 inner and 4 outer steps.
    /// - `model.max_source_len = 80`: prompts keep their last 80 tokens (the end of the input
    ///   and `### Response:`); the Alpaca preamble and the instruction with its option list
    ///   are cut for most records, so the model tells the topic tasks apart by their inputs
    ///   and learns each label set from the training answers.
    /// - `max_target_len = 8`, `eval.max_new_tokens = 6`: the longest label
    ///   (`Educational Institution`, `Entertainment & Music`) is at most 5 tokens.
    /// - `lr = 2e-3` with 2 warm-up steps (linear decay): few steps, so a larger rate.
    /// - `kif.memory_fraction = 0.125`, `kif.memory_batch = 4`: 8 class-balanced examples per
    ///   earlier task (the reference keeps 2% of 1000 = 20; 2% of 64 would be one).
    /// - `eval.max_examples_per_task = 20` (a seeded subset, the same after every task),
    ///   one batch of 20: 10 task evaluations per run (1 + 2 + 3 + 4), 50-120 s each.
    /// - `eval.select = last`: no validation passes (the reference selects by validation
    ///   loss; here that would cost a forward pass over the validation set every few steps).
    ///
    /// Measured per method (training + evaluation, two or three runs sharing the machine
    /// with other work): SeqLoRA 27 min, MTL 21 min; Replay, TaSL and Recurrent-KIF in the
    /// README's results table. Evaluation is about half of it.
    pub fn cpu_smollm2() -> RunConfig {
        let mut c = RunConfig::default();
        c.model.source = ModelSource::Gguf {
            path: PathBuf::from(SMOLLM2_GGUF),
        };
        c.model.lora.targets = vec!["q_proj".into(), "v_proj".into()];
        c.model.max_source_len = 80;
        c.model.max_target_len = 8;
        c.optim.lr = 2e-3;
        c.optim.warmup_steps = 2;
        c.optim.micro_batch = 4;
        c.optim.grad_accum = 1;
        c.optim.epochs = 1;
        c.kif.memory_fraction = 0.125;
        c.kif.memory_batch = 4;
        c.eval.max_new_tokens = 6;
        c.eval.batch_size = 20;
        c.eval.max_examples_per_task = Some(20);
        c.eval.select = Selection::Last;
        c.data.order = Some("standard-1".into());
        c.data.max_train_per_task = Some(64);
        c
    }

    /// Parse a TOML config (unknown keys refused) and validate it. `origin` names the source in
    /// errors (a file path, or `<string>`).
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<RunConfig> {
        let c: RunConfig =
            toml::from_str(text).map_err(|e| Error::format(origin, e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Read and validate a TOML config file.
    pub fn from_toml_file(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    /// The config as TOML (what `rkif run --print-config` shows and a user can edit).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::config("<config>", e.to_string()))
    }

    /// Check every value's range; the error names the first offending field.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        positive("model.lora.rank", m.lora.rank)?;
        finite_positive("model.lora.alpha", m.lora.alpha)?;
        probability("model.lora.dropout", m.lora.dropout as f64, false)?;
        if m.lora.targets.is_empty() {
            return Err(Error::config(
                "model.lora.targets",
                "no target module given",
            ));
        }
        if m.device != "cpu" && !m.device.starts_with("cuda") {
            return Err(Error::config(
                "model.device",
                format!("`{}`: expected `cpu` or `cuda:N`", m.device),
            ));
        }
        if !matches!(m.dtype.as_str(), "f32" | "bf16" | "f16") {
            return Err(Error::config(
                "model.dtype",
                format!("`{}`: expected f32, bf16 or f16", m.dtype),
            ));
        }
        positive("model.max_source_len", m.max_source_len)?;
        positive("model.max_target_len", m.max_target_len)?;

        let o = &self.optim;
        finite_positive("optim.lr", o.lr)?;
        finite_non_negative("optim.weight_decay", o.weight_decay)?;
        probability("optim.beta1", o.beta1, false)?;
        probability("optim.beta2", o.beta2, false)?;
        finite_positive("optim.eps", o.eps)?;
        finite_positive("optim.max_grad_norm", o.max_grad_norm)?;
        positive("optim.micro_batch", o.micro_batch)?;
        positive("optim.grad_accum", o.grad_accum)?;
        positive("optim.epochs", o.epochs)?;
        if let Some(n) = o.max_steps_per_task {
            positive("optim.max_steps_per_task", n)?;
        }
        if o.nonfinite == NonFinitePolicy::Skip {
            positive("optim.max_skipped_steps", o.max_skipped_steps)?;
        }
        positive("optim.checkpoint_every", o.checkpoint_every)?;

        let k = &self.kif;
        positive("kif.inner_steps", k.inner_steps)?;
        positive("kif.memory_batch", k.memory_batch)?;
        probability("kif.memory_fraction", k.memory_fraction, true)?;
        probability("kif.beta1", k.beta1, false)?;
        probability("kif.beta2", k.beta2, false)?;
        probability("kif.quantile", k.quantile, true)?;
        if let OuterOptimizer::Separate { lr } = k.outer_optimizer {
            finite_positive("kif.outer_optimizer.lr", lr)?;
        }
        k.fusion.validate()?;

        let e = &self.eval;
        positive("eval.max_new_tokens", e.max_new_tokens)?;
        positive("eval.batch_size", e.batch_size)?;
        positive("eval.val_every", e.val_every)?;
        if let Some(n) = e.max_examples_per_task {
            positive("eval.max_examples_per_task", n)?;
        }
        if let Some(n) = self.data.max_train_per_task {
            positive("data.max_train_per_task", n)?;
        }
        if let Some(tasks) = &self.data.tasks {
            if tasks.is_empty() {
                return Err(Error::config("data.tasks", "empty task list"));
            }
        }
        Ok(())
    }
}

fn positive(field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::config(field, "must be at least 1"));
    }
    Ok(())
}

fn finite_positive(field: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::config(
            field,
            format!("{v} must be a positive number"),
        ));
    }
    Ok(())
}

fn finite_non_negative(field: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::config(
            field,
            format!("{v} must be zero or positive"),
        ));
    }
    Ok(())
}

/// `v` in `[0, 1)`, or `[0, 1]` when `closed`.
fn probability(field: &str, v: f64, closed: bool) -> Result<()> {
    let ok = v.is_finite() && v >= 0.0 && if closed { v <= 1.0 } else { v < 1.0 };
    if !ok {
        let range = if closed { "[0, 1]" } else { "[0, 1)" };
        return Err(Error::config(field, format!("{v} is outside {range}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip_through_toml() -> Result<()> {
        for name in PRESETS {
            let c = RunConfig::preset(name)?;
            c.validate()?;
            let back = RunConfig::from_toml_str(&c.to_toml()?, Path::new("<preset>"))?;
            assert_eq!(back, c, "{name}");
        }
        Ok(())
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = RunConfig::from_toml_str("[optim]\nlearning_rate = 1.0\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.toml") && err.contains("learning_rate"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_value_names_the_field() {
        let err = RunConfig::from_toml_str("[kif]\nquantile = 1.5\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kif.quantile"), "{err}");
        let err = RunConfig::from_toml_str("[optim]\nmicro_batch = 0\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("optim.micro_batch"), "{err}");
    }

    #[test]
    fn nonfinite_policy_parses_and_is_checked() -> Result<()> {
        let c = RunConfig::from_toml_str(
            "[optim]\nnonfinite = \"skip\"\nmax_skipped_steps = 3\n",
            Path::new("x.toml"),
        )?;
        assert_eq!(c.optim.nonfinite, NonFinitePolicy::Skip);
        assert_eq!(c.optim.max_skipped_steps, 3);
        assert_eq!(OptimConfig::default().nonfinite, NonFinitePolicy::Error);
        let err = RunConfig::from_toml_str(
            "[optim]\nnonfinite = \"skip\"\nmax_skipped_steps = 0\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("optim.max_skipped_steps"), "{err}");
        let err =
            RunConfig::from_toml_str("[optim]\nnonfinite = \"ignore\"\n", Path::new("x.toml"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("ignore"), "{err}");
        let err = RunConfig::from_toml_str("[optim]\ncheckpoint_every = 0\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("optim.checkpoint_every"), "{err}");
        Ok(())
    }

    #[test]
    fn partial_toml_keeps_defaults() -> Result<()> {
        let c = RunConfig::from_toml_str(
            "method = \"seq-lora\"\nseed = 7\n[model.source]\nkind = \"gguf\"\npath = \"m.gguf\"\n",
            Path::new("<string>"),
        )?;
        assert_eq!(c.method, Method::SeqLora);
        assert_eq!(c.seed, 7);
        assert_eq!(
            c.model.source,
            ModelSource::Gguf {
                path: PathBuf::from("m.gguf")
            }
        );
        assert_eq!(c.kif, KifConfig::default());
        Ok(())
    }

    #[cfg(feature = "candle")]
    #[test]
    fn cpu_smollm2_budget_is_as_documented() -> Result<()> {
        let c = RunConfig::preset("cpu-smollm2")?;
        let train = c.data.max_train_per_task.unwrap_or(0);
        assert_eq!(train, 64);
        // 16 steps per task: two rounds of 8 inner steps.
        assert_eq!(crate::session::planned_steps(&c, train), 16);
        assert_eq!(16 / c.kif.inner_steps, 2);
        assert_eq!(crate::data::replay_size(train, c.kif.memory_fraction), 8);
        assert_eq!(c.data.order.as_deref(), Some("standard-1"));
        Ok(())
    }

    #[test]
    fn method_names_parse_back() -> Result<()> {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name())?, m);
        }
        assert!(Method::parse("ewc").is_err());
        Ok(())
    }
}
