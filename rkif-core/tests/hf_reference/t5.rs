//! T5 (`t5_relu`, `t5_gated`, and any other T5 model listed in `models_index.json`) against
//! Hugging Face / PEFT: logits, losses, hidden states, greedy outputs, LoRA logits and
//! gradients, and clear errors on broken model folders.
//!
//! Every size, name and length comes from the fixture files. Tolerances come from a
//! `tolerances` object in `fixtures.json` when the fixture set has one, else from the values
//! the fixture README recommends.
//!
//! Rounding noise. The reference is one float32 computation. Where the model amplifies
//! rounding (`t5_relu` is built with a 4x init scale: attention is so sharp that our own f32
//! and f64 runs differ by ~1e-3 of the logits and ~10% in some encoder LoRA gradients), a
//! float32 reference is itself only that accurate, and no independent float32 implementation
//! can match it to the README's tolerance. So every comparison runs the model in f32 (the
//! path under test) and in f64, and adds `noise_factor * max |f32 - f64|` (the quantity's own
//! sensitivity to f32 rounding) to the README bound. On a well-conditioned model (`t5_gated`)
//! that term is ~1e-6 and the check is as strict as the README's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rkif_core::model::t5::{loss::token_cross_entropy, Seq2SeqBatch, T5Model};
use rkif_core::model::{LoraConfig, LoraModel, SharedRng};
use serde_json::Value;

use crate::common::fixtures_dir;

/// Bounds are `atol + rtol * max |reference| + noise_factor * max |f32 - f64|`.
struct Tolerances {
    logits_atol: f64,
    logits_rtol: f64,
    loss_rtol: f64,
    grad_max_rel: f64,
    noise_factor: f64,
}

impl Tolerances {
    /// README: logits/hidden atol 1e-4 + rtol 1e-4 of the largest |x|, loss rtol 1e-5, LoRA
    /// grads max-rel 1e-4. The reference's rounding noise is estimated by our own f32 noise,
    /// with a margin of 8 (measured: the reference's noise is up to ~3x ours on t5_relu).
    fn from_fixture(meta: &Value) -> Self {
        let t = &meta["tolerances"];
        let get = |k: &str, default: f64| t[k].as_f64().unwrap_or(default);
        Self {
            logits_atol: get("logits_atol", 1e-4),
            logits_rtol: get("logits_rtol", 1e-4),
            loss_rtol: get("loss_rtol", 1e-5),
            grad_max_rel: get("grad_max_rel", 1e-4),
            noise_factor: get("noise_factor", 8.0),
        }
    }
}

/// One T5 model folder with its fixtures.
struct Case {
    name: String,
    dir: PathBuf,
    meta: Value,
    tensors: HashMap<String, Tensor>,
    tol: Tolerances,
}

/// The same model in f32 (under test) and in f64 (to measure rounding sensitivity).
struct Models {
    f32: T5Model,
    f64: T5Model,
}

impl Models {
    /// `f` on both models.
    fn both(&self, f: impl Fn(&T5Model) -> Tensor) -> (Tensor, Tensor) {
        (f(&self.f32), f(&self.f64))
    }
}

impl Case {
    fn get(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: fixture key {key} missing", self.name))
    }

    /// Keys of `fixtures.json` with `prefix`, in the index's order.
    fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        let keys = self.meta["keys"]
            .as_object()
            .expect("fixtures.json has `keys`");
        keys.keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn model(&self, dtype: DType) -> T5Model {
        T5Model::from_folder(&self.dir, &Device::Cpu, dtype)
            .unwrap_or_else(|e| panic!("{}: loading failed: {e}", self.name))
    }

    fn models(&self) -> Models {
        Models {
            f32: self.model(DType::F32),
            f64: self.model(DType::F64),
        }
    }

    fn batch(&self) -> Seq2SeqBatch {
        Seq2SeqBatch {
            input_ids: self.get("input_ids").clone(),
            attention_mask: self.get("attention_mask").clone(),
            labels: self.get("labels").clone(),
        }
    }

    fn lora_runtime_names(&self) -> Vec<String> {
        self.meta["lora"]["peft_runtime_param_names"]
            .as_array()
            .expect("fixtures.json lora.peft_runtime_param_names")
            .iter()
            .map(|v| v.as_str().expect("a name").to_string())
            .collect()
    }

    /// `ours` (f32) against `reference`, allowing the README bound plus the rounding
    /// sensitivity `|ours - exact|` (see the module doc).
    fn assert_close(
        &self,
        what: &str,
        ours: &Tensor,
        exact: &Tensor,
        reference: &Tensor,
        atol: f64,
        rtol: f64,
    ) {
        assert_eq!(ours.dims(), reference.dims(), "{} {what}: shape", self.name);
        let noise = max_abs_diff(ours, exact);
        let diff = max_abs_diff(ours, reference);
        let bound = atol + rtol * max_abs(reference) + self.tol.noise_factor * noise;
        assert!(
            diff <= bound,
            "{} {what}: max difference {diff:e} exceeds {bound:e} (f32 rounding noise {noise:e})",
            self.name
        );
    }

    /// Scalars: `|ours - reference| <= rtol |reference| + noise_factor |ours - exact|`.
    fn assert_loss(&self, what: &str, ours: &Tensor, exact: &Tensor, reference: &Tensor) {
        let (a, e, r) = (scalar(ours), scalar(exact), scalar(reference));
        let bound = self.tol.loss_rtol * r.abs() + self.tol.noise_factor * (a - e).abs();
        assert!(
            (a - r).abs() <= bound,
            "{} {what}: {a} vs {r} (bound {bound:e})",
            self.name
        );
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every model of `models_index.json` whose `config.json` says `model_type: t5`.
fn t5_cases() -> Vec<Case> {
    let root = fixtures_dir();
    let index = read_json(&root.join("models_index.json"));
    let models = index["models"]
        .as_object()
        .expect("models_index.json has `models`");
    let mut cases = Vec::new();
    for (name, entry) in models {
        let dir = root.join(entry["dir"].as_str().expect("model entry has `dir`"));
        if read_json(&dir.join("config.json"))["model_type"] != "t5" {
            continue;
        }
        let meta = read_json(&dir.join("fixtures.json"));
        let tensors =
            candle_core::safetensors::load(dir.join("fixtures.safetensors"), &Device::Cpu)
                .expect("fixtures.safetensors");
        let tol = Tolerances::from_fixture(&meta);
        cases.push(Case {
            name: name.clone(),
            dir,
            meta,
            tensors,
            tol,
        });
    }
    assert!(!cases.is_empty(), "no T5 model in {}", root.display());
    cases
}

/// Rows of `x` `[B, L, ...]` where `keep` `[B, L]` is true, flattened to `[N, ...]`.
fn select_rows(x: &Tensor, keep: &[Vec<bool>]) -> Tensor {
    let (b, l) = (x.dim(0).unwrap(), x.dim(1).unwrap());
    let idx: Vec<u32> = (0..b * l)
        .filter(|&i| keep[i / l][i % l])
        .map(|i| i as u32)
        .collect();
    let n = idx.len();
    let mut flat_shape = vec![b * l];
    flat_shape.extend(&x.dims()[2..]);
    x.reshape(flat_shape)
        .unwrap()
        .index_select(&Tensor::from_vec(idx, n, x.device()).unwrap(), 0)
        .unwrap()
}

/// `[B, L]` flags: true where the label is scored (not -100).
fn label_positions(labels: &Tensor) -> Vec<Vec<bool>> {
    let rows = labels
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap();
    rows.iter()
        .map(|r| r.iter().map(|&v| v != -100).collect())
        .collect()
}

/// `[B, L]` flags: true for real (unpadded) tokens.
fn mask_positions(mask: &Tensor) -> Vec<Vec<bool>> {
    let rows = mask.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap();
    rows.iter()
        .map(|r| r.iter().map(|&v| v != 0).collect())
        .collect()
}

fn max_abs(x: &Tensor) -> f64 {
    let x = x.to_dtype(DType::F64).unwrap();
    x.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (
        a.to_dtype(DType::F64).unwrap(),
        b.to_dtype(DType::F64).unwrap(),
    );
    max_abs(&(a - b).unwrap())
}

fn scalar(x: &Tensor) -> f64 {
    x.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0]
}

#[test]
fn t5_logits_loss_and_hidden_states_match_hugging_face() {
    for case in t5_cases() {
        let models = case.models();
        let batch = case.batch();
        let tol = &case.tol;
        let (atol, rtol) = (tol.logits_atol, tol.logits_rtol);
        let scored = label_positions(&batch.labels);
        let real = mask_positions(&batch.attention_mask);

        let (logits, exact) = models.both(|m| m.forward(&batch, false).unwrap());
        let pick = |t: &Tensor| select_rows(t, &scored);
        let reference = case.get("base.logits");
        case.assert_close(
            "base.logits",
            &pick(&logits),
            &pick(&exact),
            &pick(reference),
            atol,
            rtol,
        );

        let (loss, exact) = models.both(|m| m.loss(&batch, false).unwrap());
        case.assert_loss("base.loss", &loss, &exact, case.get("base.loss"));

        // Per-token cross-entropy from the full logits at the scored positions.
        let targets = batch
            .labels
            .to_dtype(DType::I64)
            .unwrap()
            .clamp(0i64, i64::MAX)
            .unwrap();
        let (ce, exact) = models.both(|m| {
            let logits = m.forward(&batch, false).unwrap();
            let (b, lt, v) = logits.dims3().unwrap();
            let t = targets.to_dtype(DType::U32).unwrap().flatten_all().unwrap();
            token_cross_entropy(&logits.reshape((b * lt, v)).unwrap(), &t)
                .unwrap()
                .reshape((b, lt))
                .unwrap()
        });
        let reference = case.get("base.token_ce");
        case.assert_close(
            "base.token_ce",
            &pick(&ce),
            &pick(&exact),
            &pick(reference),
            atol,
            rtol,
        );

        // Encoder hidden states at real tokens (index 0 = embeddings, last = after the final norm).
        let states = [&models.f32, &models.f64].map(|m| {
            m.encoder_hidden_states(&batch.input_ids, &batch.attention_mask)
                .unwrap()
        });
        let prefix = "base.encoder_hidden_states.";
        let keys = case.keys_with_prefix(prefix);
        assert_eq!(
            keys.len(),
            states[0].len(),
            "{}: number of encoder states",
            case.name
        );
        let real_rows = |t: &Tensor| select_rows(t, &real);
        for key in &keys {
            let i: usize = key[prefix.len()..].parse().unwrap();
            let (ours, exact) = (real_rows(&states[0][i]), real_rows(&states[1][i]));
            case.assert_close(key, &ours, &exact, &real_rows(case.get(key)), atol, rtol);
        }
        let (encoder_out, encoder_exact) = models.both(|m| {
            m.encode(&batch.input_ids, &batch.attention_mask, false)
                .unwrap()
        });
        let key = "base.encoder_last_hidden_state";
        let (ours, exact) = (real_rows(&encoder_out), real_rows(&encoder_exact));
        case.assert_close(key, &ours, &exact, &real_rows(case.get(key)), atol, rtol);

        // Decoder hidden states from the fixture's decoder inputs, at scored positions.
        let dec_ids = case.get("decoder_input_ids");
        let states =
            [(&models.f32, &encoder_out), (&models.f64, &encoder_exact)].map(|(m, enc)| {
                m.decoder_hidden_states(dec_ids, enc, &batch.attention_mask)
                    .unwrap()
            });
        let prefix = "base.decoder_hidden_states.";
        let keys = case.keys_with_prefix(prefix);
        assert_eq!(
            keys.len(),
            states[0].len(),
            "{}: number of decoder states",
            case.name
        );
        for key in &keys {
            let i: usize = key[prefix.len()..].parse().unwrap();
            let (ours, exact) = (pick(&states[0][i]), pick(&states[1][i]));
            case.assert_close(key, &ours, &exact, &pick(case.get(key)), atol, rtol);
        }
    }
}

#[test]
fn t5_long_pair_exercises_the_distance_clamp() {
    for case in t5_cases() {
        let models = case.models();
        let ids = case.get("long.input_ids");
        let batch = Seq2SeqBatch {
            input_ids: ids.clone(),
            attention_mask: Tensor::ones(ids.dims(), DType::I64, &Device::Cpu).unwrap(),
            labels: case.get("long.labels").clone(),
        };
        let config = read_json(&case.dir.join("config.json"));
        let max_distance = config["relative_attention_max_distance"]
            .as_u64()
            .unwrap_or(128);
        let longest = batch.labels.dim(1).unwrap().max(ids.dim(1).unwrap()) as u64;
        assert!(
            longest > max_distance,
            "{}: the long pair should pass the max distance",
            case.name
        );

        let tol = &case.tol;
        let (logits, exact) = models.both(|m| m.forward(&batch, false).unwrap());
        let reference = case.get("long.logits");
        case.assert_close(
            "long.logits",
            &logits,
            &exact,
            reference,
            tol.logits_atol,
            tol.logits_rtol,
        );
        let (loss, exact) = models.both(|m| m.loss(&batch, false).unwrap());
        case.assert_loss("long.loss", &loss, &exact, case.get("long.loss"));
    }
}

/// `ours` must be a prefix of `reference`, and the rest of `reference` all `fill`.
fn assert_generated(what: &str, ours: &[u32], reference: &[i64], fill: i64) {
    let ours: Vec<i64> = ours.iter().map(|&t| t as i64).collect();
    assert!(
        ours.len() <= reference.len(),
        "{what}: {ours:?} longer than {reference:?}"
    );
    let (head, tail) = reference.split_at(ours.len());
    assert_eq!(ours, head, "{what}");
    assert!(
        tail.iter().all(|&t| t == fill),
        "{what}: {ours:?} stops before {reference:?}"
    );
}

#[test]
fn t5_greedy_generation_matches_per_example_and_batched() {
    for case in t5_cases() {
        let model = case.model(DType::F32);
        let n = &case.name;
        let ids = case.get("input_ids");
        let mask = case.get("attention_mask");
        let per_example = case.get("gen.per_example").to_vec2::<i64>().unwrap();
        let batched = case.get("gen.batched").to_vec2::<i64>().unwrap();
        // A row is the start token and at most max_new_tokens new ones.
        let max_new = per_example[0].len() - 1;
        let pad = read_json(&case.dir.join("config.json"))["pad_token_id"]
            .as_i64()
            .unwrap_or(0);

        let lengths = mask
            .to_dtype(DType::I64)
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap();
        for (r, &len) in lengths.iter().enumerate() {
            let one = |t: &Tensor| {
                t.narrow(0, r, 1)
                    .unwrap()
                    .narrow(1, 0, len as usize)
                    .unwrap()
            };
            let out = model
                .generate_greedy(&one(ids), &one(mask), max_new)
                .unwrap();
            assert_generated(
                &format!("{n} gen.per_example row {r}"),
                &out[0],
                &per_example[r],
                -1,
            );
        }
        let out = model.generate_greedy(ids, mask, max_new).unwrap();
        assert_eq!(out.len(), batched.len(), "{n}: batched rows");
        for (r, (ours, reference)) in out.iter().zip(&batched).enumerate() {
            assert_generated(&format!("{n} gen.batched row {r}"), ours, reference, pad);
        }
    }
}

/// Load `<model>/lora_adapter` into the model's layers by module name.
fn load_fixture_adapter(model: &mut T5Model, dir: &Path) {
    let adapter_dir = dir.join("lora_adapter");
    let config = read_json(&adapter_dir.join("adapter_config.json"));
    let scale = config["lora_alpha"].as_f64().unwrap() / config["r"].as_f64().unwrap();
    let tensors =
        candle_core::safetensors::load(adapter_dir.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let mut factors: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    for (key, t) in tensors {
        let module = key.strip_prefix("base_model.model.").expect("PEFT prefix");
        if let Some(m) = module.strip_suffix(".lora_A.weight") {
            factors.entry(m.to_string()).or_default().0 = Some(t);
        } else if let Some(m) = module.strip_suffix(".lora_B.weight") {
            factors.entry(m.to_string()).or_default().1 = Some(t);
        } else {
            panic!("unexpected adapter key {key}");
        }
    }
    let mut layers: HashMap<String, _> = model
        .lora_layers_mut()
        .into_iter()
        .map(|l| (l.name().to_string(), l))
        .collect();
    for (module, (a, b)) in factors {
        let layer = layers
            .get_mut(&module)
            .unwrap_or_else(|| panic!("no module {module}"));
        layer
            .set_adapter(a.unwrap(), b.unwrap(), scale, 0.0)
            .unwrap();
    }
}

#[test]
fn t5_lora_logits_loss_and_gradients_match_peft() {
    for case in t5_cases() {
        let mut models = case.models();
        load_fixture_adapter(&mut models.f32, &case.dir);
        load_fixture_adapter(&mut models.f64, &case.dir);
        let n = &case.name;
        let tol = &case.tol;

        let names: Vec<String> = models
            .f32
            .lora_params()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            case.lora_runtime_names(),
            "{n}: LoRA parameter names and order"
        );

        let batch = case.batch();
        let scored = label_positions(&batch.labels);
        let pick = |t: &Tensor| select_rows(t, &scored);
        let (logits, exact) = models.both(|m| m.forward(&batch, false).unwrap());
        let reference = case.get("lora.logits");
        let (atol, rtol) = (tol.logits_atol, tol.logits_rtol);
        case.assert_close(
            "lora.logits",
            &pick(&logits),
            &pick(&exact),
            &pick(reference),
            atol,
            rtol,
        );

        // Train mode (dropout 0 in the fixture adapter) for the loss and its gradients.
        let (loss, exact) = models.both(|m| m.loss(&batch, true).unwrap());
        case.assert_loss("lora.loss", &loss, &exact, case.get("lora.loss"));

        let grads = loss.backward().unwrap();
        let exact_grads = exact.backward().unwrap();
        let expected = case.keys_with_prefix("lora.grad.").into_iter();
        let expected: Vec<String> = expected.filter(|k| k != "lora.grad_total_norm").collect();
        assert_eq!(
            expected.len(),
            names.len(),
            "{n}: one gradient per LoRA tensor"
        );
        for (param, exact_param) in models
            .f32
            .lora_params()
            .iter()
            .zip(models.f64.lora_params())
        {
            let g = grads
                .get(param.var.as_tensor())
                .unwrap_or_else(|| panic!("{n}: no gradient reaches {}", param.name));
            assert!(max_abs(g) > 0.0, "{n}: zero gradient for {}", param.name);
            let g_exact = exact_grads.get(exact_param.var.as_tensor()).unwrap();
            let reference = case.get(&format!("lora.grad.{}", param.name));
            let what = format!("lora.grad.{}", param.name);
            case.assert_close(&what, g, g_exact, reference, 0.0, tol.grad_max_rel);
        }
    }
}

#[test]
fn t5_attach_lora_targets_modules_by_name() {
    for case in t5_cases() {
        let mut model = case.model(DType::F32);
        let lora = &case.meta["lora"]["lora_config"];
        let cfg = LoraConfig {
            rank: lora["r"].as_u64().unwrap() as usize,
            alpha: lora["lora_alpha"].as_f64().unwrap(),
            dropout: 0.0,
            targets: lora["target_modules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
        };
        model.attach_lora(&cfg, &SharedRng::seeded(7)).unwrap();
        let names: Vec<String> = model.lora_params().into_iter().map(|p| p.name).collect();
        assert_eq!(names, case.lora_runtime_names(), "{}", case.name);

        // A fresh adapter (B = 0) changes no logit.
        let batch = case.batch();
        let mut plain = case.model(DType::F32);
        let before = plain.forward(&batch, false).unwrap();
        let after = model.forward(&batch, false).unwrap();
        assert_eq!(
            max_abs_diff(&before, &after),
            0.0,
            "{}: fresh adapter",
            case.name
        );

        let unknown = LoraConfig {
            targets: vec![cfg.targets[0].clone(), "no_such_module".into()],
            ..cfg
        };
        let err = plain
            .attach_lora(&unknown, &SharedRng::seeded(7))
            .unwrap_err();
        assert!(err.to_string().contains("no_such_module"), "{err}");
        assert!(
            plain.lora_params().is_empty(),
            "{}: a refused config attaches nothing",
            case.name
        );
    }
}

/// A copy of a model folder's `config.json` and `model.safetensors` in a temporary directory.
fn copy_model(dir: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

fn load_error(dir: &Path) -> String {
    match T5Model::from_folder(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{}: loading a broken folder succeeded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn t5_broken_folders_give_clear_errors() {
    for case in t5_cases() {
        let n = &case.name;
        let config = read_json(&case.dir.join("config.json"));

        let tmp = copy_model(&case.dir);
        std::fs::remove_file(tmp.path().join("config.json")).unwrap();
        let err = load_error(tmp.path());
        assert!(err.contains("config.json"), "{n} missing config: {err}");

        let tmp = copy_model(&case.dir);
        let mut cfg = config.clone();
        cfg.as_object_mut().unwrap().remove("d_model");
        std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
        let err = load_error(tmp.path());
        assert!(
            err.contains("config.json") && err.contains("d_model"),
            "{n} no d_model: {err}"
        );

        let tmp = copy_model(&case.dir);
        std::fs::write(tmp.path().join("config.json"), "{ \"d_model\": ").unwrap();
        let err = load_error(tmp.path());
        assert!(err.contains("config.json"), "{n} malformed config: {err}");

        // d_ff one larger than the checkpoint's: the first feed-forward weight is named with
        // both shapes.
        let tmp = copy_model(&case.dir);
        let d_ff = config["d_ff"].as_u64().unwrap();
        let d_model = config["d_model"].as_u64().unwrap();
        let gated = config["feed_forward_proj"]
            .as_str()
            .is_some_and(|f| f.starts_with("gated-"));
        let mut cfg = config.clone();
        cfg["d_ff"] = Value::from(d_ff + 1);
        std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
        let err = load_error(tmp.path());
        let wi = if gated { "wi_0" } else { "wi" };
        assert!(
            err.contains(&format!(
                "encoder.block.0.layer.1.DenseReluDense.{wi}.weight"
            )) && err.contains(&format!("[{d_ff}, {d_model}]"))
                && err.contains(&format!("[{}, {d_model}]", d_ff + 1)),
            "{n} shape mismatch: {err}"
        );

        let tmp = copy_model(&case.dir);
        let path = tmp.path().join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_error(tmp.path());
        assert!(
            err.contains("model.safetensors"),
            "{n} truncated weights: {err}"
        );
    }
}

/// Half precision: linear weights in bf16, while norms, scores, the residual stream, `wo` and
/// the logits stay in f32, so nothing overflows and the loss stays near the f32 one.
#[test]
fn t5_bf16_weights_stay_finite_and_close() {
    for case in t5_cases() {
        let batch = case.batch();
        let half = case.model(DType::BF16);
        let full = case.model(DType::F32);
        let logits = half.forward(&batch, false).unwrap();
        assert_eq!(logits.dtype(), DType::F32, "{}: logits dtype", case.name);
        let loss = scalar(&half.loss(&batch, false).unwrap());
        let reference = scalar(&full.loss(&batch, false).unwrap());
        assert!(loss.is_finite(), "{}: bf16 loss {loss}", case.name);
        // bf16 keeps 8 bits of mantissa; rounding the weights of the sharp t5_relu moves its
        // loss by ~6%, t5_gated's by far less.
        assert!(
            (loss - reference).abs() <= 0.1 * reference.abs(),
            "{}: bf16 loss {loss} vs f32 {reference}",
            case.name
        );
    }
}

/// Decoding token by token through the key/value cache gives the teacher-forced hidden states.
#[test]
fn t5_cached_decoding_matches_the_full_decoder() {
    for case in t5_cases() {
        let model = case.model(DType::F32);
        let batch = case.batch();
        let dec_ids = case.get("decoder_input_ids");
        let encoder_out = model
            .encode(&batch.input_ids, &batch.attention_mask, false)
            .unwrap();
        let full = model
            .decode(dec_ids, &encoder_out, &batch.attention_mask, false)
            .unwrap();

        let mut state = model
            .start_decoding(&batch.input_ids, &batch.attention_mask)
            .unwrap();
        let len = dec_ids.dim(1).unwrap();
        // One token, then the rest in two chunks: the cache must handle any step size.
        let cuts = [0, 1, len / 2, len];
        let mut steps = Vec::new();
        for w in cuts.windows(2) {
            assert_eq!(state.position(), w[0]);
            let ids = dec_ids.narrow(1, w[0], w[1] - w[0]).unwrap();
            steps.push(model.decode_step(&mut state, &ids).unwrap());
        }
        let cached = Tensor::cat(&steps, 1).unwrap();
        let diff = max_abs_diff(&cached, &full);
        let bound = case.tol.logits_atol + case.tol.logits_rtol * max_abs(&full);
        assert!(
            diff <= bound,
            "{}: cached decoding differs by {diff:e}",
            case.name
        );
    }
}

/// With an adapter on every linear layer (B non-zero) and LoRA dropout on, every LoRA
/// tensor receives a non-zero gradient from the loss.
#[test]
fn t5_every_lora_tensor_gets_a_gradient() {
    for case in t5_cases() {
        let mut model = case.model(DType::F32);
        let targets: Vec<String> = ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo", "lm_head"]
            .iter()
            .filter(|t| {
                model
                    .lora_layers()
                    .iter()
                    .any(|l| l.name().ends_with(&format!(".{t}")) || l.name() == **t)
            })
            .map(|t| t.to_string())
            .collect();
        let cfg = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.1,
            targets,
        };
        let rng = SharedRng::seeded(11);
        model.attach_lora(&cfg, &rng).unwrap();
        for layer in model.lora_layers_mut() {
            let Some(ad) = layer.adapter().cloned() else {
                continue;
            };
            let values = rng.uniform(ad.b.elem_count(), 0.02);
            let b = Tensor::from_vec(values, ad.b.dims(), &Device::Cpu).unwrap();
            ad.b.set(&b).unwrap();
        }
        let all = model.lora_layers().len();
        let params = model.lora_params();
        assert_eq!(
            params.len(),
            2 * all,
            "{}: an adapter on every linear layer",
            case.name
        );
        let grads = model.loss(&case.batch(), true).unwrap().backward().unwrap();
        for p in &params {
            let g = grads.get(p.var.as_tensor());
            let norm = g.map_or(0.0, max_abs);
            assert!(norm > 0.0, "{}: no gradient for {}", case.name, p.name);
        }
    }
}

/// Bad tensors given to a loaded model are errors that name the input.
#[test]
fn t5_bad_inputs_name_the_tensor() {
    for case in t5_cases() {
        let model = case.model(DType::F32);
        let batch = case.batch();
        let vocab = read_json(&case.dir.join("config.json"))["vocab_size"]
            .as_i64()
            .unwrap();
        let err = |b: &Seq2SeqBatch| model.loss(b, false).unwrap_err().to_string();

        let mut bad = batch.clone();
        bad.input_ids = batch
            .input_ids
            .ones_like()
            .unwrap()
            .affine(0.0, vocab as f64)
            .unwrap();
        assert!(
            err(&bad).contains("input_ids"),
            "{}: {}",
            case.name,
            err(&bad)
        );

        let mut bad = batch.clone();
        bad.attention_mask = (batch.attention_mask.clone() * 2.0).unwrap();
        assert!(
            err(&bad).contains("attention_mask"),
            "{}: {}",
            case.name,
            err(&bad)
        );

        let mut bad = batch.clone();
        bad.labels = batch.labels.narrow(0, 0, 1).unwrap();
        assert!(err(&bad).contains("labels"), "{}: {}", case.name, err(&bad));

        let mut bad = batch.clone();
        bad.labels = batch
            .labels
            .ones_like()
            .unwrap()
            .affine(0.0, vocab as f64)
            .unwrap();
        assert!(err(&bad).contains("labels"), "{}: {}", case.name, err(&bad));

        let mut bad = batch.clone();
        bad.labels = batch
            .labels
            .ones_like()
            .unwrap()
            .affine(0.0, -100.0)
            .unwrap();
        assert!(err(&bad).contains("labels"), "{}: {}", case.name, err(&bad));
    }
}
