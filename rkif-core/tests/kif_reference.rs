//! Importance trackers, quantile masks and fusion against the reference implementation.
//!
//! The fixture folder comes from `RKIF_HF_FIXTURES` (default `../shared/fixtures/hf-reference`
//! relative to the workspace root); shapes and names come from its `recurrent_kif/fixtures.json`.
//!
//! Replayed per variant found in the keys (`<variant>.fusion.<alias>.output`): a fresh inner
//! and a fresh outer tracker; the inner steps, then the outer steps (the inner state is kept,
//! not emptied); after every step the states, the global and per-tensor thresholds and masks
//! are compared; then the two final global masks drive the fusion.

#[path = "hf_reference/common.rs"]
mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use rkif_core::kif::{
    coefficients, fuse, global_mask, local_mask, FusionTable, FusionTensor, ImportanceConfig,
    ImportanceMask, ImportanceTracker, ParamGrad, Sensitivity,
};
use serde_json::Value;

/// Relative tolerance on states and thresholds (README: "Thresholds: rtol 1e-6").
const RTOL: f32 = 1e-6;

struct Fixture {
    json_path: PathBuf,
    meta: Value,
    tensors: HashMap<String, Tensor>,
}

impl Fixture {
    fn load() -> Self {
        let dir = common::fixtures_dir().join("recurrent_kif");
        let json_path = dir.join("fixtures.json");
        let text = std::fs::read_to_string(&json_path)
            .unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
        let meta: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
        let st_path = dir.join("fixtures.safetensors");
        let tensors = candle_core::safetensors::load(&st_path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", st_path.display()));
        Self {
            json_path,
            meta,
            tensors,
        }
    }

    fn tensor(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixtures.safetensors: no key `{key}`"))
    }

    fn number(&self, field: &str) -> f64 {
        self.meta
            .get(field)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{}: no number `{field}`", self.json_path.display()))
    }

    /// `(full parameter name, alias)` in parameter order (aliases p0, p1, ... number them).
    fn params(&self) -> Vec<(String, String)> {
        let aliases = self
            .meta
            .get("param_aliases")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{}: no `param_aliases`", self.json_path.display()));
        let mut params: Vec<(String, String)> = aliases
            .iter()
            .map(|(name, alias)| {
                let alias = alias.as_str().unwrap_or_else(|| panic!("alias of {name}"));
                (name.clone(), alias.to_string())
            })
            .collect();
        let index = |alias: &str| -> usize {
            alias
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap_or_else(|e| panic!("alias `{alias}`: {e}"))
        };
        params.sort_by_key(|(_, alias)| index(alias));
        assert!(!params.is_empty(), "no parameters in param_aliases");
        params
    }

    /// Variants with a fusion record, e.g. `param_first`, `ties_param_first`.
    fn variants(&self) -> BTreeSet<String> {
        self.tensors
            .keys()
            .filter(|k| !k.starts_with("input."))
            .filter_map(|k| k.split_once(".fusion.").map(|(v, _)| v.to_string()))
            .collect()
    }

    /// How many steps of `phase` the variant recorded (`<variant>.<phase>.<i>.global_threshold`).
    fn steps(&self, variant: &str, phase: &str) -> usize {
        (0..)
            .take_while(|i| {
                let key = format!("{variant}.{phase}.{i}.global_threshold");
                self.tensors.contains_key(&key)
            })
            .count()
    }

    fn summary(&self, variant: &str) -> &Value {
        self.meta
            .get("summary")
            .and_then(|s| s.get(variant))
            .unwrap_or_else(|| panic!("{}: no summary.{variant}", self.json_path.display()))
    }
}

/// The sensitivity of a variant and the key prefix of its inputs: `param_first` reads
/// `input.<phase>.<i>.*`; `ties_param_first` reads `input.ties.*` at every step.
fn parse_variant(variant: &str) -> (Sensitivity, Option<String>) {
    let sensitivity = Sensitivity::ALL
        .into_iter()
        .find(|s| variant.ends_with(s.reference_name()))
        .unwrap_or_else(|| panic!("variant `{variant}` names no known sensitivity"));
    let prefix = variant
        .strip_suffix(sensitivity.reference_name())
        .map(|p| p.trim_end_matches('_'))
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    (sensitivity, prefix)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every element within `rtol * |want|` (so exact zeros must be exact zeros).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, rtol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (values(got), values(want));
    let worst = g
        .iter()
        .zip(&w)
        .enumerate()
        .map(|(i, (a, b))| {
            (
                i,
                (a - b).abs() / b.abs().max(f32::MIN_POSITIVE),
                (a - b).abs() <= rtol * b.abs(),
            )
        })
        .find(|(_, _, ok)| !ok);
    if let Some((i, rel, _)) = worst {
        panic!(
            "{what}: element {i} is {} but the reference has {} (rel {rel:e})",
            g[i], w[i]
        );
    }
}

fn assert_equal(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (values(got), values(want));
    let diff: Vec<usize> = (0..g.len()).filter(|&i| g[i] != w[i]).collect();
    assert!(
        diff.is_empty(),
        "{what}: {} elements differ, first at {} ({} vs {})",
        diff.len(),
        diff[0],
        g[diff[0]],
        w[diff[0]]
    );
}

fn scalar(t: &Tensor) -> f32 {
    let v = values(t);
    assert_eq!(v.len(), 1, "expected one element");
    v[0]
}

fn assert_rel(what: &str, got: f64, want: f64, rtol: f64) {
    assert!(
        (got - want).abs() <= rtol * want.abs(),
        "{what}: {got:e} vs reference {want:e}"
    );
}

/// Replays one phase of a variant; returns the global mask after the last step.
fn replay_phase(
    fx: &Fixture,
    variant: &str,
    phase: &str,
    tracker: &mut ImportanceTracker,
) -> ImportanceMask {
    let (_, input_prefix) = parse_variant(variant);
    let params = fx.params();
    let q = fx.number("quantile");
    let summary = fx.summary(variant);
    let steps = fx.steps(variant, phase);
    assert!(steps > 0, "{variant}: no {phase} steps");
    let n_field = format!("n_{phase}");
    assert_eq!(
        steps as f64,
        fx.number(&n_field),
        "{variant}: {phase} step count"
    );

    let mut last = None;
    for i in 0..steps {
        let input = |alias: &str, what: &str| match &input_prefix {
            Some(p) => fx.tensor(&format!("input.{p}.{alias}.{what}")),
            None => fx.tensor(&format!("input.{phase}.{i}.{alias}.{what}")),
        };
        let step: Vec<ParamGrad> = params
            .iter()
            .map(|(name, alias)| ParamGrad {
                name,
                param: input(alias, "param"),
                grad: input(alias, "grad"),
            })
            .collect();
        tracker
            .update(&step)
            .unwrap_or_else(|e| panic!("{variant} {phase} {i}: {e}"));

        for (name, alias) in &params {
            let state = tracker
                .state(name)
                .unwrap_or_else(|| panic!("{name} untracked"));
            let base = format!("{variant}.{phase}.{i}.{alias}");
            for (field, got) in [
                ("ipt", &state.ipt),
                ("exp_avg_ipt", &state.exp_avg_ipt),
                ("exp_avg_unc", &state.exp_avg_unc),
                ("score", &state.score),
            ] {
                let key = format!("{base}.{field}");
                assert_close(&key, got, fx.tensor(&key), RTOL);
            }
        }

        let scores = tracker.scores();
        let global = global_mask(&scores, q).unwrap_or_else(|e| panic!("{e}"));
        let tau = global.global_threshold().unwrap_or(f32::NAN);
        let key = format!("{variant}.{phase}.{i}.global_threshold");
        let want = scalar(fx.tensor(&key));
        assert_rel(&key, f64::from(tau), f64::from(want), f64::from(RTOL));
        let listed = summary
            .get(format!("{phase}_threshold"))
            .and_then(|t| t.get(i))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("summary.{variant}.{phase}_threshold[{i}]"));
        assert_rel(
            &format!("{key} (summary)"),
            f64::from(tau),
            listed,
            f64::from(RTOL),
        );
        let ones = summary
            .get(format!("{phase}_mask_ones"))
            .and_then(|t| t.get(i))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("summary.{variant}.{phase}_mask_ones[{i}]"));
        assert_eq!(global.selected() as u64, ones, "{key}: mask size");

        let local = local_mask(&scores, q).unwrap_or_else(|e| panic!("{e}"));
        for (name, alias) in &params {
            let base = format!("{variant}.{phase}.{i}.{alias}");
            let g = global
                .get(name)
                .unwrap_or_else(|| panic!("{name}: no global mask"));
            assert_equal(
                &format!("{base}.mask_global"),
                &g.mask,
                fx.tensor(&format!("{base}.mask_global")),
            );
            let l = local
                .get(name)
                .unwrap_or_else(|| panic!("{name}: no local mask"));
            let key = format!("{base}.local_threshold");
            assert_rel(
                &key,
                f64::from(l.threshold),
                f64::from(scalar(fx.tensor(&key))),
                f64::from(RTOL),
            );
            assert_equal(
                &format!("{base}.mask_local"),
                &l.mask,
                fx.tensor(&format!("{base}.mask_local")),
            );
        }
        last = Some(global);
    }
    last.unwrap_or_else(|| panic!("{variant}: no {phase} steps"))
}

/// Fusion on the final masks: coefficients, output and the summary's coefficient counts.
fn check_fusion(fx: &Fixture, variant: &str, inner: &ImportanceMask, outer: &ImportanceMask) {
    let table = FusionTable::default();
    let params = fx.params();
    let mask = |m: &ImportanceMask, name: &str| {
        m.get(name)
            .unwrap_or_else(|| panic!("{name}: no mask"))
            .mask
            .clone()
    };
    let masks: Vec<(Tensor, Tensor)> = params
        .iter()
        .map(|(name, _)| (mask(inner, name), mask(outer, name)))
        .collect();
    let inputs: Vec<FusionTensor> = params
        .iter()
        .zip(&masks)
        .map(|((name, alias), (m_in, m_out))| FusionTensor {
            name,
            anchor: fx.tensor(&format!("input.theta_t.{alias}")),
            delta_in: fx.tensor(&format!("input.delta_in.{alias}")),
            delta_out: fx.tensor(&format!("input.delta_out.{alias}")),
            inner_mask: m_in,
            outer_mask: m_out,
        })
        .collect();
    let fused = fuse(&table, &inputs).unwrap_or_else(|e| panic!("{variant} fusion: {e}"));

    let mut c_in_values = Vec::new();
    for (((name, alias), (m_in, m_out)), out) in params.iter().zip(&masks).zip(&fused.tensors) {
        assert_eq!(&out.name, name);
        let base = format!("{variant}.fusion.{alias}");
        let (c_in, c_out) =
            coefficients(&table, m_in, m_out, DType::F32).unwrap_or_else(|e| panic!("{e}"));
        assert_equal(
            &format!("{base}.w_in"),
            &c_in,
            fx.tensor(&format!("{base}.w_in")),
        );
        assert_equal(
            &format!("{base}.w_out"),
            &c_out,
            fx.tensor(&format!("{base}.w_out")),
        );
        // Same float32 operations in the same order: bit for bit.
        assert_equal(
            &format!("{base}.output"),
            &out.value,
            fx.tensor(&format!("{base}.output")),
        );
        c_in_values.extend(values(&c_in));
    }

    // `fusion_count_w_in_<c>`: elements whose inner coefficient is c.
    let summary = fx
        .summary(variant)
        .as_object()
        .unwrap_or_else(|| panic!("summary.{variant}"));
    let mut checked = 0;
    for (field, count) in summary {
        let Some(c) = field.strip_prefix("fusion_count_w_in_") else {
            continue;
        };
        let c: f64 = c
            .parse()
            .unwrap_or_else(|e| panic!("summary.{variant}.{field}: {e}"));
        let want = count
            .as_u64()
            .unwrap_or_else(|| panic!("summary.{variant}.{field}"));
        let got = c_in_values.iter().filter(|&&x| x == c as f32).count() as u64;
        assert_eq!(got, want, "summary.{variant}.{field}");
        checked += 1;
    }
    assert!(checked > 0, "summary.{variant} has no fusion counts");
    // The case statistics agree with the coefficients of the default table.
    let both = c_in_values.iter().filter(|&&x| x == 0.4).count() as u64;
    let neither = c_in_values.iter().filter(|&&x| x == 0.5).count() as u64;
    assert_eq!(
        (fused.stats.both, fused.stats.neither),
        (both, neither),
        "{variant}: statistics"
    );
    assert_eq!(fused.stats.inner(), inner.selected() as u64);
    assert_eq!(fused.stats.outer(), outer.selected() as u64);
}

#[test]
fn every_variant_matches_the_reference() {
    let fx = Fixture::load();
    let variants = fx.variants();
    assert!(!variants.is_empty(), "no variants in the fixtures");
    for variant in &variants {
        let (sensitivity, _) = parse_variant(variant);
        let config = ImportanceConfig {
            beta1: fx.number("beta1"),
            beta2: fx.number("beta2"),
            sensitivity,
        };
        let new = || ImportanceTracker::new(config).unwrap_or_else(|e| panic!("{e}"));
        let (mut inner, mut outer) = (new(), new());
        let inner_mask = replay_phase(&fx, variant, "inner", &mut inner);
        let outer_mask = replay_phase(&fx, variant, "outer", &mut outer);
        // The inner tracker still holds its final state when the round fuses.
        assert_eq!(inner.updates() as usize, fx.steps(variant, "inner"));
        check_fusion(&fx, variant, &inner_mask, &outer_mask);
    }
}
