//! Loading a LLaMA-family model from a GGUF file (llama.cpp's format): the configuration
//! from the `llama.*` metadata, every tensor dequantised to f32 under its Hugging Face name,
//! and the tokenizer rebuilt from the `tokenizer.ggml.*` metadata.
//!
//! llama.cpp's converter permutes the rows of `q_proj` and `k_proj` so that its interleaved
//! RoPE (pairs `(2i, 2i + 1)`) computes what Hugging Face's rotate-half RoPE (pairs
//! `(i, i + d/2)`) computes. We undo that permutation, so the HF-layout model here gives the
//! same result.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

use super::llama::{Llama, LlamaConfig};
use super::lora::{LoraConfig, SharedRng};
use super::tokenizer::{byte_level_bpe, PreSplit, TextTokenizer};
use super::Weights;
use crate::{Error, Result};

/// A GGUF token type that must never be split (`CONTROL`, `USER_DEFINED`).
const CONTROL_TOKEN: i32 = 3;
const USER_DEFINED_TOKEN: i32 = 4;

/// Everything a GGUF file yields.
#[derive(Debug)]
pub struct GgufLlama {
    pub config: LlamaConfig,
    /// Dequantised tensors under Hugging Face names, q/k rows in HF order.
    pub weights: Weights,
    pub tokenizer: TextTokenizer,
}

impl GgufLlama {
    /// Read `path`: metadata, tokenizer and every tensor (dequantised to `dtype` on `device`).
    pub fn read(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let (content, mut reader) = read_content(path)?;
        let meta = Metadata {
            map: &content.metadata,
            path,
        };
        let config = meta.llama_config(content.tensor_infos.contains_key("output.weight"))?;
        let tokenizer = meta.tokenizer(config.vocab_size)?;

        let mut tensors = HashMap::new();
        for name in content.tensor_infos.keys() {
            let q = content
                .tensor(&mut reader, name, device)
                .map_err(|e| Error::format(path, format!("tensor `{name}`: {e}")))?;
            let t = q.dequantize(device)?.to_dtype(dtype)?;
            let (hf, layout) = hf_name(name)
                .ok_or_else(|| Error::format(path, format!("unknown GGUF tensor `{name}`")))?;
            let t = match layout {
                RowLayout::Plain => t,
                RowLayout::RopeQuery => unpermute_rope_rows(&t, config.num_attention_heads)?,
                RowLayout::RopeKey => unpermute_rope_rows(&t, config.num_key_value_heads)?,
            };
            tensors.insert(hf, t);
        }
        Ok(Self {
            config,
            weights: Weights::from_map(tensors, PathBuf::from(path)),
            tokenizer,
        })
    }

    /// Read only the tokenizer (no tensor data) from `path`; its size is checked against the
    /// model's `llama.vocab_size`.
    pub fn read_tokenizer(path: &Path) -> Result<TextTokenizer> {
        let content = read_content(path)?.0;
        let meta = Metadata {
            map: &content.metadata,
            path,
        };
        let config = meta.llama_config(content.tensor_infos.contains_key("output.weight"))?;
        meta.tokenizer(config.vocab_size)
    }

    /// Build the model (with fresh adapters on the modules `lora` targets).
    pub fn into_model(
        self,
        lora: Option<&LoraConfig>,
        rng: &SharedRng,
    ) -> Result<(Llama, TextTokenizer)> {
        let model = Llama::new(self.config, &self.weights, lora, rng)?;
        Ok((model, self.tokenizer))
    }
}

/// The GGUF header (metadata and tensor index) and the open file.
fn read_content(path: &Path) -> Result<(Content, BufReader<File>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader)
        .map_err(|e| Error::format(path, format!("not a readable GGUF file: {e}")))?;
    Ok((content, reader))
}

/// Whether a tensor's rows were permuted for llama.cpp's RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowLayout {
    Plain,
    RopeQuery,
    RopeKey,
}

/// The Hugging Face name of a GGUF tensor, or `None` for a name we do not know.
fn hf_name(gguf: &str) -> Option<(String, RowLayout)> {
    let global = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = global {
        return Some((name.to_string(), RowLayout::Plain));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, layout) = match part {
        "attn_norm.weight" => ("input_layernorm.weight", RowLayout::Plain),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", RowLayout::Plain),
        "attn_q.weight" => ("self_attn.q_proj.weight", RowLayout::RopeQuery),
        "attn_k.weight" => ("self_attn.k_proj.weight", RowLayout::RopeKey),
        "attn_v.weight" => ("self_attn.v_proj.weight", RowLayout::Plain),
        "attn_output.weight" => ("self_attn.o_proj.weight", RowLayout::Plain),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", RowLayout::Plain),
        "ffn_up.weight" => ("mlp.up_proj.weight", RowLayout::Plain),
        "ffn_down.weight" => ("mlp.down_proj.weight", RowLayout::Plain),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{module}"), layout))
}

/// Undo llama.cpp's RoPE row permutation. Within each head the converter moved HF row
/// `j * d/2 + i` (half `j`, pair `i`) to row `2i + j`; this moves it back.
///
/// Shapes: `w` `[heads * d, in]` -> the same.
fn unpermute_rope_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out_dim, in_dim) = w.dims2()?;
    if heads == 0 || out_dim % (2 * heads) != 0 {
        return Err(Error::tensor(
            "attn_q/attn_k",
            format!("{out_dim} rows do not split into {heads} heads of even size"),
        ));
    }
    let half = out_dim / heads / 2;
    Ok(w.reshape((heads, half, 2, in_dim))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out_dim, in_dim))?)
}

/// Typed access to GGUF metadata with errors naming the file and key.
struct Metadata<'a> {
    map: &'a HashMap<String, Value>,
    path: &'a Path,
}

impl Metadata<'_> {
    fn value(&self, key: &str) -> Result<&Value> {
        self.map
            .get(key)
            .ok_or_else(|| Error::format(self.path, format!("metadata `{key}` is missing")))
    }

    fn wrong(&self, key: &str, e: candle_core::Error) -> Error {
        Error::format(self.path, format!("metadata `{key}`: {e}"))
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.value(key)?;
        // Counts are u32 in files from llama.cpp, u64 in some others.
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .map_err(|e| self.wrong(key, e))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.map.contains_key(key) {
            true => self.usize(key).map(Some),
            false => Ok(None),
        }
    }

    /// An f32 value as the decimal it was written from (`1e-5` stored as f32 reads back as
    /// `9.99999974e-6`; the shortest decimal that round-trips is the intended value).
    fn f64(&self, key: &str) -> Result<f64> {
        let v = self.value(key)?;
        match v {
            Value::F64(x) => Ok(*x),
            _ => {
                let x = v.to_f32().map_err(|e| self.wrong(key, e))?;
                Ok(x.to_string().parse::<f64>().unwrap_or(x as f64))
            }
        }
    }

    fn string(&self, key: &str) -> Result<&str> {
        self.value(key)?
            .to_string()
            .map(|s| s.as_str())
            .map_err(|e| self.wrong(key, e))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        let list = self.value(key)?.to_vec().map_err(|e| self.wrong(key, e))?;
        list.iter()
            .enumerate()
            .map(|(i, v)| {
                v.to_string()
                    .cloned()
                    .map_err(|e| self.wrong(&format!("{key}[{i}]"), e))
            })
            .collect()
    }

    fn token_id(&self, key: &str) -> Result<Option<u32>> {
        Ok(self.opt_usize(key)?.map(|x| x as u32))
    }

    /// The model configuration from `llama.*`; `has_output` tells whether an untied
    /// `output.weight` is stored.
    fn llama_config(&self, has_output: bool) -> Result<LlamaConfig> {
        let arch = self.string("general.architecture")?;
        if arch != "llama" {
            return Err(Error::format(
                self.path,
                format!("general.architecture is `{arch}`, only `llama` is supported"),
            ));
        }
        let hidden = self.usize("llama.embedding_length")?;
        let heads = self.usize("llama.attention.head_count")?;
        let vocab = match self.opt_usize("llama.vocab_size")? {
            Some(v) => v,
            None => self.strings("tokenizer.ggml.tokens")?.len(),
        };
        let rope_theta = match self.map.contains_key("llama.rope.freq_base") {
            true => self.f64("llama.rope.freq_base")?,
            false => 10_000.0,
        };
        let cfg = LlamaConfig {
            hidden_size: hidden,
            intermediate_size: self.usize("llama.feed_forward_length")?,
            num_hidden_layers: self.usize("llama.block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: self
                .opt_usize("llama.attention.head_count_kv")?
                .unwrap_or(heads),
            head_dim: match self.opt_usize("llama.rope.dimension_count")? {
                Some(d) => d,
                None => hidden.checked_div(heads).unwrap_or(0),
            },
            rms_norm_eps: self.f64("llama.attention.layer_norm_rms_epsilon")?,
            rope_theta,
            vocab_size: vocab,
            tie_word_embeddings: !has_output,
            bos_token_id: self.token_id("tokenizer.ggml.bos_token_id")?,
            eos_token_ids: self
                .token_id("tokenizer.ggml.eos_token_id")?
                .into_iter()
                .collect(),
            pad_token_id: self.token_id("tokenizer.ggml.padding_token_id")?,
        };
        cfg.validate()
            .map_err(|e| Error::format(self.path, format!("GGUF llama metadata: {e}")))?;
        Ok(cfg)
    }

    /// Rebuild the tokenizer (byte-level BPE, `tokenizer.ggml.model = gpt2`).
    fn tokenizer(&self, vocab_size: usize) -> Result<TextTokenizer> {
        let model = self.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::format(
                self.path,
                format!("tokenizer.ggml.model `{model}` is not supported (only byte-level BPE, `gpt2`); load a tokenizer.json instead"),
            ));
        }
        let pre = match self.map.contains_key("tokenizer.ggml.pre") {
            true => self.string("tokenizer.ggml.pre")?,
            false => "default",
        };
        let pre_split = match pre {
            "default" | "gpt2" | "gpt-2" => PreSplit::Gpt2,
            "smollm" | "starcoder" => PreSplit::DigitsThenGpt2,
            other => {
                return Err(Error::format(
                    self.path,
                    format!("tokenizer.ggml.pre `{other}` is not supported"),
                ))
            }
        };
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let merges = self.strings("tokenizer.ggml.merges")?;
        let special_ids = self.special_ids(tokens.len())?;
        let tok = byte_level_bpe(&tokens, &merges, &special_ids, pre_split)
            .map_err(|e| Error::format(self.path, e.to_string()))?;
        TextTokenizer::new(tok, self.path, vocab_size)
    }

    /// Control and user-defined tokens (never split), plus the BOS/EOS/padding ids.
    fn special_ids(&self, n_tokens: usize) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.map.contains_key("tokenizer.ggml.token_type") {
            let key = "tokenizer.ggml.token_type";
            let types = self.value(key)?.to_vec().map_err(|e| self.wrong(key, e))?;
            for (i, v) in types.iter().enumerate() {
                let ty = v
                    .to_i32()
                    .map_err(|e| self.wrong(&format!("{key}[{i}]"), e))?;
                if ty == CONTROL_TOKEN || ty == USER_DEFINED_TOKEN {
                    ids.push(i as u32);
                }
            }
        }
        for key in [
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.padding_token_id",
        ] {
            if let Some(id) = self.token_id(key)? {
                if id as usize >= n_tokens {
                    return Err(Error::format(
                        self.path,
                        format!("metadata `{key}` = {id} is outside the {n_tokens} tokens"),
                    ));
                }
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight"),
            Some((
                "model.layers.12.self_attn.q_proj.weight".into(),
                RowLayout::RopeQuery
            ))
        );
        assert_eq!(
            hf_name("token_embd.weight").map(|x| x.0),
            Some("model.embed_tokens.weight".into())
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").map(|x| x.0),
            Some("model.layers.0.post_attention_layernorm.weight".into())
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    /// llama.cpp's permutation: `reshape(heads, 2, d/2, in).swapaxes(1, 2)`, written out.
    fn llama_cpp_permute(rows: &[f32], heads: usize, d: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..d / 2 {
                    out[h * d + i * 2 + j] = rows[h * d + j * (d / 2) + i];
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_the_converter() -> Result<()> {
        let (heads, d) = (3, 4);
        let hf: Vec<f32> = (0..heads * d).map(|x| x as f32).collect();
        let gguf = llama_cpp_permute(&hf, heads, d);
        let w = Tensor::from_vec(gguf, (heads * d, 1), &Device::Cpu)?;
        let back = unpermute_rope_rows(&w, heads)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(back, hf);
        assert!(unpermute_rope_rows(&w, 5).is_err());
        Ok(())
    }
}
