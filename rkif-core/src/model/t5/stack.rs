//! The encoder and decoder stacks: blocks of (self-attention, [cross-attention,] feed-forward),
//! each sub-layer pre-normed and residual, then a final norm.
//!
//! Only the first block of each stack owns a relative-attention bias table; the bias it gives
//! is computed once per forward and shared by all blocks of the stack.

use candle_core::Tensor;

use super::layers::{Attention, FeedForward, RmsNorm};
use super::position::{bucket_grid, causal_mask};

/// Keys and values of one attention layer, each `[B, H, L, d_kv]`.
pub type KeyValues = (Tensor, Tensor);

/// The learned per-head bias of relative positions.
#[derive(Debug, Clone)]
pub struct RelativeBias {
    /// `[num_buckets, num_heads]`, f32.
    table: Tensor,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl RelativeBias {
    pub fn new(
        table: Tensor,
        bidirectional: bool,
        max_distance: usize,
    ) -> candle_core::Result<Self> {
        let (num_buckets, _) = table.dims2()?;
        Ok(Self {
            table: table.to_dtype(candle_core::DType::F32)?,
            bidirectional,
            num_buckets,
            max_distance,
        })
    }

    /// The bias for queries at `query_offset..query_offset + q_len` over keys `0..k_len`:
    /// `[1, H, q_len, k_len]`, f32.
    pub fn forward(
        &self,
        q_len: usize,
        k_len: usize,
        query_offset: usize,
    ) -> candle_core::Result<Tensor> {
        let buckets = bucket_grid(
            q_len,
            k_len,
            query_offset,
            self.bidirectional,
            self.num_buckets,
            self.max_distance,
        );
        let idx = Tensor::from_vec(buckets, q_len * k_len, self.table.device())?;
        let (_, heads) = self.table.dims2()?;
        self.table
            .index_select(&idx, 0)?
            .reshape((q_len, k_len, heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }
}

#[derive(Debug, Clone)]
pub struct EncoderBlock {
    pub attn_norm: RmsNorm,
    pub attn: Attention,
    pub ff_norm: RmsNorm,
    pub ff: FeedForward,
}

#[derive(Debug, Clone)]
pub struct DecoderBlock {
    pub self_norm: RmsNorm,
    pub self_attn: Attention,
    pub cross_norm: RmsNorm,
    pub cross_attn: Attention,
    pub ff_norm: RmsNorm,
    pub ff: FeedForward,
}

#[derive(Debug, Clone)]
pub struct Encoder {
    pub blocks: Vec<EncoderBlock>,
    pub bias: RelativeBias,
    pub final_norm: RmsNorm,
}

impl Encoder {
    /// `embeds` `[B, L, d_model]` (stream dtype), `padding` `[B, 1, 1, L]` (see
    /// [`super::position::padding_mask`]) -> `[B, L, d_model]` after the final norm.
    /// When `states` is given, it receives HF's `hidden_states`: the embeddings, the output of
    /// every block but the last, and the final normed output.
    pub fn forward(
        &self,
        embeds: &Tensor,
        padding: &Tensor,
        train: bool,
        mut states: Option<&mut Vec<Tensor>>,
    ) -> candle_core::Result<Tensor> {
        let (_, len, _) = embeds.dims3()?;
        let bias = self.bias.forward(len, len, 0)?.broadcast_add(padding)?;
        let mut h = embeds.clone();
        for block in &self.blocks {
            if let Some(s) = states.as_deref_mut() {
                s.push(h.clone());
            }
            let x = block.attn_norm.forward(&h)?;
            let (k, v) = block.attn.key_values(&x, train)?;
            h = (h + block.attn.attend(&x, &k, &v, &bias, train)?)?;
            h = (&h + block.ff.forward(&block.ff_norm.forward(&h)?, train)?)?;
        }
        let out = self.final_norm.forward(&h)?;
        if let Some(s) = states {
            s.push(out.clone());
        }
        Ok(out)
    }
}

#[derive(Debug, Clone)]
pub struct Decoder {
    pub blocks: Vec<DecoderBlock>,
    pub bias: RelativeBias,
    pub final_norm: RmsNorm,
}

/// The decoder's self-attention keys and values of the tokens seen so far, per block.
#[derive(Debug, Clone, Default)]
pub struct SelfAttentionCache {
    layers: Vec<Option<KeyValues>>,
}

impl SelfAttentionCache {
    /// How many decoder positions the cache holds.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Decoder {
    /// The cross-attention keys and values of the encoder output `[B, Ls, d_model]`, per
    /// block (computed once per sequence, also during generation).
    pub fn cross_key_values(
        &self,
        encoder_out: &Tensor,
        train: bool,
    ) -> candle_core::Result<Vec<KeyValues>> {
        self.blocks
            .iter()
            .map(|b| b.cross_attn.key_values(encoder_out, train))
            .collect()
    }

    /// `embeds` `[B, Lt, d_model]` (stream dtype) for decoder positions `cache.len()..cache.len() + Lt`;
    /// `cross` from [`Self::cross_key_values`]; `encoder_padding` `[B, 1, 1, Ls]`. Returns
    /// `[B, Lt, d_model]` after the final norm. With a `cache`, the new keys and values
    /// are appended to it (detached: the cache serves inference only).
    pub fn forward(
        &self,
        embeds: &Tensor,
        cross: &[KeyValues],
        encoder_padding: &Tensor,
        mut cache: Option<&mut SelfAttentionCache>,
        train: bool,
        mut states: Option<&mut Vec<Tensor>>,
    ) -> candle_core::Result<Tensor> {
        if cross.len() != self.blocks.len() {
            return Err(candle_core::Error::Msg(format!(
                "decoder: {} cross-attention key/value pairs for {} blocks",
                cross.len(),
                self.blocks.len()
            )));
        }
        let (_, len, _) = embeds.dims3()?;
        let offset = cache.as_deref().map_or(0, |c| c.len());
        let total = offset + len;
        let self_bias = self
            .bias
            .forward(len, total, offset)?
            .broadcast_add(&causal_mask(len, total, offset, embeds.device())?)?;
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.blocks.len(), None);
        }
        let mut h = embeds.clone();
        for (i, (block, (ck, cv))) in self.blocks.iter().zip(cross).enumerate() {
            if let Some(s) = states.as_deref_mut() {
                s.push(h.clone());
            }
            let x = block.self_norm.forward(&h)?;
            let (mut k, mut v) = block.self_attn.key_values(&x, train)?;
            if let Some(slot) = cache.as_deref_mut().and_then(|c| c.layers.get_mut(i)) {
                if let Some((pk, pv)) = slot.as_ref() {
                    k = Tensor::cat(&[pk, &k], 2)?;
                    v = Tensor::cat(&[pv, &v], 2)?;
                }
                *slot = Some((k.detach(), v.detach()));
            }
            h = (h + block.self_attn.attend(&x, &k, &v, &self_bias, train)?)?;
            let x = block.cross_norm.forward(&h)?;
            h = (&h
                + block
                    .cross_attn
                    .attend(&x, ck, cv, encoder_padding, train)?)?;
            h = (&h + block.ff.forward(&block.ff_norm.forward(&h)?, train)?)?;
        }
        let out = self.final_norm.forward(&h)?;
        if let Some(s) = states {
            s.push(out.clone());
        }
        Ok(out)
    }
}
