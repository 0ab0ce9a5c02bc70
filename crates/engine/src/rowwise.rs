//! Decode-time product `x @ W^T` of a few rows (one per sequence) against a dense f32 weight,
//! with per-row arithmetic that does not depend on how many rows there are.
//!
//! Why it exists: candle's f32 matmul (the `gemm` crate) takes a matrix-vector path for one row
//! and a blocked micro-kernel (depth split in blocks of 512, different summation order) for
//! several, so a row computed alone and the same row computed inside a batch differ by a few
//! ulps, enough to flip a greedy argmax somewhere in a few hundred tokens of reasoning. Here each
//! output is `dot(x_i, w_j)` with one fixed lane split and reduction order whatever the batch,
//! each weight row is read from memory once per call for all rows (the point of batching), and
//! blocks of weight rows are spread over the engine's threads ([`crate::pool`]).
//!
//! Invariant: row `i` of [`forward`]`(x, w)` equals [`forward`]`(x[i..i+1], w)` bit for bit on
//! a given machine (the FMA path is chosen once per process by CPU feature detection). The
//! result is a new tensor outside candle's autograd graph: this is an inference path.

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use half::{bf16, f16};

use crate::error::Result;

/// Largest row count [`forward`] computes; more rows (prefill chunks) go to [`forward_long`],
/// or to candle's blocked GEMM on CPUs without AVX-512.
pub const MAX_ROWS: usize = 16;

/// Independent accumulators per dot product (four AVX registers of eight lanes).
const LANES: usize = 32;

/// Weight rows per task: large enough to amortise scheduling, small enough to balance.
const ROWS_PER_TASK: usize = 16;

/// `x (rows, in)` f32 times `w (out, in)` transposed -> `(rows, out)` f32, or `None` when the
/// inputs are not CPU matrices of the expected shapes (the caller then uses candle's matmul).
/// `w` may be f32, bf16 or f16: half-precision weights are widened to f32 exactly as they are
/// read, so the result equals that of the same weights stored as f32, bit for bit, while half the
/// bytes cross the memory bus.
pub fn forward(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    product(x, w, false)
}

/// [`forward`] for passes of any number of rows (prefill chunks), blocked for the caches and
/// AVX-512's 32 registers, on CPUs with AVX-512F; `None` elsewhere (the caller then uses
/// candle's GEMM). Every output is the same dot product as [`forward`]'s, bit for bit (same
/// lanes, same order: see `avx512`), so a row's product does not depend on the length of
/// the pass it is in.
pub fn forward_long(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !long_available() {
        return Ok(None);
    }
    product(x, w, true)
}

/// Whether [`forward_long`] has its kernel on this CPU.
fn long_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd_available() && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `f` of the values of `x` in row-major order: borrowed from a contiguous f32 CPU tensor,
/// copied out of any other (a batched step's activations are read in place, not copied once
/// per product).
pub(crate) fn with_values<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = x.storage_and_layout();
        if let Some(values) = cpu_f32s(&storage, layout) {
            return Ok(f(values));
        }
    }
    Ok(f(&x.flatten_all()?.to_vec1::<f32>()?))
}

/// The values of a tensor (its `storage` and `layout`, from `storage_and_layout`) when it is
/// f32 in CPU memory and contiguous; `None` otherwise.
pub(crate) fn cpu_f32s<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(all)), Some((start, end))) => Some(&all[start..end]),
        _ => None,
    }
}

fn product(x: &Tensor, w: &Tensor, long: bool) -> Result<Option<Tensor>> {
    let (rows, in_features) = match x.dims() {
        &[r, i] => (r, i),
        _ => return Ok(None),
    };
    let (out_features, w_in) = match w.dims() {
        &[o, i] => (o, i),
        _ => return Ok(None),
    };
    if rows == 0
        || (rows > MAX_ROWS && !long)
        || in_features == 0
        || out_features == 0
        || w_in != in_features
        || !x.device().is_cpu()
    {
        return Ok(None);
    }
    let (storage, layout) = w.storage_and_layout();
    let (start, end) = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(_), Some(range)) => range,
        _ => return Ok(None),
    };
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    // The product (rows, out), from either path, for any weight type.
    fn rows_by_out<W: Weight>(x: &[f32], k: usize, w: &[W], long: bool) -> Vec<f32> {
        if long {
            return long_products(x, k, w);
        }
        // Transposed output (out, rows): each task owns the rows of its block of weights.
        crate::pool::transpose(products(x, k, w), w.len() / k, x.len() / k)
    }
    let out = with_values(x, |x| match cpu {
        CpuStorage::F32(all) => Some(rows_by_out(x, in_features, &all[start..end], long)),
        CpuStorage::BF16(all) => Some(rows_by_out(x, in_features, &all[start..end], long)),
        CpuStorage::F16(all) => Some(rows_by_out(x, in_features, &all[start..end], long)),
        _ => None,
    })?;
    drop(storage);
    let Some(out) = out else {
        return Ok(None);
    };

    Ok(Some(Tensor::from_vec(
        out,
        (rows, out_features),
        x.device(),
    )?))
}

/// `dot(x, w_j)` for each `j` of `rows`, for one activation row `x` against a dense
/// `(out, in)` CPU weight `w` (f32, f16 or bf16, contiguous): each value is the one
/// [`forward`] gives for that row, bit for bit (the same kernel on the gathered rows, whose
/// arithmetic does not depend on its neighbours). `None` for any other `w`, or a `x` of
/// another length.
pub(crate) fn selected(x: &[f32], w: &Tensor, rows: &[u32]) -> Option<Vec<f32>> {
    let &[out_features, in_features] = w.dims() else {
        return None;
    };
    if x.len() != in_features || rows.iter().any(|&j| j as usize >= out_features) {
        return None;
    }
    let (storage, layout) = w.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    let Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    fn gathered<W: Weight>(x: &[f32], w: &[W], rows: &[u32]) -> Vec<f32> {
        let n = x.len();
        let mut picked = Vec::with_capacity(rows.len() * n);
        for &j in rows {
            picked.extend_from_slice(&w[j as usize * n..][..n]);
        }
        products(x, n, &picked)
    }
    match cpu {
        CpuStorage::F32(all) => Some(gathered(x, &all[start..end], rows)),
        CpuStorage::F16(all) => Some(gathered(x, &all[start..end], rows)),
        CpuStorage::BF16(all) => Some(gathered(x, &all[start..end], rows)),
        _ => None,
    }
}

/// A bf16/f16 CPU matrix widened to f32 on all threads (candle's `to_dtype` uses one), for the
/// prefill GEMM; `None` for other inputs.
pub fn widen(w: &Tensor) -> Result<Option<Tensor>> {
    let (storage, layout) = w.storage_and_layout();
    let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Ok(None);
    };
    fn par_widen<W: Weight>(src: &[W]) -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        crate::pool::for_each_chunk_mut(&mut out, 1 << 16, |i, o| {
            W::widen_into(&src[i << 16..][..o.len()], o);
        });
        out
    }
    let values = match cpu {
        CpuStorage::BF16(all) => par_widen(&all[start..end]),
        CpuStorage::F16(all) => par_widen(&all[start..end]),
        _ => return Ok(None),
    };
    drop(storage);
    Ok(Some(Tensor::from_vec(values, w.dims(), w.device())?))
}

/// A weight element: f32, or a half-precision type widened exactly to f32.
pub(crate) trait Weight: Copy + Send + Sync {
    fn to_f32(self) -> f32;
    /// `dst[i] = src[i].to_f32()` (the slices have one length), SIMD where the type has it.
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    /// Eight consecutive weights as f32 lanes.
    ///
    /// # Safety
    /// `p..p + 8` must be readable, and the CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
    /// Sixteen consecutive weights as f32 lanes.
    ///
    /// # Safety
    /// `p..p + 16` must be readable, and the CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl Weight for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees 8 readable f32.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller guarantees 16 readable f32.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl Weight for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable bf16 (16 bytes). bf16 is the high half of
        // an f32: widen to 32 bits and shift.
        unsafe {
            let raw = _mm_loadu_si128(p as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16))
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable bf16 (32 bytes).
        unsafe {
            let raw = _mm256_loadu_si256(p as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16))
        }
    }
}

impl Weight for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    /// 8 values an instruction with [`Self::load8`] where the CPU has AVX2, FMA and F16C
    /// (`half`'s slice conversion widened KV cache blocks element by element: slower than
    /// reading twice the bytes of an f32 cache).
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        assert_eq!(
            src.len(),
            dst.len(),
            "widening between slices of two lengths"
        );
        #[cfg(target_arch = "x86_64")]
        if simd_available() {
            // SAFETY: simd_available() saw AVX2, FMA and F16C; the lengths match.
            unsafe { widen8(src, dst) };
            return;
        }
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable f16 (16 bytes) and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable f16 (32 bytes).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

/// `dst[i] = src[i].to_f32()`, 8 values an instruction with [`Weight::load8`].
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `src` and `dst` have one length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen8<W: Weight>(src: &[W], dst: &mut [f32]) {
    let n = src.len() / 8 * 8;
    for i in (0..n).step_by(8) {
        // SAFETY: i + 8 <= n, inside both slices; the CPU features are the caller's.
        unsafe {
            let lanes = W::load8(src.as_ptr().add(i));
            std::arch::x86_64::_mm256_storeu_ps(dst.as_mut_ptr().add(i), lanes);
        }
    }
    for (d, s) in dst[n..].iter_mut().zip(&src[n..]) {
        *d = s.to_f32();
    }
}

/// All products, transposed: `out_t[j * rows + i] = dot(x_i, w_j)`, weight blocks spread over
/// the engine's threads.
fn products<W: Weight>(x: &[f32], in_features: usize, w: &[W]) -> Vec<f32> {
    let rows = x.len() / in_features;
    if rows >= FEW_ROWS && long_available() {
        return few_products(x, in_features, w);
    }
    let out_features = w.len() / in_features;
    let mut out_t = vec![0f32; out_features * rows];
    let use_fma = simd_available();
    let task_weights = ROWS_PER_TASK * in_features;
    crate::pool::for_each_chunk_mut(&mut out_t, ROWS_PER_TASK * rows, |i, out_block| {
        let w_block = &w[i * task_weights..((i + 1) * task_weights).min(w.len())];
        if use_fma {
            block_fma(x, in_features, w_block, out_block);
        } else {
            let widened: Vec<f32> = w_block.iter().map(|v| v.to_f32()).collect();
            block(x, in_features, &widened, out_block, |a, b, c| a * b + c);
        }
    });
    out_t
}

/// Passes of at least this many rows (and at most [`MAX_ROWS`]) use [`few_products`] on CPUs
/// with AVX-512F.
const FEW_ROWS: usize = 3;

/// [`products`] of [`FEW_ROWS`] to [`MAX_ROWS`] rows (speculative verification, batched
/// decode) with the AVX-512 kernel: register blocks of 2 weight rows times up to 6 activation
/// rows, or 3 times 4 where the rows come in fours, so that every row meets each weight while
/// it is in registers or L1 and the weights come from memory once. The AVX2 path pairs the rows and reads each weight row again for
/// every pair: a 4-row pass of the 1B F16 file cost twice a 1-row pass.
fn few_products<W: Weight>(x: &[f32], in_features: usize, w: &[W]) -> Vec<f32> {
    let rows = x.len() / in_features;
    let mut out_t = vec![0f32; w.len() / in_features * rows];
    // Activation rows per register block: blocks of at most 6, as even as they can be.
    let per_block = rows.div_ceil(rows.div_ceil(6));
    let task_weights = ROWS_PER_TASK * in_features;
    crate::pool::for_each_chunk_mut(&mut out_t, ROWS_PER_TASK * rows, |i, out_block| {
        let w_block = &w[i * task_weights..((i + 1) * task_weights).min(w.len())];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only reached when `long_available()` saw AVX-512F, AVX2, FMA and F16C.
        unsafe {
            // At least FEW_ROWS (3) rows, so at least 3 per block.
            let kernel = match per_block {
                // 7-8, 11-12, 15-16 rows: blocks of 4 with 3 weight rows each (one activation
                // load per 3 FMAs instead of 2; the activations of 8-16 rows outgrow L1):
                // 0.90-0.93x the time of 8- and 16-row passes of the 1B F16 file, 0.98x of
                // 12-row ones (alternating in one process).
                _ if matches!(rows, 7 | 8 | 11 | 12 | 15 | 16) => avx512::block::<W, 3, 4>,
                ..=3 => avx512::block::<W, 2, 3>,
                4 => avx512::block::<W, 2, 4>,
                5 => avx512::block::<W, 2, 5>,
                _ => avx512::block::<W, 2, 6>,
            };
            kernel(x, in_features, w_block, |j, i, v| {
                out_block[j * rows + i] = v
            })
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no few-row kernel off x86 ({} weights)", w_block.len());
    });
    out_t
}

/// Bytes of weights per task of [`long_products`] (at most 64 rows): they stay in L2 while
/// every block of activation rows meets them (`avx512::block`).
const LONG_BLOCK_BYTES: usize = 512 * 1024;

/// The product `(rows, out)` for passes of any length, with the AVX-512 kernel: each task
/// writes its block of output columns in place (a transposed result, transposed again in a
/// second pass into a second fresh buffer, cost 0.5-6% more per product: 8192 x 2048 and
/// 2048 x 8192 F16 weights times 512 rows, alternating in one process).
fn long_products<W: Weight>(x: &[f32], in_features: usize, w: &[W]) -> Vec<f32> {
    let rows = x.len() / in_features;
    let out_features = w.len() / in_features;
    let mut out = vec![0f32; rows * out_features];
    let row_bytes = in_features * std::mem::size_of::<W>();
    let task_rows = (LONG_BLOCK_BYTES / row_bytes).clamp(4, 64) / 4 * 4;
    let base = crate::pool::SendPtr::new(out.as_mut_ptr());
    crate::pool::for_each_range(out_features.div_ceil(task_rows), |tasks| {
        for t in tasks {
            let j0 = t * task_rows;
            let w_block = &w[j0 * in_features..(j0 + task_rows).min(out_features) * in_features];
            let put = |j: usize, i: usize, v: f32| {
                debug_assert!(i < rows && j0 + j < out_features);
                // SAFETY: the kernel passes rows i < rows and weight rows j of this task's
                // block, so the element is inside `out`, and column j0 + j belongs to task t
                // alone; `out` outlives the parallel call.
                unsafe { *base.get().add(i * out_features + j0 + j) = v };
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: only reached when `long_available()` saw AVX-512F, AVX2, FMA and F16C.
            unsafe {
                avx512::block::<W, 4, 3>(x, in_features, w_block, put)
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("no long-pass kernel off x86 ({} weights)", w_block.len());
        }
    });
    out
}

/// `sum` plus the products of the tail of a dot product (past its whole chunks), in order,
/// fused: the last step of every SIMD dot product here and of the attention's scores.
#[inline]
pub(crate) fn add_tail<W: Weight>(mut sum: f32, a: &[f32], w: &[W]) -> f32 {
    for (&va, &vw) in a.iter().zip(w) {
        sum = va.mul_add(vw.to_f32(), sum);
    }
    sum
}

/// Whether the SIMD paths (AVX2, FMA, F16C) are used: decided by CPU detection, so once per
/// process. Shared by every CPU kernel of the crate.
pub(crate) fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn block_fma<W: Weight>(x: &[f32], in_features: usize, w_block: &[W], out_block: &mut [f32]) {
    // SAFETY: only called when `simd_available()` saw AVX2, FMA and F16C on this CPU.
    unsafe { avx2::block(x, in_features, w_block, out_block) }
}

#[cfg(not(target_arch = "x86_64"))]
fn block_fma<W: Weight>(x: &[f32], in_features: usize, w_block: &[W], out_block: &mut [f32]) {
    let widened: Vec<f32> = w_block.iter().map(|v| v.to_f32()).collect();
    block(x, in_features, &widened, out_block, f32::mul_add);
}

/// The AVX2 + FMA path: explicit 8-lane vectors (LLVM does not vectorize the portable loop
/// well). Each dot product keeps four vector accumulators (32 lanes) over the full chunks of 32,
/// reduced in a fixed order, then the tail in order; two input rows share each weight load, which
/// changes nothing in either row's arithmetic.
/// Eight 8-lane sums reduced at once (used by the attention's scores too).
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::reduce8;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Weight;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn block<W: Weight>(
        x: &[f32],
        in_features: usize,
        w_block: &[W],
        out_block: &mut [f32],
    ) {
        let rows = x.len() / in_features;
        if rows == 1 && crate::prefetch::side_by_side() {
            // SAFETY: this function's CPU features; AVX-512VL checked for the wider variant.
            unsafe {
                if std::arch::is_x86_feature_detected!("avx512vl") {
                    side_by_side_avx512(x, w_block, out_block);
                } else {
                    side_by_side_avx2(x, w_block, out_block);
                }
            }
            return;
        }
        for (w_row, out_row) in w_block
            .chunks_exact(in_features)
            .zip(out_block.chunks_exact_mut(rows))
        {
            let mut pairs = x.chunks_exact(2 * in_features);
            let mut i = 0;
            for pair in pairs.by_ref() {
                let (a, b) = pair.split_at(in_features);
                let (da, db) = dot2(a, b, w_row);
                out_row[i] = da;
                out_row[i + 1] = db;
                i += 2;
            }
            if !pairs.remainder().is_empty() {
                out_row[i] = dot1(pairs.remainder(), w_row);
            }
        }
    }

    /// One activation row `a` times each row of `w` (rows of `a.len()`), [`side_by_side`]
    /// with 4 weight rows at a time: 16 accumulators, which need AVX-512VL's 32 registers.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    unsafe fn side_by_side_avx512<W: Weight>(a: &[f32], w: &[W], out: &mut [f32]) {
        // SAFETY: the caller's guarantee; this function's CPU features.
        unsafe { side_by_side::<W, 4>(a, w, out) }
    }

    /// [`side_by_side`] with 2 weight rows at a time (8 accumulators) for AVX2 alone.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn side_by_side_avx2<W: Weight>(a: &[f32], w: &[W], out: &mut [f32]) {
        // SAFETY: the caller's guarantee; this function's CPU features.
        unsafe { side_by_side::<W, 2>(a, w, out) }
    }

    /// `out[i] = dot1(a, row i of w)`, reading `K` weight rows side by side: a decode step's
    /// single activation row is bound by how fast one thread reads the weights, and on the
    /// 2-core Xeon of docs/BENCHMARKS.md a thread reads several runs at once faster than one
    /// (1B F16 decode 6.9-8.1 -> 9.6-9.7 tokens/s with 4 rows at a time). Each row keeps
    /// [`dot1`]'s four accumulators, reduction and tail, so the same bits.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C (and AVX-512VL for `K` > 2, for the registers).
    #[inline(always)]
    unsafe fn side_by_side<W: Weight, const K: usize>(a: &[f32], w: &[W], out: &mut [f32]) {
        let n = a.len();
        let full = n / 32 * 32;
        let mut rows = w.chunks_exact(K * n);
        let mut outs = out.chunks_exact_mut(K);
        for (block, outs) in rows.by_ref().zip(outs.by_ref()) {
            // SAFETY: the caller's CPU features; `block` holds K rows of n >= full values.
            let acc = unsafe { rows_chunk_sums::<W, K>(a, block, n, full) };
            for (k, (o, acc)) in outs.iter_mut().zip(acc).enumerate() {
                let row = &block[k * n..(k + 1) * n];
                // SAFETY: the caller's CPU features.
                *o = super::add_tail(unsafe { reduce(acc) }, &a[full..], &row[full..]);
            }
        }
        for (o, row) in outs
            .into_remainder()
            .iter_mut()
            .zip(rows.remainder().chunks_exact(n))
        {
            // SAFETY: the caller's CPU features.
            *o = unsafe { dot1(a, row) };
        }
    }

    /// Horizontal sum of the four accumulators in a fixed order: `pair_sums`, then the rest
    /// (which [`reduce8`] does for eight products at once).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn reduce(acc: [__m256; 4]) -> f32 {
        let s = pair_sums(acc);
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), s);
        ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
    }

    /// The first step of [`reduce`]: `(acc[0] + acc[1]) + (acc[2] + acc[3])`, lane by lane.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn pair_sums(acc: [__m256; 4]) -> __m256 {
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))
    }

    /// [`reduce`] of eight products at once, in registers: lane `i` of the result is
    /// `reduce(acc_i)` given `s[i] = pair_sums(acc_i)`. Each lane goes through the same
    /// additions in the same order: halves `l_k + l_(k+4)` (a 128-bit lane swap), then
    /// adjacent pairs twice (`hadd`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn reduce8(s: [__m256; 8]) -> __m256 {
        // For products a, b: [a0+a4, a1+a5, a2+a6, a3+a7, b0+b4, b1+b5, b2+b6, b3+b7].
        let halves = |a: __m256, b: __m256| {
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            )
        };
        let (t01, t23) = (halves(s[0], s[1]), halves(s[2], s[3]));
        let (t45, t67) = (halves(s[4], s[5]), halves(s[6], s[7]));
        // Lanes: products 0 0 2 2 1 1 3 3, then 4 4 6 6 5 5 7 7, then 0 2 4 6 1 3 5 7.
        let v = _mm256_hadd_ps(t01, t23);
        let u = _mm256_hadd_ps(t45, t67);
        let r = _mm256_hadd_ps(v, u);
        _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// `sum(a * w)`; `a` and `w` have the same length.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot1<W: Weight>(a: &[f32], w: &[W]) -> f32 {
        let n = a.len().min(w.len());
        let full = n / 32 * 32;
        // SAFETY: same CPU features; full <= n, the length of both slices' prefixes used.
        let acc = unsafe { chunk_sums(a, w, full) };
        super::add_tail(reduce(acc), &a[full..n], &w[full..n])
    }

    /// The four 8-lane accumulators of `sum(a * w)` over the first `full` values (a multiple
    /// of 32, at most the length of both).
    #[inline(always)]
    unsafe fn chunk_sums<W: Weight>(a: &[f32], w: &[W], full: usize) -> [__m256; 4] {
        // SAFETY: the caller's guarantee; one row.
        let [acc] = unsafe { rows_chunk_sums::<W, 1>(a, w, 0, full) };
        acc
    }

    /// [`chunk_sums`] of `K` rows of `w` at once (row `k` starts at `k * stride`), read side by
    /// side; each row's accumulators get the same operations as alone.
    #[inline(always)]
    unsafe fn rows_chunk_sums<W: Weight, const K: usize>(
        a: &[f32],
        w: &[W],
        stride: usize,
        full: usize,
    ) -> [[__m256; 4]; K] {
        debug_assert!(full.is_multiple_of(32) && full <= a.len());
        debug_assert!((K - 1) * stride + full <= w.len());
        let (pa, pw) = (a.as_ptr(), w.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); 4]; K];
        let mut o = 0;
        while o < full {
            for k in 0..K {
                crate::prefetch::ahead(pw.wrapping_add(k * stride + o), 32 * size_of::<W>());
            }
            for r in 0..4 {
                // SAFETY: o + 8 * r + 8 <= full, within `a` and each row of `w`.
                let va = unsafe { _mm256_loadu_ps(pa.add(o + 8 * r)) };
                for (k, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: as above; row k's values start at k * stride.
                    let vw = unsafe { W::load8(pw.add(k * stride + o + 8 * r)) };
                    acc[r] = _mm256_fmadd_ps(va, vw, acc[r]);
                }
            }
            o += 32;
        }
        acc
    }

    /// `(dot1(a, w), dot1(b, w))` with one load of `w` for both; all three have one length.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot2<W: Weight>(a: &[f32], b: &[f32], w: &[W]) -> (f32, f32) {
        let n = a.len().min(b.len()).min(w.len());
        let full = n / 32 * 32;
        let (pa, pb, pw) = (a.as_ptr(), b.as_ptr(), w.as_ptr());
        let mut acc_a = [_mm256_setzero_ps(); 4];
        let mut acc_b = [_mm256_setzero_ps(); 4];
        let mut o = 0;
        while o < full {
            crate::prefetch::ahead(pw.wrapping_add(o), 32 * std::mem::size_of::<W>());
            for (r, (ra, rb)) in acc_a.iter_mut().zip(acc_b.iter_mut()).enumerate() {
                // SAFETY: o + 8 * r + 8 <= full <= n, within all three slices.
                let (va, vb, vw) = unsafe {
                    (
                        _mm256_loadu_ps(pa.add(o + 8 * r)),
                        _mm256_loadu_ps(pb.add(o + 8 * r)),
                        W::load8(pw.add(o + 8 * r)),
                    )
                };
                *ra = _mm256_fmadd_ps(va, vw, *ra);
                *rb = _mm256_fmadd_ps(vb, vw, *rb);
            }
            o += 32;
        }
        let tail = &w[full..n];
        (
            super::add_tail(reduce(acc_a), &a[full..n], tail),
            super::add_tail(reduce(acc_b), &b[full..n], tail),
        )
    }
}

/// The AVX-512 kernel of [`forward_long`] (register blocks of 4 weight rows times 3 activation
/// rows, 12 products in 24 registers) and of [`few_products`] (2 weight rows times up to 6).
/// Each product keeps, as [`avx2`] does, four 8-lane sums over the chunks of 32 (here two
/// 16-lane registers: lanes 0-7 and 8-15 of the first are `avx2`'s first two registers, those
/// of the second its last two), adds them up in the same order and then the tail in order: the
/// same floating-point operations, so the same bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Weight;

    /// `put(j, i, dot(x_i, w_j))` for every weight row `w_j` of `w_block` and every activation
    /// row `x_i` of `x`, in register blocks of `WB` weight rows times `AB`
    /// activation rows: `2 * WB * AB` accumulators (at most 24), `WB` weights and an
    /// activation in the 32 registers.
    ///
    /// A decode-sized pass (at most `MAX_ROWS` rows) takes every activation row for each block
    /// of weight rows, so that the weights come from memory once. A longer pass (prefill) takes
    /// every block of the task's weight rows (in L2) for each block of `AB` activation rows
    /// (in L1 while they meet them: 24 KiB for 3 rows of 2048): 0.93-0.98x the time of the
    /// other order on 8192 x 2048 and 512 x 2048 F16 weights times 512 rows, the same on
    /// 2048 x 8192 (alternating in one process), where the activations reread from L2 for each
    /// block of weights were what bounded it.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn block<W: Weight, const WB: usize, const AB: usize>(
        x: &[f32],
        in_features: usize,
        w_block: &[W],
        mut put: impl FnMut(usize, usize, f32),
    ) {
        let k = in_features;
        let rows = x.len() / k;
        let w_rows = w_block.len() / k;
        if rows > super::MAX_ROWS {
            for a1 in (0..rows).step_by(AB) {
                for w0 in (0..w_rows).step_by(WB) {
                    // SAFETY: the caller's features; a1 < rows, w0 < w_rows.
                    unsafe { tile::<W, WB, AB>(x, k, w_block, w0, a1, &mut put) };
                }
            }
        } else {
            for w0 in (0..w_rows).step_by(WB) {
                for a1 in (0..rows).step_by(AB) {
                    // SAFETY: as above.
                    unsafe { tile::<W, WB, AB>(x, k, w_block, w0, a1, &mut put) };
                }
            }
        }
    }

    /// One register block of [`block`]: weight rows `w0..w0 + WB` times activation rows
    /// `a1..a1 + AB`; rows past the end repeat the last one and their results are not written.
    // Index loops over the register arrays: each index names a row of the block.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn tile<W: Weight, const WB: usize, const AB: usize>(
        x: &[f32],
        k: usize,
        w_block: &[W],
        w0: usize,
        a1: usize,
        put: &mut impl FnMut(usize, usize, f32),
    ) {
        let (rows, w_rows) = (x.len() / k, w_block.len() / k);
        let full = k / 32 * 32;
        let mut wp = [w_block.as_ptr(); WB];
        for (i, p) in wp.iter_mut().enumerate() {
            *p = w_block[(w0 + i).min(w_rows - 1) * k..].as_ptr();
        }
        let mut ap = [x.as_ptr(); AB];
        for (j, p) in ap.iter_mut().enumerate() {
            *p = x[(a1 + j).min(rows - 1) * k..].as_ptr();
        }
        let mut acc = [[[_mm512_setzero_ps(); 2]; AB]; WB];
        // The pass's first block of activation rows meets these weights as they come from
        // memory: ask for them ahead, as the decode kernels do (later blocks find the task's
        // weights in L2).
        let first = a1 == 0;
        let mut o = 0;
        while o < full {
            if first {
                for p in wp {
                    crate::prefetch::ahead(p.wrapping_add(o), 32 * size_of::<W>());
                }
            }
            for h in 0..2 {
                let mut wv = [_mm512_setzero_ps(); WB];
                for i in 0..WB {
                    // SAFETY: o + 16 * h + 16 <= full <= k, inside row i.
                    wv[i] = unsafe { W::load16(wp[i].add(o + 16 * h)) };
                }
                for j in 0..AB {
                    // SAFETY: as above, inside activation row j.
                    let av = unsafe { _mm512_loadu_ps(ap[j].add(o + 16 * h)) };
                    for i in 0..WB {
                        acc[i][j][h] = _mm512_fmadd_ps(av, wv[i], acc[i][j][h]);
                    }
                }
            }
            o += 32;
        }
        for i in 0..WB.min(w_rows - w0) {
            for j in 0..AB.min(rows - a1) {
                // avx2's four 8-lane sums are the halves of the two registers.
                let [lo, hi] = acc[i][j];
                // SAFETY: this function's features include avx2's.
                let sum = unsafe { super::avx2::reduce([low(lo), high(lo), low(hi), high(hi)]) };
                let (a_row, w_row) = (&x[(a1 + j) * k..][..k], &w_block[(w0 + i) * k..][..k]);
                let sum = super::add_tail(sum, &a_row[full..], &w_row[full..]);
                put(w0 + i, a1 + j, sum);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    fn low(v: __m512) -> __m256 {
        _mm512_castps512_ps256(v)
    }

    #[target_feature(enable = "avx512f")]
    fn high(v: __m512) -> __m256 {
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
    }
}

/// For each weight row `w_j` of the block (`(block, in)`) and each input row `x_i`
/// (`(rows, in)`), `out_block[j * rows + i] = dot(x_i, w_j)`.
#[inline(always)]
fn block(
    x: &[f32],
    in_features: usize,
    w_block: &[f32],
    out_block: &mut [f32],
    fmadd: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    let rows = x.len() / in_features;
    for (w_row, out_row) in w_block
        .chunks_exact(in_features)
        .zip(out_block.chunks_exact_mut(rows))
    {
        for (x_row, out) in x.chunks_exact(in_features).zip(out_row.iter_mut()) {
            *out = dot(x_row, w_row, fmadd);
        }
    }
}

/// `sum(a * b)` with [`LANES`] partial sums over the full chunks, reduced pairwise in a fixed
/// order, then the tail added in order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32], fmadd: impl Fn(f32, f32, f32) -> f32 + Copy) -> f32 {
    let mut acc = [0f32; LANES];
    let a_chunks = a.chunks_exact(LANES);
    let b_chunks = b.chunks_exact(LANES);
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            acc[l] = fmadd(ca[l], cb[l], acc[l]);
        }
    }
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    let mut sum = acc[0];
    for (&va, &vb) in a_tail.iter().zip(b_tail) {
        sum = fmadd(va, vb, sum);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;
    use candle_core::Device;

    #[test]
    fn widening_gives_every_half_precision_value_exactly() {
        // Every f16 and bf16 bit pattern (infinities, NaNs, subnormals included), in runs
        // that are not a multiple of the 8 lanes.
        fn check<W: Weight + std::fmt::Debug>(all: Vec<W>) {
            for len in [0usize, 1, 7, 8, 9, 23] {
                let src = &all[..len];
                let mut out = vec![0f32; len];
                W::widen_into(src, &mut out);
                for (o, s) in out.iter().zip(src) {
                    assert_eq!(o.to_bits(), s.to_f32().to_bits(), "{s:?}");
                }
            }
            let mut out = vec![0f32; all.len()];
            W::widen_into(&all, &mut out);
            for (o, s) in out.iter().zip(&all) {
                assert_eq!(o.to_bits(), s.to_f32().to_bits(), "{s:?}");
            }
        }
        check((0..=u16::MAX).map(f16::from_bits).collect());
        check((0..=u16::MAX).map(bf16::from_bits).collect());
    }

    #[test]
    fn rows_alone_equal_rows_in_a_batch_and_match_candle() {
        let dev = Device::Cpu;
        // 77 is not a multiple of the lanes, 50 not a multiple of the task block.
        let (rows, inp, out) = (5, 77, 50);
        let x = Tensor::from_vec(random(rows * inp, 1), (rows, inp), &dev).unwrap();
        let w = Tensor::from_vec(random(out * inp, 2), (out, inp), &dev).unwrap();
        let all = forward(&x, &w).unwrap().unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in all.iter().enumerate() {
            let alone = forward(&x.narrow(0, i, 1).unwrap(), &w).unwrap().unwrap();
            assert_eq!(&alone.to_vec2::<f32>().unwrap()[0], row, "row {i}");
        }
        let reference = x.matmul(&w.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in all.iter().flatten().zip(reference.iter().flatten()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Half-precision weights give exactly the products of the same values stored as f32.
        for dtype in [candle_core::DType::BF16, candle_core::DType::F16] {
            let half = w.to_dtype(dtype).unwrap();
            let widened = half.to_dtype(candle_core::DType::F32).unwrap();
            let got = forward(&x, &half)
                .unwrap()
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let want = forward(&x, &widened)
                .unwrap()
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert_eq!(got, want, "{dtype:?}");
            // A single row (its weights read several rows side by side) gets its row's bits.
            let alone = forward(&x.narrow(0, 3, 1).unwrap(), &half)
                .unwrap()
                .unwrap();
            assert_eq!(
                alone.to_vec2::<f32>().unwrap()[0],
                got[3],
                "{dtype:?} alone"
            );
        }
        let too_many = Tensor::zeros((MAX_ROWS + 1, inp), candle_core::DType::F32, &dev).unwrap();
        assert!(forward(&too_many, &w).unwrap().is_none());
    }

    #[test]
    fn every_decode_sized_pass_gives_each_row_its_single_row_product() {
        let dev = Device::Cpu;
        // 141 columns: a tail after the chunks of 32; 70 weight rows: not a multiple of the
        // task (16) nor of the register blocks.
        let (inp, out) = (141, 70);
        let x = Tensor::from_vec(random(MAX_ROWS * inp, 5), (MAX_ROWS, inp), &dev).unwrap();
        let w = Tensor::from_vec(random(out * inp, 6), (out, inp), &dev).unwrap();
        let bits = |t: Tensor| {
            t.to_vec2::<f32>()
                .unwrap()
                .into_iter()
                .map(|r| r.into_iter().map(f32::to_bits).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        for dtype in [
            candle_core::DType::F32,
            candle_core::DType::BF16,
            candle_core::DType::F16,
        ] {
            let w = w.to_dtype(dtype).unwrap();
            let alone: Vec<Vec<u32>> = (0..MAX_ROWS)
                .map(|i| bits(forward(&x.narrow(0, i, 1).unwrap(), &w).unwrap().unwrap()).remove(0))
                .collect();
            for n in 2..=MAX_ROWS {
                let all = bits(forward(&x.narrow(0, 0, n).unwrap(), &w).unwrap().unwrap());
                assert_eq!(all.len(), n);
                for (i, row) in all.iter().enumerate() {
                    assert_eq!(row, &alone[i], "{dtype:?}, row {i} of {n}");
                }
            }
        }
    }

    #[test]
    fn long_passes_give_each_row_its_single_row_product() {
        if !long_available() {
            return; // the kernel needs AVX-512F; candle's GEMM is used instead
        }
        let dev = Device::Cpu;
        // 200 rows: not a multiple of the 3-row block, and more than `MAX_ROWS`, so the long
        // pass takes the activation blocks in the outer loop; 141 columns: a tail after the
        // chunks of 32; 70 weight rows: a task of 64 and one of 6, not a multiple of the 4-row
        // block.
        let (rows, inp, out) = (200, 141, 70);
        let x = Tensor::from_vec(random(rows * inp, 3), (rows, inp), &dev).unwrap();
        let w = Tensor::from_vec(random(out * inp, 4), (out, inp), &dev).unwrap();
        for dtype in [
            candle_core::DType::F32,
            candle_core::DType::BF16,
            candle_core::DType::F16,
        ] {
            let w = w.to_dtype(dtype).unwrap();
            let long = forward_long(&x, &w).unwrap().unwrap();
            assert_eq!(long.dims(), &[rows, out]);
            let long = long.to_vec2::<f32>().unwrap();
            for (i, row) in long.iter().enumerate() {
                let alone = forward(&x.narrow(0, i, 1).unwrap(), &w).unwrap().unwrap();
                let alone = alone.to_vec2::<f32>().unwrap();
                let bits = |r: &[f32]| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&alone[0]), bits(row), "{dtype:?} row {i}");
            }
        }
    }
}
