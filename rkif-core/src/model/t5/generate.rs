//! Incremental decoding with a key/value cache, and greedy generation on top of it.
//!
//! The encoder runs once, the cross-attention keys and values of every decoder block are
//! computed once per sequence, and each step feeds only the new tokens, appending their
//! self-attention keys and values to the cache. Everything here is inference: the cached
//! tensors are detached from the graph.

use candle_core::{DType, Tensor, D};

use super::stack::{KeyValues, SelfAttentionCache};
use super::T5Model;
use crate::{Error, Result};

/// What the decoder needs between steps for one batch of encoder inputs.
#[derive(Debug, Clone)]
pub struct DecodingState {
    /// Per decoder block, the keys and values of the encoder output: `[B, H, Ls, d_kv]`.
    cross: Vec<KeyValues>,
    /// The encoder padding bias, `[B, 1, 1, Ls]`.
    padding: Tensor,
    cache: SelfAttentionCache,
    batch: usize,
}

impl DecodingState {
    /// How many decoder positions have been fed so far.
    pub fn position(&self) -> usize {
        self.cache.len()
    }
}

impl T5Model {
    /// Encode `input_ids` / `attention_mask` `[B, Ls]` and prepare incremental decoding.
    pub fn start_decoding(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<DecodingState> {
        let encoder_out = self.encode(input_ids, attention_mask, false)?.detach();
        let padding = self.padding(attention_mask, input_ids.dims())?;
        let cross = self
            .decoder
            .cross_key_values(&encoder_out, false)?
            .into_iter()
            .map(|(k, v)| (k.detach(), v.detach()))
            .collect();
        Ok(DecodingState {
            cross,
            padding,
            cache: SelfAttentionCache::default(),
            batch: encoder_out.dim(0)?,
        })
    }

    /// Feed the next decoder tokens `ids` `[B, n]` (positions `state.position()..+n`) and
    /// return their hidden states `[B, n, d_model]` after the final norm (detached).
    pub fn decode_step(&self, state: &mut DecodingState, ids: &Tensor) -> Result<Tensor> {
        let rows = ids
            .dim(0)
            .map_err(|e| Error::tensor("decoder ids", e.to_string()))?;
        if rows != state.batch {
            return Err(Error::tensor(
                "decoder ids",
                format!("{rows} rows for a batch of {}", state.batch),
            ));
        }
        let embeds = self.embed(ids, "decoder ids")?;
        let hidden = self.decoder.forward(
            &embeds,
            &state.cross,
            &state.padding,
            Some(&mut state.cache),
            false,
            None,
        )?;
        Ok(hidden.detach())
    }

    /// Greedy decoding of `input_ids` / `attention_mask` `[B, Ls]` for at most
    /// `max_new_tokens` steps. Each returned row is the decoder start token followed by the
    /// generated tokens, ending with the EOS token when one was produced. Rows stop
    /// independently; a finished row is fed the pad token until all are done (as Hugging
    /// Face does), which does not change the other rows.
    pub fn generate_greedy(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        max_new_tokens: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let cfg = self.config();
        let mut state = self.start_decoding(input_ids, attention_mask)?;
        let batch = state.batch;
        let mut rows = vec![vec![cfg.decoder_start_token_id]; batch];
        let mut finished = vec![false; batch];
        let mut next = vec![cfg.decoder_start_token_id; batch];
        for _ in 0..max_new_tokens {
            if finished.iter().all(|&f| f) {
                break;
            }
            let ids = Tensor::from_vec(next.clone(), (batch, 1), self.device())?;
            let hidden = self.decode_step(&mut state, &ids)?;
            let logits = self.lm_logits(&hidden.squeeze(1)?, false)?;
            let best = logits
                .argmax(D::Minus1)?
                .to_dtype(DType::U32)?
                .to_vec1::<u32>()?;
            for (((token, row), done), fed) in best
                .into_iter()
                .zip(rows.iter_mut())
                .zip(finished.iter_mut())
                .zip(next.iter_mut())
            {
                if *done {
                    *fed = cfg.pad_token_id;
                } else {
                    row.push(token);
                    *fed = token;
                    *done = cfg.eos_token_ids.contains(&token);
                }
            }
        }
        Ok(rows)
    }
}
