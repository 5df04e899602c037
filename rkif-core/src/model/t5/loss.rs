//! Teacher forcing and the cross-entropy loss: labels with `-100` for ignored positions.

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// The label value that carries no loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Labels `[B, Lt]` read to the host and checked against the vocabulary.
#[derive(Debug, Clone)]
pub struct Labels {
    rows: Vec<Vec<i64>>,
}

impl Labels {
    /// `labels` `[B, Lt]`, any integer dtype; every value is `-100` or a token id.
    pub fn from_tensor(labels: &Tensor, vocab_size: usize) -> Result<Self> {
        let rows = labels
            .to_dtype(candle_core::DType::I64)?
            .to_vec2::<i64>()
            .map_err(|e| Error::tensor("labels", format!("expected [batch, length]: {e}")))?;
        for (r, row) in rows.iter().enumerate() {
            for (t, &id) in row.iter().enumerate() {
                if id != IGNORE_INDEX && (id < 0 || id as usize >= vocab_size) {
                    return Err(Error::tensor(
                        "labels",
                        format!("row {r}, position {t}: {id} is neither -100 nor a token id below {vocab_size}"),
                    ));
                }
            }
        }
        Ok(Self { rows })
    }

    pub fn batch_size(&self) -> usize {
        self.rows.len()
    }

    pub fn len(&self) -> usize {
        self.rows.first().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The decoder input: labels shifted right behind `start`, with `-100` replaced by `pad`.
    /// `[B, Lt]` u32.
    pub fn decoder_input_ids(&self, start: u32, pad: u32, device: &Device) -> Result<Tensor> {
        let (b, l) = (self.batch_size(), self.len());
        let mut ids = Vec::with_capacity(b * l);
        for row in &self.rows {
            if l > 0 {
                ids.push(start);
            }
            ids.extend(row.iter().take(l.saturating_sub(1)).map(|&id| {
                if id == IGNORE_INDEX {
                    pad
                } else {
                    id as u32
                }
            }));
        }
        Ok(Tensor::from_vec(ids, (b, l), device)?)
    }

    /// The flat positions (`row * Lt + t`) that carry a loss and their target ids, both `[N]`
    /// u32. An error when no position carries a loss (the mean would be undefined).
    pub fn scored_positions(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let l = self.len();
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (r, row) in self.rows.iter().enumerate() {
            for (t, &id) in row.iter().enumerate() {
                if id != IGNORE_INDEX {
                    positions.push((r * l + t) as u32);
                    targets.push(id as u32);
                }
            }
        }
        if positions.is_empty() {
            return Err(Error::tensor(
                "labels",
                "every label is -100: nothing to score",
            ));
        }
        let n = positions.len();
        Ok((
            Tensor::from_vec(positions, n, device)?,
            Tensor::from_vec(targets, n, device)?,
        ))
    }
}

/// Per-position cross-entropy: `logits` `[N, V]`, `targets` `[N]` u32 -> `[N]` (f32, or f64
/// for f64 logits).
pub fn token_cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = super::layers::stream_dtype(logits.dtype());
    let logp = crate::model::softmax::log_softmax_last_dim(&logits.to_dtype(dtype)?)?;
    logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
}

/// Mean cross-entropy: `logits` `[N, V]`, `targets` `[N]` u32 -> a scalar.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    token_cross_entropy(logits, targets)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn shift_and_positions() -> Result<()> {
        let dev = Device::Cpu;
        let labels = Tensor::new(&[[5i64, 6, 1], [7, 1, -100]], &dev)?;
        let labels = Labels::from_tensor(&labels, 10)?;
        let dec = labels.decoder_input_ids(0, 0, &dev)?.to_vec2::<u32>()?;
        assert_eq!(dec, vec![vec![0, 5, 6], vec![0, 7, 1]]);
        let (pos, tgt) = labels.scored_positions(&dev)?;
        assert_eq!(pos.to_vec1::<u32>()?, vec![0, 1, 2, 3, 4]);
        assert_eq!(tgt.to_vec1::<u32>()?, vec![5, 6, 1, 7, 1]);
        Ok(())
    }

    #[test]
    fn bad_labels_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let t = Tensor::new(&[[5i64, 12]], &dev)?;
        assert!(Labels::from_tensor(&t, 10)
            .unwrap_err()
            .to_string()
            .contains("position 1"));
        let t = Tensor::new(&[[-100i64, -100]], &dev)?;
        assert!(Labels::from_tensor(&t, 10)?.scored_positions(&dev).is_err());
        Ok(())
    }

    #[test]
    fn cross_entropy_by_hand_and_gradient() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // Uniform logits over 4 classes: CE = ln 4. Large logits must not overflow.
        let logits = Var::from_tensor(&Tensor::new(
            &[[0f32, 0., 0., 0.], [1000., 0., 0., 0.]],
            &dev,
        )?)?;
        let targets = Tensor::new(&[2u32, 0], &dev)?;
        let ce = token_cross_entropy(logits.as_tensor(), &targets)?.to_vec1::<f32>()?;
        assert!(
            (ce[0] - 4f32.ln()).abs() < 1e-6 && ce[1].abs() < 1e-6,
            "{ce:?}"
        );
        let grads = cross_entropy(logits.as_tensor(), &targets)?.backward()?;
        // d mean CE / d logit = (softmax - onehot) / N: row 0 is [1/8, 1/8, -3/8, 1/8].
        let g = grads.get(logits.as_tensor()).map(|g| g.to_vec2::<f32>());
        let g = g.transpose()?.unwrap_or_default();
        assert!(
            (g[0][2] + 0.375).abs() < 1e-6 && (g[0][0] - 0.125).abs() < 1e-6,
            "{g:?}"
        );
        Ok(())
    }
}
