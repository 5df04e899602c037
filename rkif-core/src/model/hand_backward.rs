//! Ops with a hand-written backward pass: the mechanism the frozen linear map, the RMS norm,
//! the softmax and RoPE share.
//!
//! Each computes its forward with ordinary candle operations on detached inputs (so the
//! rounding is candle's) and attaches the result to its inputs as one graph node whose backward
//! is its rule. One node instead of several saves the backward pass a zero-filled,
//! activation-sized gradient buffer and an addition for every node it replaces, and lets a rule
//! skip gradients nobody reads (a frozen weight's).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

/// The backward rule of an op with one differentiable input.
pub(crate) trait Backward1: Send + Sync {
    /// The op's name in candle's graph and in errors.
    fn name(&self) -> &'static str;
    /// The input's gradient, from the op's result `res` and the result's gradient `grad`.
    fn input_grad(&self, res: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor>;
}

/// The backward rule of an op with two differentiable inputs.
pub(crate) trait Backward2: Send + Sync {
    /// The op's name in candle's graph and in errors.
    fn name(&self) -> &'static str;
    /// The gradients of `a` and `b` (`None` for one nobody reads), from the inputs, the op's
    /// result `res` and the result's gradient `grad`.
    fn input_grads(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)>;
}

/// `value`, computed from `x` outside the graph, as a node of `x`'s graph with backward `rule`
/// (or `value` itself when nothing upstream of `x` trains). `value` must be contiguous.
pub(crate) fn attach<B: Backward1 + 'static>(
    x: &Tensor,
    value: Tensor,
    rule: B,
) -> candle_core::Result<Tensor> {
    if x.track_op() {
        x.apply_op2(&value, Attached1(rule))
    } else {
        Ok(value)
    }
}

/// [`attach`] for an op of two inputs `a` and `b`.
pub(crate) fn attach2<B: Backward2 + 'static>(
    a: &Tensor,
    b: &Tensor,
    value: Tensor,
    rule: B,
) -> candle_core::Result<Tensor> {
    if a.track_op() || b.track_op() {
        a.apply_op3(b, &value, Attached2(rule))
    } else {
        Ok(value)
    }
}

/// The forward of an attached op: the precomputed value as it is. candle copies the storage
/// without its layout, which is only right for a contiguous tensor starting at offset 0.
fn hand_back<S: BackendStorage>(
    name: &str,
    value: &S,
    layout: &Layout,
) -> candle_core::Result<(S, Shape)> {
    if !(layout.is_contiguous() && layout.start_offset() == 0) {
        return Err(candle_core::Error::Msg(format!(
            "{name}: the precomputed result must be contiguous"
        )));
    }
    Ok((value.try_clone(layout)?, layout.shape().clone()))
}

/// Inputs `(x, value)`.
struct Attached1<B>(B);

impl<B: Backward1> CustomOp2 for Attached1<B> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        _x: &CpuStorage,
        _x_layout: &Layout,
        value: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        hand_back(self.0.name(), value, layout)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _x: &candle_core::CudaStorage,
        _x_layout: &Layout,
        value: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        hand_back(self.0.name(), value, layout)
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _value: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.0.input_grad(res, grad_res)?), None))
    }
}

/// Inputs `(a, b, value)`.
struct Attached2<B>(B);

impl<B: Backward2> CustomOp3 for Attached2<B> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        _a: &CpuStorage,
        _a_layout: &Layout,
        _b: &CpuStorage,
        _b_layout: &Layout,
        value: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        hand_back(self.0.name(), value, layout)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _a: &candle_core::CudaStorage,
        _a_layout: &Layout,
        _b: &candle_core::CudaStorage,
        _b_layout: &Layout,
        value: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        hand_back(self.0.name(), value, layout)
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _value: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_a, grad_b) = self.0.input_grads(a, b, res, grad_res)?;
        Ok((grad_a, grad_b, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Doubles its input, with the backward deliberately wrong (times 3) so the test sees
    /// that the rule, not autograd, produced the gradient.
    struct TimesThree;

    impl Backward1 for TimesThree {
        fn name(&self) -> &'static str {
            "times-three"
        }
        fn input_grad(&self, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
            grad * 3.0
        }
    }

    #[test]
    fn the_rule_gives_the_gradient_and_the_value_is_kept() -> candle_core::Result<()> {
        let x = Var::from_tensor(&Tensor::new(&[1f32, -2.0], &Device::Cpu)?)?;
        let y = attach(x.as_tensor(), (x.as_tensor().detach() * 2.0)?, TimesThree)?;
        assert_eq!(y.to_vec1::<f32>()?, [2.0, -4.0]);
        let grads = y.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).map(|g| g.to_vec1::<f32>());
        assert_eq!(g.transpose()?, Some(vec![3.0, 3.0]));
        Ok(())
    }

    #[test]
    fn a_non_contiguous_value_is_an_error_naming_the_op() -> candle_core::Result<()> {
        let x = Var::from_tensor(&Tensor::ones(
            (2, 3),
            candle_core::DType::F32,
            &Device::Cpu,
        )?)?;
        let value = x.as_tensor().detach().t()?;
        let err = attach(x.as_tensor(), value, TimesThree).unwrap_err();
        assert!(err.to_string().contains("times-three"), "{err}");
        Ok(())
    }
}
