//! T5's relative position buckets and the additive attention biases built from them.
//!
//! A query at position `i` and a key at position `j` share a learned per-head bias indexed by
//! the bucket of `j - i`. Half of the buckets hold exact small distances, the rest are spaced
//! logarithmically up to `max_distance`; farther distances share the last bucket. The encoder
//! is bidirectional (separate buckets for keys left and right of the query). The decoder is
//! causal, so only keys at or before the query matter and all buckets go to that one side.

use candle_core::{DType, Device, Tensor};

/// The additive mask value for a key that must not be attended to (as Hugging Face).
pub const MASKED: f32 = f32::MIN;

/// The bucket of the relative position `key - query`.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let mut buckets = num_buckets as i64;
    let mut offset = 0i64;
    let distance = if bidirectional {
        buckets /= 2;
        if relative_position > 0 {
            offset = buckets;
        }
        relative_position.abs()
    } else {
        // Keys after the query (positive positions) all fall in bucket 0.
        (-relative_position).max(0)
    };
    let max_exact = buckets / 2;
    let bucket = if distance < max_exact {
        distance
    } else {
        // f32 arithmetic in the order PyTorch uses, so boundary distances land in the same
        // bucket as Hugging Face's.
        let ratio = (distance as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32);
        let large = max_exact + (ratio * (buckets - max_exact) as f32) as i64;
        large.min(buckets - 1)
    };
    (offset + bucket) as u32
}

/// The buckets for queries at `query_offset..query_offset + q_len` against keys at
/// `0..k_len`, row-major `[q_len, k_len]`.
pub fn bucket_grid(
    q_len: usize,
    k_len: usize,
    query_offset: usize,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(q_len * k_len);
    for i in 0..q_len {
        let query = (query_offset + i) as i64;
        for j in 0..k_len {
            out.push(relative_position_bucket(
                j as i64 - query,
                bidirectional,
                num_buckets,
                max_distance,
            ));
        }
    }
    out
}

/// The causal mask for queries at `query_offset..query_offset + q_len` against keys
/// `0..k_len`: `[1, 1, q_len, k_len]`, 0 where the key is visible, [`MASKED`] after the query.
pub fn causal_mask(
    q_len: usize,
    k_len: usize,
    query_offset: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = (0..q_len)
        .flat_map(|i| (0..k_len).map(move |j| if j > query_offset + i { MASKED } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (1, 1, q_len, k_len), device)
}

/// The padding mask from a `[B, L]` attention mask (1 = real token): `[B, 1, 1, L]` f32, 0 for
/// real keys and [`MASKED`] for padding.
pub fn padding_mask(attention_mask: &Tensor) -> candle_core::Result<Tensor> {
    let (b, l) = attention_mask.dims2()?;
    let keep = attention_mask.to_dtype(DType::F32)?;
    let masked = ((1.0 - keep)? * MASKED as f64)?;
    masked.reshape((b, 1, 1, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidirectional_buckets_by_hand() {
        // 32 buckets, max distance 128: 16 per side, 8 exact.
        let b = |rp| relative_position_bucket(rp, true, 32, 128);
        assert_eq!(b(0), 0);
        assert_eq!(b(-3), 3);
        assert_eq!(b(3), 19);
        assert_eq!(b(-7), 7);
        // 8 + floor(ln(12/8) / ln(16) * 8) = 8 + floor(1.1699) = 9
        assert_eq!(b(-12), 9);
        assert_eq!(b(12), 25);
        // Beyond max distance: clamped to the last bucket of each side.
        assert_eq!(b(-500), 15);
        assert_eq!(b(500), 31);
    }

    #[test]
    fn causal_buckets_are_one_sided() {
        let b = |rp| relative_position_bucket(rp, false, 32, 128);
        assert_eq!(b(5), 0, "future keys share bucket 0");
        assert_eq!(b(-5), 5);
        assert_eq!(b(-15), 15);
        // 16 + floor(ln(23/16) / ln(8) * 16) = 16 + floor(2.7924) = 18
        assert_eq!(b(-23), 18);
        assert_eq!(b(-127), 31);
        assert_eq!(b(-1000), 31);
    }

    #[test]
    fn grid_and_masks() -> candle_core::Result<()> {
        let g = bucket_grid(2, 3, 1, false, 32, 128);
        // Queries at 1 and 2; keys 0, 1, 2.
        assert_eq!(g, vec![1, 0, 0, 2, 1, 0]);
        let m = causal_mask(1, 3, 1, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(m, vec![0.0, 0.0, MASKED]);
        let pad = Tensor::new(&[[1u32, 0]], &Device::Cpu)?;
        let p = padding_mask(&pad)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(p, vec![0.0, MASKED]);
        Ok(())
    }
}
