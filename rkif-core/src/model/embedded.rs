//! The embedded base model: a small LLaMA-architecture decoder that rkif pretrains itself on
//! text of the `rkif-mini` language, so that a fresh clone runs without downloads.
//!
//! The recipe is deterministic: a word-level tokenizer over [`synthetic::vocabulary`], a
//! seeded initialisation, and full-parameter training on [`synthetic::pretraining_corpus`]
//! (plain sentences, some wrapped in the Alpaca template so its words get trained embeddings;
//! no task questions, no labels). [`build`] writes a Hugging Face folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`) that loads through the ordinary loader.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::backbone::IGNORE_INDEX;
use super::llama::{Llama, LlamaConfig};
use super::tensor_file::write_safetensors;
use super::{SharedRng, Weights};
use crate::data::prompt::alpaca_prompt;
use crate::data::synthetic;
use crate::report::write_atomic;
use crate::train::{clipped_step, AdamW, AdamWConfig, Gradients, LinearWarmupSchedule};
use crate::{Error, Result};

/// Special tokens, at ids 0..4.
const SPECIALS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];
const PAD: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;

/// Everything that determines the embedded model's bytes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recipe {
    pub seed: u64,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    /// Corpus size (documents).
    pub documents: usize,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            seed: 7,
            hidden_size: 96,
            intermediate_size: 256,
            layers: 3,
            heads: 4,
            kv_heads: 2,
            steps: 5000,
            batch: 16,
            lr: 2e-3,
            warmup: 100,
            documents: 24_000,
        }
    }
}

/// The word-level tokenizer of the `rkif-mini` language: specials first, then the
/// vocabulary's words split as the `Whitespace` pre-tokenizer splits them (words and
/// punctuation apart). Encoding with special tokens prepends `<s>`.
pub fn tokenizer() -> Result<Tokenizer> {
    let mut pieces: Vec<String> = Vec::new();
    let texts = synthetic::vocabulary().into_iter().chain(template_words());
    for word in texts {
        for piece in split_pieces(&word) {
            pieces.push(piece);
        }
    }
    pieces.sort();
    pieces.dedup();
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for (i, s) in SPECIALS.iter().enumerate() {
        vocab.insert(s.to_string(), i as u32);
    }
    for p in pieces {
        let next = vocab.len() as u32;
        vocab.entry(p).or_insert(next);
    }
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<unk>".into())
        .build()
        .map_err(|e| Error::Model(format!("word-level tokenizer: {e}")))?;
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    let post = TemplateProcessing::builder()
        .try_single("<s> $A")
        .map_err(|e| Error::Model(format!("tokenizer template: {e}")))?
        .special_tokens(vec![("<s>", BOS)])
        .build()
        .map_err(|e| Error::Model(format!("tokenizer template: {e}")))?;
    tok.with_post_processor(Some(post));
    tok.add_special_tokens(SPECIALS.iter().map(|s| AddedToken::from(*s, true)))
        .map_err(|e| Error::Model(format!("tokenizer special tokens: {e}")))?;
    Ok(tok)
}

/// Words of the Alpaca template (so LLaMA prompts have no unknown tokens).
fn template_words() -> Vec<String> {
    let questions = QUESTIONS.join(" ");
    alpaca_prompt(&questions, "Sentence: Answer:")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Reading questions of the pretraining corpus: generic skills (find a word of the input and
/// answer with it), none of them a benchmark task.
const QUESTIONS: [&str; 2] = [
    "What is the last word of the following sentence?",
    "What is the first word of the following sentence?",
];

/// A question about `sentence` in the Alpaca template, followed by its answer.
fn reading_exercise(sentence: &str, which: usize) -> String {
    let words: Vec<&str> = sentence
        .split_whitespace()
        .filter(|w| w.chars().all(char::is_alphanumeric))
        .collect();
    let which = which % QUESTIONS.len();
    let answer = if which == 0 {
        words.last()
    } else {
        words.first()
    };
    let q = QUESTIONS[which];
    format!(
        "{}{}",
        alpaca_prompt(&format!("{q}\n"), &format!("Sentence: {sentence}\nAnswer:")),
        answer.copied().unwrap_or("")
    )
}

/// Split like `Whitespace`: runs of word characters, runs of other non-space characters.
fn split_pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_word: Option<bool> = None;
    for c in text.chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur_word = None;
            continue;
        }
        let is_word = c.is_alphanumeric() || c == '_';
        if cur_word.is_some_and(|w| w != is_word) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
        cur_word = Some(is_word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The model's `config.json` for `vocab_size` words.
fn config_json(r: &Recipe, vocab_size: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": r.hidden_size,
        "intermediate_size": r.intermediate_size,
        "num_hidden_layers": r.layers,
        "num_attention_heads": r.heads,
        "num_key_value_heads": r.kv_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "vocab_size": vocab_size,
        "tie_word_embeddings": true,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "torch_dtype": "float32",
        "rkif_recipe": r,
    })
}

/// Seeded initial weights under Hugging Face names: normal(0, 0.02) matrices, unit norms.
fn init_weights(cfg: &LlamaConfig, seed: u64, device: &Device) -> Result<Vec<(String, Var)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let h = cfg.hidden_size;
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    let i = cfg.intermediate_size;
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![cfg.vocab_size, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        shapes.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    shapes.push(("model.norm.weight".into(), vec![h]));
    let mut out = Vec::with_capacity(shapes.len());
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if shape.len() == 1 {
            vec![1.0; n]
        } else {
            (0..n).map(|_| normal(&mut rng) * 0.02).collect()
        };
        let t = Tensor::from_vec(values, shape, device)?;
        out.push((name, Var::from_tensor(&t)?));
    }
    Ok(out)
}

/// A standard normal draw (Box-Muller), so the recipe depends on no distribution crate.
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// The pretraining documents as token ids (`<s>` ... `</s>`): eight in ten state the
/// attributes of a sentence (the knowledge fine-tuning draws on), one in ten is a reading
/// exercise in the prompt template (so the template's words get trained embeddings and the
/// model has seen an answer after `### Response:`), one in ten is two plain sentences.
fn corpus_ids(r: &Recipe, tok: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    let plain = synthetic::pretraining_corpus(r.seed, r.documents * 2);
    let knowledge = synthetic::knowledge_corpus(r.seed, r.documents);
    let mut docs = Vec::with_capacity(r.documents);
    for (k, (fact, pair)) in knowledge.into_iter().zip(plain.chunks(2)).enumerate() {
        let [a, b] = pair else { break };
        let text = match k % 10 {
            0 => reading_exercise(a, (k / 10) % 2),
            1 => format!("{a} {b}"),
            _ => fact,
        };
        let enc = tok
            .encode(text.as_str(), true)
            .map_err(|e| Error::Model(format!("encoding the corpus: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        ids.push(EOS);
        docs.push(ids);
    }
    Ok(docs)
}

/// A left-padded LM batch: `(ids, mask, labels)`, each `[b, t]`; every real token is a target.
fn lm_batch(docs: &[&Vec<u32>], device: &Device) -> Result<(Tensor, Tensor, Tensor)> {
    let width = docs.iter().map(|d| d.len()).max().unwrap_or(0);
    let b = docs.len();
    let (mut ids, mut mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for d in docs {
        let fill = width - d.len();
        ids.extend(std::iter::repeat_n(PAD, fill).chain(d.iter().copied()));
        mask.extend(std::iter::repeat_n(0u32, fill).chain(std::iter::repeat_n(1, d.len())));
        labels.extend(std::iter::repeat_n(IGNORE_INDEX, fill).chain(d.iter().map(|&t| t as i64)));
    }
    Ok((
        Tensor::from_vec(ids, (b, width), device)?,
        Tensor::from_vec(mask, (b, width), device)?,
        Tensor::from_vec(labels, (b, width), device)?,
    ))
}

/// Pretrain the embedded model by `recipe` and write it to `out` (`config.json`,
/// `model.safetensors`, `tokenizer.json`). `progress` gets `(step, loss)` every 50 steps.
/// Returns the final training loss.
pub fn build(recipe: &Recipe, out: &Path, mut progress: impl FnMut(usize, f32)) -> Result<f32> {
    let device = Device::Cpu;
    let tok = tokenizer()?;
    let vocab_size = tok.get_vocab_size(true);
    let config = config_json(recipe, vocab_size);
    let cfg = LlamaConfig::from_json(&config.to_string())?;
    let params = init_weights(&cfg, recipe.seed, &device)?;
    let weights = Weights::from_map(
        params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect(),
        "<embedded init>",
    );
    let model = Llama::new(cfg, &weights, None, &SharedRng::seeded(recipe.seed))?;
    let docs = corpus_ids(recipe, &tok)?;
    let mut opt = AdamW::new(&params, AdamWConfig::default())?;
    let schedule = LinearWarmupSchedule::new(recipe.lr, recipe.warmup as u64, recipe.steps as u64)?;
    let mut rng = ChaCha8Rng::seed_from_u64(recipe.seed ^ 0x5EED);
    let mut last = f32::NAN;
    for step in 0..recipe.steps {
        let batch: Vec<&Vec<u32>> = (0..recipe.batch)
            .filter_map(|_| docs.get(rng.random_range(0..docs.len())))
            .collect();
        let (ids, mask, labels) = lm_batch(&batch, &device)?;
        let loss = model.loss(&ids, Some(&mask), &labels, true)?;
        let store = loss.backward()?;
        let mut grads = Gradients::from_store(&params, &store);
        clipped_step(&mut opt, &schedule, &mut grads, Some(1.0))?;
        last = loss.to_scalar::<f32>()?;
        if step % 50 == 0 || step + 1 == recipe.steps {
            progress(step, last);
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let tensors: Vec<(String, Tensor)> = params
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&out.join("model.safetensors"), &tensors, meta)?;
    let config_text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::Model(format!("config.json: {e}")))?;
    write_atomic(&out.join("config.json"), config_text.as_bytes())?;
    let tok_text = tok
        .to_string(true)
        .map_err(|e| Error::Model(format!("tokenizer.json: {e}")))?;
    write_atomic(&out.join("tokenizer.json"), tok_text.as_bytes())?;
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_covers_the_benchmark_without_unknowns() -> Result<()> {
        let tok = tokenizer()?;
        let files = synthetic::generate(1);
        for (path, text) in files.iter().filter(|(p, _)| p.starts_with("kif/train")) {
            let recs: Vec<serde_json::Value> =
                serde_json::from_str(text).map_err(|e| Error::format(path, e.to_string()))?;
            for r in recs.iter().take(20) {
                let s = alpaca_prompt(
                    r["instruction"].as_str().unwrap_or(""),
                    r["input"].as_str().unwrap_or(""),
                );
                let enc = tok
                    .encode(s.as_str(), true)
                    .map_err(|e| Error::Model(e.to_string()))?;
                assert_eq!(enc.get_ids()[0], BOS);
                assert!(!enc.get_ids().contains(&3), "unknown token in {s:?}");
                let out = tok
                    .encode(r["output"].as_str().unwrap_or(""), false)
                    .map_err(|e| Error::Model(e.to_string()))?;
                let back = tok
                    .decode(out.get_ids(), true)
                    .map_err(|e| Error::Model(e.to_string()))?;
                assert_eq!(back, r["output"].as_str().unwrap_or(""));
            }
        }
        Ok(())
    }

    #[test]
    fn a_few_pretraining_steps_lower_the_loss() -> Result<()> {
        let recipe = Recipe {
            steps: 30,
            batch: 8,
            documents: 200,
            hidden_size: 32,
            intermediate_size: 64,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            warmup: 5,
            ..Recipe::default()
        };
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut losses = Vec::new();
        build(&recipe, dir.path(), |_, l| losses.push(l))?;
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(last < first * 0.9, "loss {first} -> {last}");
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        Ok(())
    }
}
