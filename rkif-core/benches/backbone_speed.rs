//! Speed of the backbones against the PyTorch + PEFT anchor (issue #3, "Speed").
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo bench -p rkif-core --bench backbone_speed -- \
//!     [--config t5_d256,t5_small,smollm2_135m] [--mode lora,full,generate,peak] \
//!     [--warmup 1] [--reps 5] [--full-reps 3]
//! ```
//!
//! With random weights of exactly the configs of `../shared/bench/pytorch_anchor.py`, it times:
//!
//! - `lora`: one LoRA (q, v; r = 8, alpha 32, no dropout) training step: forward, loss,
//!   backward, gradient clipping at 1.0 and AdamW on the LoRA factors;
//! - `full`: the same step with every weight trainable (full fine-tuning), for the LoRA / full
//!   ratio;
//! - `generate`: greedy decoding of exactly 8 new tokens after a 100-token prompt (batch 1,
//!   KV cache), for the t5-small and SmolLM2 shapes;
//! - `peak`: a 2048 x 2048 f32 matmul through candle, the machine's matmul peak that the
//!   steps' FLOP rates are stated against (at least 5 runs).
//!
//! Each measurement is the median of `reps` runs after `warmup` untimed ones. The thread count
//! is candle's (`RAYON_NUM_THREADS`). Every measurement prints a `RESULT {json}` line (the
//! fields of the anchor's, so `scripts/bench-side-by-side.sh` can pair them), and a markdown
//! table closes the run. Besides wall time, each run's CPU time (user + system, all threads)
//! is recorded: on a machine shared with other jobs, wall time measures the load as much as
//! the code, CPU time much less. The training steps also report the median time of their
//! forward pass, backward pass and optimiser update.
//!
//! The FLOP counts are the matmul work a step needs, counted from the shapes: the forward
//! pass, the input gradients (none into the frozen embeddings), the LoRA factors' gradients,
//! the weight gradients only when every weight trains, and the vocabulary head only on the
//! positions that carry a loss. The same count divided by PyTorch's time gives its rate.
//!
//! Measured side by side with PyTorch (`scripts/bench-side-by-side.sh`; tables, load and
//! versions in `BENCHMARKS.md`): one thread, LoRA steps 0.88-0.95x PyTorch's time with glibc
//! told to keep freed memory, 1.01-1.05x with its defaults; 74-94% of the matmul peak.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use rkif_core::model::llama::{Llama, LlamaConfig};
use rkif_core::model::t5::{Seq2SeqBatch, T5Config, T5Model};
use rkif_core::model::{LoraConfig, LoraModel, SharedRng, Weights};
use rkif_core::train::{clipped_step, AdamW, AdamWConfig, Gradients, LinearWarmupSchedule};
use rkif_core::{Error, Result};

const LORA_RANK: usize = 8;
const PEAK_SIZE: usize = 2048;
const PROMPT_LEN: usize = 100;
const NEW_TOKENS: usize = 8;

/// The anchor's T5 shapes and batch.
#[derive(Debug, Clone, Copy)]
struct T5Shape {
    vocab: usize,
    d_model: usize,
    d_kv: usize,
    heads: usize,
    d_ff: usize,
    layers: usize,
    batch: usize,
    enc_len: usize,
    dec_len: usize,
}

/// The anchor's LLaMA shapes and batch.
#[derive(Debug, Clone, Copy)]
struct LlamaShape {
    vocab: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    batch: usize,
    seq_len: usize,
    loss_last: usize,
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    T5(T5Shape),
    Llama(LlamaShape),
}

/// The configs of `pytorch_anchor.py`, under its names.
fn shapes() -> Vec<(&'static str, Shape)> {
    vec![
        (
            "t5_d256",
            Shape::T5(T5Shape {
                vocab: 1000,
                d_model: 256,
                d_kv: 32,
                heads: 8,
                d_ff: 1024,
                layers: 4,
                batch: 8,
                enc_len: 64,
                dec_len: 8,
            }),
        ),
        (
            "t5_small",
            Shape::T5(T5Shape {
                vocab: 32128,
                d_model: 512,
                d_kv: 64,
                heads: 8,
                d_ff: 2048,
                layers: 6,
                batch: 8,
                enc_len: 128,
                dec_len: 8,
            }),
        ),
        (
            "smollm2_135m",
            Shape::Llama(LlamaShape {
                vocab: 49152,
                hidden: 576,
                intermediate: 1536,
                layers: 30,
                heads: 9,
                kv_heads: 3,
                batch: 8,
                seq_len: 128,
                loss_last: 8,
            }),
        ),
    ]
}

/// Every checkpoint tensor of a shape, Hugging Face name and dims.
fn tensor_shapes(shape: &Shape) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    match shape {
        Shape::T5(s) => {
            let (d, inner) = (s.d_model, s.heads * s.d_kv);
            out.push(("shared.weight".to_string(), vec![s.vocab, d]));
            let attention = |out: &mut Vec<(String, Vec<usize>)>, p: &str| {
                for m in ["q", "k", "v"] {
                    out.push((format!("{p}.{m}.weight"), vec![inner, d]));
                }
                out.push((format!("{p}.o.weight"), vec![d, inner]));
            };
            let ffn = |out: &mut Vec<(String, Vec<usize>)>, p: &str| {
                out.push((format!("{p}.wi.weight"), vec![s.d_ff, d]));
                out.push((format!("{p}.wo.weight"), vec![d, s.d_ff]));
            };
            for stack in ["encoder", "decoder"] {
                out.push((
                    format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                    vec![32, s.heads],
                ));
                for i in 0..s.layers {
                    let p = format!("{stack}.block.{i}");
                    let mut sub = 0;
                    attention(&mut out, &format!("{p}.layer.0.SelfAttention"));
                    out.push((format!("{p}.layer.0.layer_norm.weight"), vec![d]));
                    if stack == "decoder" {
                        sub += 1;
                        attention(&mut out, &format!("{p}.layer.1.EncDecAttention"));
                        out.push((format!("{p}.layer.1.layer_norm.weight"), vec![d]));
                    }
                    sub += 1;
                    ffn(&mut out, &format!("{p}.layer.{sub}.DenseReluDense"));
                    out.push((format!("{p}.layer.{sub}.layer_norm.weight"), vec![d]));
                }
                out.push((format!("{stack}.final_layer_norm.weight"), vec![d]));
            }
        }
        Shape::Llama(s) => {
            let h = s.hidden;
            let hd = h / s.heads;
            let (q_out, kv_out) = (s.heads * hd, s.kv_heads * hd);
            out.push(("model.embed_tokens.weight".to_string(), vec![s.vocab, h]));
            for i in 0..s.layers {
                let p = format!("model.layers.{i}");
                for (m, dims) in [
                    ("self_attn.q_proj", vec![q_out, h]),
                    ("self_attn.k_proj", vec![kv_out, h]),
                    ("self_attn.v_proj", vec![kv_out, h]),
                    ("self_attn.o_proj", vec![h, q_out]),
                    ("mlp.gate_proj", vec![s.intermediate, h]),
                    ("mlp.up_proj", vec![s.intermediate, h]),
                    ("mlp.down_proj", vec![h, s.intermediate]),
                    ("input_layernorm", vec![h]),
                    ("post_attention_layernorm", vec![h]),
                ] {
                    out.push((format!("{p}.{m}.weight"), dims));
                }
            }
            out.push(("model.norm.weight".to_string(), vec![h]));
        }
    }
    out
}

/// Random weights: norms 1, everything else uniform with standard deviation 0.02 (0.5 for
/// T5's relative-position table), drawn in name order from a seeded generator. With
/// `trainable`, every tensor is a `Var` (full fine-tuning) and is also returned by name.
fn random_weights(
    shape: &Shape,
    trainable: bool,
    seed: u64,
) -> Result<(Weights, Vec<(String, Var)>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut map = HashMap::new();
    let mut vars = Vec::new();
    for (name, dims) in tensor_shapes(shape) {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.contains("norm") {
            vec![1.0; n]
        } else {
            let std = if name.contains("relative_attention_bias") {
                0.5
            } else {
                0.02
            };
            let bound = std * 3f32.sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        let t = Tensor::from_vec(values, dims, &Device::Cpu)?;
        let t = if trainable {
            let v = Var::from_tensor(&t)?;
            vars.push((name.clone(), v.clone()));
            v.as_tensor().clone()
        } else {
            t
        };
        map.insert(name, t);
    }
    Ok((Weights::from_map(map, "random weights"), vars))
}

fn lora_config(targets: &[&str]) -> LoraConfig {
    LoraConfig {
        rank: LORA_RANK,
        alpha: 32.0,
        dropout: 0.0,
        targets: targets.iter().map(|t| t.to_string()).collect(),
    }
}

/// A model with its inputs, ready to step or generate.
enum Model {
    T5 {
        model: T5Model,
        batch: Seq2SeqBatch,
    },
    Llama {
        model: Llama,
        ids: Tensor,
        mask: Tensor,
        labels: Tensor,
    },
}

/// Token ids uniform in `low..vocab`, `[rows, cols]` u32.
fn random_ids(
    rng: &mut ChaCha8Rng,
    rows: usize,
    cols: usize,
    low: u32,
    vocab: usize,
) -> Result<Tensor> {
    let ids: Vec<u32> = (0..rows * cols)
        .map(|_| rng.random_range(low..vocab as u32))
        .collect();
    Ok(Tensor::from_vec(ids, (rows, cols), &Device::Cpu)?)
}

/// What to build: LoRA on q/v, every weight trainable, or the bare model (generation).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Build {
    Lora,
    Full,
    Bare,
}

/// The model of `shape` with its training batch, and the tensors the optimiser trains.
fn build(shape: &Shape, how: Build) -> Result<(Model, Vec<(String, Var)>)> {
    let (weights, full_vars) = random_weights(shape, how == Build::Full, 0)?;
    let rng = SharedRng::seeded(1);
    let mut data_rng = ChaCha8Rng::seed_from_u64(2);
    let model = match shape {
        Shape::T5(s) => {
            let config = T5Config::from_json(
                &json!({
                    "vocab_size": s.vocab, "d_model": s.d_model, "d_kv": s.d_kv,
                    "num_heads": s.heads, "d_ff": s.d_ff, "num_layers": s.layers,
                    "num_decoder_layers": s.layers, "feed_forward_proj": "relu",
                    "tie_word_embeddings": true, "pad_token_id": 0, "eos_token_id": [],
                    "decoder_start_token_id": 0
                })
                .to_string(),
            )
            .map_err(|e| Error::config("t5 bench config", e))?;
            let mut model = T5Model::from_weights(config, &weights, &Device::Cpu)?;
            if how == Build::Lora {
                model.attach_lora(&lora_config(&["q", "v"]), &rng)?;
            }
            let batch = Seq2SeqBatch {
                input_ids: random_ids(&mut data_rng, s.batch, s.enc_len, 2, s.vocab)?,
                attention_mask: Tensor::ones((s.batch, s.enc_len), DType::U32, &Device::Cpu)?,
                labels: random_ids(&mut data_rng, s.batch, s.dec_len, 2, s.vocab)?,
            };
            Model::T5 { model, batch }
        }
        Shape::Llama(s) => {
            let mut config = LlamaConfig::from_json(
                &json!({
                    "vocab_size": s.vocab, "hidden_size": s.hidden,
                    "intermediate_size": s.intermediate, "num_hidden_layers": s.layers,
                    "num_attention_heads": s.heads, "num_key_value_heads": s.kv_heads,
                    "tie_word_embeddings": true, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
                    "bos_token_id": 1, "pad_token_id": 0
                })
                .to_string(),
            )?;
            // No EOS: generation always produces exactly the tokens asked for.
            config.eos_token_ids.clear();
            let lora = lora_config(&["q_proj", "v_proj"]);
            let model = Llama::new(
                config,
                &weights,
                (how == Build::Lora).then_some(&lora),
                &rng,
            )?;
            let ids = random_ids(&mut data_rng, s.batch, s.seq_len, 3, s.vocab)?;
            // Labels: -100 but on the last `loss_last` positions, which carry their own ids.
            let id_rows = ids.to_dtype(DType::I64)?.to_vec2::<i64>()?;
            let labels: Vec<i64> = id_rows
                .iter()
                .flat_map(|row| {
                    row.iter().enumerate().map(|(i, &id)| {
                        if i + s.loss_last >= s.seq_len {
                            id
                        } else {
                            -100
                        }
                    })
                })
                .collect();
            Model::Llama {
                model,
                mask: Tensor::ones((s.batch, s.seq_len), DType::U32, &Device::Cpu)?,
                labels: Tensor::from_vec(labels, (s.batch, s.seq_len), &Device::Cpu)?,
                ids,
            }
        }
    };
    let params = match (&model, how) {
        (_, Build::Full) => full_vars,
        (Model::T5 { model, .. }, _) => lora_vars(model),
        (Model::Llama { model, .. }, _) => lora_vars(model),
    };
    Ok((model, params))
}

fn lora_vars(model: &impl LoraModel) -> Vec<(String, Var)> {
    model
        .lora_params()
        .into_iter()
        .map(|p| (p.name, p.var))
        .collect()
}

impl Model {
    fn loss(&self) -> Result<Tensor> {
        match self {
            Model::T5 { model, batch } => model.loss(batch, true),
            Model::Llama {
                model,
                ids,
                mask,
                labels,
            } => model.loss(ids, Some(mask), labels, true),
        }
    }

    /// Greedy decoding of [`NEW_TOKENS`] tokens after a random [`PROMPT_LEN`]-token prompt;
    /// returns how many tokens came out.
    fn generate(&self, prompt: &Tensor) -> Result<usize> {
        let mask = Tensor::ones(prompt.dims(), DType::U32, &Device::Cpu)?;
        let rows = match self {
            Model::T5 { model, .. } => model.generate_greedy(prompt, &mask, NEW_TOKENS)?,
            Model::Llama { model, .. } => model.generate(prompt, Some(&mask), NEW_TOKENS)?,
        };
        // T5 rows start with the decoder start token.
        let skip = usize::from(matches!(self, Model::T5 { .. }));
        Ok(rows.first().map_or(0, |r| r.len().saturating_sub(skip)))
    }
}

/// Where one training step's time went, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct StepSplit {
    forward: f64,
    backward: f64,
    optimizer: f64,
}

/// One training step: forward, loss, backward, clip to 1.0, AdamW. Returns the loss and the
/// time of each phase.
fn train_step(
    model: &Model,
    params: &[(String, Var)],
    opt: &mut AdamW,
    schedule: &LinearWarmupSchedule,
) -> Result<(f32, StepSplit)> {
    let start = Instant::now();
    let loss = model.loss()?;
    let forward = start.elapsed().as_secs_f64();
    let store = loss.backward()?;
    let backward = start.elapsed().as_secs_f64() - forward;
    let mut grads = Gradients::from_store(params, &store);
    if grads.len() != params.len() {
        return Err(Error::Model(format!(
            "{} of {} trainable tensors received a gradient",
            grads.len(),
            params.len()
        )));
    }
    clipped_step(opt, schedule, &mut grads, Some(1.0))?;
    let optimizer = start.elapsed().as_secs_f64() - forward - backward;
    Ok((
        loss.to_scalar::<f32>()?,
        StepSplit {
            forward,
            backward,
            optimizer,
        },
    ))
}

/// CPU seconds this process has used (user + system, all threads), from `/proc/self/stat`
/// (in clock ticks of 1/100 s, Linux's usual `CLK_TCK`); `None` where that file is missing.
/// Unlike wall time, it hardly moves when other jobs share the cores.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Wall and CPU seconds of each of `reps` timed calls after `warmup` untimed ones.
fn time_runs(
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut times = Vec::with_capacity(reps);
    let mut cpu = Vec::with_capacity(reps);
    for i in 0..warmup + reps {
        let cpu_start = process_cpu_seconds();
        let start = Instant::now();
        f()?;
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (cpu_start, process_cpu_seconds()) {
                cpu.push(b - a);
            }
        }
    }
    Ok((times, cpu))
}

fn median(times: &[f64]) -> f64 {
    let mut v = times.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// FLOPs of a `[m, k] x [k, n]` product.
fn mm(m: usize, k: usize, n: usize) -> f64 {
    2.0 * (m * k * n) as f64
}

/// The matmul FLOPs one training step needs (see the module doc). `full`: every weight trains.
fn step_flops(shape: &Shape, full: bool) -> f64 {
    // (rows, in, out, input gradient needed, LoRA-adapted) of every linear product.
    let mut linears: Vec<(usize, usize, usize, bool, bool)> = Vec::new();
    // Forward FLOPs of attention's activation x activation products (scores, context).
    let mut attention = 0.0;
    match shape {
        Shape::T5(s) => {
            let (d, inner) = (s.d_model, s.heads * s.d_kv);
            let (re, rd) = (s.batch * s.enc_len, s.batch * s.dec_len);
            let head_pairs = s.batch * s.heads;
            for i in 0..s.layers {
                // Block 0's attention reads the (frozen) embeddings: no input gradient.
                let grad_in = full || i > 0;
                // q, k, v: LoRA on q and v.
                for lora in [true, false, true] {
                    linears.push((re, d, inner, grad_in, lora));
                }
                linears.push((re, inner, d, true, false));
                linears.push((re, d, s.d_ff, true, false));
                linears.push((re, s.d_ff, d, true, false));
                attention += 2.0 * head_pairs as f64 * mm(s.enc_len, s.d_kv, s.enc_len);
            }
            for i in 0..s.layers {
                let grad_in = full || i > 0;
                for lora in [true, false, true] {
                    linears.push((rd, d, inner, grad_in, lora));
                }
                linears.push((rd, inner, d, true, false));
                // Cross-attention: queries from the decoder, keys and values from the encoder.
                linears.push((rd, d, inner, true, true));
                linears.push((re, d, inner, true, false));
                linears.push((re, d, inner, true, true));
                linears.push((rd, inner, d, true, false));
                linears.push((rd, d, s.d_ff, true, false));
                linears.push((rd, s.d_ff, d, true, false));
                attention += 2.0 * head_pairs as f64 * mm(s.dec_len, s.d_kv, s.dec_len);
                attention += 2.0 * head_pairs as f64 * mm(s.dec_len, s.d_kv, s.enc_len);
            }
            // Every decoder position carries a label.
            linears.push((rd, d, s.vocab, true, false));
        }
        Shape::Llama(s) => {
            let h = s.hidden;
            let hd = h / s.heads;
            let (q_out, kv_out) = (s.heads * hd, s.kv_heads * hd);
            let rows = s.batch * s.seq_len;
            for i in 0..s.layers {
                let grad_in = full || i > 0;
                linears.push((rows, h, q_out, grad_in, true));
                linears.push((rows, h, kv_out, grad_in, false));
                linears.push((rows, h, kv_out, grad_in, true));
                linears.push((rows, q_out, h, true, false));
                linears.push((rows, h, s.intermediate, true, false));
                linears.push((rows, h, s.intermediate, true, false));
                linears.push((rows, s.intermediate, h, true, false));
                attention += 2.0 * (s.batch * s.heads) as f64 * mm(s.seq_len, hd, s.seq_len);
            }
            linears.push((s.batch * s.loss_last, h, s.vocab, true, false));
        }
    }
    let mut total = 3.0 * attention; // forward, and the gradients of both operands
    for (rows, k, n, grad_in, lora) in linears {
        total += mm(rows, k, n);
        if grad_in {
            total += mm(rows, n, k);
        }
        if full {
            total += mm(k, rows, n);
        } else if lora {
            // x A^T, then B: forward, the gradients of A, B and of the input through them.
            total += 3.0 * (mm(rows, k, LORA_RANK) + mm(rows, LORA_RANK, n));
        }
    }
    total
}

/// Command-line options (after cargo's own `--bench`).
struct Options {
    configs: Vec<String>,
    modes: Vec<String>,
    warmup: usize,
    reps: usize,
    full_reps: usize,
}

fn parse_options() -> Result<Options> {
    let mut o = Options {
        configs: shapes().iter().map(|(n, _)| n.to_string()).collect(),
        modes: ["peak", "lora", "full", "generate"]
            .iter()
            .map(|m| m.to_string())
            .collect(),
        warmup: 1,
        reps: 5,
        full_reps: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| Error::config(flag, "needs a value"))
        };
        let number = |flag: &str, v: String| {
            v.parse::<usize>()
                .map_err(|e| Error::config(flag, format!("{v:?}: {e}")))
        };
        match arg.as_str() {
            "--bench" => {}
            "--config" => o.configs = value("--config")?.split(',').map(String::from).collect(),
            "--mode" => o.modes = value("--mode")?.split(',').map(String::from).collect(),
            "--warmup" => o.warmup = number("--warmup", value("--warmup")?)?,
            "--reps" => o.reps = number("--reps", value("--reps")?)?.max(1),
            "--full-reps" => o.full_reps = number("--full-reps", value("--full-reps")?)?.max(1),
            other => {
                return Err(Error::config(
                    "arguments",
                    format!(
                    "unknown argument {other:?} (--config, --mode, --warmup, --reps, --full-reps)"
                ),
                ))
            }
        }
    }
    let known: Vec<&str> = shapes().iter().map(|(n, _)| *n).collect();
    if let Some(bad) = o.configs.iter().find(|c| !known.contains(&c.as_str())) {
        return Err(Error::config(
            "--config",
            format!("{bad:?} is not one of {known:?}"),
        ));
    }
    let modes = ["peak", "lora", "full", "generate"];
    if let Some(bad) = o.modes.iter().find(|m| !modes.contains(&m.as_str())) {
        return Err(Error::config(
            "--mode",
            format!("{bad:?} is not one of {modes:?}"),
        ));
    }
    Ok(o)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// One measurement: the anchor's fields plus our FLOP accounting.
struct Measurement {
    name: String,
    mode: String,
    times: Vec<f64>,
    /// CPU seconds of each timed run (empty where unknown).
    cpu: Vec<f64>,
    flops: Option<f64>,
    extra: serde_json::Value,
}

fn report(
    m: &Measurement,
    threads: usize,
    load_start: f64,
    peak: Option<f64>,
) -> serde_json::Value {
    let med = median(&m.times);
    let mut r = json!({
        "impl": "rkif",
        "name": m.name,
        "mode": m.mode,
        "threads": threads,
        "loadavg_1m_start": load_start,
        "loadavg_1m_end": load_average(),
        "times_s": m.times.iter().map(|t| (t * 1e4).round() / 1e4).collect::<Vec<_>>(),
        "median_s": (med * 1e4).round() / 1e4,
    });
    if !m.cpu.is_empty() {
        let cpu = median(&m.cpu);
        r["cpu_median_s"] = json!((cpu * 1e3).round() / 1e3);
        if let Some(flops) = m.flops.filter(|_| cpu > 0.0) {
            r["gflops_per_cpu_s"] = json!((flops / cpu / 1e7).round() / 100.0);
        }
    }
    if let Some(flops) = m.flops {
        let rate = flops / med;
        r["gflop"] = json!((flops / 1e7).round() / 100.0);
        r["gflops_per_s"] = json!((rate / 1e7).round() / 100.0);
        if let Some(p) = peak {
            r["share_of_peak"] = json!((rate / p * 1e3).round() / 1e3);
        }
    }
    if let (Some(obj), Some(extra)) = (r.as_object_mut(), m.extra.as_object()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    r
}

fn main() -> Result<()> {
    // As the `rkif` binary does; RKIF_MALLOC=default or MALLOC_* variables leave glibc alone.
    let allocator = rkif_core::allocator::keep_freed_memory();
    let o = parse_options()?;
    let threads = candle_core::utils::get_num_threads();
    println!(
        "backbone_speed: {threads} thread(s) (RAYON_NUM_THREADS), f32 on CPU, warm-up {}, median of {} ({} for full fine-tuning); {allocator}",
        o.warmup, o.reps, o.full_reps
    );
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut peak: Option<f64> = None;
    let mut emit = |m: Measurement, load: f64, peak: Option<f64>| {
        let r = report(&m, threads, load, peak);
        println!("RESULT {r}");
        rows.push(r);
    };

    if o.modes.iter().any(|m| m == "peak") {
        let load = load_average();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = PEAK_SIZE;
        let mut square = || -> Result<Tensor> {
            let v: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            Ok(Tensor::from_vec(v, (n, n), &Device::Cpu)?)
        };
        let (a, b) = (square()?, square()?);
        // At least 5 runs: the CPU clock ticks in 10 ms, and one product takes ~0.3 s.
        let (times, cpu) = time_runs(o.warmup.max(1), o.reps.max(5), || {
            a.matmul(&b)?;
            Ok(())
        })?;
        let flops = mm(n, n, n);
        peak = Some(flops / median(&times));
        emit(
            Measurement {
                name: format!("matmul_{n}"),
                mode: "peak".into(),
                times,
                cpu,
                flops: Some(flops),
                extra: json!({}),
            },
            load,
            peak,
        );
    }

    for (name, shape) in shapes() {
        if !o.configs.iter().any(|c| c == name) {
            continue;
        }
        for mode in ["lora", "full"] {
            if !o.modes.iter().any(|m| m == mode) {
                continue;
            }
            let full = mode == "full";
            let load = load_average();
            let (model, params) = build(&shape, if full { Build::Full } else { Build::Lora })?;
            let trainable: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
            let mut opt = AdamW::new(&params, AdamWConfig::default())?;
            // A constant rate: the schedule's decay is irrelevant to speed.
            let schedule = LinearWarmupSchedule::new(3e-4, 0, u64::MAX)?;
            let mut last_loss = f32::NAN;
            let mut splits = Vec::new();
            let reps = if full { o.full_reps } else { o.reps };
            let (times, cpu) = time_runs(o.warmup, reps, || {
                let (loss, split) = train_step(&model, &params, &mut opt, &schedule)?;
                last_loss = loss;
                splits.push(split);
                Ok(())
            })?;
            // The phases of the timed steps (the warm-up steps come first).
            let timed = &splits[splits.len().saturating_sub(reps)..];
            let phase = |f: fn(&StepSplit) -> f64| {
                (median(&timed.iter().map(f).collect::<Vec<_>>()) * 1e4).round() / 1e4
            };
            emit(
                Measurement {
                    name: name.to_string(),
                    mode: if full { "train_full" } else { "train" }.into(),
                    times,
                    cpu,
                    flops: Some(step_flops(&shape, full)),
                    extra: json!({
                        "trainable_params": trainable,
                        "loss_last": last_loss,
                        "forward_s": phase(|s| s.forward),
                        "backward_s": phase(|s| s.backward),
                        "optimizer_s": phase(|s| s.optimizer),
                    }),
                },
                load,
                peak,
            );
        }
        if o.modes.iter().any(|m| m == "generate") && name != "t5_d256" {
            let load = load_average();
            let (model, _) = build(&shape, Build::Bare)?;
            let vocab = match shape {
                Shape::T5(s) => s.vocab,
                Shape::Llama(s) => s.vocab,
            };
            let prompt = random_ids(&mut ChaCha8Rng::seed_from_u64(4), 1, PROMPT_LEN, 3, vocab)?;
            let mut produced = 0;
            let (times, cpu) = time_runs(o.warmup, o.reps, || {
                produced = model.generate(&prompt)?;
                Ok(())
            })?;
            if produced != NEW_TOKENS {
                return Err(Error::Model(format!(
                    "{name}: generation produced {produced} tokens, not {NEW_TOKENS}"
                )));
            }
            let tokens_per_s = NEW_TOKENS as f64 / median(&times);
            emit(
                Measurement {
                    name: name.to_string(),
                    mode: "generate".into(),
                    times,
                    cpu,
                    flops: None,
                    extra: json!({
                        "new_tokens": produced,
                        "tokens_per_s": (tokens_per_s * 10.0).round() / 10.0
                    }),
                },
                load,
                peak,
            );
        }
    }

    println!("\n| config | mode | threads | median s | runs s | CPU s | GFLOP/s | share of peak | load start/end |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let field = |k: &str| r.get(k).map_or("–".to_string(), |v| v.to_string());
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            field("name").trim_matches('"'),
            field("mode").trim_matches('"'),
            field("threads"),
            field("median_s"),
            field("times_s"),
            field("cpu_median_s"),
            field("gflops_per_s"),
            field("share_of_peak"),
            field("loadavg_1m_start"),
            field("loadavg_1m_end"),
        );
    }
    Ok(())
}
