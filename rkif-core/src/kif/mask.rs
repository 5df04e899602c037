//! Importance masks: an element is important when its score is strictly above the
//! q-quantile of the scores (METHOD.md section 3).
//!
//! The global mask ranks every LoRA element of the model together; the per-tensor (local)
//! variant ranks each tensor on its own. The quantile is exact (a selection, not an
//! estimate), has no size limit, and reproduces `torch.quantile(x, q)` with linear
//! interpolation bit for bit on float32 input.

use candle_core::Tensor;

use super::host;
use crate::{Error, Result};

/// The reference's quantile: the top ~20% of elements are important.
pub const DEFAULT_QUANTILE: f64 = 0.8;

/// Which elements a threshold is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskScope {
    /// One threshold over all tensors together (what Recurrent-KIF uses).
    Global,
    /// One threshold per tensor.
    PerTensor,
}

/// The mask of one tensor.
#[derive(Debug, Clone)]
pub struct TensorMask {
    pub name: String,
    /// The threshold the scores were compared with (`score > threshold`).
    pub threshold: f32,
    /// `u8`, 1 where important, 0 elsewhere; the score's shape and device.
    pub mask: Tensor,
    /// How many elements are 1.
    pub selected: usize,
    /// How many elements the tensor has.
    pub total: usize,
}

/// The masks of all tensors, in the order of the scores they came from.
#[derive(Debug, Clone)]
pub struct ImportanceMask {
    pub scope: MaskScope,
    pub quantile: f64,
    pub tensors: Vec<TensorMask>,
}

impl ImportanceMask {
    /// Important elements over all tensors.
    pub fn selected(&self) -> usize {
        self.tensors.iter().map(|t| t.selected).sum()
    }

    /// Elements over all tensors.
    pub fn total(&self) -> usize {
        self.tensors.iter().map(|t| t.total).sum()
    }

    /// The shared threshold of a global mask (`None` for a per-tensor mask).
    pub fn global_threshold(&self) -> Option<f32> {
        match self.scope {
            MaskScope::Global => self.tensors.first().map(|t| t.threshold),
            MaskScope::PerTensor => None,
        }
    }

    /// The mask of tensor `name`.
    pub fn get(&self, name: &str) -> Option<&TensorMask> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Masks for `scores` (`(name, S)` pairs, any shapes, in parameter order): `S > tau` with tau
/// the `q`-quantile of all scores together ([`MaskScope::Global`]) or of each tensor alone.
///
/// Errors: `q` outside `[0, 1]`, no elements at all, or a NaN or infinite score (the error
/// names the tensor and the element).
pub fn importance_mask(
    scores: &[(String, Tensor)],
    q: f64,
    scope: MaskScope,
) -> Result<ImportanceMask> {
    check_quantile(q)?;
    let tensors = match scope {
        MaskScope::Global => global_masks(scores, q)?,
        MaskScope::PerTensor => scores
            .iter()
            .map(|(name, score)| {
                let values = host_scores(name, score)?;
                let threshold = select_quantile(&mut values.clone(), q)
                    .ok_or_else(|| Error::tensor(name, "no elements to rank"))?;
                mask_from_host(name, score, &values, threshold)
            })
            .collect::<Result<Vec<_>>>()?,
    };
    Ok(ImportanceMask {
        scope,
        quantile: q,
        tensors,
    })
}

/// [`importance_mask`] with [`MaskScope::Global`].
pub fn global_mask(scores: &[(String, Tensor)], q: f64) -> Result<ImportanceMask> {
    importance_mask(scores, q, MaskScope::Global)
}

/// [`importance_mask`] with [`MaskScope::PerTensor`].
pub fn local_mask(scores: &[(String, Tensor)], q: f64) -> Result<ImportanceMask> {
    importance_mask(scores, q, MaskScope::PerTensor)
}

fn global_masks(scores: &[(String, Tensor)], q: f64) -> Result<Vec<TensorMask>> {
    // One host copy of every score, concatenated in parameter order; tensors are sliced out
    // of it again for their masks, so each device tensor is read once.
    let total: usize = scores.iter().map(|(_, s)| s.elem_count()).sum();
    let mut all = Vec::with_capacity(total);
    for (name, score) in scores {
        with_finite_host_scores(name, score, |v| all.extend_from_slice(v))?;
    }
    let threshold = select_quantile(&mut all.clone(), q)
        .ok_or_else(|| Error::tensor("importance scores", "no elements to rank"))?;
    let mut offset = 0;
    let mut masks = Vec::with_capacity(scores.len());
    for (name, score) in scores {
        let end = offset + score.elem_count();
        let values = all
            .get(offset..end)
            .ok_or_else(|| Error::tensor(name, "internal: score slice out of range"))?;
        masks.push(mask_from_host(name, score, values, threshold)?);
        offset = end;
    }
    Ok(masks)
}

/// The mask `values > threshold`, shaped and placed like `score`.
fn mask_from_host(
    name: &str,
    score: &Tensor,
    values: &[f32],
    threshold: f32,
) -> Result<TensorMask> {
    let bits: Vec<u8> = values.iter().map(|&s| u8::from(s > threshold)).collect();
    let selected = bits.iter().map(|&b| usize::from(b)).sum();
    let mask = Tensor::from_vec(bits, score.shape(), score.device())?;
    Ok(TensorMask {
        name: name.to_string(),
        threshold,
        mask,
        selected,
        total: values.len(),
    })
}

/// The scores of one tensor on the host, refusing NaN and infinity.
fn host_scores(name: &str, score: &Tensor) -> Result<Vec<f32>> {
    with_finite_host_scores(name, score, <[f32]>::to_vec)
}

fn with_finite_host_scores<R>(
    name: &str,
    score: &Tensor,
    f: impl FnOnce(&[f32]) -> R,
) -> Result<R> {
    host::with_host_f32(score, |v| match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::NonFinite {
            name: name.to_string(),
            what: format!(
                "importance score {} at flat index {i}",
                v.get(i).copied().unwrap_or(f32::NAN)
            ),
        }),
        None => Ok(f(v)),
    })?
}

fn check_quantile(q: f64) -> Result<()> {
    if (0.0..=1.0).contains(&q) {
        Ok(())
    } else {
        Err(Error::config(
            "kif.quantile",
            format!("must be in [0, 1], got {q}"),
        ))
    }
}

/// The `q`-quantile of `values` as `torch.quantile(values, q)` (linear interpolation) computes
/// it on float32 input; `None` when `values` is empty.
///
/// Errors when `q` is outside `[0, 1]` or an element is NaN or infinite (naming it).
pub fn quantile(values: &[f32], q: f64) -> Result<Option<f32>> {
    check_quantile(q)?;
    if let Some(i) = values.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            name: "quantile input".to_string(),
            what: format!(
                "element {i} is {}",
                values.get(i).copied().unwrap_or(f32::NAN)
            ),
        });
    }
    Ok(select_quantile(&mut values.to_vec(), q))
}

/// Where the `q`-quantile of `n` sorted values sits: the two neighbouring order statistics
/// and the interpolation weight between them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Position {
    below: usize,
    above: usize,
    weight: f32,
}

/// torch computes the rank `q * (n - 1)` in the input's dtype (float32 here), which sets the
/// last bit of the result; we do the same wherever float32 represents `n - 1` exactly
/// (n <= 2^24 + 1, torch's own limit). Beyond that float32 cannot even name every position,
/// so the rank is computed in float64.
fn position(n: usize, q: f64) -> Option<Position> {
    let last = n.checked_sub(1)?;
    let (below, above, weight) = if last <= 1 << 24 {
        let rank = (q as f32) * (last as f32);
        let below = rank.floor();
        (below as usize, rank.ceil() as usize, rank - below)
    } else {
        let rank = q * last as f64;
        let below = rank.floor();
        (below as usize, rank.ceil() as usize, (rank - below) as f32)
    };
    Some(Position {
        below: below.min(last),
        above: above.min(last),
        weight,
    })
}

/// Linear interpolation with torch's formula (`lerp`), which switches form at weight 0.5 so
/// that weight 1 returns `b` exactly.
fn lerp(a: f32, b: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        a + weight * (b - a)
    } else {
        b - (b - a) * (1.0 - weight)
    }
}

/// The quantile of finite `values`, reordering them: one selection puts the lower order
/// statistic in place and leaves every larger element after it, so the upper neighbour is
/// the minimum of that tail (a second selection of rank 0 there).
fn select_quantile(values: &mut [f32], q: f64) -> Option<f32> {
    let pos = position(values.len(), q)?;
    let (_, below, tail) = values.select_nth_unstable_by(pos.below, f32::total_cmp);
    let a = *below;
    let b = if pos.above > pos.below {
        tail.iter().copied().fold(f32::INFINITY, f32::min)
    } else {
        a
    };
    Some(lerp(a, b, pos.weight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn named(name: &str, values: &[f32]) -> (String, Tensor) {
        let t = Tensor::new(values, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        (name.to_string(), t)
    }

    fn bits(m: &TensorMask) -> Vec<u8> {
        m.mask.to_vec1::<u8>().unwrap_or_else(|e| panic!("{e}"))
    }

    /// numpy.quantile's definition in float64, on a sorted copy.
    fn sorted_reference(values: &[f32], q: f64) -> f64 {
        let mut s: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
        s.sort_by(f64::total_cmp);
        let rank = q * (s.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        s[lo] + (rank - rank.floor()) * (s[hi] - s[lo])
    }

    #[test]
    fn quantile_interpolates_between_order_statistics() -> Result<()> {
        // 5 values: rank 0.8 * 4 = 3.2, between 40 and 50.
        let got = quantile(&[50.0, 10.0, 40.0, 20.0, 30.0], 0.8)?;
        assert!((got.unwrap_or(f32::NAN) - 42.0).abs() < 1e-5, "{got:?}");
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.0)?, Some(1.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 1.0)?, Some(3.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5)?, Some(2.0));
        assert_eq!(quantile(&[7.0], 0.8)?, Some(7.0));
        assert_eq!(quantile(&[], 0.8)?, None);
        Ok(())
    }

    #[test]
    fn quantile_matches_a_sort_on_pseudo_random_data() -> Result<()> {
        let mut x: u32 = 0x9e37_79b9;
        for n in [2usize, 3, 10, 101, 1000, 4097] {
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x % 1000) as f32 * 0.001 // many ties
                })
                .collect();
            for q in [0.0, 0.1, 0.5, 0.8, 0.95, 1.0] {
                let got = f64::from(quantile(&values, q)?.unwrap_or(f32::NAN));
                let want = sorted_reference(&values, q);
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1e-6),
                    "n {n} q {q}: {got} vs {want}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn rank_is_computed_like_torch() {
        // 0.8f32 * 1279f32 = 1023.2001 in float32, not 1023.2.
        let p = position(1280, 0.8).unwrap_or_else(|| panic!("empty"));
        assert_eq!((p.below, p.above), (1023, 1024));
        assert_eq!(p.weight, 0.8f32 * 1279.0 - 1023.0);
        assert_ne!(p.weight, 0.2f32);
        // Past 2^24 + 1 elements the rank is computed in f64.
        let n = (1usize << 25) + 2;
        let p = position(n, 0.5).unwrap_or_else(|| panic!("empty"));
        assert_eq!(
            (p.below, p.above, p.weight),
            ((n - 1) / 2, (n - 1) / 2 + 1, 0.5)
        );
        assert_eq!(position(0, 0.8), None);
    }

    #[test]
    fn quantile_has_no_size_limit() -> Result<()> {
        // Past 2^24 + 1 elements (where torch.quantile refuses): values i % 7, whose sorted
        // order is known from the counts of each residue.
        let n = (1usize << 24) + 2;
        let values: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
        let order_statistic = |pos: usize| {
            let mut below = 0;
            (0..7)
                .find(|&k| {
                    below += (n - k).div_ceil(7); // how many i < n have i % 7 == k
                    pos < below
                })
                .map_or(f32::NAN, |k| k as f32)
        };
        // (About 5 s in a debug build: the selection is generic code compiled without
        // optimisation there.)
        let q = 0.8;
        let rank = q * (n - 1) as f64;
        let lo = order_statistic(rank.floor() as usize);
        let hi = order_statistic(rank.ceil() as usize);
        let want = lerp(lo, hi, (rank - rank.floor()) as f32);
        assert_eq!(quantile(&values, q)?, Some(want));
        Ok(())
    }

    #[test]
    fn global_mask_is_strict_and_counts_ties_out() -> Result<()> {
        // Ten scores, sorted 0 0 0 0 1 1 1 1 2 2. Rank 0.8 * 9 = 7.2 lies between positions 7
        // (a 1) and 8 (a 2): tau = 1.2 and exactly the two 2s are selected.
        let scores = [
            named("a", &[0.0, 1.0, 2.0, 0.0, 1.0]),
            named("b", &[1.0, 0.0, 2.0, 1.0, 0.0]),
        ];
        let m = global_mask(&scores, 0.8)?;
        let tau = m.global_threshold().unwrap_or(f32::NAN);
        assert!((tau - 1.2).abs() < 1e-6, "{tau}");
        assert_eq!(bits(&m.tensors[0]), vec![0, 0, 1, 0, 0]);
        assert_eq!(bits(&m.tensors[1]), vec![0, 0, 1, 0, 0]);
        assert_eq!((m.selected(), m.total()), (2, 10));

        // Ties at the threshold: 0 x6, 3 x4; rank 7.2 falls inside the 3s, tau = 3 exactly,
        // and `>` selects nothing although 20% was asked for.
        let ties = [named(
            "t",
            &[3.0, 0.0, 3.0, 0.0, 0.0, 3.0, 0.0, 3.0, 0.0, 0.0],
        )];
        let m = global_mask(&ties, 0.8)?;
        assert_eq!(m.global_threshold(), Some(3.0));
        assert_eq!(m.selected(), 0);
        Ok(())
    }

    #[test]
    fn local_mask_uses_one_threshold_per_tensor() -> Result<()> {
        let scores = [
            named("small", &[1.0, 2.0, 3.0, 4.0, 5.0]),
            named("large", &[100.0, 200.0, 300.0, 400.0, 500.0]),
        ];
        let m = local_mask(&scores, 0.8)?;
        assert_eq!(m.global_threshold(), None);
        assert!((m.tensors[0].threshold - 4.2).abs() < 1e-5);
        assert!((m.tensors[1].threshold - 420.0).abs() < 1e-3);
        assert_eq!(bits(&m.tensors[0]), vec![0, 0, 0, 0, 1]);
        assert_eq!(bits(&m.tensors[1]), vec![0, 0, 0, 0, 1]);
        // The same scores ranked globally: only the large tensor's top elements win.
        let g = global_mask(&scores, 0.8)?;
        assert_eq!(bits(&g.tensors[0]), vec![0, 0, 0, 0, 0]);
        assert_eq!(bits(&g.tensors[1]), vec![0, 0, 0, 1, 1]);
        Ok(())
    }

    #[test]
    fn masks_keep_shape_and_order() -> Result<()> {
        let t = Tensor::new(&[[0f32, 9.0, 1.0], [8.0, 2.0, 3.0]], &Device::Cpu)?;
        let m = global_mask(&[("m".to_string(), t)], 0.5)?;
        let mask = &m
            .get("m")
            .ok_or_else(|| Error::tensor("m", "missing"))?
            .mask;
        assert_eq!(mask.dims(), &[2, 3]);
        // Sorted 0 1 2 3 8 9, rank 2.5: tau = 2.5, so 9, 8 and 3 are selected.
        assert_eq!(mask.to_vec2::<u8>()?, vec![vec![0, 1, 0], vec![1, 0, 1]]);
        Ok(())
    }

    #[test]
    fn nan_score_is_a_named_error() {
        let scores = [
            named("ok", &[1.0, 2.0]),
            named("enc.q.lora_A", &[0.5, f32::NAN]),
        ];
        for scope in [MaskScope::Global, MaskScope::PerTensor] {
            match importance_mask(&scores, 0.8, scope) {
                Err(Error::NonFinite { name, what }) => {
                    assert_eq!(name, "enc.q.lora_A");
                    assert!(what.contains("index 1"), "{what}");
                }
                other => panic!("expected NonFinite, got {other:?}"),
            }
        }
        assert!(matches!(
            quantile(&[1.0, f32::NAN], 0.5),
            Err(Error::NonFinite { .. })
        ));
    }

    #[test]
    fn bad_quantile_and_empty_input_are_errors() {
        let scores = [named("a", &[1.0])];
        assert!(matches!(
            global_mask(&scores, 1.5),
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            global_mask(&scores, f64::NAN),
            Err(Error::Config { .. })
        ));
        assert!(matches!(global_mask(&[], 0.8), Err(Error::Tensor { .. })));
        let empty = [named("e", &[])];
        assert!(matches!(local_mask(&empty, 0.8), Err(Error::Tensor { name, .. }) if name == "e"));
    }
}
