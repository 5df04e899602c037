//! Cost of the Recurrent-KIF machinery next to a plain optimiser step, on CPU.
//!
//! `cargo bench -p rkif-core --bench kif_machinery`
//!
//! Sizes: the q/v LoRA (r = 8) of LLaMA-2 13B, 40 layers x {q_proj, v_proj} x {A [8, 5120],
//! B [5120, 8]}: 160 tensors, 6,553,600 elements. Timed (median of several runs):
//!
//! - baseline: an AdamW-like element-wise update of every tensor (two moment EMAs and the
//!   parameter update), the cost every training step pays anyway;
//! - the importance update of one tracker (once per step);
//! - the global 0.8-quantile over all scores alone, and the whole global mask (host copy,
//!   selection, per-tensor masks) (twice per round);
//! - the fusion of all tensors (once per round).

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rkif_core::kif::{
    fuse, global_mask, quantile, FusionTable, FusionTensor, ImportanceConfig, ImportanceTracker,
    ParamGrad, DEFAULT_QUANTILE,
};
use rkif_core::Result;

const LAYERS: usize = 40;
const HIDDEN: usize = 5120;
const RANK: usize = 8;
const RUNS: usize = 7;

struct Named {
    name: String,
    value: Tensor,
}

/// Seeded tensors of the LoRA shapes, values uniform in `[-scale, scale)`.
fn lora_tensors(rng: &mut ChaCha8Rng, scale: f32) -> Result<Vec<Named>> {
    let mut out = Vec::new();
    for layer in 0..LAYERS {
        for module in ["q_proj", "v_proj"] {
            for (factor, shape) in [("lora_A", (RANK, HIDDEN)), ("lora_B", (HIDDEN, RANK))] {
                let data: Vec<f32> = (0..shape.0 * shape.1)
                    .map(|_| scale * (2.0 * rng.random::<f32>() - 1.0))
                    .collect();
                out.push(Named {
                    name: format!(
                        "base_model.model.model.layers.{layer}.self_attn.{module}.{factor}.default.weight"
                    ),
                    value: Tensor::from_vec(data, shape, &Device::Cpu)?,
                });
            }
        }
    }
    Ok(out)
}

/// Median wall time of `RUNS` calls of `f` (after one warm-up call).
fn time(mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    f()?;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times.get(RUNS / 2).copied().unwrap_or_default())
}

/// An AdamW-like update of one tensor: `m, v` EMAs and `p -= lr * m / (sqrt(v) + eps)`.
fn adamw_like(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let m = m.affine(0.9, 0.0)?.add(&g.affine(0.1, 0.0)?)?;
    let v = v.affine(0.999, 0.0)?.add(&g.sqr()?.affine(0.001, 0.0)?)?;
    let step = m.div(&v.sqrt()?.affine(1.0, 1e-8)?)?.affine(3e-4, 0.0)?;
    Ok((p.sub(&step)?, m, v))
}

fn main() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(20250226);
    let params = lora_tensors(&mut rng, 0.05)?;
    let grads = lora_tensors(&mut rng, 1e-3)?;
    let deltas_in = lora_tensors(&mut rng, 1e-4)?;
    let deltas_out = lora_tensors(&mut rng, 1e-4)?;
    let elements: usize = params.iter().map(|p| p.value.elem_count()).sum();
    println!(
        "kif machinery, CPU, {} tensors, {elements} elements (LLaMA-2 13B q/v LoRA r={RANK}), median of {RUNS}",
        params.len()
    );

    let zeros: Vec<Tensor> = params
        .iter()
        .map(|p| p.value.zeros_like())
        .collect::<candle_core::Result<_>>()?;
    let baseline = time(|| {
        for ((p, g), z) in params.iter().zip(&grads).zip(&zeros) {
            adamw_like(&p.value, &g.value, z, z)?;
        }
        Ok(())
    })?;

    let step: Vec<ParamGrad> = params
        .iter()
        .zip(&grads)
        .map(|(p, g)| ParamGrad {
            name: &p.name,
            param: &p.value,
            grad: &g.value,
        })
        .collect();
    let mut tracker = ImportanceTracker::new(ImportanceConfig::default())?;
    // Two updates first, so the timed ones read a non-zero state like mid-training.
    tracker.update(&step)?;
    tracker.update(&step)?;
    let importance = time(|| tracker.update(&step))?;

    let scores = tracker.scores();
    let mut flat = Vec::with_capacity(elements);
    for (_, s) in &scores {
        flat.extend(s.flatten_all()?.to_vec1::<f32>()?);
    }
    let select = time(|| quantile(&flat, DEFAULT_QUANTILE).map(|_| ()))?;
    let mut selected = 0;
    let mask_time = time(|| {
        selected = global_mask(&scores, DEFAULT_QUANTILE)?.selected();
        Ok(())
    })?;

    // An outer tracker fed other gradients, so the two masks overlap only partly.
    let outer_grads = lora_tensors(&mut rng, 1e-3)?;
    let outer_step: Vec<ParamGrad> = params
        .iter()
        .zip(&outer_grads)
        .map(|(p, g)| ParamGrad {
            name: &p.name,
            param: &p.value,
            grad: &g.value,
        })
        .collect();
    let mut outer = ImportanceTracker::new(ImportanceConfig::default())?;
    outer.update(&outer_step)?;
    let inner_mask = global_mask(&scores, DEFAULT_QUANTILE)?;
    let outer_mask = global_mask(&outer.scores(), DEFAULT_QUANTILE)?;
    let inputs: Vec<FusionTensor> = params
        .iter()
        .zip(&deltas_in)
        .zip(&deltas_out)
        .zip(inner_mask.tensors.iter().zip(&outer_mask.tensors))
        .map(|(((p, d_in), d_out), (m_in, m_out))| FusionTensor {
            name: &p.name,
            anchor: &p.value,
            delta_in: &d_in.value,
            delta_out: &d_out.value,
            inner_mask: &m_in.mask,
            outer_mask: &m_out.mask,
        })
        .collect();
    let table = FusionTable::default();
    let mut overlap = None;
    let fusion = time(|| {
        overlap = fuse(&table, &inputs)?.stats.overlap();
        Ok(())
    })?;

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = |d: Duration| d.as_secs_f64() / baseline.as_secs_f64();
    println!("{:<44} {:>9} {:>12}", "operation", "ms", "x AdamW-like");
    for (what, d) in [
        ("AdamW-like update (baseline)", baseline),
        ("importance update (one tracker)", importance),
        ("global 0.8-quantile (selection only)", select),
        ("global mask (copy + quantile + masks)", mask_time),
        ("fusion (coefficients, sum, stats)", fusion),
    ] {
        println!("{what:<44} {:>9.2} {:>12.2}", ms(d), ratio(d));
    }
    println!(
        "global mask selected {selected} of {elements} ({:.1}%)",
        100.0 * selected as f64 / elements as f64
    );
    if let Some(o) = overlap {
        println!("inner/outer overlap |AND|/|OR| = {o:.3}");
    }
    Ok(())
}
