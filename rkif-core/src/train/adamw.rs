//! AdamW with a state that can be exported, saved and restored (candle's keeps it private).
//!
//! The arithmetic follows `torch.optim.AdamW` (single-tensor path) step for step, per tensor:
//!
//! ```text
//! t   += 1                                   (a count per tensor, as torch keeps it)
//! p   *= 1 - lr * weight_decay               (decoupled weight decay, first)
//! m    = m + (1 - beta1) * (g - m)           (torch's lerp)
//! v    = beta2 * v + (1 - beta2) * g * g
//! p   -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//!
//! The moments have the parameter's shape, dtype and device. A parameter without a gradient in
//! a step is left untouched and its count does not advance.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::grads::Gradients;
use super::params::NamedParam;
use crate::model::tensor_file::{read_safetensors, write_safetensors};
use crate::{Error, Result};

/// Suffixes of the state-map keys: `<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.step`.
const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const STEP: &str = "step";

/// Header metadata of a saved optimiser state.
const FORMAT_KEY: &str = "format";
const FORMAT_VALUE: &str = "rkif-adamw";
const CONFIG_KEY: &str = "adamw_config";
const STEPS_TAKEN_KEY: &str = "steps_taken";

/// AdamW's hyper-parameters (the learning rate is given per step by the schedule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// The reference setting: betas 0.9 / 0.999, eps 1e-8, no weight decay.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWConfig {
    /// Betas in `[0, 1)`, `eps` and `weight_decay` finite and `>= 0`.
    pub fn validate(&self) -> Result<()> {
        for (field, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::config(
                    field,
                    format!("must be in [0, 1), got {beta}"),
                ));
            }
        }
        for (field, x) in [("eps", self.eps), ("weight_decay", self.weight_decay)] {
            if !x.is_finite() || x < 0.0 {
                return Err(Error::config(
                    field,
                    format!("must be finite and >= 0, got {x}"),
                ));
            }
        }
        Ok(())
    }
}

/// The optimiser's state in exportable form: hyper-parameters, the number of `step` calls, and
/// per parameter `<name>.exp_avg`, `<name>.exp_avg_sq` (the parameter's shape) and
/// `<name>.step` (an I64 scalar).
#[derive(Debug, Clone)]
pub struct AdamWState {
    pub config: AdamWConfig,
    pub steps_taken: u64,
    pub tensors: HashMap<String, Tensor>,
}

/// One parameter and its moments.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    var: Var,
    step: u64,
    /// First moment, the parameter's shape.
    exp_avg: Tensor,
    /// Second moment, the parameter's shape.
    exp_avg_sq: Tensor,
}

/// AdamW over a fixed list of named parameters.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    steps_taken: u64,
}

impl AdamW {
    /// An optimiser with zero moments for `params` (names must be distinct).
    pub fn new<P: NamedParam>(params: &[P], config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let mut slots: Vec<Slot> = Vec::with_capacity(params.len());
        for p in params {
            let name = p.param_name();
            if slots.iter().any(|s| s.name == name) {
                return Err(Error::tensor(name, "parameter listed twice"));
            }
            let var = p.param_var().clone();
            let zeros = var.as_tensor().zeros_like()?;
            slots.push(Slot {
                name: name.to_string(),
                var,
                step: 0,
                exp_avg: zeros.clone(),
                exp_avg_sq: zeros,
            });
        }
        Ok(Self {
            config,
            slots,
            steps_taken: 0,
        })
    }

    /// An optimiser for `params` restored from `state`.
    pub fn from_state<P: NamedParam>(params: &[P], state: &AdamWState) -> Result<Self> {
        let mut opt = Self::new(params, state.config)?;
        opt.restore(state)?;
        Ok(opt)
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// How many times [`AdamW::step`] ran (the schedule's `step`).
    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// The parameter names, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// The first and second moments of parameter `name`.
    pub fn moments(&self, name: &str) -> Option<(&Tensor, &Tensor)> {
        self.slot(name).map(|s| (&s.exp_avg, &s.exp_avg_sq))
    }

    /// How many updates parameter `name` received.
    pub fn param_step(&self, name: &str) -> Option<u64> {
        self.slot(name).map(|s| s.step)
    }

    fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// One AdamW update of every parameter that has a gradient in `grads`, at learning rate
    /// `lr`. A gradient for an unknown name or of the wrong shape is an error, found before any
    /// parameter changes.
    pub fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::config(
                "lr",
                format!("learning rate must be finite and >= 0, got {lr}"),
            ));
        }
        for (name, g) in grads.iter() {
            let slot = self.slot(name).ok_or_else(|| {
                Error::tensor(
                    name,
                    "has a gradient but is not a parameter of this optimiser",
                )
            })?;
            if g.dims() != slot.var.dims() {
                return Err(Error::tensor(
                    name,
                    format!(
                        "gradient shape {:?} differs from the parameter's {:?}",
                        g.dims(),
                        slot.var.dims()
                    ),
                ));
            }
        }
        // Compute every update first, then commit them, so a failure leaves no half-step.
        let cfg = self.config;
        let mut updates = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(g) = grads.get(&slot.name) else {
                continue;
            };
            let g = g.to_dtype(slot.var.dtype())?;
            let t = slot.step + 1;
            let mut p = slot.var.as_tensor().detach();
            if cfg.weight_decay != 0.0 {
                p = (p * (1.0 - lr * cfg.weight_decay))?;
            }
            let m = ((&g - &slot.exp_avg)? * (1.0 - cfg.beta1))?.add(&slot.exp_avg)?;
            let v = ((&slot.exp_avg_sq * cfg.beta2)? + ((&g * (1.0 - cfg.beta2))? * &g)?)?;
            let t_exp = i32::try_from(t).unwrap_or(i32::MAX);
            let bias_correction1 = 1.0 - cfg.beta1.powi(t_exp);
            let bias_correction2_sqrt = (1.0 - cfg.beta2.powi(t_exp)).sqrt();
            let step_size = lr / bias_correction1;
            let denom = ((v.sqrt()? / bias_correction2_sqrt)? + cfg.eps)?;
            let p = (p - ((&m * step_size)? / denom)?)?;
            updates.push((i, t, p, m, v));
        }
        for (i, t, p, m, v) in updates {
            if let Some(slot) = self.slots.get_mut(i) {
                slot.var.set(&p)?;
                slot.step = t;
                slot.exp_avg = m;
                slot.exp_avg_sq = v;
            }
        }
        self.steps_taken += 1;
        Ok(())
    }

    /// The state as a map of tensors plus hyper-parameters (the moments are shared, not copied:
    /// tensors are immutable).
    pub fn state(&self) -> Result<AdamWState> {
        let mut tensors = HashMap::with_capacity(3 * self.slots.len());
        for s in &self.slots {
            tensors.insert(key(&s.name, EXP_AVG), s.exp_avg.clone());
            tensors.insert(key(&s.name, EXP_AVG_SQ), s.exp_avg_sq.clone());
            let step = i64::try_from(s.step)
                .map_err(|_| Error::tensor(&s.name, "step count exceeds i64"))?;
            tensors.insert(key(&s.name, STEP), Tensor::new(step, &Device::Cpu)?);
        }
        Ok(AdamWState {
            config: self.config,
            steps_taken: self.steps_taken,
            tensors,
        })
    }

    /// Replace the hyper-parameters, counts and moments with `state`, which must hold exactly
    /// the three entries of every parameter, moments of the parameter's shape. Nothing changes
    /// on error. Moments are moved to the parameter's device and dtype.
    pub fn restore(&mut self, state: &AdamWState) -> Result<()> {
        state.config.validate()?;
        let mut restored = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let entry = |suffix: &str| {
                let k = key(&s.name, suffix);
                state
                    .tensors
                    .get(&k)
                    .ok_or_else(|| Error::tensor(&k, "missing from the optimiser state"))
                    .map(|t| (k, t))
            };
            let moment = |suffix: &str| -> Result<Tensor> {
                let (k, t) = entry(suffix)?;
                if t.dims() != s.var.dims() {
                    return Err(Error::tensor(
                        &k,
                        format!(
                            "state has shape {:?}, the parameter has {:?}",
                            t.dims(),
                            s.var.dims()
                        ),
                    ));
                }
                Ok(t.to_device(s.var.device())?.to_dtype(s.var.dtype())?)
            };
            let exp_avg = moment(EXP_AVG)?;
            let exp_avg_sq = moment(EXP_AVG_SQ)?;
            let (k, t) = entry(STEP)?;
            let step = step_count(&k, t)?;
            restored.push((exp_avg, exp_avg_sq, step));
        }
        if state.tensors.len() != 3 * self.slots.len() {
            let mut unknown: Vec<&String> = state
                .tensors
                .keys()
                .filter(|k| !self.slots.iter().any(|s| is_key_of(k, &s.name)))
                .collect();
            unknown.sort();
            let first = unknown.first().map_or("?", |k| k.as_str());
            return Err(Error::tensor(
                first,
                "in the optimiser state but not the state of any parameter",
            ));
        }
        for (slot, (exp_avg, exp_avg_sq, step)) in self.slots.iter_mut().zip(restored) {
            slot.exp_avg = exp_avg;
            slot.exp_avg_sq = exp_avg_sq;
            slot.step = step;
        }
        self.config = state.config;
        self.steps_taken = state.steps_taken;
        Ok(())
    }

    /// Write the state to a safetensors file at `path`, atomically; the hyper-parameters and
    /// the step count go into the header metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let state = self.state()?;
        let mut tensors: Vec<(String, Tensor)> = state.tensors.into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let config = serde_json::to_string(&state.config)
            .map_err(|e| Error::format(path, format!("cannot encode the AdamW config: {e}")))?;
        let metadata = HashMap::from([
            (FORMAT_KEY.to_string(), FORMAT_VALUE.to_string()),
            (CONFIG_KEY.to_string(), config),
            (STEPS_TAKEN_KEY.to_string(), state.steps_taken.to_string()),
        ]);
        write_safetensors(path, &tensors, metadata)
    }

    /// Read a state written by [`AdamW::save`] (tensors land on the CPU; [`AdamW::restore`]
    /// moves them).
    pub fn read_state(path: &Path) -> Result<AdamWState> {
        let (tensors, metadata) = read_safetensors(path, &Device::Cpu)?;
        let field = |k: &str| {
            metadata
                .get(k)
                .ok_or_else(|| Error::format(path, format!("header metadata lacks `{k}`")))
        };
        if field(FORMAT_KEY)? != FORMAT_VALUE {
            return Err(Error::format(
                path,
                format!("header metadata `{FORMAT_KEY}` is not `{FORMAT_VALUE}`"),
            ));
        }
        let config: AdamWConfig = serde_json::from_str(field(CONFIG_KEY)?)
            .map_err(|e| Error::format(path, format!("header metadata `{CONFIG_KEY}`: {e}")))?;
        let steps_taken: u64 = field(STEPS_TAKEN_KEY)?.parse().map_err(|e| {
            Error::format(path, format!("header metadata `{STEPS_TAKEN_KEY}`: {e}"))
        })?;
        Ok(AdamWState {
            config,
            steps_taken,
            tensors,
        })
    }

    /// Restore the state saved at `path` (see [`AdamW::restore`]).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let state = Self::read_state(path)?;
        self.restore(&state)
    }
}

fn key(param: &str, suffix: &str) -> String {
    format!("{param}.{suffix}")
}

fn is_key_of(key: &str, param: &str) -> bool {
    key.strip_prefix(param)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|suffix| [EXP_AVG, EXP_AVG_SQ, STEP].contains(&suffix))
}

/// A step count stored as a one-element tensor of any numeric dtype.
fn step_count(key: &str, t: &Tensor) -> Result<u64> {
    let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    match values.as_slice() {
        [x] if *x >= 0.0 && x.fract() == 0.0 && *x < 2f64.powi(53) => Ok(*x as u64),
        _ => Err(Error::tensor(
            key,
            format!("expected one non-negative integer step count, found {values:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(value: f64) -> Result<(String, Var)> {
        Ok(("p".to_string(), Var::new(&[value], &Device::Cpu)?))
    }

    fn grad(value: f64) -> Result<Gradients> {
        Gradients::from_named(vec![("p".into(), Tensor::new(&[value], &Device::Cpu)?)])
    }

    fn value(p: &(String, Var)) -> Result<f64> {
        Ok(p.1.as_tensor().to_vec1::<f64>()?[0])
    }

    #[test]
    fn two_steps_hand_computed() -> Result<()> {
        // p = 1, g = 0.5, lr = 0.1, wd = 0.01, betas 0.9 / 0.999.
        let p = param(1.0)?;
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(std::slice::from_ref(&p), cfg)?;
        opt.step(&grad(0.5)?, 0.1)?;
        // p = 0.999; m = 0.05, v = 0.00025; m_hat = 0.5, sqrt(v_hat) = 0.5.
        let after_1 = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8);
        assert!((value(&p)? - after_1).abs() < 1e-12, "{}", value(&p)?);
        opt.step(&grad(0.5)?, 0.1)?;
        // p *= 0.999; m = 0.095, v = 0.00049975; m_hat = 0.5, sqrt(v_hat) = 0.5 again.
        let after_2 = after_1 * 0.999 - 0.1 * 0.5 / (0.5 + 1e-8);
        assert!((value(&p)? - after_2).abs() < 1e-12, "{}", value(&p)?);
        let (m, v) = opt.moments("p").unwrap();
        assert!((m.to_vec1::<f64>()?[0] - 0.095).abs() < 1e-15);
        assert!((v.to_vec1::<f64>()?[0] - 0.00049975).abs() < 1e-15);
        assert_eq!((opt.steps_taken(), opt.param_step("p")), (2, Some(2)));
        Ok(())
    }

    #[test]
    fn a_parameter_without_gradient_is_left_alone() -> Result<()> {
        let p = param(1.0)?;
        let mut opt = AdamW::new(std::slice::from_ref(&p), AdamWConfig::default())?;
        opt.step(&Gradients::default(), 0.1)?;
        assert_eq!((value(&p)?, opt.param_step("p")), (1.0, Some(0)));
        assert_eq!(opt.steps_taken(), 1);
        Ok(())
    }

    #[test]
    fn mismatched_gradients_and_states_name_the_tensor() -> Result<()> {
        let p = param(1.0)?;
        let mut opt = AdamW::new(std::slice::from_ref(&p), AdamWConfig::default())?;
        let other = Gradients::from_named(vec![("q".into(), Tensor::new(&[1.0], &Device::Cpu)?)])?;
        let err = opt.step(&other, 0.1).unwrap_err().to_string();
        assert!(err.contains("`q`"), "{err}");

        let mut state = opt.state()?;
        state
            .tensors
            .insert("p.exp_avg".into(), Tensor::new(&[1.0, 2.0], &Device::Cpu)?);
        let err = opt.restore(&state).unwrap_err().to_string();
        assert!(err.contains("p.exp_avg") && err.contains("[2]"), "{err}");

        let mut state = opt.state()?;
        state.tensors.remove("p.step");
        let err = opt.restore(&state).unwrap_err().to_string();
        assert!(err.contains("p.step") && err.contains("missing"), "{err}");

        let mut state = opt.state()?;
        state
            .tensors
            .insert("r.exp_avg".into(), Tensor::new(&[1.0], &Device::Cpu)?);
        let err = opt.restore(&state).unwrap_err().to_string();
        assert!(err.contains("r.exp_avg"), "{err}");
        Ok(())
    }

    #[test]
    fn bad_hyper_parameters_name_the_field() {
        let cfg = AdamWConfig {
            beta2: 1.0,
            ..AdamWConfig::default()
        };
        let err = AdamW::new(&[param(0.0).unwrap()], cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("beta2"), "{err}");
    }
}
