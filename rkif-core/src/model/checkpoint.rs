//! Reading checkpoint tensors by Hugging Face name, with shape checks that name the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// The tensors of a checkpoint (one safetensors file or a sharded set), keyed by name.
#[derive(Debug)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    /// Where they came from, for error messages.
    source: PathBuf,
}

impl Weights {
    /// Load `model.safetensors`, or the shards listed in `model.safetensors.index.json`, from a
    /// Hugging Face model folder, converting every floating tensor to `dtype` on `device`.
    pub fn from_folder(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shard_files(&index)?
        } else {
            return Err(Error::Model(format!(
                "{}: no model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut tensors = HashMap::new();
        for file in &files {
            let loaded = candle_core::safetensors::load(file, device).map_err(|e| {
                Error::format(file, format!("not a readable safetensors file: {e}"))
            })?;
            for (name, t) in loaded {
                let t = if t.dtype().is_float() {
                    t.to_dtype(dtype)?
                } else {
                    t
                };
                tensors.insert(name, t);
            }
        }
        Ok(Self {
            tensors,
            source: dir.to_path_buf(),
        })
    }

    /// Wrap tensors that are already in memory (GGUF, tests).
    pub fn from_map(tensors: HashMap<String, Tensor>, source: impl Into<PathBuf>) -> Self {
        Self {
            tensors,
            source: source.into(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            Error::tensor(
                name,
                format!("missing from checkpoint {}", self.source.display()),
            )
        })?;
        if t.dims() != shape {
            return Err(Error::tensor(
                name,
                format!(
                    "checkpoint {} has shape {:?}, the config expects {:?}",
                    self.source.display(),
                    t.dims(),
                    shape
                ),
            ));
        }
        Ok(t.clone())
    }
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(index, e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(index, "no `weight_map` object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|f| f.as_str())
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
