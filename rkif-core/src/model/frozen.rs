//! A linear map through a frozen weight whose backward pass computes only the input gradient.
//!
//! candle's matmul backward always computes the gradient of both operands, even when one of
//! them is a plain (non-trainable) tensor. For LoRA training that doubles the work of every
//! projection: the frozen base weight would get a full `dW = x^T dy` that nobody reads. Here
//! the product is computed outside the graph and re-attached to `x` through a custom op whose
//! backward returns `dy W` and nothing for the weight.

use candle_core::Tensor;

use crate::model::hand_backward::{attach, Backward1};

/// `x W^T` for a frozen `W`.
///
/// Shapes: `x` `[..., in]`, `weight` `[out, in]`; result `[..., out]`.
pub fn frozen_linear(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    let dims = x.dims();
    let lead = &dims[..dims.len().saturating_sub(1)];
    let rows: usize = lead.iter().product();
    let mut out_shape = lead.to_vec();
    out_shape.push(out_dim);
    // The product itself, as one 2-D matmul on detached inputs so the graph records nothing.
    let y = x
        .detach()
        .reshape((rows, in_dim))?
        .matmul(&weight.t()?)?
        .reshape(out_shape)?;
    // One graph node from `x` to the result: reshapes around it would each cost the backward
    // pass a zero-filled gradient buffer and an addition of their size.
    attach(
        x,
        y,
        InputGradOnly {
            weight: weight.detach(),
        },
    )
}

/// The backward: `dy` to `dy W`, and nothing for the weight.
struct InputGradOnly {
    weight: Tensor,
}

impl Backward1 for InputGradOnly {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn input_grad(&self, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Tensor> {
        // grad_res: [..., out]; weight: [out, in] -> [..., in], through one 2-D matmul.
        let (out_dim, in_dim) = self.weight.dims2()?;
        let rows = grad_res.elem_count() / out_dim.max(1);
        let mut in_shape = grad_res.dims().to_vec();
        if let Some(last) = in_shape.last_mut() {
            *last = in_dim;
        }
        grad_res
            .reshape((rows, out_dim))?
            .matmul(&self.weight)?
            .reshape(in_shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_plain_matmul_forward_and_input_gradient() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (5, 3), &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 4, 3), &dev)?)?;
        let ours = frozen_linear(x.as_tensor(), &w)?;
        let plain = x.as_tensor().broadcast_matmul(&w.t()?)?;
        let diff = (&ours - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");

        let g_ours = ours.sqr()?.sum_all()?.backward()?;
        let g_plain = plain.sqr()?.sum_all()?.backward()?;
        let (a, b) = (g_ours.get(&x).unwrap(), g_plain.get(&x).unwrap());
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "input gradient differs by {diff}");
        Ok(())
    }
}
