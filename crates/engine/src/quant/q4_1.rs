//! Q4_1 weights times activations rounded to Q8_1.
//!
//! llama.cpp rounds each activation block of 32 to Q8_1 (`quantize_row_q8_1`: scale
//! `d = max|x| / 127` stored as f16, values `round(x * 127 / max|x|)` to nearest-even, and
//! `s = d * sum(q)` as f16); we round them the same way. Per weight row and block, the sum of
//! the 32 integer products `sumi` is exact; then, block after block, one f32 accumulator takes
//! `acc = fma(d_w * d_x, sumi, acc)` and `acc = fma(m_w, s_x, acc)` (the block's scaled sum
//! and its minimum term, as llama.cpp's reference code adds them per block, in fused steps).
//! llama.cpp's AVX2 code instead scales eight partial sums of four products each and adds the
//! lanes at the end; the results differ by float rounding only, and one scaled sum per block
//! is what makes the interleaved kernels ([`super::q4_1_x8`]) cheap for several rows.

use half::f16;

use super::{round32, Format};

/// GGML Q4_1: blocks of 32 weights, f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles.
#[derive(Debug, Clone, Copy)]
pub struct Q4_1;

/// One activation block rounded to 8 bits: `d` and `s` already rounded through f16.
#[derive(Debug, Clone, Copy)]
pub struct Q8_1Block {
    pub(crate) d: f32,
    pub(crate) s: f32,
    pub(crate) qs: [i8; 32],
}

fn scales(block: &[u8]) -> (f32, f32) {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
    (d, m)
}

impl Format for Q4_1 {
    const NAME: &'static str = "Q4_1";
    const BLOCK: usize = 32;
    const BLOCK_BYTES: usize = 20;
    type Act = Q8_1Block;

    /// llama.cpp's `quantize_row_q8_1` (x86 path).
    fn quantize(x: &[f32]) -> Vec<Q8_1Block> {
        round32(x)
            .map(|r| {
                let d = r.amax / 127.0;
                Q8_1Block {
                    d: f16::from_f32(d).to_f32(),
                    s: f16::from_f32(d * r.sum as f32).to_f32(),
                    qs: r.qs,
                }
            })
            .collect()
    }

    fn dequantize_block(block: &[u8], out: &mut [f32]) {
        let (d, m) = scales(block);
        for (i, q) in block[4..].iter().enumerate() {
            out[i] = d * (q & 0x0F) as f32 + m;
            out[i + 16] = d * (q >> 4) as f32 + m;
        }
    }

    fn dot(w_row: &[u8], a: &[Q8_1Block]) -> f32 {
        let mut acc = 0f32;
        for (block, y) in w_row.chunks_exact(Self::BLOCK_BYTES).zip(a) {
            let (d, m) = scales(block);
            let mut sumi = 0i32;
            for (i, q) in block[4..].iter().enumerate() {
                sumi += (q & 0x0F) as i32 * y.qs[i] as i32 + (q >> 4) as i32 * y.qs[i + 16] as i32;
            }
            acc = (d * y.d).mul_add(sumi as f32, acc);
            acc = m.mul_add(y.s, acc);
        }
        acc
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_tile(w_rows: &[&[u8]], acts: &[&[Q8_1Block]], out: &mut [f32]) {
        // SAFETY: the caller checked AVX2, FMA and F16C.
        unsafe { avx2::dot_tile(w_rows, acts, out) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::dispatch_tile;
    use super::{Format, Q8_1Block, Q4_1};

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_tile(w_rows: &[&[u8]], acts: &[&[Q8_1Block]], out: &mut [f32]) {
        dispatch_tile!(tile, w_rows, acts, out)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn tile<const W: usize, const A: usize>(w: [&[u8]; W], a: [&[Q8_1Block]; A]) -> [[f32; A]; W] {
        let blocks = w[0].len() / Q4_1::BLOCK_BYTES;
        assert!(w.iter().all(|r| r.len() == blocks * Q4_1::BLOCK_BYTES));
        assert!(a.iter().all(|r| r.len() == blocks));
        let mut acc = [[0f32; A]; W];
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for b in 0..blocks {
            // SAFETY: b < blocks, checked against every row above.
            // (Loops, not `array::from_fn`: its closures are not compiled with this function's
            // target features and stay out of line.)
            let mut ys: [&Q8_1Block; A] = [&a[0][b]; A];
            for i in 1..A {
                ys[i] = unsafe { a[i].get_unchecked(b) };
            }
            // SAFETY: qs holds 32 bytes.
            let mut qy = [_mm256_setzero_si256(); A];
            for i in 0..A {
                qy[i] = unsafe { _mm256_loadu_si256(ys[i].qs.as_ptr() as *const __m256i) };
            }
            for k in 0..W {
                // SAFETY: a block is 20 bytes: f16 d, f16 m, 16 bytes of nibbles; b < blocks.
                let (d0, m, qx) = unsafe {
                    let block = w[k].as_ptr().add(b * Q4_1::BLOCK_BYTES);
                    let dm =
                        _mm_cvtph_ps(_mm_cvtsi32_si128((block as *const i32).read_unaligned()));
                    let raw = _mm_loadu_si128(block.add(4) as *const __m128i);
                    let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
                    (
                        _mm_cvtss_f32(dm),
                        _mm_cvtss_f32(_mm_movehdup_ps(dm)),
                        _mm256_and_si256(both, low),
                    )
                };
                for j in 0..A {
                    let pairs = _mm256_maddubs_epi16(qx, qy[j]); // u8 * i8: no overflow
                    let sumi = hsum_i32(_mm256_madd_epi16(pairs, ones));
                    acc[k][j] = (d0 * ys[j].d).mul_add(sumi as f32, acc[k][j]);
                    acc[k][j] = m.mul_add(ys[j].s, acc[k][j]);
                }
            }
        }
        acc
    }

    /// The sum of the eight lanes (exact: integers).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::testing;
    use super::*;
    use crate::test_support::random;

    /// Random Q4_1 bytes: f16 scales in a plausible range, any nibbles.
    pub(crate) fn random_q4_1(rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let vals = random(rows * cols / 32 * 18, seed);
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
    fn passes_the_format_checks() {
        testing::format_checks::<Q4_1>(
            candle_core::quantized::GgmlDType::Q4_1,
            random_q4_1,
            (37, 96),
            (19, 128),
            (3, 64),
        );
    }

    #[test]
    fn q8_1_rounding_is_llama_cpp_s() {
        // max 127 -> d = 1 and the multiplier 127 / max = 1 exactly: ties go to even.
        let mut x = vec![0f32; 32];
        x[..6].copy_from_slice(&[127.0, -127.0, 0.5, 1.5, -2.5, 3.0]);
        let b = Q4_1::quantize(&x)[0];
        assert_eq!(&b.qs[..6], &[127, -127, 0, 2, -2, 3]);
        assert_eq!((b.d, b.s), (1.0, 3.0));
        // d and s are rounded through f16.
        x[0] = 100.0;
        x[1] = -100.0;
        let b = Q4_1::quantize(&x)[0];
        assert_eq!(b.d, f16::from_f32(100.0 / 127.0).to_f32());
        let zero = Q4_1::quantize(&[0f32; 32])[0];
        assert_eq!((zero.d, zero.s, zero.qs), (0.0, 0.0, [0; 32]));
    }
}
