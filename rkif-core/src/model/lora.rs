//! `LoraLinear`: a frozen linear layer plus a trainable low-rank update (LoRA).
//!
//! `y = x W^T + b + scale * dropout(x) A^T B^T`, with `A` `[r, in]`, `B` `[out, r]` and
//! `scale = alpha / r`. At creation `A` is Kaiming-uniform with `a = sqrt(5)` (bound
//! `1 / sqrt(in)`, as PEFT and `torch.nn.Linear` do) and `B` is zero, so a fresh adapter leaves
//! the model unchanged. Pure adapter arithmetic (merging into the weight) lives in
//! [`merged_weight`], apart from the layer plumbing.

use std::sync::{Arc, Mutex};

use candle_core::{Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::frozen::frozen_linear;
use crate::{Error, Result};

pub use crate::config::LoraConfig;

/// The seeded generator that draws LoRA dropout masks (and initial `A` values). Shared by all
/// layers of a model, so that the draws follow the forward order and a saved state resumes
/// the same sequence.
#[derive(Clone, Debug)]
pub struct SharedRng(Arc<Mutex<ChaCha8Rng>>);

impl SharedRng {
    pub fn seeded(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))))
    }

    /// A copy of the generator's state (for checkpoints).
    pub fn state(&self) -> ChaCha8Rng {
        self.lock().clone()
    }

    /// Replace the generator's state (on resume).
    pub fn restore(&self, state: ChaCha8Rng) {
        *self.lock() = state;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChaCha8Rng> {
        // A poisoned lock only means another thread panicked mid-draw; the state is still a
        // valid generator state.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` samples uniform in `[-bound, bound)`.
    pub fn uniform(&self, n: usize, bound: f32) -> Vec<f32> {
        let mut rng = self.lock();
        (0..n).map(|_| rng.random_range(-bound..bound)).collect()
    }

    /// A dropout mask of `n` values: `0` with probability `p`, else `1 / (1 - p)`.
    pub fn dropout_mask(&self, n: usize, p: f32) -> Vec<f32> {
        let keep = 1.0 / (1.0 - p);
        let mut rng = self.lock();
        (0..n)
            .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
            .collect()
    }
}

/// One LoRA adapter: the two trainable factors.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// `[r, in]`.
    pub a: Var,
    /// `[out, r]`.
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
}

/// A linear layer with a frozen base weight and an optional LoRA adapter.
#[derive(Clone, Debug)]
pub struct LoraLinear {
    /// The Hugging Face module path, e.g. `encoder.block.0.layer.0.SelfAttention.q`.
    name: String,
    /// `[out, in]`, frozen.
    weight: Tensor,
    /// `[out]`, frozen.
    bias: Option<Tensor>,
    adapter: Option<LoraAdapter>,
    rng: Option<SharedRng>,
}

impl LoraLinear {
    /// A frozen linear layer without adapter. `weight` is `[out, in]`.
    pub fn frozen(name: impl Into<String>, weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            name: name.into(),
            weight,
            bias,
            adapter: None,
            rng: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn adapter(&self) -> Option<&LoraAdapter> {
        self.adapter.as_ref()
    }

    /// Attach a fresh adapter: `A` Kaiming-uniform (a = sqrt(5)), `B` zero.
    pub fn add_adapter(&mut self, cfg: &LoraConfig, rng: &SharedRng) -> Result<()> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        // kaiming_uniform(a = sqrt(5)): gain = sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in)
        // = 1 / sqrt(fan_in).
        let bound = 1.0 / (in_dim as f32).sqrt();
        let dev = self.weight.device();
        let dtype = self.weight.dtype();
        let a = Tensor::from_vec(
            rng.uniform(cfg.rank * in_dim, bound),
            (cfg.rank, in_dim),
            dev,
        )?
        .to_dtype(dtype)?;
        let b = Tensor::zeros((out_dim, cfg.rank), dtype, dev)?;
        self.set_adapter(a, b, cfg.scale(), cfg.dropout)?;
        self.rng = Some(rng.clone());
        Ok(())
    }

    /// Attach an adapter with given factors (`a` `[r, in]`, `b` `[out, r]`), checking shapes.
    pub fn set_adapter(&mut self, a: Tensor, b: Tensor, scale: f64, dropout: f32) -> Result<()> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        let (r, a_in) = a.dims2()?;
        let (b_out, b_r) = b.dims2()?;
        if a_in != in_dim || b_out != out_dim || b_r != r {
            return Err(Error::tensor(
                &self.name,
                format!(
                    "LoRA factors A {:?} and B {:?} do not fit weight [{out_dim}, {in_dim}]",
                    a.dims(),
                    b.dims()
                ),
            ));
        }
        let dtype = self.weight.dtype();
        self.adapter = Some(LoraAdapter {
            a: Var::from_tensor(&a.to_dtype(dtype)?)?,
            b: Var::from_tensor(&b.to_dtype(dtype)?)?,
            scale,
            dropout,
        });
        Ok(())
    }

    /// Give the layer the generator its dropout masks come from.
    pub fn set_rng(&mut self, rng: SharedRng) {
        self.rng = Some(rng);
    }

    /// Shapes: `x` `[..., in]` -> `[..., out]`. Dropout applies only when `train` is set.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        // A weight that is itself a variable (pretraining the embedded base model) trains
        // through a plain matmul; a frozen one skips its weight gradient.
        let mut y = if self.weight.is_variable() {
            x.broadcast_matmul(&self.weight.t()?)?
        } else {
            frozen_linear(x, &self.weight)?
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        let Some(ad) = &self.adapter else {
            return Ok(y);
        };
        let x_in = match (&self.rng, train && ad.dropout > 0.0) {
            (Some(rng), true) => {
                let mask = Tensor::from_vec(
                    rng.dropout_mask(x.elem_count(), ad.dropout),
                    x.shape(),
                    x.device(),
                )?
                .to_dtype(x.dtype())?;
                (x * mask)?
            }
            _ => x.clone(),
        };
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        // Two thin 2-D matmuls: [rows, in] x [in, r] x [r, out]. The scale multiplies the
        // small factor B rather than the [rows, out] product (exact for the usual
        // power-of-two alpha / r, and one activation-sized graph node fewer).
        let low = x_in
            .reshape((rows, in_dim))?
            .matmul(&ad.a.as_tensor().t()?)?;
        let up = low.matmul(&(ad.b.as_tensor() * ad.scale)?.t()?)?;
        let up = up.reshape(y.shape())?;
        y + up
    }
}

/// `W + scale * B A`: the weight with the adapter merged in (a pure function, PEFT's merge).
///
/// Shapes: `weight` `[out, in]`, `a` `[r, in]`, `b` `[out, r]`.
pub fn merged_weight(weight: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    Ok((weight + (b.matmul(a)? * scale)?)?)
}

/// Used by model constructors to decide whether a module gets an adapter.
pub fn is_target(module_name: &str, cfg: &LoraConfig) -> bool {
    let last = module_name.rsplit('.').next().unwrap_or(module_name);
    cfg.targets.iter().any(|t| t == last || t == module_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn layer() -> Result<LoraLinear> {
        let w = Tensor::randn(0f32, 1.0, (6, 4), &Device::Cpu)?;
        Ok(LoraLinear::frozen("m.q", w, None))
    }

    #[test]
    fn fresh_adapter_leaves_output_unchanged() -> Result<()> {
        let mut l = layer()?;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 4), &Device::Cpu)?;
        let before = l.forward(&x, false)?;
        l.add_adapter(&LoraConfig::default(), &SharedRng::seeded(0))?;
        let after = l.forward(&x, false)?;
        let d = (before - after)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        let a = l.adapter().unwrap().a.as_tensor().clone();
        assert!(a.abs()?.max_all()?.to_scalar::<f32>()? <= 0.5);
        Ok(())
    }

    #[test]
    fn forward_equals_merged_weight_and_gradients_reach_both_factors() -> Result<()> {
        let mut l = layer()?;
        let a = Tensor::randn(0f32, 1.0, (2, 4), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1.0, (6, 2), &Device::Cpu)?;
        l.set_adapter(a.clone(), b.clone(), 4.0, 0.0)?;
        let x = Tensor::randn(0f32, 1.0, (3, 4), &Device::Cpu)?;
        let y = l.forward(&x, true)?;
        let merged = merged_weight(l.weight(), &a, &b, 4.0)?;
        let expect = x.matmul(&merged.t()?)?;
        let d = (&y - expect)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-4, "differs by {d}");
        let grads = y.sum_all()?.backward()?;
        let ad = l.adapter().unwrap();
        for v in [&ad.a, &ad.b] {
            let g = grads.get(v.as_tensor()).expect("gradient");
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        }
        Ok(())
    }

    #[test]
    fn mismatched_factors_name_the_layer() -> Result<()> {
        let mut l = layer()?;
        let a = Tensor::zeros((2, 5), DType::F32, &Device::Cpu)?;
        let b = Tensor::zeros((6, 2), DType::F32, &Device::Cpu)?;
        let err = l.set_adapter(a, b, 1.0, 0.0).unwrap_err().to_string();
        assert!(err.contains("m.q"), "{err}");
        Ok(())
    }

    #[test]
    fn targets_match_on_last_component() {
        let cfg = LoraConfig::default();
        assert!(is_target("encoder.block.0.layer.0.SelfAttention.q", &cfg));
        assert!(!is_target("encoder.block.0.layer.0.SelfAttention.k", &cfg));
    }
}
