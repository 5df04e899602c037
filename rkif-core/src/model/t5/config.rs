//! The T5 configuration, read from a Hugging Face `config.json`.
//!
//! Only the fields the forward pass needs are read; the many other keys HF writes are
//! ignored. Missing optional fields take Hugging Face's `T5Config` defaults.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// The non-linearity inside the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// The tanh approximation (HF `gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// The exact erf form (HF `gelu`).
    GeluErf,
    Silu,
}

impl Activation {
    fn from_hf(name: &str) -> Option<Self> {
        match name {
            "relu" => Some(Self::Relu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "gelu" => Some(Self::GeluErf),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }
}

/// `eos_token_id` is a number in T5 configs but a list in some others.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

/// The fields of `config.json` as written by Hugging Face.
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    num_layers: usize,
    #[serde(default)]
    num_decoder_layers: Option<usize>,
    num_heads: usize,
    #[serde(default = "default_buckets")]
    relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_ffn")]
    feed_forward_proj: String,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<OneOrMany>,
    #[serde(default)]
    decoder_start_token_id: Option<u32>,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ffn() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}

/// A validated T5 configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Size of one attention head.
    pub d_kv: usize,
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Decoder blocks (`num_layers` when the config omits it).
    pub num_decoder_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    /// `gated-*` feed-forward (T5 v1.1 / Flan: `wi_0`, `wi_1`) or plain (`wi`).
    pub gated_ffn: bool,
    pub activation: Activation,
    /// The LM head shares `shared.weight`, and its input is scaled by `d_model^-0.5`.
    pub tie_word_embeddings: bool,
    pub pad_token_id: u32,
    /// Generation stops at any of these.
    pub eos_token_ids: Vec<u32>,
    pub decoder_start_token_id: u32,
}

impl T5Config {
    /// Read and validate `config.json`; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|what| Error::format(path, what))
    }

    /// Parse and validate the JSON text of a T5 `config.json`. The error says which field.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| format!("not a valid T5 config: {e}"))?;
        // mT5 shares the architecture; umT5 (a bias per layer) and others do not.
        if let Some(kind) = raw
            .model_type
            .as_deref()
            .filter(|k| !["t5", "mt5"].contains(k))
        {
            return Err(format!(
                "field `model_type`: {kind:?} is not a T5 model (t5, mt5)"
            ));
        }
        let ffn = raw.feed_forward_proj.as_str();
        let (gated, act_name) = match ffn.strip_prefix("gated-") {
            // HF maps the legacy name `gated-gelu` to the tanh approximation.
            Some("gelu") => (true, "gelu_new"),
            Some(act) => (true, act),
            None => (false, ffn),
        };
        let activation = Activation::from_hf(act_name).ok_or_else(|| {
            format!(
                "field `feed_forward_proj`: unsupported activation {act_name:?} in {ffn:?} \
                 (expected relu, gelu, gelu_new, gelu_pytorch_tanh or silu, optionally gated-)"
            )
        })?;
        for (field, value) in [
            ("vocab_size", raw.vocab_size),
            ("d_model", raw.d_model),
            ("d_kv", raw.d_kv),
            ("d_ff", raw.d_ff),
            ("num_layers", raw.num_layers),
            (
                "num_decoder_layers",
                raw.num_decoder_layers.unwrap_or(raw.num_layers),
            ),
            ("num_heads", raw.num_heads),
            (
                "relative_attention_num_buckets",
                raw.relative_attention_num_buckets,
            ),
            (
                "relative_attention_max_distance",
                raw.relative_attention_max_distance,
            ),
        ] {
            if value == 0 {
                return Err(format!("field `{field}` must be positive"));
            }
        }
        // The bidirectional encoder halves the buckets, and the log-spaced part needs at
        // least one exact bucket below it.
        if raw.relative_attention_num_buckets < 4 {
            return Err("field `relative_attention_num_buckets` must be at least 4".into());
        }
        if !(raw.layer_norm_epsilon.is_finite() && raw.layer_norm_epsilon > 0.0) {
            return Err("field `layer_norm_epsilon` must be a positive number".into());
        }
        let pad = raw.pad_token_id.unwrap_or(0);
        let eos = match raw.eos_token_id {
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
            None => vec![1],
        };
        let cfg = Self {
            vocab_size: raw.vocab_size,
            d_model: raw.d_model,
            d_kv: raw.d_kv,
            d_ff: raw.d_ff,
            num_layers: raw.num_layers,
            num_decoder_layers: raw.num_decoder_layers.unwrap_or(raw.num_layers),
            num_heads: raw.num_heads,
            relative_attention_num_buckets: raw.relative_attention_num_buckets,
            relative_attention_max_distance: raw.relative_attention_max_distance,
            layer_norm_epsilon: raw.layer_norm_epsilon,
            gated_ffn: gated,
            activation,
            tie_word_embeddings: raw.tie_word_embeddings,
            pad_token_id: pad,
            eos_token_ids: eos,
            decoder_start_token_id: raw.decoder_start_token_id.unwrap_or(pad),
        };
        for (field, id) in [
            ("pad_token_id", cfg.pad_token_id),
            ("decoder_start_token_id", cfg.decoder_start_token_id),
        ] {
            if id as usize >= cfg.vocab_size {
                return Err(format!(
                    "field `{field}`: {id} is outside the vocabulary ({})",
                    cfg.vocab_size
                ));
            }
        }
        Ok(cfg)
    }

    /// `num_heads * d_kv`, the width of the attention projections.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"vocab_size": 10, "d_model": 8, "d_kv": 2, "d_ff": 16,
        "num_layers": 3, "num_heads": 4}"#;

    #[test]
    fn defaults_follow_hugging_face() {
        let cfg = T5Config::from_json(MINIMAL).unwrap();
        assert_eq!(cfg.num_decoder_layers, 3);
        assert!(cfg.tie_word_embeddings);
        assert!(!cfg.gated_ffn);
        assert_eq!(cfg.activation, Activation::Relu);
        assert_eq!(cfg.relative_attention_num_buckets, 32);
        assert_eq!(cfg.eos_token_ids, vec![1]);
        assert_eq!(cfg.inner_dim(), 8);
    }

    #[test]
    fn gated_gelu_is_the_tanh_approximation() {
        let text = MINIMAL.replace('}', r#", "feed_forward_proj": "gated-gelu"}"#);
        let cfg = T5Config::from_json(&text).unwrap();
        assert!(cfg.gated_ffn);
        assert_eq!(cfg.activation, Activation::GeluTanh);
    }

    #[test]
    fn errors_name_the_field() {
        let err = T5Config::from_json(r#"{"vocab_size": 10}"#).unwrap_err();
        assert!(err.contains("d_model"), "{err}");
        let text = MINIMAL.replace('}', r#", "model_type": "llama"}"#);
        let err = T5Config::from_json(&text).unwrap_err();
        assert!(err.contains("model_type"), "{err}");
        let text = MINIMAL.replace('}', r#", "feed_forward_proj": "gated-tanhh"}"#);
        let err = T5Config::from_json(&text).unwrap_err();
        assert!(err.contains("feed_forward_proj"), "{err}");
        let err = T5Config::from_json(&MINIMAL.replace("\"d_kv\": 2", "\"d_kv\": 0")).unwrap_err();
        assert!(err.contains("d_kv"), "{err}");
    }
}
