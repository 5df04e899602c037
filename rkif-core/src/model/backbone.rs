//! One model type for the engine: a T5 or LLaMA backbone with its tokenizer, turning
//! [`Example`]s into training batches and predictions.
//!
//! What each family reads (METHOD.md section 1):
//! - T5: `instruction + input` (+ EOS) -> `output` + EOS.
//! - LLaMA: the Alpaca prompt followed by `output` + EOS, with the loss on the response only.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::gguf::GgufLlama;
use super::llama::{Llama, LlamaConfig};
use super::t5::{Seq2SeqBatch, T5Model};
use super::tokenizer::TextTokenizer;
use super::{LoraConfig, LoraLinear, LoraModel, SharedRng};
use crate::config::ModelSource;
use crate::data::prompt::{alpaca_prompt, t5_source};
use crate::data::Example;
use crate::{Error, Result};

/// The label value that carries no loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Which architecture a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    T5,
    Llama,
}

/// The network itself.
#[derive(Debug, Clone)]
pub enum Backbone {
    T5(Box<T5Model>),
    Llama(Box<Llama>),
}

/// A tokenised training batch, in the layout its family expects.
#[derive(Debug, Clone)]
pub enum TrainBatch {
    /// Encoder inputs and decoder labels (`-100` = no loss).
    T5(Seq2SeqBatch),
    /// Left-padded prompt + response; labels `-100` except on the response tokens.
    /// Shapes: all `[b, t]`.
    Llama {
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor,
    },
}

impl TrainBatch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        let ids = match self {
            TrainBatch::T5(b) => &b.input_ids,
            TrainBatch::Llama { input_ids, .. } => input_ids,
        };
        ids.dims().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sequence-length limits applied when tokenising.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lengths {
    /// Source / prompt tokens (a longer prompt keeps its end, where the question is).
    pub source: usize,
    /// Target tokens, EOS included.
    pub target: usize,
}

/// A backbone, its tokenizer and the generator its LoRA dropout draws from.
#[derive(Debug, Clone)]
pub struct Model {
    backbone: Backbone,
    tokenizer: TextTokenizer,
    rng: SharedRng,
    /// Where the weights came from (for manifests and displays).
    origin: String,
}

impl Model {
    /// Wrap a loaded backbone.
    pub fn new(
        backbone: Backbone,
        tokenizer: TextTokenizer,
        rng: SharedRng,
        origin: impl Into<String>,
    ) -> Self {
        Self {
            backbone,
            tokenizer,
            rng,
            origin: origin.into(),
        }
    }

    /// Load a model from `source` and attach fresh LoRA adapters (`A` drawn from `rng`).
    pub fn load(
        source: &ModelSource,
        lora: &LoraConfig,
        device: &Device,
        dtype: DType,
        rng: SharedRng,
    ) -> Result<Model> {
        match source {
            ModelSource::Embedded => {
                Self::from_folder(&embedded_model_dir(), lora, device, dtype, rng)
            }
            ModelSource::Local { path } => Self::from_folder(path, lora, device, dtype, rng),
            ModelSource::Gguf { path } => {
                let gguf = GgufLlama::read(path, device, dtype)?;
                let (model, tokenizer) = gguf.into_model(Some(lora), &rng)?;
                Ok(Self::new(
                    Backbone::Llama(Box::new(model)),
                    tokenizer,
                    rng,
                    path.display().to_string(),
                ))
            }
            ModelSource::Hub { id, revision } => {
                let dir = hub_download(id, revision.as_deref())?;
                let mut m = Self::from_folder(&dir, lora, device, dtype, rng)?;
                m.origin = format!("hub:{id}");
                Ok(m)
            }
        }
    }

    /// Load a Hugging Face folder (`config.json`, safetensors, `tokenizer.json`); the family
    /// comes from `model_type`.
    pub fn from_folder(
        dir: &Path,
        lora: &LoraConfig,
        device: &Device,
        dtype: DType,
        rng: SharedRng,
    ) -> Result<Model> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&config_path, e.to_string()))?;
        let model_type = json
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::format(&config_path, "missing field `model_type`"))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let backbone = match model_type {
            "t5" => {
                let mut m = T5Model::from_folder(dir, device, dtype)?;
                m.attach_lora(lora, &rng)?;
                Backbone::T5(Box::new(m))
            }
            "llama" => {
                let m = Llama::from_folder(dir, Some(lora), &rng, device, dtype)?;
                Backbone::Llama(Box::new(m))
            }
            other => {
                return Err(Error::format(
                    &config_path,
                    format!("model_type `{other}` is not supported (t5 or llama)"),
                ))
            }
        };
        let vocab = match &backbone {
            Backbone::T5(m) => m.config().vocab_size,
            Backbone::Llama(m) => m.config().vocab_size,
        };
        let tokenizer = TextTokenizer::from_file(&tokenizer_path, vocab)?;
        Ok(Self::new(
            backbone,
            tokenizer,
            rng,
            dir.display().to_string(),
        ))
    }

    pub fn family(&self) -> Family {
        match self.backbone {
            Backbone::T5(_) => Family::T5,
            Backbone::Llama(_) => Family::Llama,
        }
    }

    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The generator of dropout masks (its state goes into checkpoints).
    pub fn rng(&self) -> &SharedRng {
        &self.rng
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn device(&self) -> &Device {
        match &self.backbone {
            Backbone::T5(m) => m.device(),
            Backbone::Llama(m) => m.device(),
        }
    }

    /// The ids that end a generated answer.
    fn eos_ids(&self) -> &[u32] {
        match &self.backbone {
            Backbone::T5(m) => &m.config().eos_token_ids,
            Backbone::Llama(m) => &m.config().eos_token_ids,
        }
    }

    fn pad_id(&self) -> u32 {
        match &self.backbone {
            Backbone::T5(m) => m.config().pad_token_id,
            Backbone::Llama(m) => llama_pad(m.config()),
        }
    }

    /// Tokenise examples into one training batch.
    pub fn train_batch(&self, examples: &[&Example], lengths: Lengths) -> Result<TrainBatch> {
        let eos = *self
            .eos_ids()
            .first()
            .ok_or_else(|| Error::Model("the model config names no EOS token".into()))?;
        let pad = self.pad_id();
        let device = self.device();
        match self.family() {
            Family::T5 => {
                let mut sources = Vec::with_capacity(examples.len());
                let mut targets = Vec::with_capacity(examples.len());
                for ex in examples {
                    sources.push(self.t5_source_ids(ex, lengths, eos)?);
                    let mut t = self.tokenizer.encode(&ex.output, false)?;
                    t.truncate(lengths.target.saturating_sub(1));
                    t.push(eos);
                    targets.push(t);
                }
                let (input_ids, attention_mask) = pad_right(&sources, pad, device)?;
                let labels = pad_labels_right(&targets, device)?;
                Ok(TrainBatch::T5(Seq2SeqBatch {
                    input_ids,
                    attention_mask,
                    labels,
                }))
            }
            Family::Llama => {
                let mut rows = Vec::with_capacity(examples.len());
                for ex in examples {
                    let prompt = self.llama_prompt_ids(ex, lengths)?;
                    let mut target = self.tokenizer.encode(&ex.output, false)?;
                    target.truncate(lengths.target.saturating_sub(1));
                    target.push(eos);
                    let mut labels = vec![IGNORE_INDEX; prompt.len()];
                    labels.extend(target.iter().map(|&t| t as i64));
                    let mut ids = prompt;
                    ids.extend(target);
                    rows.push((ids, labels));
                }
                let width = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
                let b = rows.len();
                let mut ids = Vec::with_capacity(b * width);
                let mut mask = Vec::with_capacity(b * width);
                let mut labels = Vec::with_capacity(b * width);
                for (row_ids, row_labels) in &rows {
                    let fill = width - row_ids.len();
                    ids.extend(std::iter::repeat_n(pad, fill).chain(row_ids.iter().copied()));
                    mask.extend(
                        std::iter::repeat_n(0u32, fill)
                            .chain(std::iter::repeat_n(1, row_ids.len())),
                    );
                    labels.extend(
                        std::iter::repeat_n(IGNORE_INDEX, fill).chain(row_labels.iter().copied()),
                    );
                }
                Ok(TrainBatch::Llama {
                    input_ids: Tensor::from_vec(ids, (b, width), device)?,
                    attention_mask: Tensor::from_vec(mask, (b, width), device)?,
                    labels: Tensor::from_vec(labels, (b, width), device)?,
                })
            }
        }
    }

    /// The mean teacher-forced cross-entropy of a batch (a scalar tensor in the graph).
    pub fn loss(&self, batch: &TrainBatch, train: bool) -> Result<Tensor> {
        match (&self.backbone, batch) {
            (Backbone::T5(m), TrainBatch::T5(b)) => m.loss(b, train),
            (
                Backbone::Llama(m),
                TrainBatch::Llama {
                    input_ids,
                    attention_mask,
                    labels,
                },
            ) => m.loss(input_ids, Some(attention_mask), labels, train),
            _ => Err(Error::Model(
                "a batch of one model family was given to the other".into(),
            )),
        }
    }

    /// Greedy answers to `examples` (the generated text up to EOS, special tokens dropped).
    pub fn predict(
        &self,
        examples: &[&Example],
        lengths: Lengths,
        max_new_tokens: usize,
    ) -> Result<Vec<String>> {
        let eos_ids = self.eos_ids().to_vec();
        let eos = *eos_ids
            .first()
            .ok_or_else(|| Error::Model("the model config names no EOS token".into()))?;
        let pad = self.pad_id();
        let device = self.device();
        let generated: Vec<Vec<u32>> = match &self.backbone {
            Backbone::T5(m) => {
                let sources = examples
                    .iter()
                    .map(|ex| self.t5_source_ids(ex, lengths, eos))
                    .collect::<Result<Vec<_>>>()?;
                let (ids, mask) = pad_right(&sources, pad, device)?;
                // Rows start with the decoder start token.
                m.generate_greedy(&ids, &mask, max_new_tokens)?
                    .into_iter()
                    .map(|row| row.into_iter().skip(1).collect())
                    .collect()
            }
            Backbone::Llama(m) => {
                let prompts = examples
                    .iter()
                    .map(|ex| self.llama_prompt_ids(ex, lengths))
                    .collect::<Result<Vec<_>>>()?;
                let (ids, mask) = pad_left(&prompts, pad, device)?;
                m.generate(&ids, Some(&mask), max_new_tokens)?
            }
        };
        generated
            .into_iter()
            .map(|row| {
                let end = row
                    .iter()
                    .position(|t| eos_ids.contains(t))
                    .unwrap_or(row.len());
                self.tokenizer.decode(&row[..end], true)
            })
            .collect()
    }

    fn t5_source_ids(&self, ex: &Example, lengths: Lengths, eos: u32) -> Result<Vec<u32>> {
        let mut ids = self
            .tokenizer
            .encode(&t5_source(&ex.instruction, &ex.input), false)?;
        // T5 reads left to right with the question first: keep the start.
        ids.truncate(lengths.source.saturating_sub(1));
        ids.push(eos);
        Ok(ids)
    }

    fn llama_prompt_ids(&self, ex: &Example, lengths: Lengths) -> Result<Vec<u32>> {
        let ids = self
            .tokenizer
            .encode(&alpaca_prompt(&ex.instruction, &ex.input), true)?;
        // Keep the end: it holds the input's last words and `### Response:`.
        let skip = ids.len().saturating_sub(lengths.source);
        Ok(ids[skip..].to_vec())
    }
}

impl LoraModel for Model {
    fn lora_layers(&self) -> Vec<&LoraLinear> {
        match &self.backbone {
            Backbone::T5(m) => m.lora_layers(),
            Backbone::Llama(m) => m.lora_layers(),
        }
    }

    fn lora_layers_mut(&mut self) -> Vec<&mut LoraLinear> {
        match &mut self.backbone {
            Backbone::T5(m) => m.lora_layers_mut(),
            Backbone::Llama(m) => m.lora_layers_mut(),
        }
    }
}

/// The padding id of a LLaMA config: `pad_token_id`, else the first EOS, else 0. Padded
/// positions are masked, so the id only has to exist in the vocabulary.
fn llama_pad(cfg: &LlamaConfig) -> u32 {
    cfg.pad_token_id
        .or_else(|| cfg.eos_token_ids.first().copied())
        .unwrap_or(0)
}

/// Right-pad rows of ids: `([b, t] ids, [b, t] mask)`.
fn pad_right(rows: &[Vec<u32>], pad: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * width);
    let mut mask = Vec::with_capacity(rows.len() * width);
    for row in rows {
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(pad, width - row.len())),
        );
        mask.extend(
            std::iter::repeat_n(1u32, row.len()).chain(std::iter::repeat_n(0, width - row.len())),
        );
    }
    Ok((
        Tensor::from_vec(ids, (rows.len(), width), device)?,
        Tensor::from_vec(mask, (rows.len(), width), device)?,
    ))
}

/// Left-pad rows of ids (decoder prompts end where generation starts).
fn pad_left(rows: &[Vec<u32>], pad: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * width);
    let mut mask = Vec::with_capacity(rows.len() * width);
    for row in rows {
        ids.extend(std::iter::repeat_n(pad, width - row.len()).chain(row.iter().copied()));
        mask.extend(
            std::iter::repeat_n(0u32, width - row.len()).chain(std::iter::repeat_n(1, row.len())),
        );
    }
    Ok((
        Tensor::from_vec(ids, (rows.len(), width), device)?,
        Tensor::from_vec(mask, (rows.len(), width), device)?,
    ))
}

/// Right-pad label rows with `-100`: `[b, t]` i64.
fn pad_labels_right(rows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut labels = Vec::with_capacity(rows.len() * width);
    for row in rows {
        labels.extend(
            row.iter()
                .map(|&t| t as i64)
                .chain(std::iter::repeat_n(IGNORE_INDEX, width - row.len())),
        );
    }
    Ok(Tensor::from_vec(labels, (rows.len(), width), device)?)
}

/// The folder of the embedded base model: `RKIF_BASE_MODEL`, else `data/base-model` of the
/// source tree this crate was built from.
pub fn embedded_model_dir() -> PathBuf {
    match std::env::var_os("RKIF_BASE_MODEL") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/base-model"),
    }
}

#[cfg(feature = "hub")]
fn hub_download(id: &str, revision: Option<&str>) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    let api = ApiBuilder::new()
        .with_progress(true)
        .build()
        .map_err(|e| Error::Model(format!("hub `{id}`: {e}")))?;
    let repo = match revision {
        Some(r) => Repo::with_revision(id.to_string(), RepoType::Model, r.to_string()),
        None => Repo::new(id.to_string(), RepoType::Model),
    };
    let repo = api.repo(repo);
    let fetch = |file: &str| {
        repo.get(file).map_err(|e| {
            Error::Model(format!(
                "hub `{id}`: cannot fetch {file} ({e}); offline, download the folder and use a local source"
            ))
        })
    };
    let config = fetch("config.json")?;
    fetch("tokenizer.json")?;
    if fetch("model.safetensors").is_err() {
        let index = fetch("model.safetensors.index.json")?;
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&index, e.to_string()))?;
        let mut shards: Vec<String> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.values()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for shard in shards {
            fetch(&shard)?;
        }
    }
    Ok(config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

#[cfg(not(feature = "hub"))]
fn hub_download(id: &str, _revision: Option<&str>) -> Result<PathBuf> {
    Err(Error::Model(format!(
        "hub model `{id}`: this rkif was built without the `hub` feature; rebuild with \
         `--features hub` or download the folder and use a local source"
    )))
}
