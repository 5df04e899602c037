//! The LLaMA-family decoder (LLaMA-2, TinyLlama, SmolLM2) with LoRA on any of its linear
//! layers, Hugging Face parameter names and Hugging Face numerics: RMS norm, rotate-half
//! RoPE, grouped-query attention, SwiGLU MLP and a tied or untied output head.
//!
//! Batches are left-padded: `attention_mask` marks real tokens and position ids follow the
//! mask (`cumsum(mask) - 1`), so a row's result does not depend on its padding.

mod config;
mod generate;
mod ops;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use config::LlamaConfig;

use super::lora::{is_target, LoraConfig, LoraLinear, SharedRng};
use super::{LoraModel, Weights};
use crate::model::softmax::log_softmax_last_dim;
use crate::{Error, Result};
use generate::KvCache;
use ops::{apply_rope, attention_bias, repeat_kv, rms_norm, rope_tables};

/// Label value that marks a position without loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Self-attention of one block. Projections map `[b, t, hidden]` to `[b, t, heads * head_dim]`.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: LoraLinear,
    k_proj: LoraLinear,
    v_proj: LoraLinear,
    o_proj: LoraLinear,
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: LoraLinear,
    up_proj: LoraLinear,
    down_proj: LoraLinear,
}

/// One decoder layer (`model.layers.N`).
#[derive(Debug, Clone)]
struct Block {
    self_attn: Attention,
    mlp: Mlp,
    /// `[hidden]`.
    input_layernorm: Tensor,
    /// `[hidden]`.
    post_attention_layernorm: Tensor,
}

/// Per-forward tensors shared by every layer.
struct Context<'a> {
    /// RoPE tables, `[b, 1, t, head_dim]` each.
    cos: Tensor,
    sin: Tensor,
    /// Additive attention bias in f32, `[b, 1, t, s]`.
    bias: Tensor,
    cfg: &'a LlamaConfig,
    train: bool,
}

/// A LLaMA causal language model with LoRA adapters.
#[derive(Debug, Clone)]
pub struct Llama {
    cfg: LlamaConfig,
    /// `model.embed_tokens.weight`, `[vocab, hidden]`.
    embed_tokens: Tensor,
    layers: Vec<Block>,
    /// `model.norm.weight`, `[hidden]`.
    norm: Tensor,
    /// `[vocab, hidden]`; holds the embedding matrix when the head is tied.
    lm_head: LoraLinear,
}

impl Llama {
    /// Load `config.json` and the safetensors weights of a Hugging Face model folder, and
    /// attach fresh adapters to the modules `lora` targets (none when `lora` is `None`).
    pub fn from_folder(
        dir: &Path,
        lora: Option<&LoraConfig>,
        rng: &SharedRng,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let cfg = LlamaConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::from_folder(dir, device, dtype)?;
        Self::new(cfg, &weights, lora, rng)
    }

    /// Build the model from checkpoint tensors under Hugging Face names (shape-checked).
    pub fn new(
        cfg: LlamaConfig,
        weights: &Weights,
        lora: Option<&LoraConfig>,
        rng: &SharedRng,
    ) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_size;
        let q_out = cfg.num_attention_heads * cfg.head_dim;
        let kv_out = cfg.num_key_value_heads * cfg.head_dim;
        let inter = cfg.intermediate_size;
        let linear = |name: String, out_dim: usize, in_dim: usize| -> Result<LoraLinear> {
            let w = weights.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
            Ok(LoraLinear::frozen(name, w, None))
        };
        let embed_tokens = weights.get("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                self_attn: Attention {
                    q_proj: linear(format!("{p}.self_attn.q_proj"), q_out, h)?,
                    k_proj: linear(format!("{p}.self_attn.k_proj"), kv_out, h)?,
                    v_proj: linear(format!("{p}.self_attn.v_proj"), kv_out, h)?,
                    o_proj: linear(format!("{p}.self_attn.o_proj"), h, q_out)?,
                },
                mlp: Mlp {
                    gate_proj: linear(format!("{p}.mlp.gate_proj"), inter, h)?,
                    up_proj: linear(format!("{p}.mlp.up_proj"), inter, h)?,
                    down_proj: linear(format!("{p}.mlp.down_proj"), h, inter)?,
                },
                input_layernorm: weights.get(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_attention_layernorm: weights
                    .get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            });
        }
        let norm = weights.get("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings {
            LoraLinear::frozen("lm_head", embed_tokens.clone(), None)
        } else {
            linear("lm_head".into(), cfg.vocab_size, h)?
        };
        let mut model = Self {
            cfg,
            embed_tokens,
            layers,
            norm,
            lm_head,
        };
        if let Some(lora) = lora {
            model.attach_adapters(lora, rng)?;
        }
        for layer in model.lora_layers_mut() {
            layer.set_rng(rng.clone());
        }
        Ok(model)
    }

    /// Attach a fresh adapter to every module `lora` targets, in module order (so the
    /// initial `A` draws follow PyTorch's parameter order). A target that names no module is
    /// an error.
    pub fn attach_adapters(&mut self, lora: &LoraConfig, rng: &SharedRng) -> Result<()> {
        if lora.rank == 0 {
            return Err(Error::config("lora.rank", "must be positive"));
        }
        let names: Vec<String> = self
            .lora_layers()
            .iter()
            .map(|l| l.name().to_string())
            .collect();
        for target in &lora.targets {
            let one = LoraConfig {
                targets: vec![target.clone()],
                ..lora.clone()
            };
            if !names.iter().any(|n| is_target(n, &one)) {
                return Err(Error::config(
                    "lora.targets",
                    format!("`{target}` matches no LLaMA module (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head)"),
                ));
            }
        }
        for layer in self.lora_layers_mut() {
            if is_target(layer.name(), lora) {
                layer.add_adapter(lora, rng)?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// The final hidden states (after the last RMS norm).
    ///
    /// Shapes: `input_ids` `[b, t]` (integer), `attention_mask` `[b, t]` (1 = real token;
    /// `None` = no padding); returns `[b, t, hidden]`.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let mut states = self.forward_states(input_ids, attention_mask, train, false)?;
        states
            .pop()
            .ok_or_else(|| Error::Model("LLaMA forward produced no hidden state".into()))
    }

    /// Every hidden state in Hugging Face's convention: index 0 is the embeddings, index `i`
    /// the output of layer `i - 1`, the last one taken after the final RMS norm. Each
    /// `[b, t, hidden]`.
    pub fn all_hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Vec<Tensor>> {
        self.forward_states(input_ids, attention_mask, false, true)
    }

    /// Project hidden states onto the vocabulary: `[..., hidden]` -> `[..., vocab]`. Training
    /// calls this only on the positions that carry a loss.
    pub fn project(&self, hidden: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden, train)?)
    }

    /// Full-sequence logits, `[b, t, vocab]`. Rows at padded positions are meaningless.
    pub fn logits(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, attention_mask, train)?;
        self.project(&hidden, train)
    }

    /// Teacher-forced mean cross-entropy: the logits at `t` predict `labels[t + 1]`; labels
    /// equal to [`IGNORE_INDEX`] carry no loss.
    ///
    /// Shapes: `input_ids`, `attention_mask`, `labels` `[b, t]`; returns a scalar.
    pub fn loss(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        labels: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, attention_mask, train)?;
        self.loss_from_hidden(&hidden, labels, train)
    }

    /// The same loss from final hidden states: only the positions that have a target are
    /// projected onto the vocabulary (most positions of an instruction prompt have none).
    ///
    /// Shapes: `hidden` `[b, t, hidden]`, `labels` `[b, t]`; returns a scalar.
    pub fn loss_from_hidden(
        &self,
        hidden: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        if labels.dims() != [b, t] {
            return Err(Error::tensor(
                "labels",
                format!(
                    "shape {:?}, hidden states have [{b}, {t}, {h}]",
                    labels.dims()
                ),
            ));
        }
        let (rows, targets) = shifted_targets(labels, self.cfg.vocab_size)?;
        let device = hidden.device();
        let rows = Tensor::from_vec(rows, targets.len(), device)?;
        let picked = hidden.reshape((b * t, h))?.index_select(&rows, 0)?;
        let logp = log_softmax_last_dim(&self.project(&picked, train)?.to_dtype(DType::F32)?)?;
        let n = targets.len();
        let targets = Tensor::from_vec(targets, (n, 1), device)?;
        let nll = logp.gather(&targets, 1)?.neg()?;
        Ok(nll.mean_all()?)
    }

    /// The embeddings, every layer and the final norm; returns only the normed output unless
    /// `keep_all`.
    fn forward_states(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        train: bool,
        keep_all: bool,
    ) -> Result<Vec<Tensor>> {
        let (b, t) = input_ids.dims2()?;
        let key_mask = key_mask(attention_mask, b, t)?;
        let positions = positions_from_mask(&key_mask);
        let positions = Tensor::from_vec(positions.concat(), (b, t), self.device())?;
        self.run(input_ids, &key_mask, &positions, 0, None, train, keep_all)
    }

    /// The decoder stack on `t` new tokens. `key_mask` covers the cache plus the new tokens
    /// (`offset + t` columns); `positions` is `[b, t]` (u32).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        input_ids: &Tensor,
        key_mask: &[Vec<bool>],
        positions: &Tensor,
        offset: usize,
        mut cache: Option<&mut [KvCache]>,
        train: bool,
        keep_all: bool,
    ) -> Result<Vec<Tensor>> {
        let (b, t) = input_ids.dims2()?;
        let ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        // Checked here: an out-of-range id would read arbitrary memory on some devices.
        let vocab = self.cfg.vocab_size;
        if let Some(bad) = ids
            .to_vec1::<u32>()?
            .into_iter()
            .find(|&i| i as usize >= vocab)
        {
            return Err(Error::tensor(
                "input_ids",
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        let dtype = self.embed_tokens.dtype();
        let mut x =
            self.embed_tokens
                .index_select(&ids, 0)?
                .reshape((b, t, self.cfg.hidden_size))?;
        let (cos, sin) = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta, dtype)?;
        let bias = attention_bias(key_mask, t, offset, self.device(), DType::F32)?;
        let ctx = Context {
            cos,
            sin,
            bias,
            cfg: &self.cfg,
            train,
        };
        let mut states = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            if keep_all {
                states.push(x.clone());
            }
            let layer_cache =
                match cache.as_deref_mut() {
                    Some(c) => Some(c.get_mut(i).ok_or_else(|| {
                        Error::Model(format!("KV cache has no entry for layer {i}"))
                    })?),
                    None => None,
                };
            x = layer.forward(&x, &ctx, layer_cache)?;
        }
        states.push(rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)?);
        Ok(states)
    }
}

impl Block {
    /// Shapes: `x` `[b, t, hidden]` -> `[b, t, hidden]`.
    fn forward(
        &self,
        x: &Tensor,
        ctx: &Context<'_>,
        cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let eps = ctx.cfg.rms_norm_eps;
        let h = rms_norm(x, &self.input_layernorm, eps)?;
        let x = (x + self.self_attn.forward(&h, ctx, cache)?)?;
        let h = rms_norm(&x, &self.post_attention_layernorm, eps)?;
        &x + self.mlp.forward(&h, ctx.train)?
    }
}

impl Attention {
    /// Shapes: `x` `[b, t, hidden]` -> `[b, t, hidden]`; the cache grows by `t` positions.
    fn forward(
        &self,
        x: &Tensor,
        ctx: &Context<'_>,
        cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let cfg = ctx.cfg;
        let d = cfg.head_dim;
        let heads = |proj: &LoraLinear, n: usize| -> candle_core::Result<Tensor> {
            proj.forward(x, ctx.train)?
                .reshape((b, t, n, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(&self.q_proj, cfg.num_attention_heads)?;
        let k = heads(&self.k_proj, cfg.num_key_value_heads)?;
        let v = heads(&self.v_proj, cfg.num_key_value_heads)?;
        let q = apply_rope(&q, &ctx.cos, &ctx.sin)?;
        let k = apply_rope(&k, &ctx.cos, &ctx.sin)?;
        let (k, v) = match cache {
            Some(c) => c.append(k, v)?,
            None => (k, v),
        };
        let k = repeat_kv(&k, cfg.kv_groups())?;
        let v = repeat_kv(&v, cfg.kv_groups())?;
        let scale = 1.0 / (d as f64).sqrt();
        // Scores and softmax in f32, as the reference does.
        let scores = (q.matmul(&k.t()?)? * scale)?
            .to_dtype(DType::F32)?
            .broadcast_add(&ctx.bias)?;
        let probs = ops::softmax_last(&scores)?.to_dtype(v.dtype())?;
        let out =
            probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, cfg.num_attention_heads * d))?;
        self.o_proj.forward(&out, ctx.train)
    }
}

impl Mlp {
    /// Shapes: `[b, t, hidden]` -> `[b, t, hidden]`.
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let gate = self.gate_proj.forward(x, train)?;
        // silu(g) = g * sigmoid(g), composed so that it backpropagates.
        let silu = (&gate * (gate.neg()?.exp()? + 1.0)?.recip()?)?;
        let up = self.up_proj.forward(x, train)?;
        self.down_proj.forward(&(silu * up)?, train)
    }
}

impl LoraModel for Llama {
    fn lora_layers(&self) -> Vec<&LoraLinear> {
        let mut out = Vec::with_capacity(self.layers.len() * 7 + 1);
        for l in &self.layers {
            let (a, m) = (&l.self_attn, &l.mlp);
            out.extend([&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj]);
            out.extend([&m.gate_proj, &m.up_proj, &m.down_proj]);
        }
        out.push(&self.lm_head);
        out
    }

    fn lora_layers_mut(&mut self) -> Vec<&mut LoraLinear> {
        let mut out = Vec::with_capacity(self.layers.len() * 7 + 1);
        for l in &mut self.layers {
            let (a, m) = (&mut l.self_attn, &mut l.mlp);
            out.extend([&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj]);
            out.extend([&mut m.gate_proj, &mut m.up_proj, &mut m.down_proj]);
        }
        out.push(&mut self.lm_head);
        out
    }
}

/// The attention mask on the host as booleans, `[b][t]`; all true without a mask.
fn key_mask(attention_mask: Option<&Tensor>, b: usize, t: usize) -> Result<Vec<Vec<bool>>> {
    let Some(mask) = attention_mask else {
        return Ok(vec![vec![true; t]; b]);
    };
    if mask.dims() != [b, t] {
        return Err(Error::tensor(
            "attention_mask",
            format!("shape {:?}, input_ids have [{b}, {t}]", mask.dims()),
        ));
    }
    let rows = mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    Ok(rows
        .into_iter()
        .map(|r| r.into_iter().map(|v| v != 0).collect())
        .collect())
}

/// Position ids from the mask: `cumsum(mask) - 1`, with padded positions set to 1 (their
/// value is irrelevant; this is Hugging Face's choice).
fn positions_from_mask(mask: &[Vec<bool>]) -> Vec<Vec<u32>> {
    mask.iter()
        .map(|row| {
            let mut seen = 0u32;
            row.iter()
                .map(|&real| {
                    if real {
                        seen += 1;
                        seen - 1
                    } else {
                        1
                    }
                })
                .collect()
        })
        .collect()
}

/// The rows of the flattened `[b * t]` positions that carry a loss and their targets: row
/// `b * t + i` predicts `labels[b][i + 1]`.
fn shifted_targets(labels: &Tensor, vocab: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let labels = labels.to_dtype(DType::I64)?.to_vec2::<i64>()?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (bi, row) in labels.iter().enumerate() {
        let t = row.len();
        for (i, &label) in row.iter().enumerate().skip(1) {
            if label == IGNORE_INDEX {
                continue;
            }
            let target = u32::try_from(label)
                .ok()
                .filter(|&v| (v as usize) < vocab)
                .ok_or_else(|| {
                    Error::tensor(
                        "labels",
                        format!(
                            "label {label} at [{bi}, {i}] is outside the vocabulary of {vocab}"
                        ),
                    )
                })?;
            rows.push((bi * t + i - 1) as u32);
            targets.push(target);
        }
    }
    if targets.is_empty() {
        return Err(Error::tensor(
            "labels",
            "no position carries a loss (all -100)",
        ));
    }
    Ok((rows, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_left_padding() {
        let mask = vec![vec![false, false, true, true], vec![true; 4]];
        assert_eq!(
            positions_from_mask(&mask),
            vec![vec![1, 1, 0, 1], vec![0, 1, 2, 3]]
        );
    }

    #[test]
    fn targets_are_shifted_and_checked() -> Result<()> {
        let labels = Tensor::new(
            &[[-100i64, -100, 5, 6], [-100, 7, -100, -100]],
            &Device::Cpu,
        )?;
        let (rows, targets) = shifted_targets(&labels, 10)?;
        assert_eq!(rows, vec![1, 2, 4]);
        assert_eq!(targets, vec![5, 6, 7]);
        let bad = Tensor::new(&[[-100i64, 10]], &Device::Cpu)?;
        assert!(shifted_targets(&bad, 10).is_err());
        Ok(())
    }
}
