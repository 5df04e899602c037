//! Greedy generation with a key/value cache.
//!
//! The encoder runs once, the cross-attention keys and values of every decoder block are
//! computed once per sequence, and each step feeds only the newest token, appending its
//! self-attention keys and values to the cache. Rows stop independently at an EOS token;
//! finished rows are fed the pad token until every row is done (as Hugging Face does).

use candle_core::{DType, Tensor, D};

use super::stack::SelfAttentionCache;
use super::T5Model;
use crate::Result;

impl T5Model {
    /// Greedy decoding of `input_ids` / `attention_mask` `[B, Ls]` for at most
    /// `max_new_tokens` steps. Each returned row is the decoder start token followed by the
    /// generated tokens, ending with the EOS token when one was produced.
    pub fn generate_greedy(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        max_new_tokens: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let cfg = self.config();
        let encoder_out = self.encode(input_ids, attention_mask, false)?.detach();
        let padding = self.padding(input_ids, attention_mask)?;
        let cross: Vec<_> = self
            .decoder
            .cross_key_values(&encoder_out, false)?
            .into_iter()
            .map(|(k, v)| (k.detach(), v.detach()))
            .collect();
        let batch = encoder_out.dim(0)?;
        let mut rows = vec![vec![cfg.decoder_start_token_id]; batch];
        let mut finished = vec![false; batch];
        let mut next = vec![cfg.decoder_start_token_id; batch];
        let mut cache = SelfAttentionCache::default();
        for _ in 0..max_new_tokens {
            if finished.iter().all(|&f| f) {
                break;
            }
            let ids = Tensor::from_vec(next.clone(), (batch, 1), self.device())?;
            let embeds = self.embed(&ids, "generated ids")?;
            let hidden = self
                .decoder
                .forward(&embeds, &cross, &padding, Some(&mut cache), false, None)?
                .detach();
            let logits = self.lm_logits(&hidden.squeeze(1)?)?;
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
