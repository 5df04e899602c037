//! Element-wise importance of LoRA weights (METHOD.md section 3).
//!
//! After every optimiser step, for each LoRA tensor with `p` its value after the step and `g`
//! the gradient the step used:
//!
//! ```text
//! I    = |p * g|                          (or a second-order variant, see Sensitivity)
//! Ibar = b1 * Ibar + (1 - b1) * I
//! Ubar = b2 * Ubar + (1 - b2) * |I - Ibar|    (with the new Ibar)
//! S    = Ibar * Ubar
//! ```
//!
//! All states start at zero and have the shape of their parameter. The arithmetic follows the
//! reference's float32 order of operations, so the states match it bit for bit.

use std::collections::{HashMap, HashSet};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::host;
use crate::{Error, Result};

/// How the instantaneous sensitivity `I` of one element is computed from `p` and `g`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Sensitivity {
    /// `|p * g|`, the first-order Taylor term (what the reference scripts use).
    #[default]
    #[serde(rename = "param_first")]
    FirstOrder,
    /// `|p * g * p * g|`, the squared first-order term.
    #[serde(rename = "param_second")]
    SecondOrder,
    /// `|p * g - 0.5 * (p * g)^2|`, first plus second-order Taylor terms.
    #[serde(rename = "param_mix")]
    Mixed,
}

impl Sensitivity {
    /// Every variant, in the reference's order.
    pub const ALL: [Sensitivity; 3] = [Self::FirstOrder, Self::SecondOrder, Self::Mixed];

    /// The reference implementation's name (`param_first`, `param_second`, `param_mix`).
    pub fn reference_name(self) -> &'static str {
        match self {
            Self::FirstOrder => "param_first",
            Self::SecondOrder => "param_second",
            Self::Mixed => "param_mix",
        }
    }

    /// The variant with reference name `name`, if any.
    pub fn from_reference_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.reference_name() == name)
    }

    /// `I` for one tensor. `param` and `grad` have the same shape; so does the result.
    pub fn compute(self, param: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let pg = param.mul(grad)?;
        let signed = match self {
            Self::FirstOrder => pg,
            // ((p * g) * p) * g: the reference's evaluation order, for identical rounding.
            Self::SecondOrder => pg.mul(param)?.mul(grad)?,
            Self::Mixed => {
                let half_square = pg.affine(0.5, 0.0)?.mul(&pg)?;
                pg.sub(&half_square)?
            }
        };
        Ok(signed.abs()?)
    }
}

/// Settings of an importance tracker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportanceConfig {
    /// EMA factor of the sensitivity, in `[0, 1)`.
    pub beta1: f64,
    /// EMA factor of the uncertainty, in `[0, 1)`.
    pub beta2: f64,
    /// How `I` is computed.
    pub sensitivity: Sensitivity,
}

impl Default for ImportanceConfig {
    fn default() -> Self {
        Self {
            beta1: 0.85,
            beta2: 0.85,
            sensitivity: Sensitivity::FirstOrder,
        }
    }
}

impl ImportanceConfig {
    /// Checks both factors are finite and in `[0, 1)`; errors name `beta1` / `beta2`.
    pub fn validate(&self) -> Result<()> {
        for (field, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::config(
                    format!("kif.importance.{field}"),
                    format!("must be in [0, 1), got {beta}"),
                ));
            }
        }
        Ok(())
    }
}

/// One parameter's value after an optimiser step and the gradient that step used.
#[derive(Debug, Clone, Copy)]
pub struct ParamGrad<'a> {
    /// The parameter's name (the PEFT runtime name for LoRA tensors).
    pub name: &'a str,
    /// The value after the step, any shape.
    pub param: &'a Tensor,
    /// The gradient the step used (accumulated and clipped), same shape as `param`.
    pub grad: &'a Tensor,
}

/// The tracker's state for one tensor. Every field has the parameter's shape and dtype.
#[derive(Debug, Clone)]
pub struct TensorImportance {
    /// `I` of the latest update.
    pub ipt: Tensor,
    /// `Ibar`, the EMA of `I`.
    pub exp_avg_ipt: Tensor,
    /// `Ubar`, the EMA of `|I - Ibar|`.
    pub exp_avg_unc: Tensor,
    /// `S = Ibar * Ubar`.
    pub score: Tensor,
}

/// A tracker's state as a checkpoint stores it, tensors in parameter order. The score is not
/// stored: it is recomputed on restore.
#[derive(Debug, Clone)]
pub struct ImportanceState {
    /// How many updates the tracker has applied since it started or was reset.
    pub updates: u64,
    /// Per tensor, in parameter order.
    pub tensors: Vec<SavedImportance>,
}

/// One tensor's entry of [`ImportanceState`]. The three tensors share the parameter's shape.
#[derive(Debug, Clone)]
pub struct SavedImportance {
    pub name: String,
    pub ipt: Tensor,
    pub exp_avg_ipt: Tensor,
    pub exp_avg_unc: Tensor,
}

/// Suffixes of the flat key layout of [`ImportanceState::to_named_tensors`].
const SAVED_FIELDS: [&str; 3] = ["ipt", "exp_avg_ipt", "exp_avg_unc"];

impl ImportanceState {
    /// A flat list for a safetensors file: `<name>::ipt`, `<name>::exp_avg_ipt`,
    /// `<name>::exp_avg_unc` for every tensor, in parameter order.
    pub fn to_named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.tensors.len() * SAVED_FIELDS.len());
        for t in &self.tensors {
            for (field, value) in SAVED_FIELDS
                .iter()
                .zip([&t.ipt, &t.exp_avg_ipt, &t.exp_avg_unc])
            {
                out.push((format!("{}::{field}", t.name), value.clone()));
            }
        }
        out
    }

    /// The inverse of [`Self::to_named_tensors`]: `names` gives the parameter order, `tensors`
    /// the flat map. A missing key is an error naming it.
    pub fn from_named_tensors(
        updates: u64,
        names: &[String],
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        let get = |name: &str, field: &str| {
            let key = format!("{name}::{field}");
            tensors
                .get(&key)
                .cloned()
                .ok_or_else(|| Error::tensor(key, "missing from the saved importance state"))
        };
        let tensors = names
            .iter()
            .map(|name| {
                Ok(SavedImportance {
                    name: name.clone(),
                    ipt: get(name, "ipt")?,
                    exp_avg_ipt: get(name, "exp_avg_ipt")?,
                    exp_avg_unc: get(name, "exp_avg_unc")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { updates, tensors })
    }
}

/// Element-wise importance of a set of named tensors (one tracker per phase: inner, outer).
///
/// Tensors are kept in the order they were first seen, which is parameter order when the
/// caller passes its parameters in order.
#[derive(Debug, Clone)]
pub struct ImportanceTracker {
    config: ImportanceConfig,
    entries: Vec<(String, TensorImportance)>,
    index: HashMap<String, usize>,
    updates: u64,
}

impl ImportanceTracker {
    /// An empty tracker (all states zero). Errors if `config` is invalid.
    pub fn new(config: ImportanceConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            entries: Vec::new(),
            index: HashMap::new(),
            updates: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &ImportanceConfig {
        &self.config
    }

    /// Updates since creation or the last [`Self::reset`].
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Applies one optimiser step's update to every tensor in `step`.
    ///
    /// All or nothing: if any parameter, gradient or resulting score is not finite, or a
    /// shape does not match, nothing changes and the error names the tensor. Inputs are
    /// detached; nothing here is recorded for backpropagation.
    pub fn update(&mut self, step: &[ParamGrad<'_>]) -> Result<()> {
        let mut seen = HashSet::with_capacity(step.len());
        let mut fresh = Vec::with_capacity(step.len());
        for pg in step {
            if !seen.insert(pg.name) {
                return Err(Error::tensor(pg.name, "given twice in one update"));
            }
            fresh.push(self.next_state(pg)?);
        }

        let scores: Vec<&Tensor> = fresh.iter().map(|s| &s.score).collect();
        let finite = host::all_finite(&scores)?;
        if let Some(bad) = finite.iter().position(|ok| !ok) {
            return Err(match step.get(bad) {
                Some(pg) => diagnose_non_finite(pg)?,
                None => Error::tensor("importance", "internal: finiteness check out of range"),
            });
        }

        for (pg, state) in step.iter().zip(fresh) {
            match self.index.get(pg.name) {
                Some(&i) => {
                    if let Some(entry) = self.entries.get_mut(i) {
                        entry.1 = state;
                    }
                }
                None => {
                    self.index.insert(pg.name.to_string(), self.entries.len());
                    self.entries.push((pg.name.to_string(), state));
                }
            }
        }
        self.updates += 1;
        Ok(())
    }

    /// The new state of one tensor, from its current state (zero if unseen).
    fn next_state(&self, pg: &ParamGrad<'_>) -> Result<TensorImportance> {
        let param = pg.param.detach();
        let grad = pg.grad.detach();
        if param.shape() != grad.shape()
            || param.dtype() != grad.dtype()
            || !param.device().same_device(grad.device())
        {
            return Err(Error::tensor(
                pg.name,
                format!(
                    "parameter is {:?} {:?} on {:?} but its gradient is {:?} {:?} on {:?}",
                    param.shape(),
                    param.dtype(),
                    param.device().location(),
                    grad.shape(),
                    grad.dtype(),
                    grad.device().location()
                ),
            ));
        }
        let ipt = self.config.sensitivity.compute(&param, &grad)?;
        let (prev_ipt, prev_unc) = match self.state(pg.name) {
            Some(prev) => {
                let tracked = &prev.exp_avg_ipt;
                if tracked.shape() != param.shape()
                    || tracked.dtype() != param.dtype()
                    || !tracked.device().same_device(param.device())
                {
                    return Err(Error::tensor(
                        pg.name,
                        format!(
                            "{:?} {:?} on {:?} differs from the tracked {:?} {:?} on {:?}",
                            param.shape(),
                            param.dtype(),
                            param.device().location(),
                            tracked.shape(),
                            tracked.dtype(),
                            tracked.device().location()
                        ),
                    ));
                }
                (prev.exp_avg_ipt.clone(), prev.exp_avg_unc.clone())
            }
            None => (ipt.zeros_like()?, ipt.zeros_like()?),
        };
        let (b1, b2) = (self.config.beta1, self.config.beta2);
        // `1 - b` is formed in f64 and rounded once to the tensor dtype, as PyTorch does with
        // a Python float; rounding b and then subtracting would move the last bit.
        let exp_avg_ipt = prev_ipt.affine(b1, 0.0)?.add(&ipt.affine(1.0 - b1, 0.0)?)?;
        let deviation = ipt.sub(&exp_avg_ipt)?.abs()?;
        let exp_avg_unc = prev_unc
            .affine(b2, 0.0)?
            .add(&deviation.affine(1.0 - b2, 0.0)?)?;
        let score = exp_avg_ipt.mul(&exp_avg_unc)?;
        Ok(TensorImportance {
            ipt,
            exp_avg_ipt,
            exp_avg_unc,
            score,
        })
    }

    /// The state of tensor `name`, if it has been updated.
    pub fn state(&self, name: &str) -> Option<&TensorImportance> {
        let i = *self.index.get(name)?;
        self.entries.get(i).map(|(_, s)| s)
    }

    /// Names of the tracked tensors, in parameter order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, S)` for every tracked tensor, in parameter order (cheap: tensors share storage).
    pub fn scores(&self) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .map(|(n, s)| (n.clone(), s.score.clone()))
            .collect()
    }

    /// Back to the empty state (every EMA zero, no tensors tracked).
    pub fn reset(&mut self) {
        self.entries.clear();
        self.index.clear();
        self.updates = 0;
    }

    /// The state a checkpoint needs to resume this tracker.
    pub fn export(&self) -> ImportanceState {
        ImportanceState {
            updates: self.updates,
            tensors: self
                .entries
                .iter()
                .map(|(name, s)| SavedImportance {
                    name: name.clone(),
                    ipt: s.ipt.clone(),
                    exp_avg_ipt: s.exp_avg_ipt.clone(),
                    exp_avg_unc: s.exp_avg_unc.clone(),
                })
                .collect(),
        }
    }

    /// Replaces the whole state with `state` (as produced by [`Self::export`]).
    ///
    /// The three tensors of an entry must share one shape and be finite, and names must be
    /// unique; otherwise nothing changes and the error names the tensor.
    pub fn restore(&mut self, state: ImportanceState) -> Result<()> {
        let mut entries = Vec::with_capacity(state.tensors.len());
        let mut index = HashMap::with_capacity(state.tensors.len());
        for saved in state.tensors {
            let shape = saved.exp_avg_ipt.shape();
            if saved.ipt.shape() != shape || saved.exp_avg_unc.shape() != shape {
                return Err(Error::tensor(
                    &saved.name,
                    format!(
                        "saved ipt {:?}, exp_avg_ipt {:?} and exp_avg_unc {:?} differ in shape",
                        saved.ipt.shape(),
                        shape,
                        saved.exp_avg_unc.shape()
                    ),
                ));
            }
            let parts = [&saved.ipt, &saved.exp_avg_ipt, &saved.exp_avg_unc];
            for (field, ok) in SAVED_FIELDS.iter().zip(host::all_finite(&parts)?) {
                if !ok {
                    return Err(Error::NonFinite {
                        name: saved.name.clone(),
                        what: format!("saved {field}"),
                    });
                }
            }
            if index.insert(saved.name.clone(), entries.len()).is_some() {
                return Err(Error::tensor(
                    &saved.name,
                    "saved twice in the importance state",
                ));
            }
            let score = saved.exp_avg_ipt.mul(&saved.exp_avg_unc)?;
            entries.push((
                saved.name,
                TensorImportance {
                    ipt: saved.ipt.detach(),
                    exp_avg_ipt: saved.exp_avg_ipt.detach(),
                    exp_avg_unc: saved.exp_avg_unc.detach(),
                    score,
                },
            ));
        }
        self.entries = entries;
        self.index = index;
        self.updates = state.updates;
        Ok(())
    }
}

/// The error for a tensor whose new score is not finite: says whether the parameter, the
/// gradient or the score itself (an overflow) is to blame.
fn diagnose_non_finite(pg: &ParamGrad<'_>) -> Result<Error> {
    let finite = host::all_finite(&[pg.param, pg.grad])?;
    let what = match finite.as_slice() {
        [false, _] => "the parameter holds NaN or infinity",
        [_, false] => "the gradient holds NaN or infinity",
        _ => "the importance score overflowed",
    };
    Ok(Error::NonFinite {
        name: pg.name.to_string(),
        what: what.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(values: &[f32]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
    }

    fn v(t: &Tensor) -> Vec<f32> {
        t.to_vec1::<f32>().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn first_update_matches_hand_computation() -> Result<()> {
        let mut tr = ImportanceTracker::new(ImportanceConfig::default())?;
        let (p, g) = (t(&[2.0, -1.0, 0.0]), t(&[0.5, 3.0, 7.0]));
        tr.update(&[ParamGrad {
            name: "a",
            param: &p,
            grad: &g,
        }])?;
        let s = tr
            .state("a")
            .ok_or_else(|| Error::tensor("a", "untracked"))?;
        assert_eq!(v(&s.ipt), vec![1.0, 3.0, 0.0]);
        // Ibar = 0.15 I; Ubar = 0.15 |I - Ibar| = 0.15 * 0.85 I; S = Ibar * Ubar.
        let b = 0.15f32;
        let ibar = [b * 1.0, b * 3.0, 0.0];
        assert_eq!(v(&s.exp_avg_ipt), ibar.to_vec());
        let ubar: Vec<f32> = [1.0f32, 3.0, 0.0]
            .iter()
            .zip(ibar)
            .map(|(i, e)| b * (i - e).abs())
            .collect();
        assert_eq!(v(&s.exp_avg_unc), ubar);
        let score: Vec<f32> = ibar.iter().zip(&ubar).map(|(e, u)| e * u).collect();
        assert_eq!(v(&s.score), score);
        Ok(())
    }

    #[test]
    fn second_update_uses_new_ema_for_uncertainty() -> Result<()> {
        let cfg = ImportanceConfig {
            beta1: 0.5,
            beta2: 0.25,
            sensitivity: Sensitivity::FirstOrder,
        };
        let mut tr = ImportanceTracker::new(cfg)?;
        let (p, g1, g2) = (t(&[1.0]), t(&[4.0]), t(&[8.0]));
        tr.update(&[ParamGrad {
            name: "a",
            param: &p,
            grad: &g1,
        }])?;
        tr.update(&[ParamGrad {
            name: "a",
            param: &p,
            grad: &g2,
        }])?;
        // Step 1: Ibar = 2, Ubar = 0.75 * |4 - 2| = 1.5.
        // Step 2: Ibar = 0.5 * 2 + 0.5 * 8 = 5; Ubar = 0.25 * 1.5 + 0.75 * |8 - 5| = 2.625.
        let s = tr
            .state("a")
            .ok_or_else(|| Error::tensor("a", "untracked"))?;
        assert_eq!(v(&s.exp_avg_ipt), vec![5.0]);
        assert_eq!(v(&s.exp_avg_unc), vec![2.625]);
        assert_eq!(v(&s.score), vec![13.125]);
        assert_eq!(tr.updates(), 2);
        Ok(())
    }

    #[test]
    fn sensitivity_variants() -> Result<()> {
        let (p, g) = (t(&[2.0, -1.0]), t(&[0.5, 3.0])); // p*g = 1, -3
        let got = |s: Sensitivity| s.compute(&p, &g).map(|x| v(&x));
        assert_eq!(got(Sensitivity::FirstOrder)?, vec![1.0, 3.0]);
        assert_eq!(got(Sensitivity::SecondOrder)?, vec![1.0, 9.0]);
        // |1 - 0.5| and |-3 - 4.5|.
        assert_eq!(got(Sensitivity::Mixed)?, vec![0.5, 7.5]);
        for s in Sensitivity::ALL {
            assert_eq!(
                Sensitivity::from_reference_name(s.reference_name()),
                Some(s)
            );
        }
        Ok(())
    }

    #[test]
    fn nan_gradient_is_a_named_error_and_changes_nothing() -> Result<()> {
        let mut tr = ImportanceTracker::new(ImportanceConfig::default())?;
        let (p, g) = (t(&[1.0, 2.0]), t(&[1.0, 1.0]));
        let bad = t(&[1.0, f32::NAN]);
        tr.update(&[ParamGrad {
            name: "a",
            param: &p,
            grad: &g,
        }])?;
        let before = v(&tr.scores()[0].1);
        let err = tr
            .update(&[
                ParamGrad {
                    name: "a",
                    param: &p,
                    grad: &g,
                },
                ParamGrad {
                    name: "layer.7.lora_B",
                    param: &p,
                    grad: &bad,
                },
            ])
            .err();
        match err {
            Some(Error::NonFinite { name, what }) => {
                assert_eq!(name, "layer.7.lora_B");
                assert!(what.contains("gradient"), "{what}");
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
        assert_eq!(tr.updates(), 1);
        assert_eq!(v(&tr.scores()[0].1), before);
        assert!(tr.state("layer.7.lora_B").is_none());
        Ok(())
    }

    #[test]
    fn infinite_parameter_and_overflow_are_named() -> Result<()> {
        let mut tr = ImportanceTracker::new(ImportanceConfig::default())?;
        let (p, g) = (t(&[f32::INFINITY]), t(&[0.0]));
        let err = tr.update(&[ParamGrad {
            name: "p",
            param: &p,
            grad: &g,
        }]);
        assert!(
            matches!(&err, Err(Error::NonFinite { name, what }) if name == "p" && what.contains("parameter")),
            "{err:?}"
        );
        let (p, g) = (t(&[1e30]), t(&[1e8]));
        let err = tr.update(&[ParamGrad {
            name: "q",
            param: &p,
            grad: &g,
        }]);
        assert!(
            matches!(&err, Err(Error::NonFinite { name, what }) if name == "q" && what.contains("overflow")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn shape_mismatch_and_bad_config_are_refused() -> Result<()> {
        let mut tr = ImportanceTracker::new(ImportanceConfig::default())?;
        let (p, g) = (t(&[1.0, 2.0]), t(&[1.0]));
        assert!(matches!(
            tr.update(&[ParamGrad { name: "x", param: &p, grad: &g }]),
            Err(Error::Tensor { name, .. }) if name == "x"
        ));
        let (p1, g1) = (t(&[1.0]), t(&[1.0]));
        tr.update(&[ParamGrad {
            name: "y",
            param: &p1,
            grad: &g1,
        }])?;
        assert!(matches!(
            tr.update(&[ParamGrad { name: "y", param: &p, grad: &p }]),
            Err(Error::Tensor { name, what }) if name == "y" && what.contains("tracked")
        ));
        let bad = ImportanceConfig {
            beta2: 1.0,
            ..ImportanceConfig::default()
        };
        assert!(matches!(
            ImportanceTracker::new(bad),
            Err(Error::Config { field, .. }) if field.ends_with("beta2")
        ));
        Ok(())
    }

    #[test]
    fn reset_export_and_restore() -> Result<()> {
        let mut tr = ImportanceTracker::new(ImportanceConfig::default())?;
        let (p, g) = (t(&[1.5, -2.0]), t(&[0.25, 3.0]));
        let (p2, g2) = (t(&[0.5]), t(&[2.0]));
        let step = [
            ParamGrad {
                name: "b",
                param: &p,
                grad: &g,
            },
            ParamGrad {
                name: "a",
                param: &p2,
                grad: &g2,
            },
        ];
        tr.update(&step)?;
        tr.update(&step)?;
        let saved = tr.export();
        let flat: HashMap<String, Tensor> = saved.to_named_tensors().into_iter().collect();
        assert!(flat.contains_key("b::exp_avg_unc"));
        let names: Vec<String> = tr.names().map(str::to_string).collect();
        assert_eq!(names, vec!["b".to_string(), "a".to_string()]);
        let reloaded = ImportanceState::from_named_tensors(saved.updates, &names, &flat)?;

        let mut copy = ImportanceTracker::new(ImportanceConfig::default())?;
        copy.restore(reloaded)?;
        tr.update(&step)?;
        copy.update(&step)?;
        for ((na, sa), (nb, sb)) in tr.scores().iter().zip(copy.scores().iter()) {
            assert_eq!(na, nb);
            assert_eq!(v(sa), v(sb));
        }
        assert_eq!(copy.updates(), 3);

        tr.reset();
        assert_eq!(tr.updates(), 0);
        assert!(tr.scores().is_empty());
        // After a reset the first update is again (1 - b1) * I.
        tr.update(&step[1..])?;
        let e = tr.state("a").map(|s| v(&s.exp_avg_ipt));
        assert_eq!(e, Some(vec![0.15f32 * 1.0]));

        let missing = ImportanceState::from_named_tensors(1, &["zz".to_string()], &flat);
        assert!(matches!(missing, Err(Error::Tensor { name, .. }) if name == "zz::ipt"));
        Ok(())
    }
}
