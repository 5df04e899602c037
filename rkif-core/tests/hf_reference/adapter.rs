//! PEFT adapter files against the fixtures' `lora_adapter/` folders (written by
//! `PeftModel.save_pretrained`): key naming, loading, saving, round trip and broken files.

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rkif_core::model::adapter::{
    adapter_file_key, file_key_from_runtime_name, load_adapter, save_adapter, AdapterConfig,
    TaskType, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE,
};
use rkif_core::model::{LoraFactor, LoraLinear, LoraModel};
use rkif_core::Error;
use serde_json::Value;

use crate::lora_fixture::{self, bit_equal, LoraFixture};

/// A model made only of frozen linear layers, named and sized after a fixture's LoRA modules.
struct TinyModel {
    layers: Vec<LoraLinear>,
}

impl LoraModel for TinyModel {
    fn lora_layers(&self) -> Vec<&LoraLinear> {
        self.layers.iter().collect()
    }
    fn lora_layers_mut(&mut self) -> Vec<&mut LoraLinear> {
        self.layers.iter_mut().collect()
    }
}

/// `base_model.model.<module>.lora_A.default.weight` -> `<module>`, for A factors only.
fn module_of_a(runtime_name: &str) -> Option<String> {
    runtime_name
        .strip_prefix("base_model.model.")?
        .strip_suffix(".lora_A.default.weight")
        .map(str::to_string)
}

/// One layer per adapted module of `fx`, without adapter: weight zeros `[out, in]` with `in`
/// from `lora_A` `[r, in]` and `out` from `lora_B` `[out, r]`.
fn tiny_model(fx: &LoraFixture) -> TinyModel {
    let layers = fx
        .runtime_names()
        .iter()
        .filter_map(|n| module_of_a(n))
        .map(|module| {
            let a = fx.tensor(&format!(
                "lora.init.base_model.model.{module}.lora_A.default.weight"
            ));
            let b = fx.tensor(&format!(
                "lora.init.base_model.model.{module}.lora_B.default.weight"
            ));
            let (in_dim, out_dim) = (a.dims()[1], b.dims()[0]);
            let w = Tensor::zeros((out_dim, in_dim), DType::F32, &Device::Cpu).unwrap();
            LoraLinear::frozen(module, w, None)
        })
        .collect();
    TinyModel { layers }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The key set and `__metadata__` of a safetensors header, read straight from the bytes.
fn header(path: &Path) -> (BTreeSet<String>, Value) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let obj = h.as_object().unwrap();
    let keys = obj
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    (
        keys,
        obj.get("__metadata__").cloned().unwrap_or(Value::Null),
    )
}

fn copy_adapter(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// `keys` sorted: the fixture lists the file's keys in the file's (sorted) order, the runtime
/// names in module order.
fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

#[test]
fn file_keys_follow_peft_naming() {
    for fx in lora_fixture::all() {
        let from_runtime: Vec<String> = fx
            .runtime_names()
            .iter()
            .map(|n| file_key_from_runtime_name(n).expect("a LoRA runtime name"))
            .collect();
        assert_eq!(
            sorted(from_runtime.clone()),
            sorted(fx.adapter_keys()),
            "{}",
            fx.model
        );

        // The model's own module names give the same keys, in module order.
        let model = tiny_model(&fx);
        let from_modules: Vec<String> = model
            .layers
            .iter()
            .flat_map(|l| [LoraFactor::A, LoraFactor::B].map(|f| adapter_file_key(l.name(), f)))
            .collect();
        assert_eq!(from_modules, from_runtime, "{}", fx.model);
    }
}

#[test]
fn loading_a_peft_adapter_gives_the_stored_tensors() {
    for fx in lora_fixture::all() {
        let mut model = tiny_model(&fx);
        let config = load_adapter(&mut model, &fx.adapter_dir()).expect("load");
        let lora = &fx.json["lora"]["lora_config"];
        assert_eq!(
            config.rank as u64,
            lora["r"].as_u64().unwrap(),
            "{}",
            fx.model
        );
        assert_eq!(
            config.alpha,
            lora["lora_alpha"].as_f64().unwrap(),
            "{}",
            fx.model
        );
        let targets: BTreeSet<&str> = lora["target_modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let got: BTreeSet<&str> = config.target_modules.iter().map(String::as_str).collect();
        assert_eq!(got, targets, "{}", fx.model);

        let params = model.lora_params();
        assert_eq!(
            params.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            fx.runtime_names(),
            "{}",
            fx.model
        );
        for p in &params {
            let want = fx.tensor(&format!("lora.init.{}", p.name));
            assert!(
                bit_equal(p.var.as_tensor(), &want),
                "{}: `{}`",
                fx.model,
                p.name
            );
        }
        let scale = lora["scaling"].as_f64().unwrap();
        for l in &model.layers {
            assert_eq!(
                l.adapter().unwrap().scale,
                scale,
                "{}: `{}`",
                fx.model,
                l.name()
            );
        }
    }
}

#[test]
fn saved_adapter_matches_peft_layout_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    for fx in lora_fixture::all() {
        let mut model = tiny_model(&fx);
        let config = load_adapter(&mut model, &fx.adapter_dir()).expect("load");
        let out = tmp.path().join(&fx.model);
        save_adapter(&model, &out, &config).expect("save");

        // Same key set and `{"format": "pt"}` metadata as PEFT's file.
        let (ours, our_meta) = header(&out.join(ADAPTER_WEIGHTS_FILE));
        let (theirs, their_meta) = header(&fx.adapter_dir().join(ADAPTER_WEIGHTS_FILE));
        assert_eq!(ours, theirs, "{}", fx.model);
        assert_eq!(our_meta, their_meta, "{}", fx.model);
        assert_eq!(our_meta, serde_json::json!({"format": "pt"}));

        // Same config fields and values (target_modules is a set in PEFT).
        let ours = read_json(&out.join(ADAPTER_CONFIG_FILE));
        let theirs = read_json(&fx.adapter_dir().join(ADAPTER_CONFIG_FILE));
        let (ours, theirs) = (ours.as_object().unwrap(), theirs.as_object().unwrap());
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{}",
            fx.model
        );
        for (k, want) in theirs {
            let got = &ours[k];
            if k == "target_modules" {
                let set = |v: &Value| -> BTreeSet<String> {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                };
                assert_eq!(set(got), set(want), "{}: {k}", fx.model);
            } else {
                assert_eq!(got, want, "{}: {k}", fx.model);
            }
        }

        // Bit-exact round trip into a fresh model.
        let mut again = tiny_model(&fx);
        let config_again = load_adapter(&mut again, &out).expect("reload");
        assert_eq!(config_again, config);
        for (a, b) in model.lora_params().iter().zip(again.lora_params()) {
            assert_eq!(a.name, b.name);
            assert!(
                bit_equal(a.var.as_tensor(), b.var.as_tensor()),
                "{}: `{}`",
                fx.model,
                a.name
            );
        }
    }
}

#[test]
fn loading_into_an_adapted_model_keeps_its_vars() {
    let fx = lora_fixture::all().remove(0);
    let mut model = tiny_model(&fx);
    load_adapter(&mut model, &fx.adapter_dir()).expect("load");
    let before = model.lora_params();
    for p in &before {
        p.var.set(&p.var.as_tensor().zeros_like().unwrap()).unwrap();
    }
    load_adapter(&mut model, &fx.adapter_dir()).expect("reload");
    // The Vars an optimiser would hold now carry the file's values again.
    for p in &before {
        let want = fx.tensor(&format!("lora.init.{}", p.name));
        assert!(bit_equal(p.var.as_tensor(), &want), "`{}`", p.name);
    }
}

fn expect_tensor_error(result: rkif_core::Result<AdapterConfig>, key: &str, also: &[&str]) {
    match result {
        Err(Error::Tensor { name, what }) => {
            assert_eq!(name, key, "{what}");
            for s in also {
                assert!(what.contains(s), "`{what}` should mention {s}");
            }
        }
        other => panic!("expected a tensor error on `{key}`, got {other:?}"),
    }
}

#[test]
fn mismatched_models_name_the_tensor() {
    let fx = lora_fixture::all().remove(0);
    let dir = fx.adapter_dir();

    // The model lacks a module the file has: unknown key.
    let mut model = tiny_model(&fx);
    let dropped = model.layers.remove(0);
    expect_tensor_error(
        load_adapter(&mut model, &dir),
        &adapter_file_key(dropped.name(), LoraFactor::A),
        &["no LoRA layer"],
    );

    // The model has a targeted module the file lacks: missing key. (Its last name component
    // is a target's, so the config targets it.)
    let mut model = tiny_model(&fx);
    let last = model.layers[0]
        .name()
        .rsplit('.')
        .next()
        .unwrap()
        .to_string();
    let extra = format!("extra.block.{last}");
    let w = model.layers[0].weight().clone();
    model.layers.push(LoraLinear::frozen(&extra, w, None));
    expect_tensor_error(
        load_adapter(&mut model, &dir),
        &adapter_file_key(&extra, LoraFactor::A),
        &["missing"],
    );
    // The error came at the last layer, and still no layer was touched.
    assert!(model.layers.iter().all(|l| l.adapter().is_none()));

    // A layer of another size: shape mismatch naming both shapes.
    let mut model = tiny_model(&fx);
    let (out_dim, in_dim) = model.layers[0].weight().dims2().unwrap();
    let name = model.layers[0].name().to_string();
    let w = Tensor::zeros((out_dim, in_dim + 1), DType::F32, &Device::Cpu).unwrap();
    model.layers[0] = LoraLinear::frozen(&name, w, None);
    let rank = fx.json["lora"]["lora_config"]["r"].as_u64().unwrap();
    expect_tensor_error(
        load_adapter(&mut model, &dir),
        &adapter_file_key(&name, LoraFactor::A),
        &[
            &format!("[{rank}, {in_dim}]"),
            &format!("[{rank}, {}]", in_dim + 1),
        ],
    );
}

#[test]
fn broken_files_give_clear_errors() {
    let fx = lora_fixture::all().remove(0);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");

    // Truncated tensors.
    copy_adapter(&fx.adapter_dir(), &dir);
    let weights = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 100]).unwrap();
    match load_adapter(&mut tiny_model(&fx), &dir) {
        Err(Error::Format { path, what }) => {
            assert_eq!(path, weights);
            assert!(what.contains("truncated"), "{what}");
        }
        other => panic!("expected a format error, got {other:?}"),
    }

    // Config: bad value, missing field, not JSON. Each error names the file and the field.
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let original = read_json(&fx.adapter_dir().join(ADAPTER_CONFIG_FILE));
    // (field, a value that breaks it; null stands for a missing field)
    let cases = [
        ("r", Value::from("eight")),
        ("peft_type", Value::Null),
        ("task_type", Value::from("TOKEN_CLS")),
    ];
    copy_adapter(&fx.adapter_dir(), &dir);
    for (field, bad) in &cases {
        let mut v = original.clone();
        v[*field] = bad.clone();
        std::fs::write(&config_path, serde_json::to_string(&v).unwrap()).unwrap();
        match load_adapter(&mut tiny_model(&fx), &dir) {
            Err(Error::Format { path, what }) => {
                assert_eq!(path, config_path);
                assert!(what.contains(&format!("`{field}`")), "{what}");
            }
            other => panic!("expected a format error on `{field}`, got {other:?}"),
        }
    }
    std::fs::write(&config_path, "{\"r\": 8,").unwrap();
    assert!(matches!(
        load_adapter(&mut tiny_model(&fx), &dir),
        Err(Error::Format { path, .. }) if path == config_path
    ));

    // A model saved for a decoder keeps its task type.
    let mut model = tiny_model(&fx);
    let cfg = load_adapter(&mut model, &fx.adapter_dir()).unwrap();
    let causal = AdapterConfig {
        task_type: TaskType::CausalLm,
        ..cfg
    };
    save_adapter(&model, &dir, &causal).unwrap();
    assert_eq!(read_json(&config_path)["task_type"], "CAUSAL_LM");
}
