//! Fused causal attention of query rows over the preallocated KV cache, on the CPU.
//!
//! Used for every pass on the CPU: prompt prefill, decode steps (one row per sequence),
//! batched decode, and the verification pass of speculative decoding (a handful of rows). Each
//! output `(row, head)` is computed by one function call over the cache's own memory: scores
//! `q·k_j * scale` for the positions the row may see (`0..=start_pos + row`), a softmax, and
//! the weighted sum of the values, always in ascending position order. Nothing depends on how many rows are computed together or how the
//! work is split between threads, so a row's result is the same bit for bit alone, in a batch,
//! or inside a verification pass: the property that keeps speculative and batched greedy
//! decoding identical to plain greedy decoding.
//!
//! A prompt's rows go through it too, so a prefilled position gets the same attention output as
//! a decoded one, and only the causal half of the scores is computed: a 512-token prefill of the
//! 1B Q4_K_M shape went 116-136 -> 143-165 tokens/s against candle's masked matrix products and
//! softmax (alternating runs, 2 threads, on the Xeon of docs/BENCHMARKS.md). Other devices keep
//! candle's products.

use crate::rowwise::dots_f32;

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// One sequence's query rows in an [`attend_rows`] call, with its own cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SequenceRows<'a> {
    /// `(n_heads, rows, head_dim)` after RoPE, for positions `start_pos..start_pos + rows`.
    pub q: &'a [f32],
    /// The sequence's cache layer, `(n_kv_heads, capacity, head_dim)`, with these rows' own
    /// keys and values already written.
    pub k: &'a [f32],
    /// Values, the shape of `k`.
    pub v: &'a [f32],
    pub start_pos: usize,
}

/// Attention of the query rows of one or more sequences (each over its own cache) in one call
/// spread over the pool's threads. Returns `(total rows, n_heads * head_dim)`, the sequences'
/// rows in order: query head `h` reads kv head `h / (n_heads / n_kv_heads)` (transformers'
/// `repeat_kv` order).
pub(crate) fn attend_rows(
    seqs: &[SequenceRows<'_>],
    shape: AttentionShape,
    scale: f32,
) -> Vec<f32> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = shape;
    // First output row of each sequence (and the total at the end), and its cache capacity.
    let mut first = vec![0];
    let mut capacity = Vec::with_capacity(seqs.len());
    for s in seqs {
        let rows = s.q.len() / (n_heads * hd);
        assert_eq!(s.q.len(), n_heads * rows * hd, "q has a partial row");
        assert_eq!(s.k.len() % (n_kv_heads * hd), 0, "k is not a cache shape");
        assert_eq!(s.v.len(), s.k.len(), "v is not the shape of k");
        let cap = s.k.len() / (n_kv_heads * hd);
        assert!(s.start_pos + rows <= cap, "rows end past the cache");
        capacity.push(cap);
        first.push(first[first.len() - 1] + rows);
    }
    let group = n_heads / n_kv_heads;
    let mut out = vec![0f32; first[seqs.len()] * n_heads * hd];
    crate::pool::for_each_chunk_mut(&mut out, hd, |item, out| {
        let (row, head) = (item / n_heads, item % n_heads);
        let s = first.partition_point(|&f| f <= row) - 1;
        let (seq, cap) = (&seqs[s], capacity[s]);
        let (r, rows) = (row - first[s], first[s + 1] - first[s]);
        let kv = head / group;
        let query = &seq.q[(head * rows + r) * hd..][..hd];
        let keys = &seq.k[kv * cap * hd..][..cap * hd];
        let values = &seq.v[kv * cap * hd..][..cap * hd];
        one_row(query, keys, values, hd, seq.start_pos + r + 1, scale, out);
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
    for s in scores.iter_mut() {
        *s /= total;
    }
    weighted_sum(&scores, &values[..visible * hd], out);
}

/// `out = sum_j p[j] * values[j]` over the rows of `values` (`out.len()` wide), each element
/// accumulated from 0 in ascending `j` as `o + p * x` (a product, then a sum: no fused
/// multiply-add), whatever the vector width.
fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::rowwise::simd_available() {
        // SAFETY: `simd_available()` saw AVX2 on this CPU.
        unsafe { avx2::weighted_sum(p, values, out) };
        return;
    }
    let hd = out.len();
    out.fill(0.0);
    for (&p, value) in p.iter().zip(values.chunks_exact(hd)) {
        for (o, &x) in out.iter_mut().zip(value) {
            *o += p * x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::weighted_sum`] with the output held in registers, 64 then 8 lanes at a time;
    /// each lane goes through the portable code's operations in its order.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
        let hd = out.len();
        let rows = p.len().min(values.len() / hd);
        let pv = values.as_ptr();
        let mut d = 0;
        while d + 64 <= hd {
            let mut acc = [_mm256_setzero_ps(); 8];
            for (j, &pj) in p[..rows].iter().enumerate() {
                let pj = _mm256_set1_ps(pj);
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: j < rows and d + 8 * r + 8 <= hd: inside row j of `values`.
                    let x = unsafe { _mm256_loadu_ps(pv.add(j * hd + d + 8 * r)) };
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(pj, x));
                }
            }
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: d + 8 * r + 8 <= hd = out.len().
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(d + 8 * r), *a) };
            }
            d += 64;
        }
        while d + 8 <= hd {
            let mut a = _mm256_setzero_ps();
            for (j, &pj) in p[..rows].iter().enumerate() {
                // SAFETY: as above, for one register.
                let x = unsafe { _mm256_loadu_ps(pv.add(j * hd + d)) };
                a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(pj), x));
            }
            // SAFETY: d + 8 <= hd = out.len().
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(d), a) };
            d += 8;
        }
        for (e, o) in out.iter_mut().enumerate().skip(d) {
            *o = 0.0;
            for (j, &pj) in p[..rows].iter().enumerate() {
                *o += pj * values[j * hd + e];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;

    /// Plain f64 attention of one sequence, the reference.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape, start: usize) -> Vec<f32> {
        let hd = s.head_dim;
        let capacity = k.len() / (s.n_kv_heads * hd);
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
                        let key = &k[(kv * capacity + j) * hd..][..hd];
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
                        .map(|j| exps[j] / total * v[(kv * capacity + j) * hd + d] as f64)
                        .sum();
                    out[row * s.n_heads * hd + h * hd + d] = acc as f32;
                }
            }
        }
        out
    }

    fn one<'a>(q: &'a [f32], k: &'a [f32], v: &'a [f32], start_pos: usize) -> SequenceRows<'a> {
        SequenceRows { q, k, v, start_pos }
    }

    #[test]
    fn matches_plain_attention_and_rows_do_not_depend_on_their_company() {
        // head_dim 75 is not a multiple of the dot product's 32 lanes nor of the weighted
        // sum's 64 and 8; 6 heads over 2 kv heads.
        let shape = AttentionShape {
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 75,
        };
        let capacity = 50;
        let (start, rows) = (17, 5);
        let hd = shape.head_dim;
        let k = random(shape.n_kv_heads * capacity * hd, 1);
        let v = random(k.len(), 2);
        let q = random(shape.n_heads * rows * hd, 3);
        let scale = 1.0 / (hd as f32).sqrt();
        let all = attend_rows(&[one(&q, &k, &v, start)], shape, scale);
        let want = reference(&q, &k, &v, shape, start);
        for (a, b) in all.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Row r alone, at position start + r, is bit for bit the same.
        let width = shape.n_heads * hd;
        let row_alone = |r: usize| -> Vec<f32> {
            (0..shape.n_heads)
                .flat_map(|h| q[(h * rows + r) * hd..][..hd].to_vec())
                .collect()
        };
        for r in 0..rows {
            let q_r = row_alone(r);
            let alone = attend_rows(&[one(&q_r, &k, &v, start + r)], shape, scale);
            assert_eq!(alone, all[r * width..(r + 1) * width], "row {r}");
        }
        // Positions the row may not see (later than itself) never matter.
        let mut poisoned_k = k.clone();
        let mut poisoned_v = v.clone();
        for kv in 0..shape.n_kv_heads {
            for j in start + rows..capacity {
                for d in 0..hd {
                    poisoned_k[(kv * capacity + j) * hd + d] = f32::NAN;
                    poisoned_v[(kv * capacity + j) * hd + d] = f32::INFINITY;
                }
            }
        }
        assert_eq!(
            attend_rows(&[one(&q, &poisoned_k, &poisoned_v, start)], shape, scale),
            all
        );
    }

    #[test]
    fn sequences_attended_together_equal_each_alone() {
        // Llama's head size 64 (the 64-lane path of the weighted sum), 4 heads over 1 kv head;
        // three caches of different capacities, positions and row counts.
        let shape = AttentionShape {
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 64,
        };
        let hd = shape.head_dim;
        let scale = 0.125;
        let specs = [(40, 0, 1), (300, 211, 3), (64, 63, 1)]; // (capacity, start, rows)
        let data: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = specs
            .iter()
            .enumerate()
            .map(|(i, &(cap, _, rows))| {
                let seed = 10 * i as u32;
                (
                    random(shape.n_heads * rows * hd, seed),
                    random(cap * hd, seed + 1),
                    random(cap * hd, seed + 2),
                )
            })
            .collect();
        let seqs: Vec<SequenceRows> = data
            .iter()
            .zip(&specs)
            .map(|((q, k, v), &(_, start, _))| one(q, k, v, start))
            .collect();
        let together = attend_rows(&seqs, shape, scale);
        let mut at = 0;
        for (s, ((q, k, v), &(_, start, rows))) in seqs.iter().zip(data.iter().zip(&specs)) {
            let alone = attend_rows(std::slice::from_ref(s), shape, scale);
            let n = rows * shape.n_heads * hd;
            assert_eq!(alone, together[at..at + n], "sequence at {start}");
            let want = reference(q, k, v, shape, start);
            for (a, b) in alone.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
            at += n;
        }
        assert_eq!(at, together.len());
    }

    #[test]
    fn simd_weighted_sum_equals_the_portable_loop() {
        for hd in [64, 128, 75, 8, 5] {
            let rows = 37;
            let p = random(rows, 5);
            let values = random(rows * hd, 6);
            let mut got = vec![f32::NAN; hd];
            weighted_sum(&p, &values, &mut got);
            let mut want = vec![0f32; hd];
            for (&p, value) in p.iter().zip(values.chunks_exact(hd)) {
                for (o, &x) in want.iter_mut().zip(value) {
                    *o += p * x;
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "head size {hd}");
        }
    }
}
