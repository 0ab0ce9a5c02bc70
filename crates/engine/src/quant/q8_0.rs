//! Q8_0 weights times activations rounded to Q8_0.
//!
//! llama.cpp rounds each activation block of 32 to Q8_0 (`quantize_row_q8_0`, x86 path: scale
//! `d = max|x| / 127` stored as f16, values `round(x * 127 / max|x|)` to nearest-even), then
//! for each weight row sums `d_w * d_x * sum(q_w * q_x)` with the integer sums in eight lanes of
//! four products (`mul_sum_i8_pairs_float`), one fused multiply-add per block and lane, and
//! the lanes added pairwise ([`hsum8`]). One difference: the even and the odd blocks go into
//! two sets of lanes, added lane by lane at the end (llama.cpp uses one set). A Q8_0 block is
//! so little work that one chain of dependent multiply-adds per product is what limits a
//! single-row product; two chains halve that.

use half::f16;

use super::{hsum8, round32, Format};

/// GGML Q8_0: blocks of 32 weights, f16 scale `d`, 32 signed bytes.
#[derive(Debug, Clone, Copy)]
pub struct Q8_0;

/// One activation block rounded to 8 bits (`d` already rounded through f16).
#[derive(Debug, Clone, Copy)]
pub struct Q8_0Block {
    pub(crate) d: f32,
    pub(crate) qs: [i8; 32],
}

fn scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

impl Format for Q8_0 {
    const NAME: &'static str = "Q8_0";
    const BLOCK: usize = 32;
    const BLOCK_BYTES: usize = 34;
    type Act = Q8_0Block;

    fn quantize(x: &[f32]) -> Vec<Q8_0Block> {
        round32(x)
            .map(|r| Q8_0Block {
                d: f16::from_f32(r.amax / 127.0).to_f32(),
                qs: r.qs,
            })
            .collect()
    }

    fn dequantize_block(block: &[u8], out: &mut [f32]) {
        let d = scale(block);
        for (o, &q) in out.iter_mut().zip(&block[2..]) {
            *o = d * q as i8 as f32;
        }
    }

    fn dot(w_row: &[u8], a: &[Q8_0Block]) -> f32 {
        let mut chains = [[0f32; 8]; 2];
        for (b, (block, y)) in w_row.chunks_exact(Self::BLOCK_BYTES).zip(a).enumerate() {
            let d = scale(block) * y.d;
            let qs = &block[2..];
            for (lane, acc) in chains[b % 2].iter_mut().enumerate() {
                let isum: i32 = (4 * lane..4 * lane + 4)
                    .map(|e| qs[e] as i8 as i32 * y.qs[e] as i32)
                    .sum();
                *acc = d.mul_add(isum as f32, *acc);
            }
        }
        hsum8(std::array::from_fn(|k| chains[0][k] + chains[1][k]))
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_tile(w_rows: &[&[u8]], acts: &[&[Q8_0Block]], out: &mut [f32]) {
        // SAFETY: the caller checked AVX2, FMA and F16C.
        unsafe { avx2::dot_tile(w_rows, acts, out) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::{dispatch_tile, hsum8};
    use super::{Format, Q8_0Block, Q8_0};

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_tile(w_rows: &[&[u8]], acts: &[&[Q8_0Block]], out: &mut [f32]) {
        dispatch_tile!(tile, w_rows, acts, out)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn tile<const W: usize, const A: usize>(w: [&[u8]; W], a: [&[Q8_0Block]; A]) -> [[f32; A]; W] {
        let blocks = w[0].len() / Q8_0::BLOCK_BYTES;
        assert!(w.iter().all(|r| r.len() == blocks * Q8_0::BLOCK_BYTES));
        assert!(a.iter().all(|r| r.len() == blocks));
        let mut acc = [[[_mm256_setzero_ps(); 2]; A]; W];
        let ones = _mm256_set1_epi16(1);
        // Block `$b` into accumulator chain `$chain`.
        macro_rules! block {
            ($b:expr, $chain:literal) => {{
                // SAFETY: b < blocks, checked against every row above.
                // (Loops, not `array::from_fn`: its closures are not compiled with this function's
                // target features and stay out of line.)
                let mut ys: [&Q8_0Block; A] = [&a[0][$b]; A];
                for i in 1..A {
                    ys[i] = unsafe { a[i].get_unchecked($b) };
                }
                // SAFETY: qs holds 32 bytes.
                let mut qy = [_mm256_setzero_si256(); A];
                for i in 0..A {
                    qy[i] = unsafe { _mm256_loadu_si256(ys[i].qs.as_ptr() as *const __m256i) };
                }
                for k in 0..W {
                    // SAFETY: a block is 34 bytes: f16 d, 32 signed bytes; b < blocks.
                    let (d0, qx) = unsafe {
                        let block = w[k].as_ptr().add($b * Q8_0::BLOCK_BYTES);
                        let d = _mm_cvtph_ps(_mm_cvtsi32_si128(
                            (block as *const u16).read_unaligned() as i32,
                        ));
                        (
                            _mm_cvtss_f32(d),
                            _mm256_loadu_si256(block.add(2) as *const __m256i),
                        )
                    };
                    // |q_w| as unsigned bytes; the activations take the weights' signs instead.
                    let ax = _mm256_sign_epi8(qx, qx);
                    for j in 0..A {
                        let d = _mm256_set1_ps(d0 * ys[j].d);
                        let sy = _mm256_sign_epi8(qy[j], qx);
                        let pairs = _mm256_maddubs_epi16(ax, sy); // |products| <= 128 * 127: exact
                        let quads = _mm256_madd_epi16(pairs, ones);
                        acc[k][j][$chain] =
                            _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(quads), acc[k][j][$chain]);
                    }
                }
            }};
        }
        let mut b = 0;
        while b + 1 < blocks {
            block!(b, 0);
            block!(b + 1, 1);
            b += 2;
        }
        if b < blocks {
            block!(b, 0);
        }
        let mut out = [[0f32; A]; W];
        for k in 0..W {
            for j in 0..A {
                let mut lanes = [0f32; 8];
                // SAFETY: 8 f32 fit `lanes`.
                unsafe {
                    _mm256_storeu_ps(
                        lanes.as_mut_ptr(),
                        _mm256_add_ps(acc[k][j][0], acc[k][j][1]),
                    )
                };
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

    /// Random Q8_0 bytes: f16 scales in a plausible range, any bytes (-128 included).
    pub(crate) fn random_q8_0(rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let vals = random(rows * cols / 32 * 33, seed);
        let mut out = Vec::new();
        for chunk in vals.chunks_exact(33) {
            out.extend_from_slice(&f16::from_f32(chunk[0].abs() * 0.01 + 1e-4).to_le_bytes());
            for v in &chunk[1..] {
                out.push(((v + 0.5) * 255.99) as u8);
            }
        }
        out
    }

    #[test]
    fn passes_the_format_checks() {
        testing::format_checks::<Q8_0>(
            candle_core::quantized::GgmlDType::Q8_0,
            random_q8_0,
            (37, 96),
            (19, 160),
            (3, 64),
        );
    }

    #[test]
    fn q8_0_rounding_is_llama_cpp_s() {
        let mut x = vec![0f32; 32];
        x[..6].copy_from_slice(&[127.0, -127.0, 0.5, 1.5, -2.5, 3.0]);
        let b = Q8_0::quantize(&x)[0];
        assert_eq!(&b.qs[..6], &[127, -127, 0, 2, -2, 3]);
        assert_eq!(b.d, 1.0);
        let zero = Q8_0::quantize(&[0f32; 32])[0];
        assert_eq!((zero.d, zero.qs), (0.0, [0; 32]));
    }
}
