//! The building blocks of a T5 block: the RMS-style layer norm, multi-head attention and the
//! feed-forward network. Only differentiable candle operations are used (no fused kernels),
//! so gradients reach every LoRA factor.
//!
//! The residual stream is kept in f32 whatever the weight dtype: a bf16 / f16 T5 overflows in
//! the feed-forward output otherwise. Sub-layers take f32 input and return f32 output.

use candle_core::{DType, Tensor, D};

use super::config::Activation;
use crate::model::LoraLinear;

/// T5's layer norm: scale by the root mean square, no mean subtraction, no bias.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// `[d_model]`, f32.
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?,
            eps,
        })
    }

    /// `x` `[..., d_model]` f32 -> the same shape, f32.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)
    }
}

/// Softmax over the last axis from exp / sum, which candle can differentiate. The max is taken
/// out of the graph: softmax does not depend on the shift, so its gradient there is zero.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Multi-head attention with `q`, `k`, `v`, `o` projections (self- or cross-attention).
#[derive(Debug, Clone)]
pub struct Attention {
    pub q: LoraLinear,
    pub k: LoraLinear,
    pub v: LoraLinear,
    pub o: LoraLinear,
    num_heads: usize,
    d_kv: usize,
}

impl Attention {
    pub fn new(
        q: LoraLinear,
        k: LoraLinear,
        v: LoraLinear,
        o: LoraLinear,
        num_heads: usize,
        d_kv: usize,
    ) -> Self {
        Self {
            q,
            k,
            v,
            o,
            num_heads,
            d_kv,
        }
    }

    /// `x` `[B, L, d_model]` through `proj`, split into heads: `[B, H, L, d_kv]`.
    fn heads(&self, proj: &LoraLinear, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let dtype = proj.weight().dtype();
        proj.forward(&x.to_dtype(dtype)?, train)?
            .reshape((b, l, self.num_heads, self.d_kv))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x` `[B, L, d_model]`: each `[B, H, L, d_kv]`.
    pub fn key_values(&self, x: &Tensor, train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.heads(&self.k, x, train)?,
            self.heads(&self.v, x, train)?,
        ))
    }

    /// Attention of the queries from `x` `[B, Lq, d_model]` (f32) over `keys` / `values`
    /// `[B, H, Lk, d_kv]`, with the additive `bias` broadcastable to `[B, H, Lq, Lk]` (f32:
    /// relative positions and masks). No `1/sqrt(d_kv)` scaling: T5 folds it into the weights.
    /// Returns `[B, Lq, d_model]`, f32.
    pub fn attend(
        &self,
        x: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        bias: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, lq, _) = x.dims3()?;
        let q = self.heads(&self.q, x, train)?;
        let scores = q.matmul(&keys.t()?.contiguous()?)?.to_dtype(DType::F32)?;
        let probs = softmax_last_dim(&scores.broadcast_add(bias)?)?;
        let context = probs
            .to_dtype(values.dtype())?
            .matmul(values)?
            .transpose(1, 2)?
            .reshape((b, lq, self.num_heads * self.d_kv))?;
        self.o.forward(&context, train)?.to_dtype(DType::F32)
    }
}

/// The feed-forward network: `wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    /// `wi` or `wi_0`.
    pub wi: LoraLinear,
    /// `wi_1` in the gated form.
    pub wi_gate_linear: Option<LoraLinear>,
    /// Kept in f32 (as Hugging Face keeps `wo`): its output overflows in half precision.
    pub wo: LoraLinear,
    activation: Activation,
}

impl FeedForward {
    pub fn new(
        wi: LoraLinear,
        wi_gate_linear: Option<LoraLinear>,
        wo: LoraLinear,
        activation: Activation,
    ) -> Self {
        Self {
            wi,
            wi_gate_linear,
            wo,
            activation,
        }
    }

    /// `x` `[..., d_model]` f32 -> `[..., d_model]` f32.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x_in = x.to_dtype(self.wi.weight().dtype())?;
        let mut h = activate(&self.wi.forward(&x_in, train)?, self.activation)?;
        if let Some(linear) = &self.wi_gate_linear {
            h = (h * linear.forward(&x_in, train)?)?;
        }
        let h = h.to_dtype(self.wo.weight().dtype())?;
        self.wo.forward(&h, train)?.to_dtype(DType::F32)
    }
}

fn activate(x: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    match activation {
        Activation::Relu => x.relu(),
        // candle's `gelu` is the tanh approximation, `gelu_erf` the exact form; both have a
        // backward pass.
        Activation::GeluTanh => x.gelu(),
        Activation::GeluErf => x.gelu_erf(),
        Activation::Silu => x.silu(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn rms_norm_by_hand() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let norm = RmsNorm::new(Tensor::new(&[1f32, 2.0], &dev)?, 0.0)?;
        // rms of [3, 4] = sqrt(12.5)
        let y = norm
            .forward(&Tensor::new(&[[3f32, 4.0]], &dev)?)?
            .to_vec2::<f32>()?;
        let r = 12.5f32.sqrt();
        assert!((y[0][0] - 3.0 / r).abs() < 1e-6 && (y[0][1] - 8.0 / r).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn softmax_matches_the_fused_kernel_and_backpropagates() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (2, 5), &dev)?)?;
        let ours = softmax_last_dim(x.as_tensor())?;
        let fused = candle_nn::ops::softmax_last_dim(x.as_tensor())?;
        let d = (&ours - fused)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        // d/dx of sum(softmax * w) must be non-zero for a non-constant w.
        let w = Tensor::new(&[1f32, 2.0, 3.0, 4.0, 5.0], &dev)?;
        let grads = ours.broadcast_mul(&w)?.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .map(|g| g.abs()?.sum_all()?.to_scalar::<f32>());
        assert!(g.transpose()?.unwrap_or(0.0) > 0.0);
        Ok(())
    }
}
