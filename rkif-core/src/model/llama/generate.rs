//! Greedy generation with a key/value cache, for left-padded batches.

use candle_core::{DType, Tensor, D};

use super::{key_mask, positions_from_mask, Llama};
use crate::{Error, Result};

/// The cached keys and values of one layer, after RoPE: `[b, kv_heads, s, head_dim]` each.
#[derive(Debug, Default)]
pub(super) struct KvCache {
    kv: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// Append `t` new positions and return the whole cache. Generation needs no gradients,
    /// so the cache is detached from the graph (nothing upstream is kept alive).
    pub(super) fn append(&mut self, k: Tensor, v: Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (k, v) = (k.detach(), v.detach());
        let kv = match self.kv.take() {
            None => (k, v),
            Some((ck, cv)) => (Tensor::cat(&[&ck, &k], 2)?, Tensor::cat(&[&cv, &v], 2)?),
        };
        self.kv = Some(kv.clone());
        Ok(kv)
    }
}

impl Llama {
    /// Greedy decoding of up to `max_new_tokens` per row. A row stops after it emits any of
    /// the config's EOS ids (the EOS is kept in its output); the batch stops when all rows have.
    ///
    /// Shapes: `input_ids` `[b, t]`, left-padded; `attention_mask` `[b, t]` (`None` = no
    /// padding). Returns the new tokens of each row.
    pub fn generate(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        max_new_tokens: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let (b, t) = input_ids.dims2()?;
        let mut mask = key_mask(attention_mask, b, t)?;
        if let Some(row) = mask.iter().position(|r| r.last() != Some(&true)) {
            return Err(Error::tensor(
                "attention_mask",
                format!("row {row} does not end with a real token (batches must be left-padded)"),
            ));
        }
        let positions = positions_from_mask(&mask);
        // Next position of each row: the number of its real tokens.
        let mut next_pos: Vec<u32> = positions
            .iter()
            .map(|r| r.last().map_or(0, |p| p + 1))
            .collect();
        let device = self.device().clone();
        let mut cache: Vec<KvCache> = (0..self.layers.len()).map(|_| KvCache::default()).collect();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        if max_new_tokens == 0 {
            return Ok(out);
        }

        let pos = Tensor::from_vec(positions.concat(), (b, t), &device)?;
        let mut tokens = self.next_tokens(input_ids, &mask, &pos, 0, &mut cache)?;
        let mut offset = t;
        loop {
            for (row, &tok) in tokens.iter().enumerate() {
                if done[row] {
                    continue;
                }
                out[row].push(tok);
                done[row] = self.cfg.eos_token_ids.contains(&tok);
            }
            let produced = out.iter().map(|r| r.len()).max().unwrap_or(0);
            if done.iter().all(|&d| d) || produced >= max_new_tokens {
                break;
            }
            // Finished rows keep decoding their last token; their output is no longer read.
            for m in mask.iter_mut() {
                m.push(true);
            }
            let ids = Tensor::from_vec(tokens.clone(), (b, 1), &device)?;
            let pos = Tensor::from_vec(next_pos.clone(), (b, 1), &device)?;
            next_pos.iter_mut().for_each(|p| *p += 1);
            tokens = self.next_tokens(&ids, &mask, &pos, offset, &mut cache)?;
            offset += 1;
        }
        Ok(out)
    }

    /// Run `ids` (`[b, t]`) through the cached decoder and take the argmax at the last
    /// position of each row.
    fn next_tokens(
        &self,
        ids: &Tensor,
        mask: &[Vec<bool>],
        positions: &Tensor,
        offset: usize,
        cache: &mut [KvCache],
    ) -> Result<Vec<u32>> {
        let states = self.run(ids, mask, positions, offset, Some(cache), false, false)?;
        let hidden = states
            .last()
            .ok_or_else(|| Error::Model("LLaMA forward produced no hidden state".into()))?;
        let last_index = hidden
            .dim(1)?
            .checked_sub(1)
            .ok_or_else(|| Error::tensor("input_ids", "empty sequence"))?;
        let last = hidden.narrow(1, last_index, 1)?.squeeze(1)?.detach();
        let logits = self.project(&last, false)?.to_dtype(DType::F32)?;
        Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }
}
