//! Differentiable building blocks of the LLaMA forward pass.
//!
//! candle's fused RMS-norm, softmax and rotary kernels have no backward pass, so gradients
//! would silently stop at them. Everything here backpropagates: composed of elementary ops,
//! or (RMS norm, softmax, RoPE) computed from elementary ops on a detached input and attached
//! to the graph as one custom op with its backward written out, which keeps the graph small.

use candle_core::{DType, Device, Tensor, D};

use crate::model::hand_backward::{attach, Backward1};

/// RMS norm over the last dimension: `w * x / sqrt(mean(x^2) + eps)`, computed in f32 as
/// Hugging Face does.
///
/// Shapes: `x` `[..., h]`, `weight` `[h]`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    if dtype == DType::F32 && weight.dtype() == DType::F32 {
        // One graph node with a closed-form backward (the same rounding forward).
        return crate::model::norm::rms_norm(x, weight, eps);
    }
    let x32 = x.to_dtype(DType::F32)?;
    let inv_rms = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    x32.broadcast_mul(&inv_rms)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)
}

/// The RoPE tables for given positions, in Hugging Face's layout (`cat(freqs, freqs)`).
///
/// Shapes: `positions` `[b, t]` (u32); returns `(cos, sin)`, each `[b, 1, t, head_dim]`.
pub fn rope_tables(
    positions: &Tensor,
    head_dim: usize,
    theta: f64,
    dtype: DType,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    // inv_freq_i = theta^(-2i/d), rounded to f32 like the reference.
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, 1, half), positions.device())?;
    let freqs = positions
        .to_dtype(DType::F32)?
        .unsqueeze(2)?
        .broadcast_mul(&inv_freq)?;
    let emb = Tensor::cat(&[&freqs, &freqs], 2)?.unsqueeze(1)?;
    Ok((emb.cos()?.to_dtype(dtype)?, emb.sin()?.to_dtype(dtype)?))
}

/// `x * cos + rotate_half(x) * sin`, with `rotate_half(x) = cat(-x2, x1)` over the halves of
/// the head dimension.
///
/// Shapes: `x` `[b, heads, t, d]`, `cos`/`sin` `[b, 1, t, d]`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let xd = x.detach();
    let y = (xd.broadcast_mul(cos)? + rotate_half(&xd)?.broadcast_mul(sin)?)?;
    // One graph node instead of seven activation-sized ones (narrows, negation, concatenation,
    // products, sum), each of which would cost the backward pass a zero-filled gradient buffer
    // and an addition.
    attach(
        x,
        y.contiguous()?,
        RopeBackward {
            cos: cos.detach(),
            sin: sin.detach(),
        },
    )
}

/// `cat(-x2, x1)` over the halves of the last dimension.
fn rotate_half(x: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// Forward hands back the precomputed rotation; backward is its transpose:
/// `dx = g cos + cat(s2, -s1)` with `s = g sin` split into halves (`rotate_half`'s transpose).
struct RopeBackward {
    cos: Tensor,
    sin: Tensor,
}

impl Backward1 for RopeBackward {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn input_grad(&self, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Tensor> {
        let d = grad_res.dim(D::Minus1)?;
        let half = d / 2;
        let s = grad_res.broadcast_mul(&self.sin)?;
        let s1 = s.narrow(D::Minus1, 0, half)?;
        let s2 = s.narrow(D::Minus1, half, d - half)?;
        grad_res.broadcast_mul(&self.cos)? + Tensor::cat(&[&s2, &s1.neg()?], D::Minus1)?
    }
}

/// Softmax over the last dimension: one graph node with PyTorch's backward (see
/// [`crate::model::softmax`]).
pub fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    crate::model::softmax::softmax_last_dim(x)
}

/// Repeat each key/value head `groups` times so that it lines up with its query heads.
///
/// Shapes: `[b, kv_heads, s, d]` -> `[b, kv_heads * groups, s, d]`.
pub fn repeat_kv(x: &Tensor, groups: usize) -> candle_core::Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, kv, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv, groups, s, d))?
        .contiguous()?
        .reshape((b, kv * groups, s, d))
}

/// The additive attention bias from key-padding and causality: `0` where query `i` (at cache
/// index `offset + i`) may see key `j`, a very negative finite value elsewhere (finite, so a
/// query that sees nothing, a left pad, gets a uniform row instead of NaN).
///
/// `key_mask[b][j]` is true for real tokens. Returns `[b, 1, t, s]`.
pub fn attention_bias(
    key_mask: &[Vec<bool>],
    t: usize,
    offset: usize,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let b = key_mask.len();
    let s = key_mask.first().map_or(0, |r| r.len());
    let mut bias = Vec::with_capacity(b * t * s);
    for row in key_mask {
        for i in 0..t {
            for (j, &real) in row.iter().enumerate() {
                let visible = real && j <= offset + i;
                bias.push(if visible { 0.0f32 } else { f32::MIN });
            }
        }
    }
    Tensor::from_vec(bias, (b, 1, t, s), device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmaxes_match_candle_and_backpropagate() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 3.0, (3, 7), &dev)?)?;
        let ours = softmax_last(x.as_tensor())?;
        let fused = candle_nn::ops::softmax_last_dim(x.as_tensor())?;
        let d = (&ours - fused)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        let logp = crate::model::softmax::log_softmax_last_dim(x.as_tensor())?;
        let d = (logp.exp()? - &ours)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        // d/dx of sum(softmax * c) is non-zero for a non-constant c.
        let c = Tensor::arange(0f32, 7.0, &dev)?;
        let g = ours.broadcast_mul(&c)?.sum_all()?.backward()?;
        let gx = g.get(x.as_tensor()).expect("gradient reaches x");
        assert!(gx.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }

    #[test]
    fn rms_norm_matches_hand_computation() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[3f32, 4.0]], &dev)?;
        let w = Tensor::new(&[1f32, 2.0], &dev)?;
        let y = rms_norm(&x, &w, 0.0)?.to_vec2::<f32>()?;
        // rms = sqrt((9 + 16) / 2)
        let rms = 12.5f32.sqrt();
        assert!((y[0][0] - 3.0 / rms).abs() < 1e-6 && (y[0][1] - 8.0 / rms).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn rope_gradient_matches_autograd_of_the_composed_form() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let pos = Tensor::new(&[[0u32, 1, 5], [2, 3, 4]], &dev)?;
        let (cos, sin) = rope_tables(&pos, 6, 10_000.0, DType::F32)?;
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 2, 3, 6), &dev)?)?;
        let probe = Tensor::randn(0f32, 1.0, (2, 2, 3, 6), &dev)?;
        let ours = apply_rope(x.as_tensor(), &cos, &sin)?;
        let composed = (x.as_tensor().broadcast_mul(&cos)?
            + rotate_half(x.as_tensor())?.broadcast_mul(&sin)?)?;
        let d = (&ours - &composed)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0, "forward differs by {d}");
        let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
        let g_ref = (&composed * &probe)?.sum_all()?.backward()?;
        let (a, b) = match (g_ours.get(x.as_tensor()), g_ref.get(x.as_tensor())) {
            (Some(a), Some(b)) => (a.clone(), b.clone()),
            _ => panic!("no gradient reached x"),
        };
        let d = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "gradient differs by {d}");
        assert!(a.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_rotates_pairs() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let pos = Tensor::new(&[[0u32, 1]], &dev)?;
        let (cos, sin) = rope_tables(&pos, 4, 10_000.0, DType::F32)?;
        let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev)?.reshape((1, 1, 1, 4))?;
        let x = x.broadcast_as((1, 1, 2, 4))?.contiguous()?;
        let y = apply_rope(&x, &cos, &sin)?.squeeze(0)?.to_vec3::<f32>()?;
        let y = &y[0];
        assert_eq!(y[0], vec![1.0, 2.0, 3.0, 4.0]);
        // Position 1, pair (x0, x2) rotated by angle 1: (x0 cos1 - x2 sin1, x2 cos1 + x0 sin1).
        let (c, s) = (1f32.cos(), 1f32.sin());
        assert!((y[1][0] - (c - 3.0 * s)).abs() < 1e-5);
        assert!((y[1][2] - (3.0 * c + s)).abs() < 1e-5);
        Ok(())
    }
}
