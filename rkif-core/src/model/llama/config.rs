//! The LLaMA configuration, read from a Hugging Face `config.json` (or built from GGUF
//! metadata by [`crate::model::gguf`]).

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// `eos_token_id` is a single id in most configs and a list in some (LLaMA-3 style).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

/// The fields of a Hugging Face LLaMA `config.json` that the model uses. Unknown extra fields
/// are ignored (HF configs carry many).
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct RawConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<OneOrMany>,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

/// Sizes and constants of a LLaMA-family decoder (LLaMA-2, TinyLlama, SmolLM2).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); equal to `num_attention_heads` without GQA.
    pub num_key_value_heads: usize,
    /// Per-head size; `hidden_size / num_attention_heads` unless the config says otherwise.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub vocab_size: usize,
    /// The output head reuses `model.embed_tokens.weight` (no `lm_head.weight` stored).
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// Generation stops at any of these.
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

impl LlamaConfig {
    /// Read and validate `path` (a Hugging Face `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config { field, what } => {
                Error::format(path, format!("field `{field}`: {what}"))
            }
            Error::Format { what, .. } => Error::format(path, what),
            other => other,
        })
    }

    /// Parse and validate the text of a `config.json`. Errors name the field.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| Error::format("config.json", format!("malformed LLaMA config: {e}")))?;
        if let Some(scaling) = raw.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            return Err(Error::config(
                "rope_scaling",
                format!("RoPE scaling {scaling} is not supported"),
            ));
        }
        if raw.attention_bias || raw.mlp_bias {
            return Err(Error::config(
                "attention_bias",
                "biased attention/MLP projections are not supported",
            ));
        }
        let heads = raw.num_attention_heads;
        let cfg = Self {
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(heads),
            head_dim: match raw.head_dim {
                Some(d) => d,
                None => raw.hidden_size.checked_div(heads).unwrap_or(0),
            },
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta,
            vocab_size: raw.vocab_size,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: raw.bos_token_id,
            eos_token_ids: match raw.eos_token_id {
                None => Vec::new(),
                Some(OneOrMany::One(id)) => vec![id],
                Some(OneOrMany::Many(ids)) => ids,
            },
            pad_token_id: raw.pad_token_id,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sizes must be positive and the heads must group evenly.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be positive"));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(Error::config(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(Error::config("head_dim", "must be even for RoPE"));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err(Error::config(
                "rms_norm_eps",
                "rms_norm_eps and rope_theta must be positive",
            ));
        }
        Ok(())
    }

    /// Query heads per key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "rms_norm_eps": 1e-5, "vocab_size": 512, "eos_token_id": [2, 7],
        "some_hf_field": true}"#;

    #[test]
    fn defaults_follow_hugging_face() -> Result<()> {
        let cfg = LlamaConfig::from_json(BASE)?;
        assert_eq!(cfg.num_key_value_heads, 4);
        assert_eq!(cfg.head_dim, 16);
        assert_eq!(cfg.rope_theta, 10_000.0);
        assert!(!cfg.tie_word_embeddings);
        assert_eq!(cfg.eos_token_ids, vec![2, 7]);
        Ok(())
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let err = LlamaConfig::from_json(r#"{"hidden_size": 64}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("intermediate_size"), "{err}");
        let bad = BASE.replace(
            "\"num_attention_heads\": 4",
            "\"num_attention_heads\": 4, \"num_key_value_heads\": 3",
        );
        let err = LlamaConfig::from_json(&bad).unwrap_err().to_string();
        assert!(err.contains("num_key_value_heads"), "{err}");
    }
}
