//! The LoRA part of each model fixture (`<model>/fixtures.{json,safetensors}` and
//! `<model>/lora_adapter/`), shared by the optimiser and adapter tests.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::common::fixtures_dir;

/// One model's fixture: its folder, `fixtures.json` and the tensors of `fixtures.safetensors`.
pub struct LoraFixture {
    pub model: String,
    pub dir: PathBuf,
    pub json: Value,
    tensors: HashMap<String, Tensor>,
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every model listed in `models_index.json`, in the index's order.
pub fn all() -> Vec<LoraFixture> {
    let root = fixtures_dir();
    let index = read_json(&root.join("models_index.json"));
    let models = index["models"]
        .as_object()
        .expect("models_index.json: `models` object");
    assert!(!models.is_empty(), "models_index.json lists no model");
    models
        .iter()
        .map(|(model, entry)| {
            let dir = root.join(entry["dir"].as_str().expect("models_index.json: `dir`"));
            let json = read_json(&dir.join("fixtures.json"));
            let st = dir.join("fixtures.safetensors");
            let tensors = candle_core::safetensors::load(&st, &Device::Cpu)
                .unwrap_or_else(|e| panic!("{}: {e}", st.display()));
            LoraFixture {
                model: model.clone(),
                dir,
                json,
                tensors,
            }
        })
        .collect()
}

impl LoraFixture {
    /// Tensor `key`, checked against the shape `fixtures.json` `keys` records for it.
    pub fn tensor(&self, key: &str) -> Tensor {
        let t = self
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor `{key}`", self.model))
            .clone();
        let shape: Vec<usize> = self.json["keys"][key]["shape"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: fixtures.json has no shape for `{key}`", self.model))
            .iter()
            .map(|d| d.as_u64().expect("shape entry") as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{}: `{key}`", self.model);
        t
    }

    /// The `meaning` fixtures.json records for `key`.
    pub fn meaning(&self, key: &str) -> &str {
        self.json["keys"][key]["meaning"].as_str().unwrap_or("")
    }

    fn string_list(&self, field: &str) -> Vec<String> {
        self.json["lora"][field]
            .as_array()
            .unwrap_or_else(|| panic!("{}: fixtures.json lacks lora.{field}", self.model))
            .iter()
            .map(|s| s.as_str().expect("string").to_string())
            .collect()
    }

    /// `lora.peft_runtime_param_names`, in PyTorch's parameter order.
    pub fn runtime_names(&self) -> Vec<String> {
        self.string_list("peft_runtime_param_names")
    }

    /// `lora.adapter_safetensors_keys`.
    pub fn adapter_keys(&self) -> Vec<String> {
        self.string_list("adapter_safetensors_keys")
    }

    /// The PEFT adapter folder written by `save_pretrained`.
    pub fn adapter_dir(&self) -> PathBuf {
        match self.json["lora"]["adapter_dir"].as_str() {
            Some(rel) => fixtures_dir().join(rel),
            None => self.dir.join("lora_adapter"),
        }
    }
}

/// `a` and `b` hold the same f32 values, bit for bit.
pub fn bit_equal(a: &Tensor, b: &Tensor) -> bool {
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("f32 tensor")
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    a.dims() == b.dims() && bits(a) == bits(b)
}
