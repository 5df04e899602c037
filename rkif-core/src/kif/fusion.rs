//! Fusion of the new-task and replay updates of one round (METHOD.md section 4).
//!
//! Per element, the inner (new-task) and outer (replay) masks pick one of four cases, each
//! with a pair of coefficients, and
//!
//! ```text
//! theta = anchor + (c_in * delta_in + c_out * delta_out)
//! ```
//!
//! summed in exactly that order in the tensor dtype (the reference's order; adding the
//! anchor first would change the last bit).

use candle_core::{DType, Device, Shape, Tensor};
use serde::{Deserialize, Serialize};

use super::host;
use crate::model::LoraParam;
use crate::{Error, Result};

pub use crate::config::{CaseWeights, FusionCase, FusionTable};

/// How many elements fell in each case (for one tensor or a whole model).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FusionStats {
    pub inner_only: u64,
    pub outer_only: u64,
    pub both: u64,
    pub neither: u64,
}

impl FusionStats {
    /// From the mask sizes: `inner` and `outer` ones, `both` ones in both, `total` elements.
    fn from_mask_counts(inner: u64, outer: u64, both: u64, total: u64) -> Self {
        let union = (inner + outer).saturating_sub(both);
        Self {
            inner_only: inner.saturating_sub(both),
            outer_only: outer.saturating_sub(both),
            both,
            neither: total.saturating_sub(union),
        }
    }

    /// Elements in `case`.
    pub fn count(&self, case: FusionCase) -> u64 {
        match case {
            FusionCase::InnerOnly => self.inner_only,
            FusionCase::OuterOnly => self.outer_only,
            FusionCase::Both => self.both,
            FusionCase::Neither => self.neither,
        }
    }

    /// All elements.
    pub fn total(&self) -> u64 {
        self.inner_only + self.outer_only + self.both + self.neither
    }

    /// The share of elements in `case`, in `[0, 1]` (0 when there are no elements).
    pub fn share(&self, case: FusionCase) -> f64 {
        match self.total() {
            0 => 0.0,
            total => self.count(case) as f64 / total as f64,
        }
    }

    /// Elements the inner mask marks (`|inner|`).
    pub fn inner(&self) -> u64 {
        self.inner_only + self.both
    }

    /// Elements the outer mask marks (`|outer|`).
    pub fn outer(&self) -> u64 {
        self.outer_only + self.both
    }

    /// `|inner AND outer|`.
    pub fn intersection(&self) -> u64 {
        self.both
    }

    /// `|inner OR outer|`.
    pub fn union(&self) -> u64 {
        self.inner_only + self.outer_only + self.both
    }

    /// `|inner AND outer| / |inner OR outer|`; `None` when both masks are empty.
    pub fn overlap(&self) -> Option<f64> {
        match self.union() {
            0 => None,
            union => Some(self.both as f64 / union as f64),
        }
    }

    fn add(&mut self, other: &FusionStats) {
        self.inner_only += other.inner_only;
        self.outer_only += other.outer_only;
        self.both += other.both;
        self.neither += other.neither;
    }
}

/// The inputs of one tensor's fusion. All five tensors have the parameter's shape; masks are
/// read as "nonzero = important" and may have any dtype.
#[derive(Debug, Clone, Copy)]
pub struct FusionTensor<'a> {
    pub name: &'a str,
    /// The parameters at the start of the round.
    pub anchor: &'a Tensor,
    /// The new-task update: parameters after the inner steps minus `anchor`.
    pub delta_in: &'a Tensor,
    /// The replay update: parameters after the outer steps minus those after the inner steps.
    pub delta_out: &'a Tensor,
    /// The inner (new-task) importance mask.
    pub inner_mask: &'a Tensor,
    /// The outer (replay) importance mask.
    pub outer_mask: &'a Tensor,
}

impl FusionTensor<'_> {
    fn check(&self) -> Result<()> {
        let shape = self.anchor.shape();
        let parts = [
            ("delta_in", self.delta_in),
            ("delta_out", self.delta_out),
            ("inner_mask", self.inner_mask),
            ("outer_mask", self.outer_mask),
        ];
        for (what, t) in parts {
            if t.shape() != shape {
                return Err(Error::tensor(
                    self.name,
                    format!("{what} is {:?} but the anchor is {:?}", t.shape(), shape),
                ));
            }
            if !t.device().same_device(self.anchor.device()) {
                return Err(Error::tensor(
                    self.name,
                    format!("{what} is on another device than the anchor"),
                ));
            }
        }
        for (what, t) in [("delta_in", self.delta_in), ("delta_out", self.delta_out)] {
            if t.dtype() != self.anchor.dtype() {
                return Err(Error::tensor(
                    self.name,
                    format!(
                        "{what} is {:?} but the anchor is {:?}",
                        t.dtype(),
                        self.anchor.dtype()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// One fused tensor.
#[derive(Debug, Clone)]
pub struct FusedTensor {
    pub name: String,
    /// The new parameter value; the anchor's shape and dtype.
    pub value: Tensor,
    pub stats: FusionStats,
}

/// The result of a fusion: new values (not yet written anywhere) and statistics.
#[derive(Debug, Clone)]
pub struct Fusion {
    /// In the order of the inputs.
    pub tensors: Vec<FusedTensor>,
    /// Summed over all tensors.
    pub stats: FusionStats,
}

impl Fusion {
    /// Writes the fused values into the matching parameters (by name).
    ///
    /// Every fused tensor must find a parameter of the same shape; that is checked for all of
    /// them before any is written. Parameters without a fused tensor are left alone.
    pub fn write_into(&self, params: &[LoraParam]) -> Result<()> {
        let mut targets = Vec::with_capacity(self.tensors.len());
        for fused in &self.tensors {
            let param = params
                .iter()
                .find(|p| p.name == fused.name)
                .ok_or_else(|| Error::tensor(&fused.name, "no parameter of that name"))?;
            if param.var.shape() != fused.value.shape() {
                return Err(Error::tensor(
                    &fused.name,
                    format!(
                        "fused value is {:?} but the parameter is {:?}",
                        fused.value.shape(),
                        param.var.shape()
                    ),
                ));
            }
            targets.push((param, fused));
        }
        for (param, fused) in targets {
            param.var.set(&fused.value)?;
        }
        Ok(())
    }
}

/// The per-element coefficients `(c_in, c_out)` for two masks of one shape (nonzero =
/// important), as tensors of that shape in `dtype`.
pub fn coefficients(
    table: &FusionTable,
    inner_mask: &Tensor,
    outer_mask: &Tensor,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    coefficients_of_bits(table, &inner_mask.ne(0f64)?, &outer_mask.ne(0f64)?, dtype)
}

/// [`coefficients`] for `u8` masks that are exactly 0 or 1.
fn coefficients_of_bits(
    table: &FusionTable,
    inner: &Tensor,
    outer: &Tensor,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let (shape, device) = (inner.shape(), inner.device());
    let pick = |weight: fn(CaseWeights) -> f64| -> Result<Tensor> {
        let c = |case| constant(weight(table.weights(case)), dtype, device, shape);
        let when_inner = outer.where_cond(&c(FusionCase::Both)?, &c(FusionCase::InnerOnly)?)?;
        let otherwise = outer.where_cond(&c(FusionCase::OuterOnly)?, &c(FusionCase::Neither)?)?;
        Ok(inner.where_cond(&when_inner, &otherwise)?)
    };
    Ok((pick(|w| w.c_in)?, pick(|w| w.c_out)?))
}

/// `value` rounded once to `dtype`, broadcast to `shape` without copying.
fn constant(value: f64, dtype: DType, device: &Device, shape: &Shape) -> Result<Tensor> {
    Ok(Tensor::new(value, device)?
        .to_dtype(dtype)?
        .broadcast_as(shape)?)
}

/// Fuses every tensor of a round.
///
/// Pure: returns the new values and statistics and writes nothing. Errors, naming the
/// tensor: mismatched shapes, dtypes or devices, or a fused value that is not finite (then
/// no value is returned at all, so a caller cannot commit half a round).
pub fn fuse(table: &FusionTable, tensors: &[FusionTensor<'_>]) -> Result<Fusion> {
    table.validate()?;
    let mut values = Vec::with_capacity(tensors.len());
    let mut mask_sums = Vec::with_capacity(tensors.len());
    for t in tensors {
        t.check()?;
        let inner = t.inner_mask.ne(0f64)?;
        let outer = t.outer_mask.ne(0f64)?;
        let (c_in, c_out) = coefficients_of_bits(table, &inner, &outer, t.anchor.dtype())?;
        let update = c_in
            .mul(&t.delta_in.detach())?
            .add(&c_out.mul(&t.delta_out.detach())?)?;
        values.push(t.anchor.detach().add(&update)?);

        let (inner, outer) = (inner.to_dtype(DType::U32)?, outer.to_dtype(DType::U32)?);
        let both = inner.mul(&outer)?;
        mask_sums.push(Tensor::stack(
            &[inner.sum_all()?, outer.sum_all()?, both.sum_all()?],
            0,
        )?);
    }

    let refs: Vec<&Tensor> = values.iter().collect();
    if let Some(bad) = host::all_finite(&refs)?.iter().position(|ok| !ok) {
        let name = tensors.get(bad).map_or("?", |t| t.name);
        return Err(Error::NonFinite {
            name: name.to_string(),
            what: "fused value anchor + c_in * delta_in + c_out * delta_out".to_string(),
        });
    }

    // One transfer for all the counts.
    let counts = if mask_sums.is_empty() {
        Vec::new()
    } else {
        Tensor::stack(&mask_sums, 0)?.to_vec2::<u32>()?
    };
    let mut fused = Vec::with_capacity(tensors.len());
    let mut total = FusionStats::default();
    for ((t, value), c) in tensors.iter().zip(values).zip(counts) {
        let [inner, outer, both] = [0, 1, 2].map(|i| u64::from(c.get(i).copied().unwrap_or(0)));
        let stats = FusionStats::from_mask_counts(inner, outer, both, t.anchor.elem_count() as u64);
        total.add(&stats);
        fused.push(FusedTensor {
            name: t.name.to_string(),
            value,
            stats,
        });
    }
    Ok(Fusion {
        tensors: fused,
        stats: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn t(values: &[f32]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
    }

    fn v(t: &Tensor) -> Vec<f32> {
        t.to_vec1::<f32>().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn table_is_applied_element_wise() -> Result<()> {
        // Element order: inner only, outer only, both, neither.
        let inner = t(&[1.0, 0.0, 1.0, 0.0]);
        let outer = t(&[0.0, 1.0, 1.0, 0.0]);
        let (c_in, c_out) = coefficients(&FusionTable::default(), &inner, &outer, DType::F32)?;
        assert_eq!(v(&c_in), vec![1.0, 0.0, 0.4, 0.5]);
        assert_eq!(v(&c_out), vec![0.0, 1.0, 0.6, 0.5]);

        let anchor = t(&[10.0, 20.0, 30.0, 40.0]);
        let d_in = t(&[1.0, 2.0, 3.0, 4.0]);
        let d_out = t(&[-8.0, -16.0, -32.0, -64.0]);
        let f = fuse(
            &FusionTable::default(),
            &[FusionTensor {
                name: "x",
                anchor: &anchor,
                delta_in: &d_in,
                delta_out: &d_out,
                inner_mask: &inner,
                outer_mask: &outer,
            }],
        )?;
        let want = [
            10.0 + (1.0 * 1.0 + 0.0 * -8.0),
            20.0 + (0.0 * 2.0 + 1.0 * -16.0),
            30.0 + (0.4f32 * 3.0 + 0.6f32 * -32.0),
            40.0 + (0.5 * 4.0 + 0.5 * -64.0),
        ];
        assert_eq!(v(&f.tensors[0].value), want.to_vec());
        let s = f.stats;
        assert_eq!(
            (s.inner_only, s.outer_only, s.both, s.neither),
            (1, 1, 1, 1)
        );
        assert_eq!(s.overlap(), Some(1.0 / 3.0));
        assert_eq!(s.share(FusionCase::Neither), 0.25);
        Ok(())
    }

    #[test]
    fn custom_table_and_statistics_over_tensors() -> Result<()> {
        let table = FusionTable {
            both: CaseWeights {
                c_in: 0.25,
                c_out: 0.75,
            },
            neither: CaseWeights {
                c_in: 0.0,
                c_out: 0.0,
            },
            ..FusionTable::default()
        };
        let a = t(&[0.0; 3]);
        let d_in = t(&[4.0; 3]);
        let d_out = t(&[8.0; 3]);
        // u8 masks with values other than 1 still read as "important".
        let m_in = Tensor::new(&[2u8, 0, 0], &Device::Cpu)?;
        let m_out = Tensor::new(&[7u8, 0, 1], &Device::Cpu)?;
        let zeros = Tensor::new(&[0u8, 0, 0], &Device::Cpu)?;
        let f = fuse(
            &table,
            &[
                FusionTensor {
                    name: "p",
                    anchor: &a,
                    delta_in: &d_in,
                    delta_out: &d_out,
                    inner_mask: &m_in,
                    outer_mask: &m_out,
                },
                FusionTensor {
                    name: "q",
                    anchor: &a,
                    delta_in: &d_in,
                    delta_out: &d_out,
                    inner_mask: &zeros,
                    outer_mask: &zeros,
                },
            ],
        )?;
        assert_eq!(v(&f.tensors[0].value), vec![7.0, 0.0, 8.0]);
        assert_eq!(v(&f.tensors[1].value), vec![0.0, 0.0, 0.0]);
        let p = f.tensors[0].stats;
        assert_eq!(
            (p.inner(), p.outer(), p.union(), p.intersection()),
            (1, 2, 2, 1)
        );
        assert_eq!(f.tensors[1].stats.overlap(), None);
        assert_eq!(f.stats.neither, 4);
        assert_eq!(f.stats.total(), 6);
        Ok(())
    }

    #[test]
    fn non_finite_result_is_refused_with_the_name() -> Result<()> {
        let a = t(&[1.0, 2.0]);
        let d = t(&[0.5, 0.5]);
        let huge = t(&[f32::MAX, 0.0]);
        let ones = t(&[1.0, 1.0]);
        let input = |name, delta_in| FusionTensor {
            name,
            anchor: &a,
            delta_in,
            delta_out: &d,
            inner_mask: &ones,
            outer_mask: &ones,
        };
        // f32::MAX * 0.4 + 0.6 * 0.5 is finite; anchor + c_in * MAX with c_in = 1 overflows.
        let table = FusionTable {
            both: CaseWeights {
                c_in: 1.0,
                c_out: 0.0,
            },
            ..FusionTable::default()
        };
        let huge_anchor = t(&[f32::MAX, 0.0]);
        let overflow = FusionTensor {
            anchor: &huge_anchor,
            ..input("dec.v.lora_B", &huge)
        };
        match fuse(&table, &[input("ok", &d), overflow]) {
            Err(Error::NonFinite { name, .. }) => assert_eq!(name, "dec.v.lora_B"),
            other => panic!("expected NonFinite, got {other:?}"),
        }
        let nan = t(&[f32::NAN, 0.0]);
        assert!(matches!(
            fuse(&FusionTable::default(), &[input("n", &nan)]),
            Err(Error::NonFinite { name, .. }) if name == "n"
        ));
        Ok(())
    }

    #[test]
    fn mismatches_and_bad_tables_are_named() -> Result<()> {
        let a = t(&[1.0, 2.0]);
        let short = t(&[1.0]);
        let bad = FusionTensor {
            name: "w",
            anchor: &a,
            delta_in: &a,
            delta_out: &a,
            inner_mask: &short,
            outer_mask: &a,
        };
        assert!(matches!(
            fuse(&FusionTable::default(), &[bad]),
            Err(Error::Tensor { name, what }) if name == "w" && what.contains("inner_mask")
        ));
        let table = FusionTable {
            outer_only: CaseWeights {
                c_in: f64::NAN,
                c_out: 1.0,
            },
            ..FusionTable::default()
        };
        assert!(matches!(
            fuse(&table, &[]),
            Err(Error::Config { field, .. }) if field == "kif.fusion.outer_only.c_in"
        ));
        let empty = fuse(&FusionTable::default(), &[])?;
        assert_eq!(empty.stats.total(), 0);
        Ok(())
    }

    #[test]
    fn write_into_checks_every_target_first() -> Result<()> {
        use crate::model::LoraFactor;
        let param = |name: &str, values: &[f32]| -> Result<LoraParam> {
            Ok(LoraParam {
                name: name.to_string(),
                module: "m".to_string(),
                factor: LoraFactor::A,
                var: Var::from_tensor(&t(values))?,
            })
        };
        let params = vec![param("a", &[0.0, 0.0])?, param("b", &[0.0])?];
        let fused = |name: &str, values: &[f32]| FusedTensor {
            name: name.to_string(),
            value: t(values),
            stats: FusionStats::default(),
        };
        let bad = Fusion {
            tensors: vec![fused("a", &[1.0, 2.0]), fused("b", &[1.0, 2.0])],
            stats: FusionStats::default(),
        };
        assert!(matches!(bad.write_into(&params), Err(Error::Tensor { name, .. }) if name == "b"));
        assert_eq!(
            v(params[0].var.as_tensor()),
            vec![0.0, 0.0],
            "nothing written"
        );
        let good = Fusion {
            tensors: vec![fused("a", &[1.0, 2.0]), fused("b", &[3.0])],
            stats: FusionStats::default(),
        };
        good.write_into(&params)?;
        assert_eq!(v(params[0].var.as_tensor()), vec![1.0, 2.0]);
        assert_eq!(v(params[1].var.as_tensor()), vec![3.0]);
        Ok(())
    }
}
