//! Clipping and one AdamW step against `torch.nn.utils.clip_grad_norm_` + `torch.optim.AdamW`
//! on every fixture model's LoRA parameters and gradients, and an exact save/restore.

use candle_core::{Tensor, Var};
use rkif_core::train::{AdamW, AdamWConfig, Gradients};
use rkif_core::Error;

use crate::lora_fixture::{self, bit_equal, LoraFixture};

/// The first number after `label` in `text` (`"lr 3e-4"`, `"max_norm=1.0"`, `".9/.999"`).
fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || ".eE+-".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What the reference step used. fixtures.json records it only in the `meaning` texts
/// ("one AdamW step (lr 3e-4, betas .9/.999, eps 1e-8, wd 0)", "clip_grad_norm_(max_norm=1.0)");
/// read it from there, falling back to the README's values if the wording changes.
struct ReferenceStep {
    lr: f64,
    max_norm: f64,
    config: AdamWConfig,
}

fn reference_step(fx: &LoraFixture, first_param: &str) -> ReferenceStep {
    let step_text = fx.meaning(&format!("lora.after_step.{first_param}"));
    let norm_text = fx.meaning("lora.grad_total_norm");
    let parsed = (|| {
        Some(ReferenceStep {
            lr: number_after(step_text, "lr ")?,
            max_norm: number_after(norm_text, "max_norm=")?,
            config: AdamWConfig {
                beta1: number_after(step_text, "betas ")?,
                beta2: number_after(step_text, "betas ")
                    .and_then(|_| number_after(step_text, "/"))?,
                eps: number_after(step_text, "eps ")?,
                weight_decay: number_after(step_text, "wd ")?,
            },
        })
    })();
    parsed.unwrap_or_else(|| {
        eprintln!(
            "{}: optimiser settings not found in fixtures.json; using 3e-4, 1.0, defaults",
            fx.model
        );
        ReferenceStep {
            lr: 3e-4,
            max_norm: 1.0,
            config: AdamWConfig::default(),
        }
    })
}

/// Fresh `Var`s holding `lora.init.*`, in parameter order.
fn init_params(fx: &LoraFixture) -> Vec<(String, Var)> {
    fx.runtime_names()
        .into_iter()
        .map(|n| {
            let var = Var::from_tensor(&fx.tensor(&format!("lora.init.{n}"))).expect("var");
            (n, var)
        })
        .collect()
}

fn fixture_grads(fx: &LoraFixture) -> Gradients {
    let entries = fx
        .runtime_names()
        .into_iter()
        .map(|n| {
            let g = fx.tensor(&format!("lora.grad.{n}"));
            (n, g)
        })
        .collect();
    Gradients::from_named(entries).expect("distinct names")
}

/// max |a - b| / max |b|.
fn max_relative(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>());
    let scale = b.abs().and_then(|t| t.max_all()?.to_scalar::<f32>());
    let (diff, scale) = (diff.expect("diff") as f64, scale.expect("scale") as f64);
    diff / scale.max(f64::MIN_POSITIVE)
}

#[test]
fn clip_and_one_adamw_step_match_torch() {
    for fx in lora_fixture::all() {
        let names = fx.runtime_names();
        let reference = reference_step(&fx, &names[0]);
        let params = init_params(&fx);
        let mut grads = fixture_grads(&fx);

        let norm = grads.clip_global_norm(reference.max_norm).expect("norm");
        let want_norm = fx
            .tensor("lora.grad_total_norm")
            .to_vec1::<f32>()
            .expect("norm")[0] as f64;
        let rel = (norm - want_norm).abs() / want_norm;
        assert!(rel < 1e-5, "{}: norm {norm} vs torch {want_norm}", fx.model);
        assert!(
            norm > reference.max_norm,
            "{}: the fixture should clip",
            fx.model
        );

        let mut opt = AdamW::new(&params, reference.config).expect("optimiser");
        opt.step(&grads, reference.lr).expect("step");

        for (name, var) in &params {
            let want = fx.tensor(&format!("lora.after_step.{name}"));
            let got = var.as_tensor();
            // |got - want| <= 1e-6 + 1e-4 |want|, element-wise.
            let excess = ((got - &want).unwrap().abs().unwrap()
                - (want.abs().unwrap() * 1e-4)
                    .unwrap()
                    .affine(1.0, 1e-6)
                    .unwrap())
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
            assert!(
                excess <= 0.0,
                "{}: after_step `{name}` off by {excess} beyond tolerance",
                fx.model
            );

            // The absolute tolerance above is a few times the update itself (lr 3e-4), so
            // also compare the update: (after - init), max-relative.
            let init = fx.tensor(&format!("lora.init.{name}"));
            let update_rel = max_relative(&(got - &init).unwrap(), &(&want - &init).unwrap());
            assert!(
                update_rel <= 5e-4,
                "{}: update of `{name}` max-relative error {update_rel}",
                fx.model
            );

            let (m, v) = opt.moments(name).expect("moments");
            for (label, got, key) in [
                ("exp_avg", m, "adam_exp_avg"),
                ("exp_avg_sq", v, "adam_exp_avg_sq"),
            ] {
                let want = fx.tensor(&format!("lora.{key}.{name}"));
                let rel = max_relative(got, &want);
                assert!(
                    rel <= 1e-4,
                    "{}: {label} `{name}` max-relative error {rel}",
                    fx.model
                );
            }
            assert_eq!(opt.param_step(name), Some(1));
        }
    }
}

/// Clipped fixture gradients for step 1, and a different gradient (-0.7 g) for step 2.
fn two_gradient_sets(fx: &LoraFixture) -> (Gradients, Gradients) {
    let mut g1 = fixture_grads(fx);
    g1.clip_global_norm(1.0).expect("clip");
    let mut g2 = g1.clone();
    g2.scale(-0.7).expect("scale");
    (g1, g2)
}

#[test]
fn restored_state_continues_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    for fx in lora_fixture::all() {
        let (g1, g2) = two_gradient_sets(&fx);
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        };

        // Uninterrupted: two steps.
        let params = init_params(&fx);
        let mut opt = AdamW::new(&params, cfg).expect("optimiser");
        opt.step(&g1, 3e-4).expect("step 1");
        let path = dir.path().join(format!("{}-adamw.safetensors", fx.model));
        opt.save(&path).expect("save");
        let after_1: Vec<Tensor> = params
            .iter()
            .map(|(_, v)| v.as_tensor().copy().unwrap())
            .collect();
        opt.step(&g2, 2e-4).expect("step 2");

        // Interrupted: fresh parameters holding the step-1 values, a fresh optimiser, load, step.
        let resumed: Vec<(String, Var)> = params
            .iter()
            .zip(&after_1)
            .map(|((n, _), t)| (n.clone(), Var::from_tensor(t).unwrap()))
            .collect();
        let mut fresh = AdamW::new(&resumed, AdamWConfig::default()).expect("optimiser");
        fresh.load(&path).expect("load");
        assert_eq!(
            fresh.config(),
            &cfg,
            "hyper-parameters travel with the state"
        );
        assert_eq!(fresh.steps_taken(), 1);
        fresh.step(&g2, 2e-4).expect("resumed step 2");

        for ((name, a), (_, b)) in params.iter().zip(&resumed) {
            assert!(
                bit_equal(a.as_tensor(), b.as_tensor()),
                "{}: `{name}` differs after resume",
                fx.model
            );
            let (ma, va) = opt.moments(name).unwrap();
            let (mb, vb) = fresh.moments(name).unwrap();
            assert!(
                bit_equal(ma, mb) && bit_equal(va, vb),
                "{}: moments of `{name}` differ",
                fx.model
            );
            assert_eq!(fresh.param_step(name), Some(2));
        }
    }
}

#[test]
fn a_state_for_other_parameters_is_refused_by_name() {
    let fixtures = lora_fixture::all();
    let (first, other) = match fixtures.as_slice() {
        [a, b, ..] => (a, b),
        _ => return,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("adamw.safetensors");
    AdamW::new(&init_params(first), AdamWConfig::default())
        .expect("optimiser")
        .save(&path)
        .expect("save");
    let params = init_params(other);
    let mut opt = AdamW::new(&params, AdamWConfig::default()).expect("optimiser");
    let before = opt.state().expect("state");
    match opt.load(&path) {
        Err(Error::Tensor { name, what }) => {
            assert!(
                name.contains(".exp_avg") || name.contains(".step"),
                "{name}: {what}"
            )
        }
        other => panic!("expected a tensor error, got {other:?}"),
    }
    // Nothing changed.
    let after = opt.state().expect("state");
    assert_eq!(after.steps_taken, before.steps_taken);

    // A truncated file is a format error naming the file.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    match opt.load(&path) {
        Err(Error::Format { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected a format error, got {other:?}"),
    }
}
