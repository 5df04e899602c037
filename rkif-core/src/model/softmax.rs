//! Softmax over the last axis with an explicit backward pass.
//!
//! The forward is composed from candle operations on a detached input; the result is attached
//! to the input's graph through a custom op whose backward is `p * (g - sum(g * p))`, the form
//! PyTorch uses. Autograd through the composed ops would give the same value in exact
//! arithmetic, but with sharp attention (`p` close to 1) the difference `g - sum(g * p)`
//! cancels, and rounding it in another order moves the LoRA gradients far more than the
//! inputs' own rounding. One node instead of five also keeps the graph small.

use candle_core::{Tensor, D};

use crate::model::hand_backward::{attach, Backward1};

/// Softmax over the last axis, differentiable (see the module doc). Any shape.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let xd = x.detach();
    let max = xd.max_keepdim(D::Minus1)?;
    let e = xd.broadcast_sub(&max)?.exp()?;
    // Multiply by the reciprocal of the sum, as PyTorch's CPU kernel rounds.
    let p = e
        .broadcast_mul(&e.sum_keepdim(D::Minus1)?.recip()?)?
        .contiguous()?;
    attach(x, p, SoftmaxBackward)
}

/// Log-softmax over the last axis, `x - max - log(sum(exp(x - max)))`, differentiable through
/// candle's ops (the loss's, where no cancellation arises). The max only shifts the values for
/// stability and leaves the result unchanged, so it is kept out of the graph. Any shape.
pub fn log_softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&log_sum)
}

/// The backward: `g` to `p (g - sum g p)`, with `p` the op's result.
struct SoftmaxBackward;

impl Backward1 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn input_grad(&self, p: &Tensor, grad_res: &Tensor) -> candle_core::Result<Tensor> {
        let dot = (grad_res * p)?.sum_keepdim(D::Minus1)?;
        grad_res.broadcast_sub(&dot)?.mul(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_the_fused_kernel_and_autograd_of_the_composed_form() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (2, 3, 5), &dev)?)?;
        let ours = softmax_last_dim(x.as_tensor())?;
        let fused = candle_nn::ops::softmax_last_dim(x.as_tensor())?;
        let d = (&ours - fused)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "forward differs by {d}");

        let w = Tensor::randn(0f32, 1.0, (2, 3, 5), &dev)?;
        let g_ours = (&ours * &w)?.sum_all()?.backward()?;
        let composed = candle_nn::ops::softmax(x.as_tensor(), D::Minus1)?;
        let g_composed = (&composed * &w)?.sum_all()?.backward()?;
        let (a, b) = match (g_ours.get(x.as_tensor()), g_composed.get(x.as_tensor())) {
            (Some(a), Some(b)) => (a.clone(), b.clone()),
            _ => panic!("no gradient reached the input"),
        };
        let d = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "gradient differs by {d}");
        assert!(a.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }
}
