//! Fused causal attention of query rows over the preallocated KV cache, on the CPU.
//!
//! Used for every pass on the CPU: prompt prefill, decode steps (one row per sequence),
//! batched decode, and the verification pass of speculative decoding (a handful of rows). Each
//! output `(row, head)` is computed by the same steps over the cache's own memory: scores
//! `q·k_j` for the positions the row may see (`0..=start_pos + row`, [`key_scores`]), a
//! softmax of the scaled scores ([`softmax`]), and the weighted sum of the values, always in
//! ascending position order. Nothing depends on how many rows are computed together or how the
//! work is split between threads, so a row's result is the same bit for bit alone, in a batch,
//! or inside a verification pass: the property that keeps speculative and batched greedy
//! decoding identical to plain greedy decoding. The heads that share a kv head go through its
//! keys and values together, a block at a time, so each block is read from memory once.
//!
//! A prompt's rows go through it too, so a prefilled position gets the same attention output as
//! a decoded one, and only the causal half of the scores is computed: a 512-token prefill of the
//! 1B Q4_K_M shape went 116-136 -> 143-165 tokens/s against candle's masked matrix products and
//! softmax (alternating runs, 2 threads, on the Xeon of docs/BENCHMARKS.md). Scores with the
//! query in registers, eight keys at a time, a vectorized exponential and fused sums then took
//! the attention from ~23% to ~12% of that prefill's profile. Other devices keep candle's
//! products.
//!
//! An f16 cache ([`crate::KvType::F16`]) is read a block of positions at a time, widened
//! exactly to f32 into a small per-thread buffer (8 values an instruction with F16C), and the
//! same f32 kernels run on it: the arithmetic of an f32 cache holding the rounded values, half
//! the bytes from memory.

use crate::kv_cache::KvValues;

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
    /// keys and values already written (f32, or f16 widened a block at a time as it is read).
    pub k: KvValues<'a>,
    /// Values, the shape of `k`.
    pub v: KvValues<'a>,
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
    let rows = first[seqs.len()];
    let mut out = vec![0f32; rows * n_heads * hd];
    // Work items: a row's heads that share a kv head, together (each block of keys and values
    // is then read from L1 by all of them), or one head each where that leaves too few items
    // for the threads. The arithmetic of each head is the same either way.
    let heads = if rows * n_kv_heads >= 8 { group } else { 1 };
    crate::pool::for_each_chunk_mut(&mut out, heads * hd, |item, out| {
        let (row, head) = (item * heads / n_heads, item * heads % n_heads);
        let s = first.partition_point(|&f| f <= row) - 1;
        let (seq, cap) = (&seqs[s], capacity[s]);
        let (r, rows) = (row - first[s], first[s + 1] - first[s]);
        let kv = head / group;
        let query = |i: usize| &seq.q[((head + i) * rows + r) * hd..][..hd];
        let keys = seq.k.slice(kv * cap * hd..(kv + 1) * cap * hd);
        let values = seq.v.slice(kv * cap * hd..(kv + 1) * cap * hd);
        let visible = seq.start_pos + r + 1;
        heads_of_one_row(query, keys, values, hd, visible, scale, out);
    });
    out
}

/// Positions per block of keys and values that a work item's heads go through in turn: 16 KiB
/// of keys at Llama's head size. A multiple of 8, the dot products' group of keys, so the
/// blocks give each score the operations of one pass over all keys.
const KV_BLOCK: usize = 64;

/// Attention of one row's queries (`query(i)` for each of the heads that share one kv head)
/// over the first `visible` positions of that kv head: `out` holds the heads' outputs one
/// after the other, `hd` values each.
fn heads_of_one_row<'a>(
    query: impl Fn(usize) -> &'a [f32],
    keys: KvValues<'_>,
    values: KvValues<'_>,
    hd: usize,
    visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    let heads = out.len() / hd;
    thread_local! {
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        // One block of f16 keys or values widened to f32 (an f32 cache is read in place).
        static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    WIDE.with_borrow_mut(|wide| {
        SCORES.with_borrow_mut(|scratch| {
            // Every score is written before it is read.
            let need = heads * visible;
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let scores = &mut scratch[..need];
            for at in (0..visible).step_by(KV_BLOCK) {
                let end = (at + KV_BLOCK).min(visible);
                let keys = keys.slice(at * hd..end * hd).widened(wide);
                // Two heads at a time where they come in pairs (each key read once for both).
                let mut pairs = scores.chunks_exact_mut(2 * visible);
                for (i, two) in (&mut pairs).enumerate() {
                    let (first, second) = two.split_at_mut(visible);
                    let queries = [query(2 * i), query(2 * i + 1)];
                    key_scores2(queries, keys, [&mut first[at..end], &mut second[at..end]]);
                }
                let last = pairs.into_remainder();
                if !last.is_empty() {
                    key_scores(query(heads - 1), keys, &mut last[at..end]);
                }
            }
            for scores in scores.chunks_exact_mut(visible) {
                softmax(scores, scale);
            }
            out.fill(0.0);
            for at in (0..visible).step_by(KV_BLOCK) {
                let end = (at + KV_BLOCK).min(visible);
                let values = values.slice(at * hd..end * hd).widened(wide);
                let mut outs = out.chunks_exact_mut(2 * hd);
                for (two, out) in scores.chunks_exact(2 * visible).zip(&mut outs) {
                    let p = [&two[at..end], &two[visible + at..visible + end]];
                    let (first, second) = out.split_at_mut(hd);
                    weighted_sum2(p, values, [first, second]);
                }
                let last = outs.into_remainder();
                if !last.is_empty() {
                    weighted_sum(&scores[(heads - 1) * visible..][at..end], values, last);
                }
            }
        })
    });
}

/// [`key_scores`] of two queries over the same keys: each score is what [`key_scores`] gives.
fn key_scores2(queries: [&[f32]; 2], keys: &[f32], scores: [&mut [f32]; 2]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() && matches!(queries[0].len(), 64 | 128) {
        // SAFETY: `available()` saw AVX-512F, AVX2, FMA and F16C on this CPU.
        unsafe { avx512::key_scores2(queries, keys, scores) };
        return;
    }
    let [first, second] = scores;
    key_scores(queries[0], keys, first);
    key_scores(queries[1], keys, second);
}

/// [`weighted_sum`] of two heads' weights over the same values: each output is what
/// [`weighted_sum`] gives.
fn weighted_sum2(p: [&[f32]; 2], values: &[f32], out: [&mut [f32]; 2]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() && out[0].len().is_multiple_of(64) {
        // SAFETY: `available()` saw AVX-512F, AVX2, FMA and F16C on this CPU.
        unsafe { avx512::weighted_sum2(p, values, out) };
        return;
    }
    let [first, second] = out;
    weighted_sum(p[0], values, first);
    weighted_sum(p[1], values, second);
}

/// `scores[j] = query · keys[j]` for the rows of `keys` (`query.len()` wide), by 8-lane
/// partial sums: lane `l` is `q[l] * k[l]`, then `+ q[8c + l] * k[8c + l]` fused for each further
/// chunk `c` of 8; the lanes are added by [`add_lanes`], then the values past the last whole
/// chunk one by one (fused). The SIMD code keeps the query in registers and does eight keys at
/// once, each with these operations.
fn key_scores(query: &[f32], keys: &[f32], scores: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::rowwise::simd_available() {
        // SAFETY: `simd_available()` saw AVX2, FMA and F16C on this CPU.
        unsafe { avx2::key_scores(query, keys, scores) };
        return;
    }
    let hd = query.len();
    for (s, key) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
        *s = key_score(query, key);
    }
}

/// One score of [`key_scores`], portable code (inlined into the SIMD code's remainder, where
/// its fused multiply-adds are single instructions).
#[inline(always)]
fn key_score(q: &[f32], k: &[f32]) -> f32 {
    let full = q.len() / 8 * 8;
    let mut l = [0f32; 8];
    if full > 0 {
        for (i, lane) in l.iter_mut().enumerate() {
            *lane = q[i] * k[i];
            for c in (8..full).step_by(8) {
                *lane = q[c + i].mul_add(k[c + i], *lane);
            }
        }
    }
    crate::rowwise::add_tail(add_lanes(l), &q[full..], &k[full..q.len()])
}

/// Lanes of the softmax's sums: element `j` goes to lane `j % LANES` (in ascending `j`), the
/// lanes are then added in a fixed order ([`add_lanes`]), whatever the vector width used.
const LANES: usize = 8;

/// `scores = softmax(scores * scale)` in place: exponents by [`crate::expf::exp`], their total
/// summed lane-wise ([`LANES`]). The SIMD code does each step in the same order, so it gives
/// the portable code's bits.
fn softmax(scores: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::rowwise::simd_available() {
        // SAFETY: `simd_available()` saw AVX2 and FMA on this CPU.
        unsafe { avx2::softmax(scores, scale) };
        return;
    }
    for s in scores.iter_mut() {
        *s *= scale;
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0f32; LANES];
    for (j, s) in scores.iter_mut().enumerate() {
        *s = crate::expf::exp(*s - max);
        lanes[j % LANES] += *s;
    }
    let total = add_lanes(lanes);
    for s in scores.iter_mut() {
        *s /= total;
    }
}

/// The total of 8 lanes, `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))`: the order of
/// [`crate::rowwise::reduce8`], which the SIMD scores use; the softmax's sums use it too.
#[inline(always)]
fn add_lanes(l: [f32; LANES]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// `out += sum_j p[j] * values[j]` over the rows of `values` (`out.len()` wide), each element
/// accumulated onto `out` in ascending `j` as the fused `p * x + o`, whatever the vector
/// width; so consecutive calls over consecutive blocks of rows give one call's bits.
fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::rowwise::simd_available() {
        // SAFETY: `simd_available()` saw AVX2 and FMA on this CPU.
        unsafe { avx2::weighted_sum(p, values, out) };
        return;
    }
    let hd = out.len();
    for (&p, value) in p.iter().zip(values.chunks_exact(hd)) {
        for (o, &x) in out.iter_mut().zip(value) {
            *o = p.mul_add(x, *o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{add_lanes, LANES};
    use crate::expf::avx2::exp8;

    /// [`super::key_scores`]: the query's chunks of 8 in registers (kept there for Llama's
    /// head sizes 64 and 128), eight keys at a time, reduced together.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn key_scores(query: &[f32], keys: &[f32], scores: &mut [f32]) {
        match query.len() / 8 {
            8 => unsafe { scores_of::<8>(query, keys, scores) },
            16 => unsafe { scores_of::<16>(query, keys, scores) },
            _ => {
                for (s, key) in scores.iter_mut().zip(keys.chunks_exact(query.len())) {
                    *s = super::key_score(query, key);
                }
            }
        }
    }

    /// [`key_scores`] for a query of `8 * C` values plus a tail.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores_of<const C: usize>(query: &[f32], keys: &[f32], scores: &mut [f32]) {
        let hd = query.len();
        let full = 8 * C;
        assert!(keys.len() >= scores.len() * hd && hd >= full);
        // SAFETY: 8 * C <= hd values of the query.
        let q: [__m256; C] =
            std::array::from_fn(|c| unsafe { _mm256_loadu_ps(query.as_ptr().add(8 * c)) });
        let groups = scores.len() / 8;
        for g in 0..groups {
            let kp = |r: usize, c: usize| unsafe { keys.as_ptr().add((8 * g + r) * hd + 8 * c) };
            // SAFETY: key 8g + r < scores.len() has hd values in `keys`.
            let mut acc: [__m256; 8] =
                std::array::from_fn(|r| unsafe { _mm256_mul_ps(q[0], _mm256_loadu_ps(kp(r, 0))) });
            for (c, &qc) in q.iter().enumerate().skip(1) {
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: as above.
                    *a = unsafe { _mm256_fmadd_ps(qc, _mm256_loadu_ps(kp(r, c)), *a) };
                }
            }
            let mut sums = [0f32; 8];
            // SAFETY: `sums` holds 8 floats.
            unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), crate::rowwise::reduce8(acc)) };
            for (r, sum) in sums.into_iter().enumerate() {
                let key = &keys[(8 * g + r) * hd..][..hd];
                scores[8 * g + r] = crate::rowwise::add_tail(sum, &query[full..], &key[full..]);
            }
        }
        for j in 8 * groups..scores.len() {
            scores[j] = super::key_score(query, &keys[j * hd..][..hd]);
        }
    }

    /// [`super::softmax`], 8 lanes at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax(scores: &mut [f32], scale: f32) {
        let full = scores.len() / LANES * LANES;
        let sp = scores.as_mut_ptr();
        let vscale = _mm256_set1_ps(scale);
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        for j in (0..full).step_by(LANES) {
            // SAFETY: j + 8 <= full <= scores.len().
            unsafe {
                let s = _mm256_mul_ps(_mm256_loadu_ps(sp.add(j)), vscale);
                _mm256_storeu_ps(sp.add(j), s);
                vmax = _mm256_max_ps(vmax, s);
            }
        }
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmax) };
        let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for s in &mut scores[full..] {
            *s *= scale;
            max = max.max(*s);
        }
        let vmax = _mm256_set1_ps(max);
        let mut sums = _mm256_setzero_ps();
        for j in (0..full).step_by(LANES) {
            // SAFETY: as above.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sp.add(j)), vmax));
                _mm256_storeu_ps(sp.add(j), e);
                sums = _mm256_add_ps(sums, e);
            }
        }
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums) };
        for (j, s) in scores.iter_mut().enumerate().skip(full) {
            *s = crate::expf::exp(*s - max);
            lanes[j % LANES] += *s;
        }
        let total = add_lanes(lanes);
        let vtotal = _mm256_set1_ps(total);
        for j in (0..full).step_by(LANES) {
            // SAFETY: as above.
            unsafe {
                _mm256_storeu_ps(sp.add(j), _mm256_div_ps(_mm256_loadu_ps(sp.add(j)), vtotal))
            };
        }
        for s in &mut scores[full..] {
            *s /= total;
        }
    }

    /// [`super::weighted_sum`] with the output held in registers, 64 then 8 lanes at a time;
    /// each lane goes through the portable code's operations in its order.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
        let hd = out.len();
        let rows = p.len().min(values.len() / hd);
        let pv = values.as_ptr();
        let mut d = 0;
        while d + 64 <= hd {
            // SAFETY: d + 64 <= hd = out.len().
            let mut acc: [__m256; 8] =
                std::array::from_fn(|r| unsafe { _mm256_loadu_ps(out.as_ptr().add(d + 8 * r)) });
            for (j, &pj) in p[..rows].iter().enumerate() {
                let pj = _mm256_set1_ps(pj);
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: j < rows and d + 8 * r + 8 <= hd: inside row j of `values`.
                    let x = unsafe { _mm256_loadu_ps(pv.add(j * hd + d + 8 * r)) };
                    *a = _mm256_fmadd_ps(pj, x, *a);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: d + 8 * r + 8 <= hd = out.len().
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(d + 8 * r), *a) };
            }
            d += 64;
        }
        while d + 8 <= hd {
            // SAFETY: d + 8 <= hd = out.len().
            let mut a = unsafe { _mm256_loadu_ps(out.as_ptr().add(d)) };
            for (j, &pj) in p[..rows].iter().enumerate() {
                // SAFETY: as above, for one register.
                let x = unsafe { _mm256_loadu_ps(pv.add(j * hd + d)) };
                a = _mm256_fmadd_ps(_mm256_set1_ps(pj), x, a);
            }
            // SAFETY: d + 8 <= hd = out.len().
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(d), a) };
            d += 8;
        }
        for (e, o) in out.iter_mut().enumerate().skip(d) {
            for (j, &pj) in p[..rows].iter().enumerate() {
                *o = pj.mul_add(values[j * hd + e], *o);
            }
        }
    }
}

/// Two heads at once on 512-bit vectors: lanes 0-7 do the first head's 8-lane arithmetic,
/// lanes 8-15 the second's, each lane the same operations in the same order as the 256-bit
/// code, so each head's results are that code's bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Whether this CPU runs these kernels.
    pub(super) fn available() -> bool {
        crate::rowwise::simd_available() && std::arch::is_x86_feature_detected!("avx512f")
    }

    /// 8 floats at `p`, in both halves of a 512-bit vector.
    ///
    /// # Safety
    /// `p` holds 8 floats; the CPU has AVX-512F.
    #[inline(always)]
    unsafe fn twice(p: *const f32) -> __m512 {
        // SAFETY: the caller's guarantee.
        unsafe { _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(p as *const f64))) }
    }

    /// [`super::key_scores2`] for head sizes 64 and 128 (8 or 16 chunks of 8 values).
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub(super) unsafe fn key_scores2(queries: [&[f32]; 2], keys: &[f32], scores: [&mut [f32]; 2]) {
        match queries[0].len() {
            // SAFETY: the caller's guarantee.
            64 => unsafe { scores2_of::<8>(queries, keys, scores) },
            // SAFETY: the caller's guarantee.
            128 => unsafe { scores2_of::<16>(queries, keys, scores) },
            other => unreachable!("head size {other}"),
        }
    }

    /// [`key_scores2`] for queries of `8 * C` values: chunk `c` of both queries side by side in
    /// one register, each key's chunk `c` in both halves of another.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    unsafe fn scores2_of<const C: usize>(q: [&[f32]; 2], keys: &[f32], scores: [&mut [f32]; 2]) {
        let hd = 8 * C;
        let [first, second] = scores;
        let n = first.len();
        assert!(q[0].len() == hd && q[1].len() == hd && second.len() == n);
        assert!(keys.len() >= n * hd);
        // SAFETY: chunk c of each query: 8 values inside it.
        let qq: [__m512; C] = std::array::from_fn(|c| unsafe {
            let lo = _mm256_loadu_ps(q[0].as_ptr().add(8 * c));
            let hi = _mm256_loadu_ps(q[1].as_ptr().add(8 * c));
            _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi)
        });
        let groups = n / 8;
        for g in 0..groups {
            let kp = |r: usize, c: usize| unsafe { keys.as_ptr().add((8 * g + r) * hd + 8 * c) };
            // SAFETY: key 8g + r < n has hd values in `keys`.
            let mut acc: [__m512; 8] =
                std::array::from_fn(|r| unsafe { _mm512_mul_ps(qq[0], twice(kp(r, 0))) });
            for (c, &qc) in qq.iter().enumerate().skip(1) {
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: as above.
                    *a = unsafe { _mm512_fmadd_ps(qc, twice(kp(r, c)), *a) };
                }
            }
            let lo = acc.map(|a| _mm512_castps512_ps256(a));
            let hi =
                acc.map(|a| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a))));
            // SAFETY: 8 scores of each head at 8g (g < n / 8).
            unsafe {
                _mm256_storeu_ps(first.as_mut_ptr().add(8 * g), crate::rowwise::reduce8(lo));
                _mm256_storeu_ps(second.as_mut_ptr().add(8 * g), crate::rowwise::reduce8(hi));
            }
        }
        for j in 8 * groups..n {
            let key = &keys[j * hd..][..hd];
            first[j] = super::key_score(q[0], key);
            second[j] = super::key_score(q[1], key);
        }
    }

    /// [`super::weighted_sum2`] for head sizes that are a multiple of 64: both heads' outputs
    /// in registers, 64 values each at a time.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub(super) unsafe fn weighted_sum2(p: [&[f32]; 2], values: &[f32], out: [&mut [f32]; 2]) {
        let [first, second] = out;
        let hd = first.len();
        assert!(hd.is_multiple_of(64) && second.len() == hd);
        let rows = p[0].len().min(p[1].len()).min(values.len() / hd);
        let pv = values.as_ptr();
        for d in (0..hd).step_by(64) {
            let (o0, o1) = (first.as_mut_ptr(), second.as_mut_ptr());
            // SAFETY: d + 64 <= hd, inside both outputs.
            let mut a0: [__m512; 4] =
                std::array::from_fn(|r| unsafe { _mm512_loadu_ps(o0.add(d + 16 * r)) });
            let mut a1: [__m512; 4] =
                std::array::from_fn(|r| unsafe { _mm512_loadu_ps(o1.add(d + 16 * r)) });
            for (j, (&w0, &w1)) in p[0].iter().zip(p[1]).take(rows).enumerate() {
                let (p0, p1) = (_mm512_set1_ps(w0), _mm512_set1_ps(w1));
                for r in 0..4 {
                    // SAFETY: j < rows and d + 16 r + 16 <= hd: inside row j of `values`.
                    let x = unsafe { _mm512_loadu_ps(pv.add(j * hd + d + 16 * r)) };
                    a0[r] = _mm512_fmadd_ps(p0, x, a0[r]);
                    a1[r] = _mm512_fmadd_ps(p1, x, a1[r]);
                }
            }
            for r in 0..4 {
                // SAFETY: as for the loads.
                unsafe {
                    _mm512_storeu_ps(o0.add(d + 16 * r), a0[r]);
                    _mm512_storeu_ps(o1.add(d + 16 * r), a1[r]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;

    #[test]
    fn two_heads_at_once_give_each_head_its_own_bits() {
        // Head sizes 64 and 128 (the 512-bit code where the CPU has it) and 72 (the fallback);
        // 37 keys: four groups of 8 and a rest.
        for hd in [64, 128, 72] {
            let n = 37;
            let keys = random(n * hd, 1);
            let (q0, q1) = (random(hd, 2), random(hd, 3));
            let (mut s0, mut s1) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            key_scores2([&q0, &q1], &keys, [&mut s0, &mut s1]);
            let (mut w0, mut w1) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            key_scores(&q0, &keys, &mut w0);
            key_scores(&q1, &keys, &mut w1);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                (bits(&s0), bits(&s1)),
                (bits(&w0), bits(&w1)),
                "scores, {hd}"
            );

            let (p0, p1) = (random(n, 4), random(n, 5));
            let start = random(2 * hd, 6);
            let (mut o0, mut o1) = (start[..hd].to_vec(), start[hd..].to_vec());
            weighted_sum2([&p0, &p1], &keys, [&mut o0, &mut o1]);
            let (mut v0, mut v1) = (start[..hd].to_vec(), start[hd..].to_vec());
            weighted_sum(&p0, &keys, &mut v0);
            weighted_sum(&p1, &keys, &mut v1);
            assert_eq!((bits(&o0), bits(&o1)), (bits(&v0), bits(&v1)), "sums, {hd}");
        }
    }

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
        let (k, v) = (KvValues::F32(k), KvValues::F32(v));
        SequenceRows { q, k, v, start_pos }
    }

    #[test]
    fn an_f16_cache_gives_the_f32_arithmetic_on_its_rounded_values() {
        // An f16 cache is widened a block at a time: its attention must be the f32 kernel's on
        // the same values widened, bit for bit, for every row alone or together, blocks of
        // keys not a multiple of KV_BLOCK (150 positions), head sizes 64 (SIMD) and 75.
        use half::f16;
        for hd in [64usize, 75] {
            let shape = AttentionShape {
                n_heads: 6,
                n_kv_heads: 2,
                head_dim: hd,
            };
            let (capacity, start, rows) = (150, 140, 4);
            let round = |x: Vec<f32>| -> Vec<f16> { x.iter().map(|&v| f16::from_f32(v)).collect() };
            let k16 = round(random(shape.n_kv_heads * capacity * hd, 7));
            let v16 = round(random(k16.len(), 8));
            let widen = |x: &[f16]| -> Vec<f32> { x.iter().map(|v| v.to_f32()).collect() };
            let (k32, v32) = (widen(&k16), widen(&v16));
            let q = random(shape.n_heads * rows * hd, 9);
            let scale = 1.0 / (hd as f32).sqrt();
            let half = SequenceRows {
                q: &q,
                k: KvValues::F16(&k16),
                v: KvValues::F16(&v16),
                start_pos: start,
            };
            let f16_out = attend_rows(&[half, half], shape, scale);
            let f32_out = attend_rows(&[one(&q, &k32, &v32, start)], shape, scale);
            let n = f32_out.len();
            assert_eq!(f16_out[..n], f32_out[..], "head size {hd}");
            assert_eq!(f16_out[n..], f32_out[..], "head size {hd}, second sequence");
            // Positions past the rows never matter, in f16 either.
            let mut poisoned = k16.clone();
            for kv in 0..shape.n_kv_heads {
                for j in start + rows..capacity {
                    poisoned[(kv * capacity + j) * hd] = f16::NAN;
                }
            }
            let poisoned = SequenceRows {
                k: KvValues::F16(&poisoned),
                ..half
            };
            assert_eq!(attend_rows(&[poisoned], shape, scale), f32_out);
        }
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
        // (capacity, start, rows): 9 rows together are attended a row's 4 heads at a time,
        // each sequence alone one head at a time; 214 positions are four blocks of keys.
        let specs = [(40, 0, 1), (300, 211, 3), (64, 63, 1), (80, 60, 4)];
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
    fn simd_softmax_equals_the_portable_code() {
        // The SIMD softmax (where this CPU has it) against the portable steps, for lengths
        // around the vector width.
        for len in [1, 7, 8, 9, 16, 37, 300] {
            let scores: Vec<f32> = random(len, len as u32).iter().map(|x| 40.0 * x).collect();
            let mut got = scores.clone();
            softmax(&mut got, 0.125);
            let scaled: Vec<f32> = scores.iter().map(|s| s * 0.125).collect();
            let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut lanes = [0f32; LANES];
            let mut want: Vec<f32> = Vec::new();
            for (j, s) in scaled.iter().enumerate() {
                want.push(crate::expf::exp(s - max));
                lanes[j % LANES] += want[j];
            }
            let total = add_lanes(lanes);
            let want: Vec<u32> = want.iter().map(|e| (e / total).to_bits()).collect();
            let got: Vec<u32> = got.iter().map(|e| e.to_bits()).collect();
            assert_eq!(got, want, "length {len}");
        }
    }

    #[test]
    fn simd_key_scores_equal_the_portable_code() {
        for hd in [64, 128, 72, 75, 5] {
            let keys = random(37 * hd, 7);
            let query = random(hd, 8);
            let mut got = vec![f32::NAN; 37];
            key_scores(&query, &keys, &mut got);
            for (j, key) in keys.chunks_exact(hd).enumerate() {
                assert_eq!(
                    got[j].to_bits(),
                    key_score(&query, key).to_bits(),
                    "{hd}: {j}"
                );
                let exact: f64 = query
                    .iter()
                    .zip(key)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                assert!((got[j] as f64 - exact).abs() < 1e-5, "{hd}: {j}");
            }
        }
    }

    #[test]
    fn simd_weighted_sum_equals_the_portable_loop() {
        for hd in [64, 128, 75, 8, 5] {
            let rows = 37;
            let p = random(rows, 5);
            let values = random(rows * hd, 6);
            // Two calls over two blocks of rows, onto zeros: one pass's bits.
            let mut got = vec![0f32; hd];
            weighted_sum(&p[..16], &values[..16 * hd], &mut got);
            weighted_sum(&p[16..], &values[16 * hd..], &mut got);
            let mut want = vec![0f32; hd];
            for (&p, value) in p.iter().zip(values.chunks_exact(hd)) {
                for (o, &x) in want.iter_mut().zip(value) {
                    *o = p.mul_add(x, *o);
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "head size {hd}");
        }
    }
}
