//! Reading tensor elements on the host without needless copies, and finiteness checks that
//! cost one device transfer for a whole batch of tensors.

use candle_core::{DType, Storage, Tensor};

use crate::Result;

/// Runs `f` on the elements of `t` (row-major, flattened) as `f32` in host memory.
///
/// A contiguous `f32` tensor on the CPU is read in place; anything else (another device,
/// another dtype, a strided view) is copied to the host first. `f16`/`bf16` widen exactly.
pub(crate) fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            if let Some(values) = cpu.as_slice::<f32>()?.get(start..end) {
                return Ok(f(values));
            }
        }
    }
    let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&values))
}

/// For each tensor, whether every element is finite (no NaN, no infinity).
///
/// CPU `f32` tensors are scanned in place. The others are reduced on their device to one
/// number each (`sum(x * 0)`, which is 0 when all elements are finite and NaN otherwise) and
/// fetched with a single transfer.
pub(crate) fn all_finite(tensors: &[&Tensor]) -> Result<Vec<bool>> {
    let mut finite = vec![true; tensors.len()];
    let mut on_device = Vec::new();
    let mut device_sums = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        if is_cpu_f32(t) {
            finite[i] = with_host_f32(t, |v| v.iter().all(|x| x.is_finite()))?;
        } else {
            on_device.push(i);
            device_sums.push(t.affine(0.0, 0.0)?.sum_all()?.to_dtype(DType::F32)?);
        }
    }
    if !device_sums.is_empty() {
        let sums = Tensor::stack(&device_sums, 0)?.to_vec1::<f32>()?;
        for (i, sum) in on_device.into_iter().zip(sums) {
            finite[i] = sum.is_finite();
        }
    }
    Ok(finite)
}

fn is_cpu_f32(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && t.device().is_cpu()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn finiteness_is_reported_per_tensor() -> Result<()> {
        let dev = Device::Cpu;
        let ok = Tensor::new(&[1f32, -2.0, 0.0], &dev)?;
        let nan = Tensor::new(&[1f32, f32::NAN], &dev)?;
        let inf = Tensor::new(&[f32::NEG_INFINITY], &dev)?;
        // Strided and f64 tensors take the reduction path.
        let strided = Tensor::new(&[[1f32, f32::INFINITY], [3.0, 4.0]], &dev)?.t()?;
        let wide = Tensor::new(&[1f64, 2.0], &dev)?;
        let wide_nan = Tensor::new(&[f64::NAN], &dev)?;
        let got = all_finite(&[&ok, &nan, &inf, &strided, &wide, &wide_nan])?;
        assert_eq!(got, vec![true, false, false, false, true, false]);
        Ok(())
    }

    #[test]
    fn host_view_flattens_row_major() -> Result<()> {
        let t = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        assert_eq!(with_host_f32(&t, |v| v.to_vec())?, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            with_host_f32(&t.t()?, |v| v.to_vec())?,
            vec![1.0, 3.0, 2.0, 4.0]
        );
        Ok(())
    }
}
