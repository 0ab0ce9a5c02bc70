//! Q6_K weights times activations rounded to Q8_K, as llama.cpp's AVX2
//! `ggml_vec_dot_q6_K_q8_K` computes it.
//!
//! A block of 256 weights has 128 bytes of low nibbles (`ql`), 64 bytes of high 2-bit pairs
//! (`qh`), sixteen signed 8-bit scales (one per 16 values) and an f16 `d`; a weight is
//! `d * scale * (q - 32)` with `q` the 6-bit value. Per block, the integer sums
//! `scale * sum((q - 32) * q8)` go into eight lanes of four products, scaled by `d_x * d_w`
//! with one fused multiply-add per lane.

use half::f16;

use super::q8_k::{self, Q8KBlock, QK_K};
use super::{hsum8, Format};

/// GGML Q6_K (super-blocks of 256).
#[derive(Debug, Clone, Copy)]
pub struct Q6K;

const QL: usize = 0;
const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

/// The 6-bit value (0..64) of element `e` of a block, and the index of its scale.
#[inline(always)]
pub(crate) fn value(block: &[u8], e: usize) -> (i32, usize) {
    let (half, rest) = (e / 128, e % 128);
    let (c, l) = (rest / 32, rest % 32); // component 0..4 of the half, position in it
    let ql = block[QL + 64 * half + 32 * (c & 1) + l];
    let low = if c < 2 { ql & 0x0F } else { ql >> 4 };
    let high = (block[QH + 32 * half + l] >> (2 * c)) & 3;
    ((low | (high << 4)) as i32, 8 * half + 2 * c + l / 16)
}

impl Format for Q6K {
    const NAME: &'static str = "Q6_K";
    const BLOCK: usize = QK_K;
    const BLOCK_BYTES: usize = 210;
    type Act = Q8KBlock;

    fn quantize(x: &[f32]) -> Vec<Q8KBlock> {
        q8_k::quantize(x)
    }

    fn dequantize_block(block: &[u8], out: &mut [f32]) {
        let d = f16::from_le_bytes([block[D], block[D + 1]]).to_f32();
        for (e, o) in out.iter_mut().enumerate().take(QK_K) {
            let (q, s) = value(block, e);
            *o = d * block[SCALES + s] as i8 as f32 * (q - 32) as f32;
        }
    }

    fn dot(w_row: &[u8], a: &[Q8KBlock]) -> f32 {
        let mut acc = [0f32; 8];
        for (block, y) in w_row.chunks_exact(Self::BLOCK_BYTES).zip(a) {
            let d = y.d * f16::from_le_bytes([block[D], block[D + 1]]).to_f32();
            let mut sumi = [0i32; 8];
            // Lane k holds bytes 4k..4k+4 of each 32-value run.
            for e in 0..QK_K {
                let (q, s) = value(block, e);
                sumi[(e % 32) / 4] += block[SCALES + s] as i8 as i32 * (q - 32) * y.qs[e] as i32;
            }
            for (acc, &s) in acc.iter_mut().zip(&sumi) {
                *acc = d.mul_add(s as f32, *acc);
            }
        }
        hsum8(acc)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_tile(w_rows: &[&[u8]], acts: &[&[Q8KBlock]], out: &mut [f32]) {
        // SAFETY: the caller checked AVX2, FMA and F16C.
        unsafe { avx2::dot_tile(w_rows, acts, out) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::{dispatch_tile, hsum8};
    use super::{Format, Q8KBlock, D, Q6K, QH, QL, SCALES};

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_tile(w_rows: &[&[u8]], acts: &[&[Q8KBlock]], out: &mut [f32]) {
        dispatch_tile!(tile, w_rows, acts, out)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn tile<const W: usize, const A: usize>(w: [&[u8]; W], a: [&[Q8KBlock]; A]) -> [[f32; A]; W] {
        let blocks = w[0].len() / Q6K::BLOCK_BYTES;
        assert!(w.iter().all(|r| r.len() == blocks * Q6K::BLOCK_BYTES));
        assert!(a.iter().all(|r| r.len() == blocks));
        let mut acc = [[_mm256_setzero_ps(); A]; W];
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(3);
        let m32s = _mm256_set1_epi8(32);
        for b in 0..blocks {
            // SAFETY: b < blocks, checked against every row above.
            // (Loops, not `array::from_fn`: its closures are not compiled with this function's
            // target features and stay out of line.)
            let mut ys: [&Q8KBlock; A] = [&a[0][b]; A];
            for i in 1..A {
                ys[i] = unsafe { a[i].get_unchecked(b) };
            }
            let mut sumi = [[_mm256_setzero_si256(); A]; W];
            for half in 0..2 {
                // 32 * (sum of each pair of activations), per component: shared by the rows.
                // SAFETY: 32 of the block's 256 bytes.
                let mut q8 = [[_mm256_setzero_si256(); 4]; A];
                let mut q8s = [[_mm256_setzero_si256(); 4]; A];
                for j in 0..A {
                    for c in 0..4 {
                        q8[j][c] = unsafe {
                            _mm256_loadu_si256(
                                ys[j].qs.as_ptr().add(128 * half + 32 * c) as *const __m256i
                            )
                        };
                        q8s[j][c] = _mm256_maddubs_epi16(m32s, q8[j][c]);
                    }
                }
                for k in 0..W {
                    let p = w[k][b * Q6K::BLOCK_BYTES..].as_ptr();
                    // SAFETY: ql is 128 bytes, qh 64, scales 16: offsets stay inside the block.
                    let (q4bits1, q4bits2, q4bits_h, sc) = unsafe {
                        (
                            _mm256_loadu_si256(p.add(QL + 64 * half) as *const __m256i),
                            _mm256_loadu_si256(p.add(QL + 64 * half + 32) as *const __m256i),
                            _mm256_loadu_si256(p.add(QH + 32 * half) as *const __m256i),
                            _mm_loadl_epi64(p.add(SCALES + 8 * half) as *const __m128i),
                        )
                    };
                    let h0 = _mm256_slli_epi16(_mm256_and_si256(q4bits_h, m2), 4);
                    let h1 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 2), m2), 4);
                    let h2 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 4), m2), 4);
                    let h3 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 6), m2), 4);
                    let q = [
                        _mm256_or_si256(_mm256_and_si256(q4bits1, m4), h0),
                        _mm256_or_si256(_mm256_and_si256(q4bits2, m4), h1),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m4), h2),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m4), h3),
                    ];
                    // Scale 2c for the first 16 bytes of component c, 2c + 1 for the rest (i16).
                    let mut scales = [_mm256_setzero_si256(); 4];
                    for (c, scale) in scales.iter_mut().enumerate() {
                        let pick = 0x0101_0101_0101_0101 * (2 * c as i64);
                        let pair = _mm_shuffle_epi8(
                            sc,
                            _mm_set_epi64x(pick + 0x0101_0101_0101_0101, pick),
                        );
                        *scale = _mm256_cvtepi8_epi16(pair);
                    }
                    for j in 0..A {
                        let mut s = _mm256_setzero_si256();
                        for c in 0..4 {
                            let p16 =
                                _mm256_sub_epi16(_mm256_maddubs_epi16(q[c], q8[j][c]), q8s[j][c]);
                            s = _mm256_add_epi32(s, _mm256_madd_epi16(scales[c], p16));
                        }
                        sumi[k][j] = _mm256_add_epi32(sumi[k][j], s);
                    }
                }
            }
            for k in 0..W {
                // SAFETY: b < blocks.
                let block = unsafe { w[k].get_unchecked(b * Q6K::BLOCK_BYTES..) };
                // SAFETY: the f16 `d` is the block's last two bytes.
                let xd = unsafe {
                    let bits = (block.as_ptr().add(D) as *const u16).read_unaligned();
                    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
                };
                for j in 0..A {
                    let d = _mm256_set1_ps(ys[j].d * xd);
                    acc[k][j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[k][j]), acc[k][j]);
                }
            }
        }
        let mut out = [[0f32; A]; W];
        for k in 0..W {
            for j in 0..A {
                let mut lanes = [0f32; 8];
                // SAFETY: 8 f32 fit `lanes`.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[k][j]) };
                out[k][j] = hsum8(lanes);
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::testing;
    use super::*;
    use crate::test_support::random;

    /// Random Q6_K bytes: any nibbles, high bits and scales, f16 `d` in a plausible range.
    pub(crate) fn random_q6_k(rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let vals = random(rows * cols / QK_K * 209, seed);
        let mut out = Vec::new();
        for chunk in vals.chunks_exact(209) {
            for v in &chunk[1..] {
                out.push(((v + 0.5) * 255.99) as u8);
            }
            out.extend_from_slice(&f16::from_f32(chunk[0].abs() * 0.001 + 1e-5).to_le_bytes());
        }
        out
    }

    #[test]
    fn passes_the_format_checks() {
        testing::format_checks::<Q6K>(
            candle_core::quantized::GgmlDType::Q6K,
            random_q6_k,
            (21, 512),
            (19, 768),
            (3, 512),
        );
    }

    #[test]
    fn element_layout_is_dequantize_row_q6_k_s() {
        // ggml's reference: for each half, l in 0..32: y[l] = ql[l] low | qh[l] bits 0-1,
        // y[l+32] = ql[l+32] low | bits 2-3, y[l+64] = ql[l] high | bits 4-5,
        // y[l+96] = ql[l+32] high | bits 6-7; scale index is l/16 + 0, 2, 4, 6.
        let mut block = vec![0u8; 210];
        block[QL + 64 + 5] = 0x9A; // second half, l = 5
        block[QL + 64 + 32 + 5] = 0x3C;
        block[QH + 32 + 5] = 0b11_10_01_00;
        assert_eq!(value(&block, 128 + 5), (0x0A, 8));
        assert_eq!(value(&block, 128 + 32 + 5), (0x0C | (1 << 4), 10));
        assert_eq!(value(&block, 128 + 64 + 5), (0x09 | (2 << 4), 12));
        assert_eq!(value(&block, 128 + 96 + 5), (0x03 | (3 << 4), 14));
        assert_eq!(value(&block, 20).1, 1);
    }
}
