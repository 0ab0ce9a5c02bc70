//! Fused causal attention of a few query rows over the preallocated KV cache, on the CPU.
//!
//! Used for decode steps (one row per sequence), batched decode, and the verification pass of
//! speculative decoding (a handful of rows). Each output `(row, head)` is computed by one
//! function call over the cache's own memory: scores `q·k_j * scale` for the positions the row
//! may see (`0..=start_pos + row`), a softmax, and the weighted sum of the values, always in
//! ascending position order. Nothing depends on how many rows are computed together or how the
//! work is split between threads, so a row's result is the same bit for bit alone, in a batch,
//! or inside a verification pass: the property that keeps speculative and batched greedy
//! decoding identical to plain greedy decoding.
//!
//! Prefill chunks (more than [`crate::rowwise::MAX_ROWS`] rows) keep candle's matrix products.

use crate::rowwise::dots_f32;

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Positions the cache tensors have room for (their second dimension).
    pub capacity: usize,
}

/// `q` is `(n_heads, rows, head_dim)` (after RoPE) for positions `start_pos..start_pos + rows`,
/// `k` and `v` are the cache's `(n_kv_heads, capacity, head_dim)` with the rows' own keys and
/// values already written. Returns `(rows, n_heads * head_dim)`: query head `h` reads kv head
/// `h / (n_heads / n_kv_heads)` (transformers' `repeat_kv` order).
pub(crate) fn attend_rows(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    start_pos: usize,
    scale: f32,
) -> Vec<f32> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
        capacity,
    } = shape;
    let rows = q.len() / (n_heads * hd);
    assert_eq!(q.len(), n_heads * rows * hd, "q has a partial row");
    assert_eq!(
        k.len(),
        n_kv_heads * capacity * hd,
        "k is not the cache shape"
    );
    assert_eq!(v.len(), k.len(), "v is not the cache shape");
    assert!(start_pos + rows <= capacity, "rows end past the cache");
    let group = n_heads / n_kv_heads;
    let mut out = vec![0f32; rows * n_heads * hd];
    crate::pool::for_each_chunk_mut(&mut out, hd, |item, out| {
        let (row, head) = (item / n_heads, item % n_heads);
        let kv = head / group;
        let query = &q[(head * rows + row) * hd..][..hd];
        let keys = &k[kv * capacity * hd..][..capacity * hd];
        let values = &v[kv * capacity * hd..][..capacity * hd];
        one_row(query, keys, values, hd, start_pos + row + 1, scale, out);
    });
    out
}

/// Attention of one query over the first `visible` positions of one kv head.
fn one_row(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    hd: usize,
    visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    let mut scores = vec![0f32; visible];
    dots_f32(query, &keys[..visible * hd], &mut scores);
    for s in scores.iter_mut() {
        *s *= scale;
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    out.fill(0.0);
    for (p, value) in scores.iter().zip(values.chunks_exact(hd)) {
        let p = p / total;
        for (o, &x) in out.iter_mut().zip(value) {
            *o += p * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;

    /// Plain f64 attention, the reference.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape, start: usize) -> Vec<f32> {
        let hd = s.head_dim;
        let rows = q.len() / (s.n_heads * hd);
        let group = s.n_heads / s.n_kv_heads;
        let mut out = vec![0f32; rows * s.n_heads * hd];
        for row in 0..rows {
            for h in 0..s.n_heads {
                let kv = h / group;
                let qr = &q[(h * rows + row) * hd..][..hd];
                let visible = start + row + 1;
                let scores: Vec<f64> = (0..visible)
                    .map(|j| {
                        let key = &k[(kv * s.capacity + j) * hd..][..hd];
                        qr.iter()
                            .zip(key)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for d in 0..hd {
                    let acc: f64 = (0..visible)
                        .map(|j| exps[j] / total * v[(kv * s.capacity + j) * hd + d] as f64)
                        .sum();
                    out[row * s.n_heads * hd + h * hd + d] = acc as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_plain_attention_and_rows_do_not_depend_on_their_company() {
        // head_dim 40 is not a multiple of the dot product's 32 lanes; 6 heads over 2 kv heads.
        let shape = AttentionShape {
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 40,
            capacity: 50,
        };
        let (start, rows) = (17, 5);
        let hd = shape.head_dim;
        let k = random(shape.n_kv_heads * shape.capacity * hd, 1);
        let v = random(k.len(), 2);
        let q = random(shape.n_heads * rows * hd, 3);
        let scale = 1.0 / (hd as f32).sqrt();
        let all = attend_rows(&q, &k, &v, shape, start, scale);
        let want = reference(&q, &k, &v, shape, start);
        for (a, b) in all.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Row r alone, at position start + r, is bit for bit the same.
        let width = shape.n_heads * hd;
        for r in 0..rows {
            let q_r: Vec<f32> = (0..shape.n_heads)
                .flat_map(|h| q[(h * rows + r) * hd..][..hd].to_vec())
                .collect();
            let alone = attend_rows(&q_r, &k, &v, shape, start + r, scale);
            assert_eq!(alone, all[r * width..(r + 1) * width], "row {r}");
        }
        // Positions the row may not see (later than itself) never matter.
        let mut poisoned_k = k.clone();
        let mut poisoned_v = v.clone();
        for kv in 0..shape.n_kv_heads {
            for j in start + rows..shape.capacity {
                for d in 0..hd {
                    poisoned_k[(kv * shape.capacity + j) * hd + d] = f32::NAN;
                    poisoned_v[(kv * shape.capacity + j) * hd + d] = f32::INFINITY;
                }
            }
        }
        assert_eq!(
            attend_rows(&q, &poisoned_k, &poisoned_v, shape, start, scale),
            all
        );
    }
}
