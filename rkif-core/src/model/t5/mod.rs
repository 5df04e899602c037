//! T5 (v1.0 and v1.1 / Flan) with LoRA: loading from a Hugging Face folder, the encoder and
//! decoder, full-sequence logits, the teacher-forced loss and greedy generation.
//!
//! Parameter and module names are Hugging Face's (`encoder.block.0.layer.0.SelfAttention.q`,
//! `decoder.block.1.layer.2.DenseReluDense.wo`, `lm_head`), so PEFT adapters map one to one.
//!
//! ```text
//! input_ids [B, Ls] --embed--> encoder --> [B, Ls, d_model]
//! labels [B, Lt] --shift right--> decoder (causal, cross-attends the encoder) --> hidden [B, Lt, d_model]
//! hidden --(x d_model^-0.5 when tied)--> lm_head --> logits [B, Lt, vocab]
//! ```

pub mod config;
pub mod generate;
pub mod layers;
pub mod loss;
pub mod position;
pub mod stack;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use config::{Activation, T5Config};
pub use generate::DecodingState;
pub use loss::{Labels, IGNORE_INDEX};
pub use stack::SelfAttentionCache;

use layers::{stream_dtype, Attention, FeedForward, RmsNorm};
use position::padding_mask;
use stack::{Decoder, DecoderBlock, Encoder, EncoderBlock, RelativeBias};

use super::lora::is_target;
use super::{LoraConfig, LoraLinear, LoraModel, SharedRng, Weights};
use crate::{Error, Result};

/// One teacher-forced batch.
#[derive(Debug, Clone)]
pub struct Seq2SeqBatch {
    /// `[B, Ls]`, any integer dtype.
    pub input_ids: Tensor,
    /// `[B, Ls]`, 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// `[B, Lt]`, token ids or `-100` (no loss).
    pub labels: Tensor,
}

/// A T5 encoder-decoder whose linear layers are [`LoraLinear`].
#[derive(Debug, Clone)]
pub struct T5Model {
    config: T5Config,
    /// `shared.weight`, `[vocab, d_model]`: the token embedding of both stacks.
    shared: Tensor,
    encoder: Encoder,
    decoder: Decoder,
    /// `[vocab, d_model]`: `shared.weight` when tied, else `lm_head.weight`.
    lm_head: LoraLinear,
    device: Device,
}

impl T5Model {
    /// Load `config.json` and the safetensors weights of a Hugging Face T5 folder, with the
    /// linear weights in `dtype`. Norms, attention scores, the residual stream, the
    /// feed-forward `wo` and the logits stay in f32 (f64 when `dtype` is f64): a half-precision
    /// T5 overflows in the feed-forward output otherwise.
    pub fn from_folder(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = T5Config::from_file(&dir.join("config.json"))?;
        let weights = Weights::from_folder(dir, device, dtype)?;
        Self::from_weights(config, &weights, device)
    }

    /// Build the model from checkpoint tensors (every shape is checked against `config`).
    pub fn from_weights(config: T5Config, w: &Weights, device: &Device) -> Result<Self> {
        let c = &config;
        let shared = w.get("shared.weight", &[c.vocab_size, c.d_model])?;
        let encoder = Encoder {
            blocks: (0..c.num_layers)
                .map(|i| {
                    let p = format!("encoder.block.{i}");
                    Ok(EncoderBlock {
                        attn_norm: norm(w, &format!("{p}.layer.0.layer_norm"), c)?,
                        attn: attention(w, &format!("{p}.layer.0.SelfAttention"), c)?,
                        ff_norm: norm(w, &format!("{p}.layer.1.layer_norm"), c)?,
                        ff: feed_forward(w, &format!("{p}.layer.1.DenseReluDense"), c)?,
                    })
                })
                .collect::<Result<_>>()?,
            bias: relative_bias(w, "encoder", true, c)?,
            final_norm: norm(w, "encoder.final_layer_norm", c)?,
        };
        let decoder = Decoder {
            blocks: (0..c.num_decoder_layers)
                .map(|i| {
                    let p = format!("decoder.block.{i}");
                    Ok(DecoderBlock {
                        self_norm: norm(w, &format!("{p}.layer.0.layer_norm"), c)?,
                        self_attn: attention(w, &format!("{p}.layer.0.SelfAttention"), c)?,
                        cross_norm: norm(w, &format!("{p}.layer.1.layer_norm"), c)?,
                        cross_attn: attention(w, &format!("{p}.layer.1.EncDecAttention"), c)?,
                        ff_norm: norm(w, &format!("{p}.layer.2.layer_norm"), c)?,
                        ff: feed_forward(w, &format!("{p}.layer.2.DenseReluDense"), c)?,
                    })
                })
                .collect::<Result<_>>()?,
            bias: relative_bias(w, "decoder", false, c)?,
            final_norm: norm(w, "decoder.final_layer_norm", c)?,
        };
        let lm_head = if c.tie_word_embeddings {
            LoraLinear::frozen("lm_head", shared.clone(), None)
        } else {
            linear(w, "lm_head", c.vocab_size, c.d_model)?
        };
        Ok(Self {
            config,
            shared,
            encoder,
            decoder,
            lm_head,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &T5Config {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Attach fresh adapters (A Kaiming-uniform, B zero) to every module named by
    /// `lora.targets`. A target that names no module of this model is an error.
    pub fn attach_lora(&mut self, lora: &LoraConfig, rng: &SharedRng) -> Result<()> {
        let names: Vec<String> = self
            .lora_layers()
            .iter()
            .map(|l| l.name().to_string())
            .collect();
        let single = |t: &String| LoraConfig {
            targets: vec![t.clone()],
            ..lora.clone()
        };
        if let Some(unknown) = lora
            .targets
            .iter()
            .find(|t| !names.iter().any(|n| is_target(n, &single(t))))
        {
            return Err(Error::config(
                "lora.targets",
                format!(
                    "`{unknown}` matches no T5 module (linear modules are q, k, v, o, wi, wi_0, \
                     wi_1, wo, lm_head, or a full name such as {})",
                    names.first().map_or("", |n| n.as_str())
                ),
            ));
        }
        for layer in self.lora_layers_mut() {
            if is_target(layer.name(), lora) {
                layer.add_adapter(lora, rng)?;
            }
        }
        Ok(())
    }

    /// Token embeddings: `ids` `[B, L]` (any integer dtype) -> `[B, L, d_model]` in the
    /// stream dtype (f32, or f64 for f64 weights). Ids are checked against the vocabulary;
    /// `what` names the input in the error.
    fn embed(&self, ids: &Tensor, what: &str) -> Result<Tensor> {
        let (b, l) = ids
            .dims2()
            .map_err(|e| Error::tensor(what, format!("expected [batch, length]: {e}")))?;
        let ids = ids.to_dtype(DType::U32)?.flatten_all()?;
        // Check on the host: an out-of-range id must be an error, not a device fault.
        let vocab = self.config.vocab_size;
        if let Some((i, id)) = ids
            .to_vec1::<u32>()?
            .into_iter()
            .enumerate()
            .find(|&(_, id)| id as usize >= vocab)
        {
            return Err(Error::tensor(
                what,
                format!(
                    "row {}, position {}: id {id} is not below the vocabulary size {vocab}",
                    i / l.max(1),
                    i % l.max(1)
                ),
            ));
        }
        Ok(self
            .shared
            .index_select(&ids, 0)?
            .reshape((b, l, self.config.d_model))?
            .to_dtype(stream_dtype(self.shared.dtype()))?)
    }

    /// The padding bias `[B, 1, 1, Ls]` of an attention mask, which must have shape `dims`
    /// (`[B, Ls]`, the encoder input's) and hold only 0 and 1.
    fn padding(&self, attention_mask: &Tensor, dims: &[usize]) -> Result<Tensor> {
        if attention_mask.dims() != dims {
            return Err(Error::tensor(
                "attention_mask",
                format!(
                    "shape {:?} does not fit the encoder input {dims:?}",
                    attention_mask.dims()
                ),
            ));
        }
        let values = attention_mask
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if let Some(v) = values.iter().find(|&&v| v != 0.0 && v != 1.0) {
            return Err(Error::tensor(
                "attention_mask",
                format!("holds {v}; only 0 (padding) and 1 (token) are allowed"),
            ));
        }
        Ok(padding_mask(attention_mask)?)
    }

    /// The encoder output: `input_ids`, `attention_mask` `[B, Ls]` -> `[B, Ls, d_model]` (stream
    /// dtype), after the final norm.
    pub fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let embeds = self.embed(input_ids, "input_ids")?;
        let padding = self.padding(attention_mask, input_ids.dims())?;
        Ok(self.encoder.forward(&embeds, &padding, train, None)?)
    }

    /// Hugging Face's `encoder_hidden_states`: the embeddings, each block's output but the
    /// last, and the final normed output; each `[B, Ls, d_model]`.
    pub fn encoder_hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let embeds = self.embed(input_ids, "input_ids")?;
        let padding = self.padding(attention_mask, input_ids.dims())?;
        let mut states = Vec::new();
        self.encoder
            .forward(&embeds, &padding, false, Some(&mut states))?;
        Ok(states)
    }

    /// The decoder output for teacher forcing: `decoder_input_ids` `[B, Lt]`, `encoder_out`
    /// `[B, Ls, d_model]`, `attention_mask` `[B, Ls]` (the encoder's) -> `[B, Lt, d_model]`
    /// after the final norm. Pass it to [`Self::lm_logits`] for all positions, or to
    /// [`Self::loss_from_hidden`], which projects only the scored ones.
    pub fn decode(
        &self,
        decoder_input_ids: &Tensor,
        encoder_out: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        self.decode_inner(decoder_input_ids, encoder_out, attention_mask, train, None)
    }

    /// Hugging Face's `decoder_hidden_states` (same convention as the encoder's).
    pub fn decoder_hidden_states(
        &self,
        decoder_input_ids: &Tensor,
        encoder_out: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let mut states = Vec::new();
        self.decode_inner(
            decoder_input_ids,
            encoder_out,
            attention_mask,
            false,
            Some(&mut states),
        )?;
        Ok(states)
    }

    fn decode_inner(
        &self,
        decoder_input_ids: &Tensor,
        encoder_out: &Tensor,
        attention_mask: &Tensor,
        train: bool,
        states: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let embeds = self.embed(decoder_input_ids, "decoder_input_ids")?;
        let (b, ls, _) = encoder_out.dims3()?;
        let padding = self.padding(attention_mask, &[b, ls])?;
        let cross = self.decoder.cross_key_values(encoder_out, train)?;
        Ok(self
            .decoder
            .forward(&embeds, &cross, &padding, None, train, states)?)
    }

    /// Vocabulary logits of decoder hidden states: `[..., d_model]` -> `[..., vocab]` (stream
    /// dtype). When the head is tied to the embedding its input is scaled by `d_model^-0.5`.
    /// `train` only matters when `lm_head` carries an adapter with dropout.
    pub fn lm_logits(&self, hidden: &Tensor, train: bool) -> Result<Tensor> {
        let h = if self.config.tie_word_embeddings {
            (hidden * (self.config.d_model as f64).powf(-0.5))?
        } else {
            hidden.clone()
        };
        let dtype = self.lm_head.weight().dtype();
        let logits = self.lm_head.forward(&h.to_dtype(dtype)?, train)?;
        Ok(logits.to_dtype(stream_dtype(dtype))?)
    }

    /// Full-sequence logits `[B, Lt, vocab]` for the labels of `batch` (teacher forcing).
    pub fn forward(&self, batch: &Seq2SeqBatch, train: bool) -> Result<Tensor> {
        let hidden = self.decoder_output(batch, train)?;
        self.lm_logits(&hidden, train)
    }

    /// The mean cross-entropy over labels that are not `-100` (a scalar).
    pub fn loss(&self, batch: &Seq2SeqBatch, train: bool) -> Result<Tensor> {
        let labels = Labels::from_tensor(&batch.labels, self.config.vocab_size)?;
        let hidden = self.teacher_forced(batch, &labels, train)?;
        self.loss_from_hidden(&hidden, &labels, train)
    }

    /// The decoder output `[B, Lt, d_model]` for `batch` under teacher forcing: the labels
    /// shifted right behind the decoder start token, `-100` replaced by the pad token.
    pub fn decoder_output(&self, batch: &Seq2SeqBatch, train: bool) -> Result<Tensor> {
        let labels = Labels::from_tensor(&batch.labels, self.config.vocab_size)?;
        self.teacher_forced(batch, &labels, train)
    }

    fn teacher_forced(&self, batch: &Seq2SeqBatch, labels: &Labels, train: bool) -> Result<Tensor> {
        let (b, _) = batch
            .input_ids
            .dims2()
            .map_err(|e| Error::tensor("input_ids", format!("expected [batch, length]: {e}")))?;
        if labels.batch_size() != b {
            return Err(Error::tensor(
                "labels",
                format!("{} rows for {b} input rows", labels.batch_size()),
            ));
        }
        let encoder_out = self.encode(&batch.input_ids, &batch.attention_mask, train)?;
        let c = &self.config;
        let decoder_ids =
            labels.decoder_input_ids(c.decoder_start_token_id, c.pad_token_id, &self.device)?;
        self.decode(&decoder_ids, &encoder_out, &batch.attention_mask, train)
    }

    /// The mean cross-entropy of decoder hidden states `[B, Lt, d_model]` against `labels`
    /// `[B, Lt]`. Only the positions with a label are projected onto the vocabulary, which
    /// saves most of the head's cost when targets are short.
    pub fn loss_from_hidden(
        &self,
        hidden: &Tensor,
        labels: &Labels,
        train: bool,
    ) -> Result<Tensor> {
        let (b, lt, d) = hidden.dims3()?;
        if (b, lt) != (labels.batch_size(), labels.len()) {
            return Err(Error::tensor(
                "labels",
                format!(
                    "[{}, {}] does not fit decoder states {:?}",
                    labels.batch_size(),
                    labels.len(),
                    hidden.dims()
                ),
            ));
        }
        let (positions, targets) = labels.scored_positions(hidden.device())?;
        let rows = hidden.reshape((b * lt, d))?.index_select(&positions, 0)?;
        Ok(loss::cross_entropy(
            &self.lm_logits(&rows, train)?,
            &targets,
        )?)
    }
}

impl LoraModel for T5Model {
    fn lora_layers(&self) -> Vec<&LoraLinear> {
        let mut out = Vec::new();
        for b in &self.encoder.blocks {
            out.extend(attention_layers(&b.attn));
            out.extend(ffn_layers(&b.ff));
        }
        for b in &self.decoder.blocks {
            out.extend(attention_layers(&b.self_attn));
            out.extend(attention_layers(&b.cross_attn));
            out.extend(ffn_layers(&b.ff));
        }
        out.push(&self.lm_head);
        out
    }

    fn lora_layers_mut(&mut self) -> Vec<&mut LoraLinear> {
        let mut out = Vec::new();
        for b in &mut self.encoder.blocks {
            out.extend(attention_layers_mut(&mut b.attn));
            out.extend(ffn_layers_mut(&mut b.ff));
        }
        for b in &mut self.decoder.blocks {
            out.extend(attention_layers_mut(&mut b.self_attn));
            out.extend(attention_layers_mut(&mut b.cross_attn));
            out.extend(ffn_layers_mut(&mut b.ff));
        }
        out.push(&mut self.lm_head);
        out
    }
}

fn attention_layers(a: &Attention) -> [&LoraLinear; 4] {
    [&a.q, &a.k, &a.v, &a.o]
}

fn attention_layers_mut(a: &mut Attention) -> [&mut LoraLinear; 4] {
    [&mut a.q, &mut a.k, &mut a.v, &mut a.o]
}

/// In PyTorch order: `wi` / `wi_0`, `wi_1`, `wo`.
fn ffn_layers(f: &FeedForward) -> Vec<&LoraLinear> {
    let mut out = vec![&f.wi];
    out.extend(f.wi_gate_linear.as_ref());
    out.push(&f.wo);
    out
}

fn ffn_layers_mut(f: &mut FeedForward) -> Vec<&mut LoraLinear> {
    let mut out = vec![&mut f.wi];
    out.extend(f.wi_gate_linear.as_mut());
    out.push(&mut f.wo);
    out
}

/// A bias-free linear layer `{name}.weight` `[out, in]`.
fn linear(w: &Weights, name: &str, out_dim: usize, in_dim: usize) -> Result<LoraLinear> {
    let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
    Ok(LoraLinear::frozen(name, weight, None))
}

fn norm(w: &Weights, name: &str, c: &T5Config) -> Result<RmsNorm> {
    let weight = w.get(&format!("{name}.weight"), &[c.d_model])?;
    Ok(RmsNorm::new(weight, c.layer_norm_epsilon)?)
}

fn attention(w: &Weights, prefix: &str, c: &T5Config) -> Result<Attention> {
    let (inner, d) = (c.inner_dim(), c.d_model);
    Ok(Attention::new(
        linear(w, &format!("{prefix}.q"), inner, d)?,
        linear(w, &format!("{prefix}.k"), inner, d)?,
        linear(w, &format!("{prefix}.v"), inner, d)?,
        linear(w, &format!("{prefix}.o"), d, inner)?,
        c.num_heads,
        c.d_kv,
    ))
}

fn feed_forward(w: &Weights, prefix: &str, c: &T5Config) -> Result<FeedForward> {
    let (wi, gate) = if c.gated_ffn {
        (
            linear(w, &format!("{prefix}.wi_0"), c.d_ff, c.d_model)?,
            Some(linear(w, &format!("{prefix}.wi_1"), c.d_ff, c.d_model)?),
        )
    } else {
        (linear(w, &format!("{prefix}.wi"), c.d_ff, c.d_model)?, None)
    };
    let wo_name = format!("{prefix}.wo");
    let wo_weight = w.get(&format!("{wo_name}.weight"), &[c.d_model, c.d_ff])?;
    let wo_weight = wo_weight.to_dtype(stream_dtype(wo_weight.dtype()))?;
    let wo = LoraLinear::frozen(wo_name, wo_weight, None);
    Ok(FeedForward::new(wi, gate, wo, c.activation))
}

/// The relative-attention bias table of the first block of `stack`.
fn relative_bias(
    w: &Weights,
    stack: &str,
    bidirectional: bool,
    c: &T5Config,
) -> Result<RelativeBias> {
    let table = w.get(
        &format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        &[c.relative_attention_num_buckets, c.num_heads],
    )?;
    Ok(RelativeBias::new(
        table,
        bidirectional,
        c.relative_attention_max_distance,
    )?)
}
