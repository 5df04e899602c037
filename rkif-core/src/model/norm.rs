//! RMS norm as one graph node with an explicit backward pass (T5's layer norm and LLaMA's
//! RMS norm are the same function).
//!
//! Composed from candle operations, the norm puts seven nodes on the graph (square, mean,
//! add, square root, reciprocal and two products), most of them the size of the activations;
//! candle's backward pass gives every node a zero-filled gradient buffer and an addition of
//! its size. Here the forward is computed from the same operations on a detached input, so
//! its rounding is unchanged, and attached to the input through a custom op whose backward
//! is the closed form:
//!
//! ```text
//! y  = w * x * r,          r = 1 / sqrt(mean(x^2) + eps)   (per row)
//! dx = r * (w g) - x * r^3 * mean(w g x)
//! dw = sum over rows of g * x * r                          (only when w trains)
//! ```

use candle_core::{DType, Tensor, D};

use crate::model::hand_backward::{attach2, Backward2};

/// `1 / sqrt(mean(x^2) + eps)` over the last axis, `[..., 1]`, rounded as PyTorch's
/// rsqrt-then-multiply form is.
fn inverse_rms(x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()
}

/// `weight * x / sqrt(mean(x^2) + eps)` over the last axis, differentiable in `x` and
/// `weight`. Shapes: `x` `[..., h]`, `weight` `[h]`, both f32 or both f64; the result has
/// `x`'s shape.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let xd = x.detach();
    let y = xd
        .broadcast_mul(&inverse_rms(&xd, eps)?)?
        .broadcast_mul(&weight.detach())?
        .contiguous()?;
    attach2(x, weight, y, RmsNormBackward { eps })
}

/// Whether [`rms_norm`] handles this dtype (the closed-form backward is written for f32
/// and f64; half-precision streams keep the composed form).
pub fn fused_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64)
}

/// The backward: the closed form above.
struct RmsNormBackward {
    eps: f64,
}

impl Backward2 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn input_grads(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let x = x.detach();
        let h = x.dim(D::Minus1)?;
        let r = inverse_rms(&x, self.eps)?;
        let wg = grad_res.broadcast_mul(&weight.detach())?;
        let mean_wgx = ((&wg * &x)?.sum_keepdim(D::Minus1)? / h as f64)?;
        let grad_x = (wg.broadcast_mul(&r)? - x.broadcast_mul(&(mean_wgx * r.powf(3.0)?)?)?)?;
        // The weight's gradient only when something trains it (full fine-tuning).
        let grad_w = if weight.track_op() {
            let rows = x.elem_count() / h.max(1);
            let gxr = (grad_res * x.broadcast_mul(&r)?)?.reshape((rows, h))?;
            Some(gxr.sum(0)?)
        } else {
            None
        };
        Ok((Some(grad_x), grad_w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The composed form, differentiated by candle's autograd.
    fn composed(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
        x.broadcast_mul(&inverse_rms(x, eps)?)?.broadcast_mul(w)
    }

    #[test]
    fn matches_autograd_of_the_composed_form() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (2, 3, 6), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.5, 6, &dev)?)?;
        let probe = Tensor::randn(0f32, 1.0, (2, 3, 6), &dev)?;
        let ours = rms_norm(x.as_tensor(), w.as_tensor(), 1e-6)?;
        let reference = composed(x.as_tensor(), w.as_tensor(), 1e-6)?;
        let d = (&ours - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0, "forward differs by {d}");

        let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
        let g_ref = (&reference * &probe)?.sum_all()?.backward()?;
        for v in [&x, &w] {
            let (a, b) = match (g_ours.get(v.as_tensor()), g_ref.get(v.as_tensor())) {
                (Some(a), Some(b)) => (a.clone(), b.clone()),
                _ => panic!("a gradient is missing"),
            };
            let d = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d <= 1e-5 * scale.max(1.0), "gradient differs by {d}");
            assert!(scale > 0.0);
        }
        Ok(())
    }

    #[test]
    fn a_frozen_weight_gets_no_gradient() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 5), &dev)?)?;
        let w = Tensor::ones(5, DType::F32, &dev)?;
        let grads = rms_norm(x.as_tensor(), &w, 1e-6)?
            .sqr()?
            .sum_all()?
            .backward()?;
        assert!(grads.get(&w).is_none());
        assert!(grads.get(x.as_tensor()).is_some());
        Ok(())
    }
}
