//! PEFT adapter files: `adapter_model.safetensors` and `adapter_config.json`.
//!
//! The layout is the one `PeftModel.save_pretrained` writes, so Python PEFT loads what rkif
//! saves and rkif loads what PEFT saves:
//!
//! - `adapter_model.safetensors` holds, per adapted module, `base_model.model.<module>.lora_A.weight`
//!   (`[r, in]`) and `base_model.model.<module>.lora_B.weight` (`[out, r]`): the runtime names
//!   without the adapter name `.default`. Its header metadata is `{"format": "pt"}`.
//! - `adapter_config.json` holds PEFT's `LoraConfig` fields, sorted by key.
//!
//! Both files are written atomically (a temporary file in the same folder, then a rename), so
//! an interrupted save never leaves a half-written adapter behind.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use super::lora::LoraConfig;
use super::tensor_file::{read_safetensors, write_safetensors};
use super::{LoraFactor, LoraModel};
use crate::report::write_atomic;
use crate::{Error, Result};

/// File name of the adapter tensors inside an adapter folder.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter configuration inside an adapter folder.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";

/// The safetensors header metadata PEFT (through `safetensors.torch.save_file`) writes.
const PT_FORMAT: (&str, &str) = ("format", "pt");

/// What the base model does, PEFT's `task_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskType {
    /// Encoder-decoder generation (T5): `"SEQ_2_SEQ_LM"`.
    Seq2SeqLm,
    /// Decoder-only generation (LLaMA): `"CAUSAL_LM"`.
    CausalLm,
}

impl TaskType {
    /// PEFT's spelling.
    pub fn as_peft(self) -> &'static str {
        match self {
            TaskType::Seq2SeqLm => "SEQ_2_SEQ_LM",
            TaskType::CausalLm => "CAUSAL_LM",
        }
    }

    fn from_peft(s: &str) -> Option<Self> {
        match s {
            "SEQ_2_SEQ_LM" => Some(TaskType::Seq2SeqLm),
            "CAUSAL_LM" => Some(TaskType::CausalLm),
            _ => None,
        }
    }
}

/// The part of PEFT's `LoraConfig` that rkif uses. Everything else PEFT writes is fixed to its
/// default (plain LoRA: no DoRA, no rsLoRA, no bias, no per-module rank or alpha).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    /// `r`.
    pub rank: usize,
    /// `lora_alpha`; the update is scaled by `alpha / r`.
    pub alpha: f64,
    /// `lora_dropout`.
    pub dropout: f32,
    /// `target_modules`: last components of module names (`q`, `v_proj`) or full names.
    pub target_modules: Vec<String>,
    /// `task_type`.
    pub task_type: TaskType,
    /// `base_model_name_or_path` (may be empty, as in PEFT when the model was built from a config).
    pub base_model_name_or_path: String,
}

impl AdapterConfig {
    /// The adapter configuration of a model adapted with `lora`.
    pub fn new(lora: &LoraConfig, task_type: TaskType, base_model: impl Into<String>) -> Self {
        Self {
            rank: lora.rank,
            alpha: lora.alpha,
            dropout: lora.dropout,
            target_modules: lora.targets.clone(),
            task_type,
            base_model_name_or_path: base_model.into(),
        }
    }

    /// rkif's LoRA hyper-parameters for this adapter.
    pub fn lora_config(&self) -> LoraConfig {
        LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: self.target_modules.clone(),
        }
    }

    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Whether PEFT adapts `module` under this config: a target equals the module name or is
    /// a dotted suffix of it (`q` targets `encoder.block.0.layer.0.SelfAttention.q`).
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| {
            module == t
                || module
                    .strip_suffix(t.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
    }

    /// The JSON object PEFT 0.17 writes for a plain LoRA adapter saved for inference
    /// (`save_pretrained` sets `inference_mode` to true in the file).
    pub fn to_peft_json(&self) -> Value {
        // PEFT writes an integer alpha as an integer; keep that when we can.
        let alpha = if self.alpha.fract() == 0.0 && self.alpha.abs() < 1e15 {
            json!(self.alpha as i64)
        } else {
            json!(self.alpha)
        };
        // f32 -> shortest decimal -> f64, so 0.05 is written as 0.05, not 0.0500000007.
        let dropout: f64 = self
            .dropout
            .to_string()
            .parse()
            .unwrap_or(self.dropout as f64);
        json!({
            "alpha_pattern": {},
            "auto_mapping": null,
            "base_model_name_or_path": self.base_model_name_or_path,
            "bias": "none",
            "corda_config": null,
            "eva_config": null,
            "exclude_modules": null,
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layer_replication": null,
            "layers_pattern": null,
            "layers_to_transform": null,
            "loftq_config": {},
            "lora_alpha": alpha,
            "lora_bias": false,
            "lora_dropout": dropout,
            "megatron_config": null,
            "megatron_core": "megatron.core",
            "modules_to_save": null,
            "peft_type": "LORA",
            "qalora_group_size": 16,
            "r": self.rank,
            "rank_pattern": {},
            "revision": null,
            "target_modules": self.target_modules,
            "target_parameters": null,
            "task_type": self.task_type.as_peft(),
            "trainable_token_indices": null,
            "use_dora": false,
            "use_qalora": false,
            "use_rslora": false,
        })
    }

    /// Read a PEFT `adapter_config.json` object. Fields rkif does not use are ignored, but a
    /// field that asks for something rkif does not implement (DoRA, rsLoRA, a trained bias,
    /// per-module ranks) is an error naming it. `path` is only used in error messages.
    pub fn from_peft_json(value: &Value, path: &Path) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| Error::format(path, "expected a JSON object"))?;
        let field = |name: &str| obj.get(name).filter(|v| !v.is_null());
        let bad = |name: &str, what: &str| Error::format(path, format!("field `{name}`: {what}"));

        match field("peft_type").and_then(Value::as_str) {
            Some("LORA") => {}
            Some(other) => return Err(bad("peft_type", &format!("`{other}` is not LORA"))),
            None => return Err(bad("peft_type", "missing or not a string")),
        }
        let rank = field("r")
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .and_then(|r| usize::try_from(r).ok())
            .ok_or_else(|| bad("r", "missing or not a positive integer"))?;
        let alpha = field("lora_alpha")
            .and_then(Value::as_f64)
            .filter(|a| a.is_finite())
            .ok_or_else(|| bad("lora_alpha", "missing or not a finite number"))?;
        let dropout = match field("lora_dropout") {
            None => 0.0,
            Some(v) => v
                .as_f64()
                .filter(|p| (0.0..1.0).contains(p))
                .ok_or_else(|| bad("lora_dropout", "not a number in [0, 1)"))?
                as f32,
        };
        let target_modules = match field("target_modules") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("target_modules", "expected a non-empty list of strings"))?,
            Some(Value::String(_)) => {
                return Err(bad(
                    "target_modules",
                    "a regular expression is not supported; list the module names",
                ))
            }
            _ => return Err(bad("target_modules", "missing or not a list of strings")),
        };
        let task_type = field("task_type")
            .and_then(Value::as_str)
            .and_then(TaskType::from_peft)
            .ok_or_else(|| {
                bad(
                    "task_type",
                    "missing, or neither SEQ_2_SEQ_LM nor CAUSAL_LM",
                )
            })?;
        let base_model_name_or_path = field("base_model_name_or_path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();

        // Options that would change the arithmetic: refuse rather than load a different model.
        if let Some(b) = field("bias") {
            if b.as_str() != Some("none") {
                return Err(bad("bias", "only \"none\" is supported"));
            }
        }
        for flag in ["use_dora", "use_rslora", "fan_in_fan_out", "lora_bias"] {
            if let Some(v) = field(flag) {
                if v.as_bool() != Some(false) {
                    return Err(bad(flag, "only false is supported"));
                }
            }
        }
        for pattern in ["rank_pattern", "alpha_pattern"] {
            if let Some(v) = field(pattern) {
                if v.as_object().is_none_or(|m| !m.is_empty()) {
                    return Err(bad(pattern, "per-module values are not supported"));
                }
            }
        }
        Ok(Self {
            rank,
            alpha,
            dropout,
            target_modules,
            task_type,
            base_model_name_or_path,
        })
    }
}

/// The key of a LoRA factor of `module` in `adapter_model.safetensors`:
/// `base_model.model.<module>.lora_A.weight`.
pub fn adapter_file_key(module: &str, factor: LoraFactor) -> String {
    let f = match factor {
        LoraFactor::A => "lora_A",
        LoraFactor::B => "lora_B",
    };
    format!("base_model.model.{module}.{f}.weight")
}

/// The file key of a PEFT runtime parameter name: drops the adapter name
/// (`....lora_A.default.weight` -> `....lora_A.weight`). `None` if `runtime_name` is not a
/// LoRA factor name.
pub fn file_key_from_runtime_name(runtime_name: &str) -> Option<String> {
    let (module, factor) = split_runtime_name(runtime_name)?;
    Some(adapter_file_key(module, factor))
}

/// `base_model.model.<module>.lora_X.<adapter>.weight` -> (`<module>`, X).
fn split_runtime_name(name: &str) -> Option<(&str, LoraFactor)> {
    let rest = name
        .strip_prefix("base_model.model.")?
        .strip_suffix(".weight")?;
    let (rest, _adapter) = rest.rsplit_once('.')?;
    split_module_factor(rest)
}

/// `<module>.lora_A` -> (`<module>`, A).
fn split_module_factor(s: &str) -> Option<(&str, LoraFactor)> {
    if let Some(module) = s.strip_suffix(".lora_A") {
        Some((module, LoraFactor::A))
    } else if let Some(module) = s.strip_suffix(".lora_B") {
        Some((module, LoraFactor::B))
    } else {
        None
    }
}

/// Write `model`'s adapters into the folder `dir` (created if needed) in PEFT's layout.
/// Layers without an adapter are skipped.
pub fn save_adapter<M: LoraModel + ?Sized>(
    model: &M,
    dir: &Path,
    config: &AdapterConfig,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors = Vec::new();
    for layer in model.lora_layers() {
        if let Some(ad) = layer.adapter() {
            tensors.push((
                adapter_file_key(layer.name(), LoraFactor::A),
                ad.a.as_tensor().clone(),
            ));
            tensors.push((
                adapter_file_key(layer.name(), LoraFactor::B),
                ad.b.as_tensor().clone(),
            ));
        }
    }
    if tensors.is_empty() {
        return Err(Error::Model(format!(
            "no layer carries an adapter; nothing to save to {}",
            dir.display()
        )));
    }
    let metadata = HashMap::from([(PT_FORMAT.0.to_string(), PT_FORMAT.1.to_string())]);
    write_safetensors(&dir.join(ADAPTER_WEIGHTS_FILE), &tensors, metadata)?;

    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config.to_peft_json())
        .map_err(|e| Error::format(&config_path, e.to_string()))?;
    write_atomic(&config_path, text.as_bytes())
}

/// An adapter as read from disk: its configuration and its tensors by file key.
#[derive(Debug, Clone)]
pub struct AdapterFiles {
    pub config: AdapterConfig,
    /// File key -> tensor (`lora_A` `[r, in]`, `lora_B` `[out, r]`), on the device it was read to.
    pub tensors: HashMap<String, Tensor>,
}

/// Read both adapter files from `dir`, checking the config and that every tensor key is a LoRA
/// factor key; tensors go to `device`.
pub fn read_adapter(dir: &Path, device: &Device) -> Result<AdapterFiles> {
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&config_path, format!("not valid JSON: {e}")))?;
    let config = AdapterConfig::from_peft_json(&value, &config_path)?;

    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    let (tensors, _metadata) = read_safetensors(&weights_path, device)?;
    for key in tensors.keys() {
        let factor_key = key
            .strip_prefix("base_model.model.")
            .and_then(|k| k.strip_suffix(".weight"))
            .and_then(split_module_factor);
        if factor_key.is_none() {
            return Err(Error::format(
                &weights_path,
                format!("tensor `{key}` is not a LoRA factor (base_model.model.<module>.lora_A|lora_B.weight)"),
            ));
        }
    }
    Ok(AdapterFiles { config, tensors })
}

/// Load the adapter in `dir` into `model`, replacing the values of its LoRA factors.
///
/// Every layer the config targets, and every layer that already carries an adapter, must find
/// both factors in the file with shapes `[r, in]` and `[out, r]`; every file key must belong to
/// such a layer. Everything is checked before any layer changes, so on error the model is as it
/// was. A layer whose adapter already has the right shapes, scale and dropout keeps its `Var`s
/// (an optimiser holding them stays attached); other layers get fresh factors (and keep their
/// dropout generator, if any). Returns the config.
pub fn load_adapter<M: LoraModel + ?Sized>(model: &mut M, dir: &Path) -> Result<AdapterConfig> {
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    let device = match model.lora_layers().first() {
        Some(layer) => layer.weight().device().clone(),
        None => Device::Cpu,
    };
    let AdapterFiles {
        config,
        mut tensors,
    } = read_adapter(dir, &device)?;

    // Pass 1: match every concerned layer with its two factors, by layer position.
    let mut factors: Vec<(usize, Tensor, Tensor)> = Vec::new();
    for (i, layer) in model.lora_layers().into_iter().enumerate() {
        if !config.targets(layer.name()) && layer.adapter().is_none() {
            continue;
        }
        let (out_dim, in_dim) = layer.weight().dims2()?;
        let mut take = |factor: LoraFactor, shape: [usize; 2]| {
            take_factor(&mut tensors, &weights_path, layer.name(), factor, shape)
        };
        let a = take(LoraFactor::A, [config.rank, in_dim])?;
        let b = take(LoraFactor::B, [out_dim, config.rank])?;
        factors.push((i, a, b));
    }
    let mut unknown: Vec<&String> = tensors.keys().collect();
    unknown.sort();
    if let Some(key) = unknown.first() {
        return Err(Error::tensor(
            key.as_str(),
            format!(
                "in {} but the model has no LoRA layer `{}` targeted by {:?}",
                weights_path.display(),
                module_of_key(key),
                config.target_modules
            ),
        ));
    }

    // Pass 2: write the factors in.
    let (scale, dropout) = (config.scale(), config.dropout);
    let mut layers = model.lora_layers_mut();
    for (i, a, b) in factors {
        let layer = layers
            .get_mut(i)
            .ok_or_else(|| Error::Model("the model's LoRA layers changed while loading".into()))?;
        let dtype = layer.weight().dtype();
        match layer.adapter() {
            Some(ad)
                if ad.a.dims() == a.dims()
                    && ad.b.dims() == b.dims()
                    && ad.scale == scale
                    && ad.dropout == dropout =>
            {
                ad.a.set(&a.to_dtype(dtype)?)?;
                ad.b.set(&b.to_dtype(dtype)?)?;
            }
            _ => layer.set_adapter(a, b, scale, dropout)?,
        }
    }
    Ok(config)
}

/// Remove the factor `factor` of `module` from `tensors`, checking it has `shape`.
fn take_factor(
    tensors: &mut HashMap<String, Tensor>,
    weights_path: &Path,
    module: &str,
    factor: LoraFactor,
    shape: [usize; 2],
) -> Result<Tensor> {
    let key = adapter_file_key(module, factor);
    let t = tensors.remove(&key).ok_or_else(|| {
        Error::tensor(
            &key,
            format!(
                "missing from {} (expected shape {shape:?})",
                weights_path.display()
            ),
        )
    })?;
    if t.dims() != shape {
        return Err(Error::tensor(
            &key,
            format!(
                "{} has shape {:?}, the model expects {shape:?}",
                weights_path.display(),
                t.dims()
            ),
        ));
    }
    Ok(t)
}

fn module_of_key(key: &str) -> &str {
    key.strip_prefix("base_model.model.")
        .and_then(|k| k.strip_suffix(".weight"))
        .and_then(split_module_factor)
        .map_or(key, |(m, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_map_to_file_keys() {
        assert_eq!(
            file_key_from_runtime_name(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"
            )
            .as_deref(),
            Some("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
        );
        assert_eq!(
            file_key_from_runtime_name("model.layers.0.q_proj.weight"),
            None
        );
    }

    #[test]
    fn config_round_trips_through_peft_json() -> Result<()> {
        let cfg = AdapterConfig::new(&LoraConfig::default(), TaskType::Seq2SeqLm, "t5-small");
        let json = cfg.to_peft_json();
        assert_eq!(json["lora_dropout"], json!(0.05));
        assert_eq!(json["lora_alpha"], json!(32));
        let back = AdapterConfig::from_peft_json(&json, Path::new("x.json"))?;
        assert_eq!(back, cfg);
        Ok(())
    }

    #[test]
    fn targets_match_like_peft() {
        let cfg = AdapterConfig {
            target_modules: vec!["q".into(), "self_attn.v_proj".into()],
            ..AdapterConfig::new(&LoraConfig::default(), TaskType::CausalLm, "")
        };
        assert!(cfg.targets("encoder.block.0.layer.0.SelfAttention.q"));
        assert!(cfg.targets("q"));
        assert!(cfg.targets("model.layers.3.self_attn.v_proj"));
        assert!(!cfg.targets("model.layers.3.self_attn.q_proj"));
        assert!(!cfg.targets("encoder.block.0.layer.0.SelfAttention.qq"));
    }

    #[test]
    fn unsupported_options_name_the_field() {
        let mut json =
            AdapterConfig::new(&LoraConfig::default(), TaskType::CausalLm, "").to_peft_json();
        json["use_dora"] = json!(true);
        let err = AdapterConfig::from_peft_json(&json, Path::new("a.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("use_dora") && err.contains("a.json"), "{err}");
    }
}
