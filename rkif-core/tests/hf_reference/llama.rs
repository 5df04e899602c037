//! The LLaMA backbone against Hugging Face / PEFT: logits, losses, hidden states, greedy
//! generation (alone and left-padded), and the LoRA forward and gradients. Every size, name
//! and length comes from `models_index.json`, `fixtures.json` and `config.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use rkif_core::model::llama::Llama;
use rkif_core::model::{LoraConfig, LoraModel, SharedRng};
use rkif_core::Result;

use super::common::fixtures_dir;

/// Logits and hidden states: `|ours - ref| <= ATOL + RTOL * max|ref|` (fixture README).
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;
/// Losses: relative 1e-5 (fixture README).
const LOSS_RTOL: f32 = 1e-5;
/// LoRA gradients: max-relative 1e-4 (fixture README).
const GRAD_MAX_REL: f32 = 1e-4;

/// One LLaMA fixture folder with its reference tensors.
struct Fixture {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
    json: serde_json::Value,
    /// This model's entry in `models_index.json`.
    index: serde_json::Value,
}

impl Fixture {
    fn get(&self, key: &str) -> Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no fixture tensor `{key}`", self.dir.display()))
            .clone()
    }

    fn input_ids(&self) -> Tensor {
        self.get("input_ids")
    }

    fn mask(&self) -> Tensor {
        self.get("attention_mask")
    }

    /// The `[b, t]` mask as booleans.
    fn mask_rows(&self) -> Vec<Vec<bool>> {
        self.mask()
            .to_dtype(DType::U32)
            .and_then(|m| m.to_vec2::<u32>())
            .expect("attention_mask")
            .into_iter()
            .map(|r| r.into_iter().map(|v| v != 0).collect())
            .collect()
    }

    fn model(&self, lora: Option<&LoraConfig>) -> Result<Llama> {
        Llama::from_folder(
            &self.dir,
            lora,
            &SharedRng::seeded(0),
            &Device::Cpu,
            DType::F32,
        )
    }
}

/// Every model in `models_index.json` whose `config.json` says `model_type: llama`.
fn llama_fixtures() -> Vec<Fixture> {
    let root = fixtures_dir();
    let index: serde_json::Value = read_json(&root.join("models_index.json"));
    let models = index["models"]
        .as_object()
        .expect("models_index.json: `models` object");
    let mut out = Vec::new();
    for (name, entry) in models {
        let dir = root.join(entry["dir"].as_str().unwrap_or(name));
        let config = read_json(&dir.join("config.json"));
        if config["model_type"] != "llama" {
            continue;
        }
        let tensors =
            candle_core::safetensors::load(dir.join("fixtures.safetensors"), &Device::Cpu)
                .expect("fixtures.safetensors");
        let json = read_json(&dir.join("fixtures.json"));
        out.push(Fixture {
            dir,
            tensors,
            json,
            index: entry.clone(),
        });
    }
    assert!(!out.is_empty(), "no llama model in {}", root.display());
    out
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of `x` (`[b, t, ...]`) at real (unmasked) positions, flattened to `[n, ...]`.
fn valid_rows(x: &Tensor, mask: &[Vec<bool>]) -> Tensor {
    let t = mask[0].len();
    let idx: Vec<u32> = mask
        .iter()
        .enumerate()
        .flat_map(|(b, row)| {
            row.iter()
                .enumerate()
                .filter(|(_, &m)| m)
                .map(move |(i, _)| (b * t + i) as u32)
        })
        .collect();
    let n = idx.len();
    let dims = x.dims();
    let rest: usize = dims[2..].iter().product();
    let idx = Tensor::from_vec(idx, n, x.device()).unwrap();
    x.reshape((dims[0] * dims[1], rest))
        .and_then(|f| f.index_select(&idx, 0))
        .unwrap()
}

fn max_abs(x: &Tensor) -> f32 {
    x.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Assert `ours` matches `reference` within `ATOL + RTOL * max|reference|`.
fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let diff = max_abs(&(ours - reference).unwrap());
    let tol = ATOL + RTOL * max_abs(reference);
    assert!(diff <= tol, "{what}: max |diff| {diff} > {tol}");
}

fn scalar(t: &Tensor) -> f32 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

fn assert_loss(what: &str, ours: &Tensor, reference: &Tensor) {
    let (a, b) = (scalar(ours), scalar(reference));
    assert!(
        (a - b).abs() <= LOSS_RTOL * b.abs(),
        "{what}: loss {a} vs reference {b}"
    );
}

/// The new tokens of a generation row: everything after `prompt_len`, up to the first `-1`
/// fill and including the first EOS.
fn expected_new_tokens(row: &[i64], prompt_len: usize, eos: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    for &tok in &row[prompt_len..] {
        if tok < 0 {
            break;
        }
        out.push(tok as u32);
        if eos.contains(&(tok as u32)) {
            break;
        }
    }
    out
}

#[test]
fn base_logits_loss_and_hidden_states_match_hf() -> Result<()> {
    for fx in llama_fixtures() {
        let model = fx.model(None)?;
        let (ids, mask) = (fx.input_ids(), fx.mask());
        let rows = fx.mask_rows();
        let logits = model.logits(&ids, Some(&mask), false)?;
        assert_close(
            "base.logits",
            &valid_rows(&logits, &rows),
            &valid_rows(&fx.get("base.logits"), &rows),
        );
        let loss = model.loss(&ids, Some(&mask), &fx.get("labels"), false)?;
        assert_loss("base.loss", &loss, &fx.get("base.loss"));
        let indexed = fx.index["base_loss"]
            .as_f64()
            .expect("models_index base_loss") as f32;
        assert_loss(
            "models_index base_loss",
            &loss,
            &Tensor::new(indexed, &Device::Cpu)?,
        );

        let states = model.all_hidden_states(&ids, Some(&mask))?;
        let prefix = "base.hidden_states.";
        let keys: Vec<&String> = fx
            .tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .collect();
        assert_eq!(keys.len(), states.len(), "number of hidden states");
        for key in keys {
            let i: usize = key[prefix.len()..].parse().expect("hidden state index");
            assert_close(
                key,
                &valid_rows(&states[i], &rows),
                &valid_rows(&fx.get(key), &rows),
            );
        }
    }
    Ok(())
}

#[test]
fn greedy_generation_matches_hf_alone_and_left_padded() -> Result<()> {
    for fx in llama_fixtures() {
        let model = fx.model(None)?;
        let eos = model.config().eos_token_ids.clone();
        let ids = fx.input_ids();
        let t = ids.dim(1)?;
        let rows = fx.mask_rows();
        let per_example = fx.get("gen.per_example").to_vec2::<i64>()?;
        let batched = fx.get("gen.batched").to_vec2::<i64>()?;
        let max_new = batched[0].len() - t;

        let ours = model.generate(&ids, Some(&fx.mask()), max_new)?;
        for (b, row) in batched.iter().enumerate() {
            assert_eq!(
                ours[b],
                expected_new_tokens(row, t, &eos),
                "batched row {b}"
            );
        }

        for (b, mask_row) in rows.iter().enumerate() {
            let start = mask_row.iter().position(|&m| m).expect("a real token");
            let prompt = ids.i((b..b + 1, start..))?;
            let ours = model.generate(&prompt, None, max_new)?;
            let expected = expected_new_tokens(&per_example[b], t - start, &eos);
            assert_eq!(ours[0], expected, "example {b} alone");
        }
        // The stored token list in fixtures.json agrees with the tensor we compared to.
        let listed = &fx.json["generation_per_example_new_tokens"];
        if let Some(lists) = listed.as_array() {
            for (b, list) in lists.iter().enumerate() {
                let listed: Vec<u32> = serde_json::from_value(list.clone()).expect("token list");
                let start = rows[b].iter().position(|&m| m).unwrap_or(0);
                let expected = expected_new_tokens(&per_example[b], t - start, &eos);
                assert_eq!(
                    listed[..expected.len()],
                    expected[..],
                    "fixtures.json row {b}"
                );
            }
        }
    }
    Ok(())
}

/// Build the model with the adapter in `<model>/lora_adapter`: config from
/// `adapter_config.json`, factors from `adapter_model.safetensors` by key.
fn model_with_fixture_adapter(fx: &Fixture) -> Result<Llama> {
    let adapter_dir = fx.dir.join("lora_adapter");
    let cfg = read_json(&adapter_dir.join("adapter_config.json"));
    let rank = cfg["r"].as_u64().expect("adapter_config r") as usize;
    let alpha = cfg["lora_alpha"]
        .as_f64()
        .expect("adapter_config lora_alpha");
    let targets: Vec<String> =
        serde_json::from_value(cfg["target_modules"].clone()).expect("target_modules");
    let lora = LoraConfig {
        rank,
        alpha,
        dropout: cfg["lora_dropout"].as_f64().unwrap_or(0.0) as f32,
        targets,
    };
    let mut model = fx.model(Some(&lora))?;
    let file = candle_core::safetensors::load(
        adapter_dir.join("adapter_model.safetensors"),
        &Device::Cpu,
    )?;
    let mut factors: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    for (key, t) in file {
        let name = key.strip_prefix("base_model.model.").expect("PEFT prefix");
        if let Some(module) = name.strip_suffix(".lora_A.weight") {
            factors.entry(module.to_string()).or_default().0 = Some(t);
        } else if let Some(module) = name.strip_suffix(".lora_B.weight") {
            factors.entry(module.to_string()).or_default().1 = Some(t);
        } else {
            panic!("unexpected adapter key {key}");
        }
    }
    let mut loaded = 0;
    for layer in model.lora_layers_mut() {
        if let Some((Some(a), Some(b))) = factors.get(layer.name()) {
            layer.set_adapter(a.clone(), b.clone(), lora.scale(), lora.dropout)?;
            loaded += 1;
        }
    }
    assert_eq!(
        loaded,
        factors.len(),
        "every adapter module found in the model"
    );
    Ok(model)
}

#[test]
fn lora_logits_loss_and_gradients_match_peft() -> Result<()> {
    for fx in llama_fixtures() {
        let model = model_with_fixture_adapter(&fx)?;
        let (ids, mask) = (fx.input_ids(), fx.mask());
        let rows = fx.mask_rows();
        let logits = model.logits(&ids, Some(&mask), false)?;
        assert_close(
            "lora.logits",
            &valid_rows(&logits, &rows),
            &valid_rows(&fx.get("lora.logits"), &rows),
        );
        let loss = model.loss(&ids, Some(&mask), &fx.get("labels"), true)?;
        assert_loss("lora.loss", &loss, &fx.get("lora.loss"));
        let indexed = fx.index["lora_loss"]
            .as_f64()
            .expect("models_index lora_loss") as f32;
        assert_loss(
            "models_index lora_loss",
            &loss,
            &Tensor::new(indexed, &Device::Cpu)?,
        );

        let params = model.lora_params();
        let listed: Vec<String> =
            serde_json::from_value(fx.json["lora"]["peft_runtime_param_names"].clone())
                .expect("lora.peft_runtime_param_names");
        let ours: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
        assert_eq!(
            ours, listed,
            "LoRA parameters in PEFT named_parameters order"
        );

        let grads = loss.backward()?;
        let prefix = "lora.grad.";
        let grad_keys = fx
            .tensors
            .keys()
            .filter(|k| k.starts_with(prefix) && !k.ends_with("total_norm"))
            .count();
        assert_eq!(
            grad_keys,
            params.len(),
            "one reference gradient per parameter"
        );
        for p in &params {
            let reference = fx.get(&format!("{prefix}{}", p.name));
            let g = grads.get(p.var.as_tensor()).expect("gradient");
            let rel = max_abs(&(g - &reference)?) / max_abs(&reference);
            assert!(rel <= GRAD_MAX_REL, "{}: max-relative diff {rel}", p.name);
        }
    }
    Ok(())
}

#[test]
fn every_lora_tensor_on_every_module_gets_a_gradient() -> Result<()> {
    for fx in llama_fixtures() {
        let targets = [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ];
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.1,
            targets: targets.iter().map(|s| s.to_string()).collect(),
        };
        let model = fx.model(Some(&lora))?;
        // A fresh B is zero, which would zero every A gradient: give B small seeded values.
        let rng = SharedRng::seeded(7);
        for p in model.lora_params() {
            if p.factor == rkif_core::model::LoraFactor::B {
                let t = p.var.as_tensor();
                let vals = rng.uniform(t.elem_count(), 0.05);
                p.var.set(&Tensor::from_vec(vals, t.shape(), t.device())?)?;
            }
        }
        let params = model.lora_params();
        let layers = fx.json["config"]["num_hidden_layers"].as_u64().unwrap_or(0) as usize;
        assert_eq!(params.len(), 2 * targets.len() * layers);
        let loss = model.loss(&fx.input_ids(), Some(&fx.mask()), &fx.get("labels"), true)?;
        let grads = loss.backward()?;
        for p in &params {
            let g = grads
                .get(p.var.as_tensor())
                .unwrap_or_else(|| panic!("{}: no gradient", p.name));
            assert!(max_abs(g) > 0.0, "{}: zero gradient", p.name);
        }
    }
    Ok(())
}

/// A copy of the fixture model folder (config + weights) that a test may break.
fn copy_model(fx: &Fixture) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fx.dir.join(f), tmp.path().join(f)).expect("copy fixture");
    }
    tmp
}

fn load_err(dir: &Path, lora: Option<&LoraConfig>) -> String {
    match Llama::from_folder(dir, lora, &SharedRng::seeded(0), &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{}: loading should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_give_errors_that_name_the_problem() {
    for fx in llama_fixtures() {
        // Missing config.json.
        let tmp = copy_model(&fx);
        std::fs::remove_file(tmp.path().join("config.json")).unwrap();
        let err = load_err(tmp.path(), None);
        assert!(err.contains("config.json"), "{err}");

        // A config without a required field, and one that is not JSON.
        let tmp = copy_model(&fx);
        let mut cfg = read_json(&fx.dir.join("config.json"));
        cfg.as_object_mut().unwrap().remove("hidden_size");
        std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
        let err = load_err(tmp.path(), None);
        assert!(
            err.contains("config.json") && err.contains("hidden_size"),
            "{err}"
        );
        std::fs::write(tmp.path().join("config.json"), "{ not json").unwrap();
        let err = load_err(tmp.path(), None);
        assert!(err.contains("config.json"), "{err}");

        // A config that disagrees with the weights: the error names a tensor and both shapes.
        let tmp = copy_model(&fx);
        let mut cfg = read_json(&fx.dir.join("config.json"));
        let inter = cfg["intermediate_size"].as_u64().unwrap();
        cfg["intermediate_size"] = serde_json::json!(inter + 2);
        std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
        let err = load_err(tmp.path(), None);
        assert!(err.contains("mlp.gate_proj.weight"), "{err}");
        assert!(err.contains(&(inter + 2).to_string()), "{err}");

        // A LoRA target that matches no module.
        let tmp = copy_model(&fx);
        let lora = LoraConfig {
            targets: vec!["q_proj".into(), "qq_proj".into()],
            ..LoraConfig::default()
        };
        let err = load_err(tmp.path(), Some(&lora));
        assert!(err.contains("qq_proj"), "{err}");

        // Token ids outside the vocabulary, and labels that do not fit the batch.
        let model = fx.model(None).expect("fixture model");
        let vocab = model.config().vocab_size as u32;
        let ids = Tensor::new(&[[1u32, vocab]], &Device::Cpu).unwrap();
        let err = model.logits(&ids, None, false).unwrap_err().to_string();
        assert!(
            err.contains("input_ids") && err.contains(&vocab.to_string()),
            "{err}"
        );
        let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[[-100i64, 5]], &Device::Cpu).unwrap();
        let err = model
            .loss(&ids, None, &labels, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("labels"), "{err}");

        // A truncated safetensors file.
        let tmp = copy_model(&fx);
        let path = tmp.path().join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_err(tmp.path(), None);
        assert!(err.contains("model.safetensors"), "{err}");
    }
}
