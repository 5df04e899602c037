//! The building blocks of a T5 block: the RMS-style layer norm, multi-head attention and the
//! feed-forward network. Everything here is differentiable: no fused candle kernel that
//! lacks a backward pass (the softmax has its own, see `model/softmax.rs`), so gradients reach
//! every LoRA factor.
//!
//! The residual stream is kept in f32 whatever the weight dtype (f64 for f64 weights): a
//! bf16 / f16 T5 overflows in the feed-forward output otherwise. Sub-layers take and return
//! the stream dtype, see [`stream_dtype`].

use candle_core::{DType, Tensor, D};

use super::config::Activation;
use crate::model::norm::{fused_dtype, rms_norm};
use crate::model::softmax::softmax_last_dim;
use crate::model::LoraLinear;

/// The dtype of the residual stream, norms, attention scores and logits for weights of
/// dtype `weights`: f64 stays f64, everything else is computed in f32.
pub fn stream_dtype(weights: DType) -> DType {
    if weights == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// T5's layer norm: scale by the root mean square, no mean subtraction, no bias.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// `[d_model]`, in the stream dtype.
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(stream_dtype(weight.dtype()))?,
            eps,
        })
    }

    /// `x` `[..., d_model]` -> the same shape, both in the stream dtype.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if fused_dtype(x.dtype()) && x.dtype() == self.weight.dtype() {
            return rms_norm(x, &self.weight, self.eps);
        }
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        // x * (1 / sqrt(var + eps)), rounded as PyTorch's rsqrt-then-multiply.
        let normed = x.broadcast_mul(&(variance + self.eps)?.sqrt()?.recip()?)?;
        normed.broadcast_mul(&self.weight)
    }
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

    /// Attention of the queries from `x` `[B, Lq, d_model]` over `keys` / `values`
    /// `[B, H, Lk, d_kv]`, with the additive `bias` broadcastable to `[B, H, Lq, Lk]`
    /// (relative positions and masks). No `1/sqrt(d_kv)` scaling: T5 folds it into the
    /// weights. Scores, softmax and the result `[B, Lq, d_model]` are in the stream dtype.
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
        let stream = stream_dtype(q.dtype());
        let scores = q.matmul(&keys.t()?.contiguous()?)?.to_dtype(stream)?;
        let probs = softmax_last_dim(&scores.broadcast_add(&bias.to_dtype(stream)?)?)?;
        let context = probs
            .to_dtype(values.dtype())?
            .matmul(values)?
            .transpose(1, 2)?
            .reshape((b, lq, self.num_heads * self.d_kv))?;
        self.o.forward(&context, train)?.to_dtype(stream)
    }
}

/// The feed-forward network: `wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    /// `wi` or `wi_0`.
    pub wi: LoraLinear,
    /// `wi_1` in the gated form.
    pub wi_gate_linear: Option<LoraLinear>,
    /// Kept in the stream dtype (as Hugging Face keeps `wo` in f32): its output overflows in
    /// half precision.
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

    /// `x` `[..., d_model]` -> `[..., d_model]`, both in the stream dtype.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x_in = x.to_dtype(self.wi.weight().dtype())?;
        let mut h = activate(&self.wi.forward(&x_in, train)?, self.activation)?;
        if let Some(linear) = &self.wi_gate_linear {
            h = (h * linear.forward(&x_in, train)?)?;
        }
        let h = h.to_dtype(self.wo.weight().dtype())?;
        let stream = stream_dtype(self.wo.weight().dtype());
        self.wo.forward(&h, train)?.to_dtype(stream)
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
    use candle_core::Device;

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
}
