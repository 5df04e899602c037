//! Gradients of named parameters: collection from a backward pass, the global L2 norm,
//! clipping (as `torch.nn.utils.clip_grad_norm_`) and accumulation over micro-batches.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use super::params::NamedParam;
use crate::{Error, Result};

/// Added to the norm before dividing, as torch does, so a zero gradient never divides by zero.
const CLIP_EPS: f64 = 1e-6;

/// The gradients of named parameters, in parameter order (the order fixes the floating-point
/// summation order of the norm). Each tensor has its parameter's shape.
#[derive(Debug, Clone, Default)]
pub struct Gradients {
    entries: Vec<(String, Tensor)>,
}

impl Gradients {
    /// The gradient of every parameter that has one in `store` (a parameter the loss does not
    /// reach has none, and AdamW then leaves it alone, as torch does).
    pub fn from_store<P: NamedParam>(params: &[P], store: &GradStore) -> Self {
        let entries = params
            .iter()
            .filter_map(|p| {
                store
                    .get(p.param_var().as_tensor())
                    .map(|g| (p.param_name().to_string(), g.detach()))
            })
            .collect();
        Self { entries }
    }

    /// Gradients given by name (tests, fixtures). A repeated name is an error.
    pub fn from_named(entries: Vec<(String, Tensor)>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &entries {
            if !seen.insert(name.as_str()) {
                return Err(Error::tensor(name, "gradient given twice"));
            }
        }
        Ok(Self { entries })
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries
            .iter()
            .find_map(|(n, g)| (n == name).then_some(g))
    }

    /// `(name, gradient)` in parameter order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, g)| (n.as_str(), g))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The global L2 norm over all gradients: `sqrt(sum_t ||g_t||^2)`, accumulated in f64.
    /// A non-finite gradient value is a [`Error::NonFinite`] naming the first tensor that
    /// holds one.
    pub fn global_norm(&self) -> Result<f64> {
        let mut sum_sq = 0.0;
        for (name, g) in &self.entries {
            let s = g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
            if !s.is_finite() {
                // In f64 the squares of finite f32/f16/bf16 values cannot overflow, so a
                // non-finite sum means a non-finite element.
                return Err(Error::NonFinite {
                    name: name.clone(),
                    what: "gradient holds NaN or infinity".into(),
                });
            }
            sum_sq += s;
        }
        Ok(sum_sq.sqrt())
    }

    /// Scale every gradient by `max_norm / (norm + 1e-6)` when that is below 1, as
    /// `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Result<f64> {
        if !max_norm.is_finite() || max_norm <= 0.0 {
            return Err(Error::config(
                "max_grad_norm",
                format!("must be finite and > 0, got {max_norm}"),
            ));
        }
        let norm = self.global_norm()?;
        let coef = max_norm / (norm + CLIP_EPS);
        if coef < 1.0 {
            self.scale(coef)?;
        }
        Ok(norm)
    }

    /// Multiply every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for (_, g) in &mut self.entries {
            *g = (&*g * factor)?;
        }
        Ok(())
    }

    /// Add `other` name by name; a name only `other` has is appended (as if it were zero here).
    fn add(&mut self, other: Gradients) -> Result<()> {
        let index: HashMap<String, usize> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        for (name, g) in other.entries {
            match index.get(&name).and_then(|&i| self.entries.get_mut(i)) {
                Some((_, sum)) => {
                    if sum.dims() != g.dims() {
                        return Err(Error::tensor(
                            &name,
                            format!(
                                "gradient shape {:?} differs from the earlier micro-batch's {:?}",
                                g.dims(),
                                sum.dims()
                            ),
                        ));
                    }
                    *sum = (&*sum + &g)?;
                }
                None => self.entries.push((name, g)),
            }
        }
        Ok(())
    }
}

/// Sums the gradients of several micro-batches and hands back their mean: the gradient of the
/// mean loss over the effective batch (the Trainer divides each micro-batch loss by the number
/// of accumulation steps; averaging the gradients is the same).
#[derive(Debug, Clone, Default)]
pub struct GradAccumulator {
    sum: Gradients,
    micro_batches: usize,
}

impl GradAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one micro-batch's gradients.
    pub fn add(&mut self, grads: Gradients) -> Result<()> {
        self.sum.add(grads)?;
        self.micro_batches += 1;
        Ok(())
    }

    /// How many micro-batches were added.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The mean gradient; an error when nothing was added.
    pub fn mean(self) -> Result<Gradients> {
        if self.micro_batches == 0 {
            return Err(Error::Data(
                "gradient accumulation: no micro-batch was added".into(),
            ));
        }
        let mut sum = self.sum;
        sum.scale(1.0 / self.micro_batches as f64)?;
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grads(values: &[(&str, Vec<f32>)]) -> Result<Gradients> {
        let entries = values
            .iter()
            .map(|(n, v)| Ok((n.to_string(), Tensor::new(v.as_slice(), &Device::Cpu)?)))
            .collect::<Result<Vec<_>>>()?;
        Gradients::from_named(entries)
    }

    fn values(g: &Gradients, name: &str) -> Vec<f32> {
        g.get(name).unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn norm_and_clipping_hand_computed() -> Result<()> {
        // ||(3, 4)|| = 5, ||(12)|| = 12, global sqrt(25 + 144) = 13.
        let mut g = grads(&[("a", vec![3.0, 4.0]), ("b", vec![12.0])])?;
        let norm = g.clip_global_norm(1.0)?;
        assert_eq!(norm, 13.0);
        let coef = (1.0 / (13.0 + 1e-6)) as f32;
        assert_eq!(values(&g, "a"), vec![3.0 * coef, 4.0 * coef]);
        assert_eq!(values(&g, "b"), vec![12.0 * coef]);
        Ok(())
    }

    #[test]
    fn small_gradients_are_not_clipped() -> Result<()> {
        let mut g = grads(&[("a", vec![0.3, 0.4])])?;
        assert!((g.clip_global_norm(1.0)? - 0.5).abs() < 1e-7);
        assert_eq!(values(&g, "a"), vec![0.3, 0.4]);
        Ok(())
    }

    #[test]
    fn non_finite_gradient_names_its_tensor() -> Result<()> {
        let mut g = grads(&[("ok", vec![1.0]), ("bad", vec![0.0, f32::NAN])])?;
        match g.clip_global_norm(1.0) {
            Err(Error::NonFinite { name, .. }) => assert_eq!(name, "bad"),
            other => panic!("expected NonFinite, got {other:?}"),
        }
        // Large but finite values do not count as non-finite: their squares fit in f64.
        let g = grads(&[("big", vec![3e38, 3e38])])?;
        assert!(g.global_norm()?.is_finite());
        Ok(())
    }

    #[test]
    fn accumulation_averages_micro_batches() -> Result<()> {
        let mut acc = GradAccumulator::new();
        acc.add(grads(&[("a", vec![1.0, 2.0])])?)?;
        acc.add(grads(&[("a", vec![3.0, 6.0]), ("b", vec![4.0])])?)?;
        assert_eq!(acc.micro_batches(), 2);
        let mean = acc.mean()?;
        assert_eq!(values(&mean, "a"), vec![2.0, 4.0]);
        assert_eq!(values(&mean, "b"), vec![2.0]);
        assert!(GradAccumulator::new().mean().is_err());
        Ok(())
    }

    #[test]
    fn from_store_takes_the_parameters_gradients() -> Result<()> {
        let w = Var::new(&[1.0f32, 2.0], &Device::Cpu)?;
        let unused = Var::new(&[5.0f32], &Device::Cpu)?;
        let params = vec![("w".to_string(), w.clone()), ("u".to_string(), unused)];
        let store = w.as_tensor().sqr()?.sum_all()?.backward()?;
        let g = Gradients::from_store(&params, &store);
        assert_eq!(g.len(), 1);
        assert_eq!(values(&g, "w"), vec![2.0, 4.0]);
        Ok(())
    }
}
