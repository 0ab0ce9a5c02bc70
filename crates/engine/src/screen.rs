//! The greedy choice of a dense output projection without computing every logit.
//!
//! A greedy step needs the index of the largest logit, not the logits. For a dense
//! (f32/f16/bf16) `lm_head` on the CPU, the screen keeps an 8-bit copy of it (one scale per
//! row) and, for each activation row `x`:
//! 1. computes every approximate logit `A_j = s_j * (q_j . x)` from the copy (half the bytes of
//!    f16, a quarter of f32);
//! 2. bounds how far each may be from the exact logit `E_j` that [`crate::rowwise`] computes
//!    (the engine's logit, bits and all): `|A_j - E_j| <= B_j = |x| * K_j`, with `K_j` fixed
//!    per row at build time (below);
//! 3. keeps the rows whose `A_j + B_j` reaches `max_k (A_k - B_k)`: every other row's exact
//!    logit is strictly below some row's, so none of them is the argmax;
//! 4. computes the kept rows exactly with the engine's own kernel, and takes their first
//!    largest value: the index [`crate::argmax`] of the full row would give, ties included.
//!
//! The bound. With `e_j = w_j - s_j q_j` (real arithmetic; `w_j` the row as f32 values),
//! `s_j (q_j . x) = w_j . x - e_j . x` and `|e_j . x| <= |e_j| |x|` (Cauchy-Schwarz). Both
//! kernels add `n` products in some order in f32 with FMA, so each is within
//! `gamma * sum |terms|` of its real value, `gamma = 2 n u` (`u = 2^-24`, Higham's `gamma_n`
//! with room to spare), and `sum |w_ji x_i| <= |w_j| |x|`, `sum |s_j q_ji x_i| <= s_j |q_j| |x|`.
//! So `K_j = |e_j| + (|w_j| + s_j |q_j|) (gamma + 8u)` (the `8u` covers the scaling by `s_j`
//! and the additions `A_j +- B_j`), computed in f64 and rounded up; `|x|` is computed in f64
//! and rounded up too. Products that underflow lose at most `2^-150` each, covered by an
//! absolute `1e-30`. The bound assumes no overflow: rows whose `|x| max_j |w_j|` could reach
//! `1e30`, or with a non-finite value, are not screened (the caller computes every logit), and
//! a matrix with a non-finite weight gets no screen.
//!
//! The kept rows are few: `B_j` is under half a standard deviation of the logits of a random
//! matrix, and trained models' top logits stand further apart (figures in
//! docs/BENCHMARKS.md). The copy costs a quarter (f32) or half (f16/bf16) of the matrix in
//! memory; its kernel needs AVX-512F, or AVX2 and FMA, without which no screen is built.

use candle_core::{CpuStorage, Storage, Tensor};

use crate::rowwise::{self, Weight};

/// Weight rows per task of the approximate product (128 KiB of the 1B copy).
const ROWS_PER_TASK: usize = 64;

/// Absolute slack for products that underflow (see the module docs).
const UNDERFLOW: f32 = 1e-30;

/// Largest `|x| * max_j |w_j|` screened: far enough from f32's range that no sum overflows.
const MAX_MAGNITUDE: f64 = 1e30;

/// An 8-bit copy of a dense `(vocab, n)` CPU matrix, with each row's error bound.
pub(crate) struct GreedyScreen {
    /// The exact matrix (f32, f16 or bf16, contiguous, on the CPU).
    weights: Tensor,
    n: usize,
    /// `round(w / s)` per row, `(vocab, n)` row-major.
    q: Vec<i8>,
    /// `s_j = max |w_j| / 127`.
    scale: Vec<f32>,
    /// `K_j` (see the module docs), rounded up.
    slack: Vec<f32>,
    /// `max_j max(|w_j|, s_j |q_j|)`.
    max_norm: f64,
    /// The approximate product's kernel.
    kernel: Kernel,
}

impl std::fmt::Debug for GreedyScreen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GreedyScreen")
            .field("rows", &self.scale.len())
            .field("n", &self.n)
            .finish()
    }
}

/// Per-row figures of the build.
#[derive(Clone, Copy, Default)]
struct RowStats {
    scale: f32,
    slack: f32,
    norm: f64,
    finite: bool,
}

impl GreedyScreen {
    /// The screen of `w`, `None` when `w` is not a contiguous `(rows, n)` f32/f16/bf16 CPU
    /// matrix, holds a non-finite value, or this CPU has no SIMD kernel for it (AVX-512F, or
    /// AVX2 and FMA).
    pub(crate) fn build(w: &Tensor) -> Option<Self> {
        if !kernel_available() {
            return None;
        }
        Self::build_with(w)
    }

    fn build_with(w: &Tensor) -> Option<Self> {
        let &[rows, n] = w.dims() else {
            return None;
        };
        if rows == 0 || n == 0 {
            return None;
        }
        let (storage, layout) = w.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        let Storage::Cpu(cpu) = &*storage else {
            return None;
        };
        let (q, stats) = match cpu {
            CpuStorage::F32(all) => quantize(&all[start..end], n),
            CpuStorage::F16(all) => quantize(&all[start..end], n),
            CpuStorage::BF16(all) => quantize(&all[start..end], n),
            _ => return None,
        };
        drop(storage);
        if !stats.iter().all(|s| s.finite) {
            return None;
        }
        Some(Self {
            weights: w.clone(),
            n,
            q,
            scale: stats.iter().map(|s| s.scale).collect(),
            slack: stats.iter().map(|s| s.slack).collect(),
            max_norm: stats.iter().map(|s| s.norm).fold(0.0, f64::max),
            kernel: kernel(),
        })
    }

    /// Bytes of the exact matrix, and of the copy a screening pass reads instead (values,
    /// scales and bound factors).
    pub(crate) fn bytes(&self) -> (usize, usize) {
        let exact = self.weights.elem_count() * self.weights.dtype().size_in_bytes();
        (exact, self.q.len() + 8 * self.rows())
    }

    /// Rows of the matrix.
    pub(crate) fn rows(&self) -> usize {
        self.scale.len()
    }

    /// For each activation row of `x` (`(r, n)` row-major, `r` >= 1), the rows whose exact
    /// logit may be the largest, ascending; `None` when some row of `x` cannot be screened
    /// (non-finite, or too large: see the module docs).
    pub(crate) fn candidates(&self, x: &[f32]) -> Option<Vec<Vec<u32>>> {
        let r = x.len() / self.n;
        let norms = x
            .chunks_exact(self.n)
            .map(|row| {
                let norm = row
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt();
                // `norm * max_norm` also catches infinities and NaN (NaN fails the comparison).
                (norm * self.max_norm < MAX_MAGNITUDE && norm.is_finite())
                    .then_some((norm * (1.0 + 1e-9)) as f32 * (1.0 + 1e-6))
            })
            .collect::<Option<Vec<f32>>>()?;
        let pass = self.approx(x, &norms);
        Some(
            (0..r)
                .map(|i| {
                    let floor = (0..pass.tasks)
                        .map(|t| pass.summary(t, i)[1])
                        .fold(f32::NEG_INFINITY, f32::max);
                    let mut rows = Vec::new();
                    for t in (0..pass.tasks).filter(|&t| pass.summary(t, i)[0] >= floor) {
                        let first = t * ROWS_PER_TASK;
                        for j in first..(first + ROWS_PER_TASK).min(self.rows()) {
                            if pass.approx(j, i) + norms[i] * self.slack[j] + UNDERFLOW >= floor {
                                rows.push(j as u32);
                            }
                        }
                    }
                    rows
                })
                .collect(),
        )
    }

    /// The exact logits of `rows` for one activation row `x` (`n` values): the values
    /// [`crate::rowwise::forward`] gives for them, bit for bit.
    pub(crate) fn exact(&self, x: &[f32], rows: &[u32]) -> Vec<f32> {
        logits_or_bug(rowwise::selected(x, &self.weights, rows))
    }

    /// Every exact logit for one activation row `x` (`n` values), as [`Self::exact`] gives them.
    pub(crate) fn exact_all(&self, x: &[f32]) -> Vec<f32> {
        let logits = Tensor::from_slice(x, (1, self.n), &candle_core::Device::Cpu)
            .ok()
            .and_then(|xt| rowwise::forward(&xt, &self.weights).ok().flatten())
            .and_then(|logits| logits.flatten_all().and_then(|l| l.to_vec1()).ok());
        logits_or_bug(logits)
    }

    /// The greedy choice for each activation row of `x` (`(r, n)` row-major): the index
    /// [`crate::argmax`] gives on the row's exact logits. `None` as for [`Self::candidates`].
    pub(crate) fn argmax(&self, x: &[f32]) -> Option<Vec<u32>> {
        let candidates = self.candidates(x)?;
        Some(
            candidates
                .iter()
                .zip(x.chunks_exact(self.n))
                .map(|(rows, x)| rows[crate::argmax(&self.exact(x, rows)) as usize])
                .collect(),
        )
    }

    /// Every approximate logit `A_j` of every activation row of `x`, with each task's largest
    /// `A_j + B_j` and `A_j - B_j` (`B_j = norms[i] * K_j`), so that the choice of candidates
    /// reads only the tasks that can hold one.
    fn approx(&self, x: &[f32], norms: &[f32]) -> Approx {
        let (n, r) = (self.n, x.len() / self.n);
        let tasks = self.rows().div_ceil(ROWS_PER_TASK);
        let stride = (ROWS_PER_TASK + 2) * r;
        let mut values = vec![0f32; tasks * stride];
        crate::pool::for_each_chunk_mut(&mut values, stride, |t, chunk| {
            let first = t * ROWS_PER_TASK;
            let m = ROWS_PER_TASK.min(self.rows() - first);
            let (dots, summary) = chunk.split_at_mut(ROWS_PER_TASK * r);
            let dots = &mut dots[..m * r];
            let q = &self.q[first * n..][..m * n];
            match self.kernel {
                // SAFETY: `kernel()` saw AVX-512F.
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => unsafe { simd::dots_avx512(x, n, q, dots) },
                // SAFETY: `kernel()` saw AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => unsafe { simd::dots_avx2(x, n, q, dots) },
                _ => plain_dots(x, n, q, dots),
            }
            for (i, summary) in summary.chunks_exact_mut(2).enumerate() {
                let (mut high, mut low) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                for k in 0..m {
                    let j = first + k;
                    let a = self.scale[j] * dots[k * r + i];
                    dots[k * r + i] = a;
                    let b = norms[i] * self.slack[j] + UNDERFLOW;
                    high = high.max(a + b);
                    low = low.max(a - b);
                }
                summary.copy_from_slice(&[high, low]);
            }
        });
        Approx {
            values,
            r,
            stride,
            tasks,
        }
    }
}

/// The result of [`GreedyScreen::approx`]: per task of [`ROWS_PER_TASK`] rows, their `A_j` for
/// each activation row (`(rows, r)`), then `[max A + B, max A - B]` for each activation row.
struct Approx {
    values: Vec<f32>,
    r: usize,
    stride: usize,
    tasks: usize,
}

impl Approx {
    fn approx(&self, j: usize, i: usize) -> f32 {
        let (t, k) = (j / ROWS_PER_TASK, j % ROWS_PER_TASK);
        self.values[t * self.stride + k * self.r + i]
    }

    fn summary(&self, t: usize, i: usize) -> [f32; 2] {
        let at = t * self.stride + ROWS_PER_TASK * self.r + 2 * i;
        [self.values[at], self.values[at + 1]]
    }
}

/// The bytes of an `i8` slice.
fn bytemuck_i8(q: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have one size and alignment, and every bit pattern is valid for both.
    unsafe { std::slice::from_raw_parts(q.as_ptr() as *const u8, q.len()) }
}

/// The exact kernel's result, which cannot be missing: a screen is only built over a
/// contiguous dense CPU matrix, and its callers pass rows of its width.
fn logits_or_bug(logits: Option<Vec<f32>>) -> Vec<f32> {
    logits.expect("the greedy screen's matrix is a contiguous dense CPU matrix")
}

/// The approximate product's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Avx512,
    Avx2,
    /// One value at a time: slower than computing every logit with the SIMD decode kernel, so
    /// no screen is built where it is the only one.
    Plain,
}

/// The best kernel this CPU runs.
fn kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Kernel::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Kernel::Avx2;
        }
    }
    Kernel::Plain
}

/// Whether the approximate product has a SIMD kernel here.
fn kernel_available() -> bool {
    kernel() != Kernel::Plain
}

/// The 8-bit copy of `w` (rows of `n`) and each row's figures, rows spread over the pool.
fn quantize<W: Weight>(w: &[W], n: usize) -> (Vec<i8>, Vec<RowStats>) {
    let rows = w.len() / n;
    let stats = std::sync::Mutex::new(vec![RowStats::default(); rows]);
    let mut q = vec![0i8; w.len()];
    // Huge pages before the first write (a fresh allocation is untouched): the decode reads
    // the copy as it reads weights, and one fault per 2 MiB instead of per 4 KiB.
    crate::hugepages::advise(bytemuck_i8(&q));
    crate::pool::for_each_chunk_mut(&mut q, ROWS_PER_TASK * n, |t, block| {
        let first = t * ROWS_PER_TASK;
        let mut mine = Vec::with_capacity(ROWS_PER_TASK);
        let mut values = vec![0f32; n];
        for (k, q_row) in block.chunks_exact_mut(n).enumerate() {
            W::widen_into(&w[(first + k) * n..][..n], &mut values);
            mine.push(quantize_row_fast(&values, q_row));
        }
        let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
        stats[first..first + mine.len()].copy_from_slice(&mine);
    });
    (q, stats.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// [`quantize_row`] compiled for AVX2 and FMA where the CPU has them (the compiler then
/// vectorizes its loops 8 wide; the same operations, so the same results).
fn quantize_row_fast(row: &[f32], q: &mut [i8]) -> RowStats {
    #[cfg(target_arch = "x86_64")]
    if kernel() != Kernel::Plain {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn wide(row: &[f32], q: &mut [i8]) -> RowStats {
            quantize_row(row, q)
        }
        // SAFETY: `kernel()` saw AVX2 and FMA (AVX-512F CPUs have both).
        return unsafe { wide(row, q) };
    }
    quantize_row(row, q)
}

/// Round `row` to `q` (`round(v / s)`, `s = max |v| / 127`) and return the row's scale, bound
/// factor `K` and norm (see the module docs).
#[inline(always)]
fn quantize_row(row: &[f32], q: &mut [i8]) -> RowStats {
    let n = row.len();
    if !row.iter().all(|v| v.is_finite()) {
        return RowStats::default();
    }
    let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = amax / 127.0;
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    // Round to nearest by adding and removing 1.5 * 2^23 (|v * inverse| <= 127 + a little):
    // plain SSE2 arithmetic the compiler vectorizes, where `f32::round` is a call per value.
    const MAGIC: f32 = 12_582_912.0;
    for (q, &v) in q.iter_mut().zip(row) {
        *q = (((v * inverse) + MAGIC) - MAGIC).clamp(-127.0, 127.0) as i8;
    }
    // Sums of squares in f64 (each term exact to ~1e-16; the sums within n * 2^-53 of the
    // truth, covered by the 1e-9 margin below), 8 at a time so that the compiler vectorizes.
    let (mut e2, mut w2, mut q2) = ([0f64; 8], [0f64; 8], [0f64; 8]);
    let s = f64::from(scale);
    let mut add = |k: usize, q: i8, v: f32| {
        let (v, q) = (f64::from(v), f64::from(q));
        let e = v - s * q;
        e2[k] += e * e;
        w2[k] += v * v;
        q2[k] += q * q;
    };
    let (q_chunks, v_chunks) = (q.chunks_exact(8), row.chunks_exact(8));
    let (q_tail, v_tail) = (q_chunks.remainder(), v_chunks.remainder());
    for (qc, vc) in q_chunks.zip(v_chunks) {
        for k in 0..8 {
            add(k, qc[k], vc[k]);
        }
    }
    for (k, (&q, &v)) in q_tail.iter().zip(v_tail).enumerate() {
        add(k, q, v);
    }
    let (e2, w2, q2): (f64, f64, f64) = (e2.iter().sum(), w2.iter().sum(), q2.iter().sum());
    let u = f64::from(f32::EPSILON) / 2.0;
    let gamma = 2.0 * n as f64 * u;
    let (w_norm, q_norm) = (w2.sqrt(), f64::from(scale) * q2.sqrt());
    let k = (e2.sqrt() * (1.0 + 1e-9) + (w_norm + q_norm) * (gamma + 8.0 * u)) * (1.0 + 1e-6);
    RowStats {
        scale,
        slack: k as f32 * (1.0 + 1e-6),
        norm: w_norm.max(q_norm),
        finite: true,
    }
}

/// The SIMD kernels' products (`simd`) one value at a time.
fn plain_dots(x: &[f32], n: usize, q: &[i8], out: &mut [f32]) {
    let r = x.len() / n;
    for (q_row, out) in q.chunks_exact(n).zip(out.chunks_exact_mut(r)) {
        for (o, x) in out.iter_mut().zip(x.chunks_exact(n)) {
            *o = q_row
                .iter()
                .zip(x)
                .fold(0f32, |s, (&q, &x)| f32::from(q).mul_add(x, s));
        }
    }
}

/// The SIMD kernels of the approximate product: one generic kernel over the vector width.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// `out[j * r + i] = q_j . x_i` for the rows `q_j` of `q` (rows of `n`) and the `r`
    /// activation rows of `x`, on 16-lane vectors: four weight rows read side by side (as the
    /// decode kernels do, for bandwidth), each widened once for up to four activation rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots_avx512(x: &[f32], n: usize, q: &[i8], out: &mut [f32]) {
        // SAFETY: this function's CPU features.
        unsafe { dots::<Avx512>(x, n, q, out) }
    }

    /// [`dots_avx512`] on 8-lane vectors, up to two activation rows per pass (16 registers
    /// hold the 8 accumulators, the 4 widened rows and an activation).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots_avx2(x: &[f32], n: usize, q: &[i8], out: &mut [f32]) {
        // SAFETY: this function's CPU features.
        unsafe { dots::<Avx2>(x, n, q, out) }
    }

    /// One vector width's operations.
    trait Lanes {
        /// Values per vector.
        const N: usize;
        /// Most activation rows per pass over a group of weight rows.
        const ROWS: usize;
        type V: Copy;
        unsafe fn zero() -> Self::V;
        /// `N` signed bytes at `p` as f32.
        unsafe fn widen(p: *const i8) -> Self::V;
        unsafe fn load(p: *const f32) -> Self::V;
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        unsafe fn sum(v: Self::V) -> f32;
    }

    struct Avx512;

    impl Lanes for Avx512 {
        const N: usize = 16;
        const ROWS: usize = 4;
        type V = __m512;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn widen(p: *const i8) -> __m512 {
            // SAFETY: the caller guarantees 16 readable bytes and the CPU features.
            unsafe {
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
            }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees 16 readable f32.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn sum(v: __m512) -> f32 {
            _mm512_reduce_add_ps(v)
        }
    }

    struct Avx2;

    impl Lanes for Avx2 {
        const N: usize = 8;
        const ROWS: usize = 2;
        type V = __m256;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn widen(p: *const i8) -> __m256 {
            // SAFETY: the caller guarantees 8 readable bytes and the CPU features.
            unsafe {
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
            }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 8 readable f32.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn sum(v: __m256) -> f32 {
            let mut lanes = [0f32; 8];
            // SAFETY: 8 writable f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            lanes.iter().sum()
        }
    }

    /// The kernel for any width: groups of 4 weight rows (then single ones) times groups of up
    /// to `L::ROWS` activation rows.
    #[inline(always)]
    unsafe fn dots<L: Lanes>(x: &[f32], n: usize, q: &[i8], out: &mut [f32]) {
        let r = x.len() / n;
        let rows = q.len() / n;
        let mut j = 0;
        while j < rows {
            let k = (rows - j).min(4);
            let mut i = 0;
            while i < r {
                let m = (r - i).min(L::ROWS);
                // SAFETY: the caller's CPU features; rows j..j+k of q, activation rows i..i+m.
                unsafe {
                    match (k, m) {
                        (4, 4) => group::<L, 4, 4>(x, n, q, out, r, j, i),
                        (4, 3) => group::<L, 4, 3>(x, n, q, out, r, j, i),
                        (4, 2) => group::<L, 4, 2>(x, n, q, out, r, j, i),
                        (4, 1) => group::<L, 4, 1>(x, n, q, out, r, j, i),
                        (_, 4) => group::<L, 1, 4>(x, n, q, out, r, j, i),
                        (_, 3) => group::<L, 1, 3>(x, n, q, out, r, j, i),
                        (_, 2) => group::<L, 1, 2>(x, n, q, out, r, j, i),
                        _ => group::<L, 1, 1>(x, n, q, out, r, j, i),
                    }
                }
                i += m;
            }
            j += if k == 4 { 4 } else { 1 };
        }
    }

    /// Weight rows `j..j + K` times activation rows `i..i + M`.
    #[inline(always)]
    unsafe fn group<L: Lanes, const K: usize, const M: usize>(
        x: &[f32],
        n: usize,
        q: &[i8],
        out: &mut [f32],
        r: usize,
        j: usize,
        i: usize,
    ) {
        debug_assert!((j + K) * n <= q.len() && (i + M) * n <= x.len());
        let (px, pq) = (
            x.as_ptr().wrapping_add(i * n),
            q.as_ptr().wrapping_add(j * n),
        );
        // SAFETY (every intrinsic below): the caller's CPU features.
        let mut acc = [[unsafe { L::zero() }; M]; K];
        let full = n / L::N * L::N;
        let mut o = 0;
        while o < full {
            if o % 64 == 0 && i == 0 {
                for k in 0..K {
                    crate::prefetch::ahead(pq.wrapping_add(k * n + o), 64);
                }
            }
            let mut w = [unsafe { L::zero() }; K];
            for (k, w) in w.iter_mut().enumerate() {
                // SAFETY: o + N <= n, inside row j + k of q.
                *w = unsafe { L::widen(pq.add(k * n + o)) };
            }
            for m in 0..M {
                // SAFETY: o + N <= n, inside activation row i + m.
                let xv = unsafe { L::load(px.add(m * n + o)) };
                for (acc, &w) in acc.iter_mut().zip(&w) {
                    acc[m] = unsafe { L::fma(xv, w, acc[m]) };
                }
            }
            o += L::N;
        }
        for (k, acc) in acc.iter().enumerate() {
            for (m, &acc) in acc.iter().enumerate() {
                let mut s = unsafe { L::sum(acc) };
                for c in full..n {
                    // SAFETY: c < n, inside both rows.
                    let (qv, xv) = unsafe { (*pq.add(k * n + c), *px.add(m * n + c)) };
                    s = f32::from(qv).mul_add(xv, s);
                }
                out[(j + k) * r + i + m] = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn matrix(rows: usize, n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..rows * n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect()
    }

    fn tensor(values: Vec<f32>, rows: usize, n: usize, dtype: DType) -> Tensor {
        Tensor::from_vec(values, (rows, n), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// The engine's logits of `x` (rows of `n`) against `w`.
    fn exact_logits(x: &[f32], n: usize, w: &Tensor) -> Vec<Vec<f32>> {
        let xt = Tensor::from_vec(x.to_vec(), (x.len() / n, n), &Device::Cpu).unwrap();
        rowwise::forward(&xt, w)
            .unwrap()
            .unwrap()
            .to_vec2()
            .unwrap()
    }

    /// The kernels this CPU runs.
    fn kernels_here() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::Plain];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                kernels.push(Kernel::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
        }
        kernels
    }

    /// With every kernel this CPU runs: every exact logit lies within its bound of the
    /// approximate one, the screened choice is the full row's argmax, and the candidates'
    /// exact values are the full row's bits. Returns the last kernel's candidates.
    fn check(w: &Tensor, x: &[f32]) -> Vec<Vec<u32>> {
        let mut screen = GreedyScreen::build_with(w).expect("a screen");
        let n = screen.n;
        let r = x.len() / n;
        let exact = exact_logits(x, n, w);
        let mut candidates = Vec::new();
        for kernel in kernels_here() {
            screen.kernel = kernel;
            let pass = screen.approx(x, &vec![0.0; r]);
            for (i, row) in exact.iter().enumerate() {
                let norm = x[i * n..][..n]
                    .iter()
                    .map(|&v| f64::from(v).powi(2))
                    .sum::<f64>();
                for (j, &e) in row.iter().enumerate() {
                    let a = pass.approx(j, i);
                    let b = norm.sqrt() as f32 * screen.slack[j] * (1.0 + 1e-5);
                    assert!(
                        (a - e).abs() <= b,
                        "{kernel:?} row {j}: approx {a}, exact {e}, bound {b}"
                    );
                }
            }
            let chosen = screen.argmax(x).expect("screened");
            candidates = screen.candidates(x).unwrap();
            for (i, row) in exact.iter().enumerate() {
                assert_eq!(
                    chosen[i],
                    crate::argmax(row),
                    "{kernel:?} activation row {i}"
                );
                assert!(candidates[i].windows(2).all(|p| p[0] < p[1]));
                let got = screen.exact(&x[i * n..][..n], &candidates[i]);
                for (&j, &v) in candidates[i].iter().zip(&got) {
                    assert_eq!(v.to_bits(), row[j as usize].to_bits(), "row {j}");
                }
            }
        }
        candidates
    }

    #[test]
    fn screened_choice_is_the_argmax_for_every_dtype_and_shape() {
        // Widths that are and are not multiples of 16 (the kernel's chunks) or 32 (the exact
        // kernel's), row counts that leave partial groups of 4 and partial tasks.
        for (rows, n, r) in [
            (300, 64, 1),
            (131, 70, 3),
            (517, 33, 8),
            (64, 16, 16),
            (5, 7, 2),
        ] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let w = tensor(matrix(rows, n, rows as u64), rows, n, dtype);
                let x = matrix(r, n, 7 + n as u64);
                let candidates = check(&w, &x);
                assert!(candidates.iter().all(|c| !c.is_empty()));
            }
        }
    }

    #[test]
    fn few_candidates_on_a_wide_matrix() {
        let (rows, n) = (4096, 512);
        let w = tensor(matrix(rows, n, 3), rows, n, DType::F16);
        let candidates = check(&w, &matrix(2, n, 4));
        for c in candidates {
            assert!(c.len() < rows / 20, "{} candidates of {rows}", c.len());
        }
    }

    #[test]
    fn worst_case_rounding_stays_within_the_bound() {
        // Every weight half a step from the grid of its row, the activation lined up with the
        // rounding errors: the quantization error reaches |e| |x|.
        let (rows, n) = (40, 96);
        let mut w = Vec::with_capacity(rows * n);
        for j in 0..rows {
            let s = 0.01 * (j + 1) as f32;
            for i in 0..n {
                let v = if i == 0 {
                    127.0 * s
                } else {
                    s * ((i % 50) as f32 + 0.5)
                };
                w.push(if (i + j) % 3 == 0 { -v } else { v });
            }
        }
        let x: Vec<f32> = (0..n)
            .map(|i| if (i + 5) % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        check(&tensor(w, rows, n, DType::F32), &x);
    }

    #[test]
    fn the_choice_is_exact_where_the_copy_ranks_rows_otherwise() {
        // Rows that differ by less than their rounding to 8 bits: cases where the largest
        // approximate logit is not the largest exact one must still give the exact argmax.
        let (rows, n) = (8, 48);
        let mut disagreements = 0;
        for seed in 0..400u64 {
            let base = matrix(1, n, seed);
            let mut rng = StdRng::seed_from_u64(seed + 1000);
            let w: Vec<f32> = (0..rows * n)
                .map(|k| base[k % n] + rng.random_range(-0.004f32..0.004))
                .collect();
            let w = tensor(w, rows, n, DType::F32);
            let x = matrix(1, n, seed + 2000);
            let screen = GreedyScreen::build_with(&w).unwrap();
            let pass = screen.approx(&x, &[0.0]);
            let approx: Vec<f32> = (0..rows).map(|j| pass.approx(j, 0)).collect();
            let exact = &exact_logits(&x, n, &w)[0];
            if crate::argmax(&approx) != crate::argmax(exact) {
                disagreements += 1;
                check(&w, &x);
            }
        }
        assert!(disagreements > 10, "only {disagreements} disagreements");
    }

    #[test]
    fn ties_keep_the_first_index() {
        let (rows, n) = (50, 40);
        let mut w = matrix(rows, n, 9);
        let x = matrix(1, n, 10);
        let best = crate::argmax(&exact_logits(&x, n, &tensor(w.clone(), rows, n, DType::F32))[0]);
        // Copies of the best row before and after it: the first copy is the choice.
        let row: Vec<f32> = w[best as usize * n..][..n].to_vec();
        w[3 * n..4 * n].copy_from_slice(&row);
        w[45 * n..46 * n].copy_from_slice(&row);
        let w = tensor(w, rows, n, DType::F32);
        let screen = GreedyScreen::build_with(&w).unwrap();
        assert_eq!(screen.argmax(&x).unwrap(), vec![3.min(best)]);
        check(&w, &x);
    }

    #[test]
    fn what_cannot_be_screened_is_refused() {
        let (rows, n) = (8, 16);
        let mut w = matrix(rows, n, 1);
        let fine = GreedyScreen::build_with(&tensor(w.clone(), rows, n, DType::F32)).unwrap();
        let mut x = matrix(2, n, 2);
        x[20] = f32::NAN;
        assert!(fine.candidates(&x).is_none(), "NaN activation");
        x[20] = f32::INFINITY;
        assert!(fine.candidates(&x).is_none(), "infinite activation");
        x[20] = 1e30;
        assert!(fine.candidates(&x).is_none(), "activation too large");
        w[77] = f32::INFINITY;
        assert!(GreedyScreen::build_with(&tensor(w.clone(), rows, n, DType::F32)).is_none());
        w[77] = f32::NAN;
        assert!(GreedyScreen::build_with(&tensor(w, rows, n, DType::F32)).is_none());
        let int = Tensor::zeros((rows, n), DType::U32, &Device::Cpu).unwrap();
        assert!(
            GreedyScreen::build_with(&int).is_none(),
            "not a float matrix"
        );
        let strided = tensor(matrix(n, rows, 3), n, rows, DType::F32).t().unwrap();
        assert!(
            GreedyScreen::build_with(&strided).is_none(),
            "not contiguous"
        );
    }

    #[test]
    fn zero_rows_and_activations() {
        let (rows, n) = (20, 32);
        let mut w = matrix(rows, n, 5);
        w[2 * n..3 * n].fill(0.0);
        let w = tensor(w, rows, n, DType::F16);
        check(&w, &matrix(1, n, 6));
        // All logits 0: every row a candidate, the first chosen.
        let screen = GreedyScreen::build_with(&w).unwrap();
        assert_eq!(screen.argmax(&vec![0.0; n]).unwrap(), vec![0]);
    }
}
