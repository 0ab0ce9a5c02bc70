//! Our CPU kernels for GGML block-quantized weights, with llama.cpp's arithmetic.
//!
//! llama.cpp multiplies a quantized weight matrix by activations that it first rounds to
//! 8 bits per block (Q8_1 for Q4_1 weights, Q8_0 for Q8_0, Q8_K for the K-quants), then sums
//! integer products block by block and scales them in float. Each format here rounds the
//! activations and sums the integers exactly as llama.cpp does. The plain layouts of Q8_0, Q4_K
//! and Q6_K also do the float steps in llama.cpp's AVX2 order (the same fused multiply-adds in
//! the same lanes), so their products agree with llama.cpp's to the last bit or nearly; the
//! layouts interleaved by 8 rows ([`interleaved`], used wherever the rows are a multiple of 8),
//! and both layouts of Q4_1, scale each block's integer sum in one step (float differences of
//! rounding only; for several activation rows a quarter to half the float work of llama.cpp's
//! order). Every kernel asks for the weights it will read next ([`crate::prefetch`]).
//!
//! Every output element is one call of the dot product of one weight row and one activation
//! row, so outputs never depend on how many rows are computed together: a batched decode step,
//! a speculative verification pass and a prefill chunk give each row exactly the numbers it
//! gets alone. The kernels still compute several activation rows per weight block they
//! unpack (one read of the weights for all of them), which is what makes those passes cheap.
//! The SIMD paths (AVX2, and AVX-VNNI / AVX-512 VNNI where the CPU has them; the integer sums
//! are the same) and the portable path give bit-identical results; the tests check every
//! kernel against the portable code on random inputs.

use std::sync::Arc;

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QTensor};

use crate::error::{EngineError, Result};
use crate::rowwise::simd_available;

pub(crate) mod amx;
pub mod interleaved;
pub mod q4_1;
pub mod q4_1_x8;
pub mod q4_k;
#[cfg(target_arch = "x86_64")]
mod q4_k_amx;
pub mod q4_k_x8;
pub mod q6_k;
#[cfg(target_arch = "x86_64")]
mod q6_k_amx;
pub mod q6_k_x8;
pub mod q8_0;
pub mod q8_0_x8;
pub mod q8_k;

/// One GGML weight format and the activation rounding llama.cpp pairs with it.
pub trait Format: Send + Sync + std::fmt::Debug + 'static {
    /// GGML's name of the format.
    const NAME: &'static str;
    /// Values per weight block (and per activation block).
    const BLOCK: usize;
    /// Bytes of one weight block.
    const BLOCK_BYTES: usize;
    /// One block of activations rounded to 8 bits.
    type Act: Send + Sync + Copy;

    /// Round one activation row (a multiple of `BLOCK` long) as llama.cpp does.
    fn quantize(x: &[f32]) -> Vec<Self::Act>;
    /// One weight block as f32 (embedding lookups, dequantization).
    fn dequantize_block(block: &[u8], out: &mut [f32]);
    /// Dot product of one weight row and one activation row, portable code in llama.cpp's
    /// order.
    fn dot(w_row: &[u8], a: &[Self::Act]) -> f32;
    /// `out[w * acts.len() + a] = dot(w_rows[w], acts[a])` for 1 to [`TILE`] weight rows and
    /// 1 to [`TILE`] activation rows, with the SIMD kernel: each product's arithmetic is that
    /// of [`Format::dot`]; the tile only gives the CPU independent products to overlap and
    /// reads each weight and activation block once for all of them.
    ///
    /// # Safety
    /// Only called when [`simd_available`] is true.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_tile(w_rows: &[&[u8]], acts: &[&[Self::Act]], out: &mut [f32]);
}

/// The GGML bytes of a matrix: owned, or those of a candle `QTensor` on the CPU (shared with
/// candle's own kernels, no second copy).
#[derive(Debug, Clone)]
pub enum Bytes {
    Owned(Vec<u8>),
    Shared(Arc<QTensor>),
}

impl Bytes {
    /// The bytes of `tensor`, shared when candle lends them (CPU storage), else copied.
    pub fn of(tensor: Arc<QTensor>) -> Result<Self> {
        if matches!(tensor.data()?, Cow::Borrowed(_)) {
            return Ok(Bytes::Shared(tensor));
        }
        Ok(Bytes::Owned(tensor.data()?.into_owned()))
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Shared(t) => match t.data() {
                Ok(Cow::Borrowed(b)) => b,
                // `of` only shares tensors whose bytes are borrowed, which does not change.
                _ => unreachable!("a shared QTensor lends its bytes"),
            },
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes::Owned(v)
    }
}

/// A `(rows, cols)` weight matrix in GGML's block layout (row-major, `cols / BLOCK` blocks per
/// row), for the kernels of format `F`.
#[derive(Debug, Clone)]
pub struct BlockMatrix<F: Format> {
    data: Bytes,
    rows: usize,
    cols: usize,
    _format: std::marker::PhantomData<F>,
}

/// Each `cols`-long row of `x` rounded by `quantize` (a format's activation rounding), the
/// rows spread over the pool's threads when there are several (a batched step or a prefill
/// chunk; on one thread this was a tenth of a batched step's serial time). Each row is
/// rounded alone, so the result does not depend on the split.
pub(crate) fn quantize_rows<A: Send>(
    x: &[f32],
    cols: usize,
    quantize: fn(&[f32]) -> Vec<A>,
) -> Vec<Vec<A>> {
    let n = x.len() / cols;
    if n <= 1 {
        return x.chunks_exact(cols).map(quantize).collect();
    }
    let mut acts: Vec<Vec<A>> = (0..n).map(|_| Vec::new()).collect();
    crate::pool::for_each_chunk_mut(&mut acts, 1, |i, row| {
        row[0] = quantize(&x[i * cols..][..cols]);
    });
    acts
}

/// What [`crate::Linear`] needs of a block-quantized matrix, whatever its format.
pub trait PackedMatrix: Send + Sync + std::fmt::Debug {
    /// GGML's name of the format.
    fn format(&self) -> &'static str;
    /// `(rows, cols)` = `(out_features, in_features)`.
    fn shape(&self) -> (usize, usize);
    /// Row `r` as f32.
    fn dequantize_row(&self, r: usize, out: &mut [f32]);
    /// `x (n, cols)` row-major times this matrix transposed -> `(n, rows)` row-major.
    fn matmul_t(&self, x: &[f32], n: usize) -> Vec<f32>;
    /// Whether [`Self::matmul_t`] computes passes of more than [`crate::rowwise::MAX_ROWS`]
    /// rows (prompt prefill) with kernels of ours that beat candle's GEMM (Q4_K on AMX);
    /// otherwise [`crate::Linear`] gives those passes to candle where it can.
    fn computes_long_passes(&self) -> bool {
        false
    }
}

/// Whether this CPU computes long passes (prompt prefill) of Q4_K and Q6_K with our AMX kernels
/// ([`amx`]), which give every row the bits of the decode kernels; otherwise candle's GEMM
/// computes them (close, not the same bits).
pub fn amx_prefill() -> bool {
    amx::available()
}

/// The formats with our own kernels, as a packed matrix; `None` for any other type.
pub fn pack(
    dtype: GgmlDType,
    data: impl Into<Bytes>,
    rows: usize,
    cols: usize,
) -> Result<Option<Arc<dyn PackedMatrix>>> {
    let data = data.into();
    Ok(Some(match dtype {
        GgmlDType::Q4_1 => tiled_or_plain::<q4_1_x8::Q4_1Tiles>(data, rows, cols)?,
        GgmlDType::Q8_0 => tiled_or_plain::<q8_0_x8::Q8_0Tiles>(data, rows, cols)?,
        GgmlDType::Q4K => tiled_or_plain::<q4_k_x8::Q4KTiles>(data, rows, cols)?,
        GgmlDType::Q6K => tiled_or_plain::<q6_k_x8::Q6KTiles>(data, rows, cols)?,
        _ => return Ok(None),
    }))
}

/// A matrix in `T`'s tiles of 8 rows when its rows are a multiple of 8, else in the plain
/// layout of `T`'s format (sharing `data`).
fn tiled_or_plain<T: interleaved::RowTiles>(
    data: Bytes,
    rows: usize,
    cols: usize,
) -> Result<Arc<dyn PackedMatrix>> {
    Ok(if rows.is_multiple_of(interleaved::ROWS) {
        Arc::new(interleaved::Interleaved::<T>::new(
            data.as_slice(),
            rows,
            cols,
        )?)
    } else {
        Arc::new(BlockMatrix::<T::Plain>::new(data, rows, cols)?)
    })
}

impl<F: Format> BlockMatrix<F> {
    /// Wrap GGML bytes of a `(rows, cols)` matrix of format `F`.
    pub fn new(data: impl Into<Bytes>, rows: usize, cols: usize) -> Result<Self> {
        let data = data.into();
        let bad = |problem: String| EngineError::InvalidRequest {
            field: F::NAME.to_lowercase(),
            problem,
        };
        if !cols.is_multiple_of(F::BLOCK) {
            return Err(bad(format!(
                "{cols} columns are not a multiple of the block size {}",
                F::BLOCK
            )));
        }
        let expected = rows * cols / F::BLOCK * F::BLOCK_BYTES;
        if data.as_slice().len() != expected {
            return Err(bad(format!(
                "{} bytes for a ({rows}, {cols}) matrix, expected {expected}",
                data.as_slice().len()
            )));
        }
        Ok(Self {
            data,
            rows,
            cols,
            _format: std::marker::PhantomData,
        })
    }

    fn row_bytes(&self) -> usize {
        self.cols / F::BLOCK * F::BLOCK_BYTES
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.data.as_slice()[r * self.row_bytes()..(r + 1) * self.row_bytes()]
    }
}

impl<F: Format> PackedMatrix for BlockMatrix<F> {
    fn format(&self) -> &'static str {
        F::NAME
    }

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (block, out) in self
            .row(r)
            .chunks_exact(F::BLOCK_BYTES)
            .zip(out.chunks_exact_mut(F::BLOCK))
        {
            F::dequantize_block(block, out);
        }
    }

    fn matmul_t(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "activations are not (n, cols)");
        let acts = quantize_rows(x, self.cols, F::quantize);
        // Transposed output (rows, n): each task owns a run of weight rows.
        const ROWS_PER_TASK: usize = 8;
        let row_bytes = self.row_bytes();
        let simd = simd_available();
        let mut out_t = vec![0f32; self.rows * n];
        crate::pool::for_each_chunk_mut(&mut out_t, ROWS_PER_TASK * n, |i, out_block| {
            let first = i * ROWS_PER_TASK;
            let last = (first + ROWS_PER_TASK).min(self.rows);
            let w_rows: Vec<&[u8]> = self.data.as_slice()[first * row_bytes..last * row_bytes]
                .chunks_exact(row_bytes)
                .collect();
            dot_rows::<F>(&w_rows, &acts, out_block, simd);
        });
        crate::pool::transpose(out_t, self.rows, n)
    }
}

/// Most weight rows, and most activation rows, of one [`Format::dot_tile`] call.
pub const TILE: usize = 4;

/// `out[w * acts.len() + a] = dot(w_rows[w], acts[a])`, in tiles with the SIMD kernel when the
/// CPU has it.
fn dot_rows<F: Format>(w_rows: &[&[u8]], acts: &[Vec<F::Act>], out: &mut [f32], simd: bool) {
    let n = acts.len();
    #[cfg(target_arch = "x86_64")]
    if simd {
        let mut tile_out = [0f32; TILE * TILE];
        for (a0, group) in acts.chunks(TILE).enumerate().map(|(i, g)| (i * TILE, g)) {
            let a_refs: [&[F::Act]; TILE] =
                std::array::from_fn(|i| group.get(i).map_or(&[][..], |a| &a[..]));
            let a_len = group.len();
            // One weight row per call: tiles of several weight rows (more independent
            // products) measured slower on the 2-core machine of docs/BENCHMARKS.md, whose
            // memory streams one row at a time faster than several interleaved.
            const W_TILE: usize = 1;
            for (w0, ws) in w_rows
                .chunks(W_TILE)
                .enumerate()
                .map(|(i, w)| (i * W_TILE, w))
            {
                let out_tile = &mut tile_out[..ws.len() * a_len];
                if a0 == 0 {
                    // Later groups of activations find the rows in cache.
                    crate::prefetch::ahead(ws[0].as_ptr(), ws.len() * ws[0].len());
                }
                // SAFETY: `simd` is only true when `simd_available()` saw AVX2, FMA and F16C.
                unsafe { F::dot_tile(ws, &a_refs[..a_len], out_tile) };
                for (w, row) in out_tile.chunks_exact(a_len).enumerate() {
                    out[(w0 + w) * n + a0..][..a_len].copy_from_slice(row);
                }
            }
        }
        return;
    }
    let _ = simd;
    for (w, w_row) in w_rows.iter().enumerate() {
        for (a, o) in acts.iter().zip(&mut out[w * n..(w + 1) * n]) {
            *o = F::dot(w_row, a);
        }
    }
}

/// Calls `$tile::<W, A>(w_rows, acts)` (a `[[f32; A]; W]` of products) for the `W` and `A` of
/// the slices `$w` and `$a` (1 to [`TILE`] each) and writes it to `$out` row-major.
macro_rules! dispatch_tile {
    ($tile:ident, $w:expr, $a:expr, $out:expr) => {{
        let (w, a, out) = ($w, $a, $out);
        macro_rules! go {
            ($W:literal, $A:literal) => {{
                let r: [[f32; $A]; $W] =
                    $tile::<$W, $A>(std::array::from_fn(|i| w[i]), std::array::from_fn(|i| a[i]));
                for (i, row) in r.iter().enumerate() {
                    out[i * $A..(i + 1) * $A].copy_from_slice(row);
                }
            }};
        }
        match (w.len(), a.len()) {
            (1, 1) => go!(1, 1),
            (1, 2) => go!(1, 2),
            (1, 3) => go!(1, 3),
            (1, 4) => go!(1, 4),
            (2, 1) => go!(2, 1),
            (2, 2) => go!(2, 2),
            (2, 3) => go!(2, 3),
            (2, 4) => go!(2, 4),
            (3, 1) => go!(3, 1),
            (3, 2) => go!(3, 2),
            (3, 3) => go!(3, 3),
            (3, 4) => go!(3, 4),
            (4, 1) => go!(4, 1),
            (4, 2) => go!(4, 2),
            (4, 3) => go!(4, 3),
            (4, 4) => go!(4, 4),
            (w, a) => unreachable!("tile of {w} x {a}"),
        }
    }};
}
#[cfg(target_arch = "x86_64")]
pub(crate) use dispatch_tile;

/// The pairwise lane sum of llama.cpp's `hsum_float_8`.
#[inline(always)]
pub(crate) fn hsum8(acc: [f32; 8]) -> f32 {
    let r = [
        acc[4] + acc[0],
        acc[5] + acc[1],
        acc[6] + acc[2],
        acc[7] + acc[3],
    ];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// llama.cpp's `nearest_int`: round half to even through the float adder (|x| < 2^22).
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// A block of 32 activations rounded to 8 bits as llama.cpp's `quantize_row_q8_0` and
/// `quantize_row_q8_1` do: the largest magnitude `amax`, the values `nearest_int(x * 127 /
/// amax)` (all 0 when `amax` is 0) clamped to a byte, and the sum of the rounded values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rounded32 {
    pub(crate) amax: f32,
    pub(crate) qs: [i8; 32],
    pub(crate) sum: i32,
}

/// [`Rounded32`] of each block of 32 in `x`, on 512-bit vectors where the CPU has AVX-512F
/// (the same float steps per value, so the same bits; blocks with a NaN or an infinity take
/// the portable code).
pub(crate) fn round32(x: &[f32]) -> impl Iterator<Item = Rounded32> + '_ {
    #[cfg(target_arch = "x86_64")]
    let simd = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    x.chunks_exact(32).map(move |v| {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: the CPU has AVX-512F; `v` holds 32 values.
            if let Some(r) = unsafe { rounding_x86::block(v) } {
                return r;
            }
        }
        let _ = simd;
        round32_block(v)
    })
}

/// One block of [`round32`], portable code.
fn round32_block(v: &[f32]) -> Rounded32 {
    let amax = v.iter().fold(0f32, |m, &e| m.max(e.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; 32];
    let mut sum = 0i32;
    for (q, &e) in qs.iter_mut().zip(v) {
        let r = nearest_int(e * id);
        sum += r;
        *q = r.clamp(-128, 127) as i8;
    }
    Rounded32 { amax, qs, sum }
}

#[cfg(target_arch = "x86_64")]
mod rounding_x86 {
    use std::arch::x86_64::*;

    use super::Rounded32;

    /// [`super::nearest_int`] of `x * scale` in each of 16 lanes: the bits of
    /// `x * scale + 1.5 * 2^23` (a product, then a sum: not fused, or ties round the other
    /// way), less 2^22. Shared by the Q8_0/Q8_1 and the Q8_K rounding.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn nearest_int16(x: __m512, scale: __m512) -> __m512i {
        let r = _mm512_add_ps(_mm512_mul_ps(x, scale), _mm512_set1_ps(12_582_912.0));
        _mm512_sub_epi32(
            _mm512_and_si512(_mm512_castps_si512(r), _mm512_set1_epi32(0x007f_ffff)),
            _mm512_set1_epi32(0x0040_0000),
        )
    }

    /// [`super::round32_block`] on two 512-bit vectors, or `None` where a value is not
    /// finite (the portable code's `max` skips NaNs; this one would not).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `v` holds 32 values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(v: &[f32]) -> Option<Rounded32> {
        assert_eq!(v.len(), 32);
        // SAFETY: two loads of 16 within the 32 values of `v`.
        let (a, b) = unsafe {
            (
                _mm512_loadu_ps(v.as_ptr()),
                _mm512_loadu_ps(v.as_ptr().add(16)),
            )
        };
        let (abs_a, abs_b) = (_mm512_abs_ps(a), _mm512_abs_ps(b));
        let inf = _mm512_set1_ps(f32::INFINITY);
        let finite = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(abs_a, inf)
            & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(abs_b, inf);
        if finite != 0xFFFF {
            return None;
        }
        // The maximum of finite magnitudes is the same whatever the order.
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs_a, abs_b));
        let id = _mm512_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let (qa, qb) = (nearest_int16(a, id), nearest_int16(b, id));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
        let clamp = |q: __m512i| {
            _mm512_max_epi32(
                _mm512_min_epi32(q, _mm512_set1_epi32(127)),
                _mm512_set1_epi32(-128),
            )
        };
        let mut qs = [0i8; 32];
        // SAFETY: 16 bytes at 0 and at 16 within the 32 of `qs`.
        unsafe {
            _mm_storeu_si128(
                qs.as_mut_ptr() as *mut __m128i,
                _mm512_cvtepi32_epi8(clamp(qa)),
            );
            _mm_storeu_si128(
                qs.as_mut_ptr().add(16) as *mut __m128i,
                _mm512_cvtepi32_epi8(clamp(qb)),
            );
        }
        Some(Rounded32 { amax, qs, sum })
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Checks every format's kernels must pass.
    use super::*;
    use crate::test_support::random;

    /// The product agrees with the dequantized weights times the exact activations within
    /// `tol` of the row's magnitude (the activations are rounded to 8 bits).
    pub(crate) fn matches_dequantized<F: Format>(data: Vec<u8>, rows: usize, cols: usize) {
        let n = 5;
        let w = BlockMatrix::<F>::new(data, rows, cols).unwrap();
        let x = random(n * cols, 2);
        let y = w.matmul_t(&x, n);
        let mut deq = vec![0f32; cols];
        for r in 0..rows {
            w.dequantize_row(r, &mut deq);
            for i in 0..n {
                let exact: f64 = x[i * cols..(i + 1) * cols]
                    .iter()
                    .zip(&deq)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                let got = y[i * rows + r] as f64;
                let scale: f64 = deq.iter().map(|v| v.abs() as f64).sum::<f64>() * 0.5;
                assert!(
                    (got - exact).abs() < 0.01 * scale + 1e-4,
                    "{} row {r} x {i}: {got} vs {exact}",
                    F::NAME
                );
            }
        }
    }

    /// SIMD equals portable bit for bit, and an output row is the same computed alone, in a
    /// group, and in a batch of every size up to `n` (outputs poisoned before each call).
    pub(crate) fn simd_equals_portable_and_rows_are_independent<F: Format>(
        data: Vec<u8>,
        rows: usize,
        cols: usize,
    ) {
        let n = 2 * TILE + 1;
        let w = BlockMatrix::<F>::new(data, rows, cols).unwrap();
        let x = random(n * cols, 4);
        let all = w.matmul_t(&x, n);
        assert!(all.iter().all(|v| v.is_finite()), "{}", F::NAME);
        for m in 1..=n {
            let part = w.matmul_t(&x[..m * cols], m);
            assert_eq!(part[..], all[..m * rows], "{} batch of {m}", F::NAME);
        }
        let acts: Vec<Vec<F::Act>> = x.chunks_exact(cols).map(F::quantize).collect();
        let portable: Vec<f32> = (0..rows)
            .flat_map(|r| acts.iter().map(move |a| (r, a)))
            .map(|(r, a)| F::dot(w.row(r), a))
            .collect();
        for i in 0..n {
            for r in 0..rows {
                assert_eq!(all[i * rows + r].to_bits(), portable[r * n + i].to_bits());
            }
        }
        // Every tile shape, straight from the kernel.
        #[cfg(target_arch = "x86_64")]
        if simd_available() {
            for tw in 1..=TILE {
                for ta in 1..=TILE {
                    let ws: Vec<&[u8]> = (0..tw).map(|k| w.row(k * 3 % rows)).collect();
                    let a_refs: Vec<&[F::Act]> = (0..ta).map(|k| &acts[(k * 2) % n][..]).collect();
                    let mut got = vec![f32::NAN; tw * ta];
                    // SAFETY: simd_available() is true.
                    unsafe { F::dot_tile(&ws, &a_refs, &mut got) };
                    for k in 0..tw {
                        for j in 0..ta {
                            let p = portable[(k * 3 % rows) * n + (j * 2) % n];
                            assert_eq!(
                                got[k * ta + j].to_bits(),
                                p.to_bits(),
                                "{} tile {tw}x{ta}",
                                F::NAME
                            );
                        }
                    }
                }
            }
        }
    }

    /// Dequantized rows equal candle's dequantization of the same GGML bytes (an independent
    /// implementation of the block layouts).
    pub(crate) fn dequantize_matches_candle<F: Format>(
        dtype: GgmlDType,
        data: Vec<u8>,
        rows: usize,
        cols: usize,
    ) {
        use candle_core::quantized::ggml_file::qtensor_from_ggml;
        let device = candle_core::Device::Cpu;
        let theirs = qtensor_from_ggml(dtype, &data, vec![rows, cols], &device)
            .unwrap()
            .dequantize(&device)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let w = BlockMatrix::<F>::new(data, rows, cols).unwrap();
        let mut ours = vec![f32::NAN; cols];
        for r in 0..rows {
            w.dequantize_row(r, &mut ours);
            for (c, (a, b)) in ours.iter().zip(&theirs[r * cols..]).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                    "{} ({r}, {c}): {a} vs candle {b}",
                    F::NAME
                );
            }
        }
    }

    /// Every check above for format `F`, on matrices of `gen(rows, cols, seed)` bytes:
    /// `product` for the comparison with the dequantized weights, `simd` for SIMD against
    /// portable and row independence, `candle` for the dequantization.
    pub(crate) fn format_checks<F: Format>(
        dtype: GgmlDType,
        gen: fn(usize, usize, u32) -> Vec<u8>,
        product: (usize, usize),
        simd: (usize, usize),
        candle: (usize, usize),
    ) {
        matches_dequantized::<F>(gen(product.0, product.1, 1), product.0, product.1);
        simd_equals_portable_and_rows_are_independent::<F>(gen(simd.0, simd.1, 3), simd.0, simd.1);
        dequantize_matches_candle::<F>(dtype, gen(candle.0, candle.1, 5), candle.0, candle.1);
        wrong_sizes_are_errors::<F>();
    }

    /// Sizes that are not a multiple of the block are refused, with the format named.
    pub(crate) fn wrong_sizes_are_errors<F: Format>() {
        let err = BlockMatrix::<F>::new(vec![0; F::BLOCK_BYTES], 1, F::BLOCK + 1).unwrap_err();
        assert!(err.to_string().contains(&F::NAME.to_lowercase()), "{err}");
        assert!(BlockMatrix::<F>::new(vec![0; F::BLOCK_BYTES - 1], 1, F::BLOCK).is_err());
        assert!(BlockMatrix::<F>::new(vec![0; 2 * F::BLOCK_BYTES], 2, F::BLOCK).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_blocks_of_32_on_simd_equals_the_portable_code() {
        let mut rows: Vec<Vec<f32>> = (0..40)
            .map(|s| {
                crate::test_support::random(32, s)
                    .iter()
                    .map(|v| v * (1 << (s % 24)) as f32 / 4096.0)
                    .collect()
            })
            .collect();
        // Halfway values (ties to even), ties of magnitude with both signs, zeros (one of them
        // negative), one value only, tiny values.
        rows.push((0..32).map(|i| i as f32 * 8.0 - 127.5).collect());
        let mut tie = vec![0.25f32; 32];
        tie[7] = -3.0;
        tie[20] = 3.0;
        rows.push(tie);
        // Products `x * 127 / 3` that round to exactly k + 0.5 in f32 (a tie, to even) while the
        // exact product is on the other side (0.5000000225, 7.4999999833, 8.5000001073,
        // 9.4999996004): a fused multiply-add would round them the other way.
        let mut near = vec![0f32; 32];
        near[0] = 3.0;
        for (i, bits) in [0x3c41_8307u32, 0x3e35_6ad6, 0x3e4d_9b37, 0x3e65_cb97]
            .into_iter()
            .enumerate()
        {
            near[1 + 2 * i] = f32::from_bits(bits);
            near[2 + 2 * i] = -f32::from_bits(bits);
        }
        rows.push(near);
        let mut zeros = vec![0f32; 32];
        rows.push(zeros.clone());
        zeros[5] = -0.0;
        rows.push(zeros);
        let mut one = vec![0f32; 32];
        one[31] = -1e-30;
        rows.push(one);
        // Not finite: the portable code decides.
        let mut odd = vec![1f32; 32];
        odd[3] = f32::NAN;
        rows.push(odd.clone());
        odd[3] = f32::NEG_INFINITY;
        rows.push(odd);
        let x: Vec<f32> = rows.concat();
        let got: Vec<Rounded32> = round32(&x).collect();
        assert_eq!(got.len(), rows.len());
        for (i, (got, row)) in got.iter().zip(&rows).enumerate() {
            let want = round32_block(row);
            assert_eq!(got.amax.to_bits(), want.amax.to_bits(), "block {i}");
            assert_eq!((got.qs, got.sum), (want.qs, want.sum), "block {i}");
        }
        // llama.cpp's rounding: max 127 -> values unchanged, ties to even.
        let mut x = vec![0f32; 32];
        x[..6].copy_from_slice(&[127.0, -127.0, 0.5, 1.5, -2.5, 3.0]);
        let r = round32(&x).next().unwrap();
        assert_eq!(
            (&r.qs[..6], r.sum, r.amax),
            (&[127, -127, 0, 2, -2, 3][..], 3, 127.0)
        );
    }
}
