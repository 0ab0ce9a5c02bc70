//! Q4_1 weights times activations rounded to Q8_1, with llama.cpp's arithmetic.
//!
//! llama.cpp computes a Q4_1 matrix product by rounding each activation row to 8 bits per
//! block of 32 (`quantize_row_q8_1`: scale `d = max|x| / 127` stored as f16, values
//! `round(x * 127 / max|x|)` to nearest-even, and `s = d * sum(q)` as f16), then for each weight
//! row `dot = sum_blocks(d_w * d_x * sum(q_w * q_x)) + sum_blocks(m_w * s_x)` with the integer
//! sums in eight lanes of four products, the scaled sums accumulated per lane with fused
//! multiply-adds in block order, the lanes added pairwise (high half + low half, then 0+2 and
//! 1+3, then those two) and the minimum terms accumulated separately. This module does the same
//! operations in the same order, so a product agrees with llama.cpp's to the last bit or
//! nearly, and the whole model follows llama.cpp's Q4_1 numbers instead of those of the
//! dequantized weights.
//!
//! Every output is one call of the dot product of one weight row and one activation row, so
//! rows do not depend on each other (batched and speculative decoding stay identical to one
//! row at a time). The AVX2 path and the portable path compute bit-identical results (integer
//! sums are exact; the float steps are the same fused operations in the same order).

use half::f16;
use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::rowwise::simd_available;

/// Values per block (both Q4_1 and Q8_1).
pub const BLOCK: usize = 32;
/// Bytes of one Q4_1 block: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles.
pub const BLOCK_BYTES: usize = 20;

/// A `(rows, cols)` Q4_1 matrix in GGML's block layout (row-major, `cols / 32` blocks per row).
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    data: Vec<u8>,
    rows: usize,
    cols: usize,
}

/// One activation block rounded to 8 bits: `d` and `s` already rounded through f16.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Q8_1Block {
    d: f32,
    s: f32,
    qs: [i8; BLOCK],
}

impl Q4_1Matrix {
    /// Wrap GGML Q4_1 bytes of a `(rows, cols)` matrix.
    pub fn new(data: Vec<u8>, rows: usize, cols: usize) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(EngineError::InvalidRequest {
                field: "q4_1".into(),
                problem: format!("{cols} columns are not a multiple of {BLOCK}"),
            });
        }
        let expected = rows * cols / BLOCK * BLOCK_BYTES;
        if data.len() != expected {
            return Err(EngineError::InvalidRequest {
                field: "q4_1".into(),
                problem: format!(
                    "{} bytes for a ({rows}, {cols}) matrix, expected {expected}",
                    data.len()
                ),
            });
        }
        Ok(Self { data, rows, cols })
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * BLOCK_BYTES
    }

    /// Row `r` as f32 (`d * q + m`), for embedding lookups.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let bytes = &self.data[r * self.row_bytes()..(r + 1) * self.row_bytes()];
        for (block, out) in bytes
            .chunks_exact(BLOCK_BYTES)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let (d, m) = scales(block);
            for (i, q) in block[4..].iter().enumerate() {
                out[i] = d * (q & 0x0F) as f32 + m;
                out[i + 16] = d * (q >> 4) as f32 + m;
            }
        }
    }

    /// `x (n, cols)` row-major times this matrix transposed -> `(n, rows)` row-major.
    pub fn matmul_t(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "activations are not (n, cols)");
        let acts: Vec<Vec<Q8_1Block>> = x.chunks_exact(self.cols).map(quantize_q8_1).collect();
        // Transposed output (rows, n): each task owns a block of weight rows.
        const ROWS_PER_TASK: usize = 8;
        let row_bytes = self.row_bytes();
        let simd = simd_available();
        let mut out_t = vec![0f32; self.rows * n];
        out_t
            .par_chunks_mut(ROWS_PER_TASK * n)
            .zip(self.data.par_chunks(ROWS_PER_TASK * row_bytes))
            .for_each(|(out_block, w_block)| {
                for (w_row, out_row) in w_block
                    .chunks_exact(row_bytes)
                    .zip(out_block.chunks_exact_mut(n))
                {
                    dot_rows(w_row, &acts, out_row, simd);
                }
            });
        let mut out = vec![0f32; n * self.rows];
        for (j, column) in out_t.chunks_exact(n).enumerate() {
            for (i, &v) in column.iter().enumerate() {
                out[i * self.rows + j] = v;
            }
        }
        out
    }
}

fn scales(block: &[u8]) -> (f32, f32) {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
    (d, m)
}

/// llama.cpp's `quantize_row_q8_1` (x86 path) for one row; `x.len()` is a multiple of 32.
pub(crate) fn quantize_q8_1(x: &[f32]) -> Vec<Q8_1Block> {
    x.chunks_exact(BLOCK)
        .map(|v| {
            let max = v.iter().fold(0f32, |m, &e| m.max(e.abs()));
            let d = max / 127.0;
            let id = if max != 0.0 { 127.0 / max } else { 0.0 };
            let mut qs = [0i8; BLOCK];
            let mut sum = 0i32;
            for (q, &e) in qs.iter_mut().zip(v) {
                let r = (e * id).round_ties_even() as i32;
                sum += r;
                *q = r.clamp(-128, 127) as i8;
            }
            Q8_1Block {
                d: f16::from_f32(d).to_f32(),
                s: f16::from_f32(d * sum as f32).to_f32(),
                qs,
            }
        })
        .collect()
}

/// The pairwise lane sum of llama.cpp's `hsum_float_8`.
#[inline(always)]
fn hsum8(acc: [f32; 8]) -> f32 {
    let r: [f32; 4] = std::array::from_fn(|k| acc[4 + k] + acc[k]);
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Dot product of one Q4_1 row and one Q8_1 row, portable code with llama.cpp's order.
pub(crate) fn dot_portable(w_row: &[u8], a: &[Q8_1Block]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (block, y) in w_row.chunks_exact(BLOCK_BYTES).zip(a) {
        let (d0, m) = scales(block);
        summs = m.mul_add(y.s, summs);
        let d0d1 = d0 * y.d;
        let qs = &block[4..];
        for (lane, acc) in acc.iter_mut().enumerate() {
            let mut isum = 0i32;
            for e in 4 * lane..4 * lane + 4 {
                let x = if e < 16 {
                    qs[e] & 0x0F
                } else {
                    qs[e - 16] >> 4
                };
                isum += x as i32 * y.qs[e] as i32;
            }
            *acc = d0d1.mul_add(isum as f32, *acc);
        }
    }
    hsum8(acc) + summs
}

/// `out[r] = dot(w_row, acts[r])`, with the SIMD path when the CPU has it.
fn dot_rows(w_row: &[u8], acts: &[Vec<Q8_1Block>], out: &mut [f32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        for (group, out) in acts.chunks(avx2::GROUP).zip(out.chunks_mut(avx2::GROUP)) {
            let refs: [&[Q8_1Block]; avx2::GROUP] =
                std::array::from_fn(|i| group.get(i).map_or(&[][..], |a| &a[..]));
            // SAFETY: `simd` is only true when `simd_available()` saw AVX2, FMA and F16C.
            unsafe { avx2::dot_group(w_row, &refs[..group.len()], out) };
        }
        return;
    }
    let _ = simd;
    for (a, o) in acts.iter().zip(out.iter_mut()) {
        *o = dot_portable(w_row, a);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{hsum8, Q8_1Block, BLOCK_BYTES};

    /// Activation rows computed together against one weight row (the nibbles of a block are
    /// unpacked once for all of them; each row's arithmetic is unchanged).
    pub(super) const GROUP: usize = 4;

    /// `out[r] = dot(w_row, acts[r])` for up to [`GROUP`] activation rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_group(w_row: &[u8], acts: &[&[Q8_1Block]], out: &mut [f32]) {
        let n = acts.len();
        debug_assert!(n <= GROUP && out.len() == n);
        let mut acc = [_mm256_setzero_ps(); GROUP];
        let mut summs = [0f32; GROUP];
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for (b, block) in w_row.chunks_exact(BLOCK_BYTES).enumerate() {
            // SAFETY: a block is 20 bytes: f16 d, f16 m, 16 bytes of nibbles.
            let (d0, m, qx) = unsafe {
                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(
                    (block.as_ptr() as *const i32).read_unaligned(),
                ));
                let raw = _mm_loadu_si128(block.as_ptr().add(4) as *const __m128i);
                let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
                (
                    _mm_cvtss_f32(dm),
                    _mm_cvtss_f32(_mm_movehdup_ps(dm)),
                    _mm256_and_si256(both, low),
                )
            };
            for r in 0..n {
                let y = &acts[r][b];
                summs[r] = m.mul_add(y.s, summs[r]);
                let d0d1 = _mm256_set1_ps(d0 * y.d);
                // SAFETY: y.qs holds 32 bytes.
                let qy = unsafe { _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i) };
                let pairs = _mm256_maddubs_epi16(qx, qy); // u8 * i8, pairs summed (no overflow)
                let quads = _mm256_madd_epi16(pairs, ones);
                acc[r] = _mm256_fmadd_ps(d0d1, _mm256_cvtepi32_ps(quads), acc[r]);
            }
        }
        for r in 0..n {
            let mut lanes = [0f32; 8];
            // SAFETY: 8 f32 fit `lanes`.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r]) };
            out[r] = hsum8(lanes) + summs[r];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;

    /// Random Q4_1 bytes: f16 scales in a plausible range, any nibbles.
    fn random_q4_1(rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let vals = random(rows * cols / BLOCK * 18, seed);
        let mut out = Vec::new();
        for chunk in vals.chunks_exact(18) {
            out.extend_from_slice(&f16::from_f32(chunk[0].abs() * 0.1 + 1e-3).to_le_bytes());
            out.extend_from_slice(&f16::from_f32(chunk[1] * 0.5).to_le_bytes());
            for v in &chunk[2..] {
                out.push(((v + 0.5) * 255.0) as u8);
            }
        }
        out
    }

    #[test]
    fn matches_the_dequantized_product_within_activation_rounding() {
        let (rows, cols, n) = (37, 96, 5);
        let w = Q4_1Matrix::new(random_q4_1(rows, cols, 1), rows, cols).unwrap();
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
                // 8-bit activations: error well under 1% of the row's magnitude here.
                let scale: f64 = deq.iter().map(|v| v.abs() as f64).sum::<f64>() * 0.5;
                assert!(
                    (got - exact).abs() < 0.01 * scale + 1e-4,
                    "row {r} x {i}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn avx2_equals_portable_and_rows_are_independent() {
        let (rows, cols, n) = (19, 128, 6);
        let w = Q4_1Matrix::new(random_q4_1(rows, cols, 3), rows, cols).unwrap();
        let x = random(n * cols, 4);
        let all = w.matmul_t(&x, n);
        for i in 0..n {
            let alone = w.matmul_t(&x[i * cols..(i + 1) * cols], 1);
            assert_eq!(alone, all[i * rows..(i + 1) * rows], "row {i}");
            let a = quantize_q8_1(&x[i * cols..(i + 1) * cols]);
            let row_bytes = cols / BLOCK * BLOCK_BYTES;
            for (r, w_row) in w.data.chunks_exact(row_bytes).enumerate() {
                let p = dot_portable(w_row, &a);
                let mut simd = [0f32];
                dot_rows(w_row, std::slice::from_ref(&a), &mut simd, simd_available());
                assert_eq!(simd[0].to_bits(), p.to_bits(), "row {r}");
                assert_eq!(all[i * rows + r].to_bits(), p.to_bits());
            }
        }
    }

    #[test]
    fn q8_1_rounding_is_llama_cpp_s() {
        // max 127 -> d = 1 and the multiplier 127 / max = 1 exactly: ties go to even.
        let mut x = vec![0f32; BLOCK];
        x[..6].copy_from_slice(&[127.0, -127.0, 0.5, 1.5, -2.5, 3.0]);
        let b = quantize_q8_1(&x)[0];
        assert_eq!(&b.qs[..6], &[127, -127, 0, 2, -2, 3]);
        assert_eq!((b.d, b.s), (1.0, 3.0));
        // d and s are rounded through f16.
        x[0] = 100.0;
        x[1] = -100.0;
        let b = quantize_q8_1(&x)[0];
        assert_eq!(b.d, f16::from_f32(100.0 / 127.0).to_f32());
        let zero = quantize_q8_1(&[0f32; BLOCK])[0];
        assert_eq!((zero.d, zero.s, zero.qs), (0.0, 0.0, [0; BLOCK]));
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(Q4_1Matrix::new(vec![0; 20], 1, 33).is_err());
        assert!(Q4_1Matrix::new(vec![0; 19], 1, 32).is_err());
        assert!(Q4_1Matrix::new(vec![0; 40], 2, 32).is_ok());
    }
}
