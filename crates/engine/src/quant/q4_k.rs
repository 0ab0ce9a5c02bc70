//! Q4_K weights times activations rounded to Q8_K, as llama.cpp's AVX2
//! `ggml_vec_dot_q4_K_q8_K` computes it.
//!
//! A block of 256 weights has an f16 scale `d`, an f16 `dmin`, eight 6-bit sub-block scales
//! and mins packed in 12 bytes, and 128 bytes of nibbles (per 64 values: the low nibbles of 32
//! bytes are the first sub-block of 32, the high nibbles the second). Per block, the integer
//! sums `scale_j * sum(q4 * q8)` of all eight sub-blocks go into eight lanes of four products,
//! scaled by `d_x * d_w` with one fused multiply-add per lane; the mins are taken against the
//! activation sums (`bsums`) in four lanes scaled by `-d_x * dmin`.

use half::f16;

use super::q8_k::{self, Q8KBlock, QK_K};
use super::{hsum8, Format};

/// GGML Q4_K (super-blocks of 256).
#[derive(Debug, Clone, Copy)]
pub struct Q4K;

/// `(scales, mins)` of the eight sub-blocks (llama.cpp's `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scales_mins(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0F) | ((q[j] >> 6) << 4);
        m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, m)
}

/// The same unpacking on three little-endian words, as llama.cpp's AVX2 code does it:
/// `[scales 0-3, scales 4-7, mins 0-3, mins 4-7]`, one byte each.
#[inline(always)]
fn unpack_scales_mins(q: [u32; 3]) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let [q0, q1, q2] = q.map(u32::from_le);
    [
        q0 & KMASK1,
        (q2 & KMASK2) | (((q0 >> 6) & KMASK3) << 4),
        q1 & KMASK1,
        ((q2 >> 4) & KMASK2) | (((q1 >> 6) & KMASK3) << 4),
    ]
}

fn half(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

impl Format for Q4K {
    const NAME: &'static str = "Q4_K";
    const BLOCK: usize = QK_K;
    const BLOCK_BYTES: usize = 144;
    type Act = Q8KBlock;

    fn quantize(x: &[f32]) -> Vec<Q8KBlock> {
        q8_k::quantize(x)
    }

    fn dequantize_block(block: &[u8], out: &mut [f32]) {
        let (d, dmin) = (half(block, 0), half(block, 2));
        let (sc, m) = scales_mins(&block[4..16]);
        let qs = &block[16..];
        for j in 0..4 {
            let (d1, m1) = (d * sc[2 * j] as f32, dmin * m[2 * j] as f32);
            let (d2, m2) = (d * sc[2 * j + 1] as f32, dmin * m[2 * j + 1] as f32);
            for l in 0..32 {
                let q = qs[32 * j + l];
                out[64 * j + l] = d1 * (q & 0x0F) as f32 - m1;
                out[64 * j + 32 + l] = d2 * (q >> 4) as f32 - m2;
            }
        }
    }

    fn dot(w_row: &[u8], a: &[Q8KBlock]) -> f32 {
        let mut acc = [0f32; 8];
        let mut acc_m = [0f32; 4];
        for (block, y) in w_row.chunks_exact(Self::BLOCK_BYTES).zip(a) {
            let d = y.d * half(block, 0);
            let dmin = -y.d * half(block, 2);
            let (sc, m) = scales_mins(&block[4..16]);
            let sums: [i32; 8] =
                std::array::from_fn(|i| y.bsums[2 * i].wrapping_add(y.bsums[2 * i + 1]) as i32);
            for (i, acc) in acc_m.iter_mut().enumerate() {
                let prod = m[2 * i] as i32 * sums[2 * i] + m[2 * i + 1] as i32 * sums[2 * i + 1];
                *acc = dmin.mul_add(prod as f32, *acc);
            }
            let qs = &block[16..];
            let mut sumi = [0i32; 8];
            for j in 0..4 {
                let (sl, sh) = (sc[2 * j] as i32, sc[2 * j + 1] as i32);
                for (k, sumi) in sumi.iter_mut().enumerate() {
                    for b in 4 * k..4 * k + 4 {
                        let q = qs[32 * j + b];
                        *sumi += sl * (q & 0x0F) as i32 * y.qs[64 * j + b] as i32
                            + sh * (q >> 4) as i32 * y.qs[64 * j + 32 + b] as i32;
                    }
                }
            }
            for (acc, &s) in acc.iter_mut().zip(&sumi) {
                *acc = d.mul_add(s as f32, *acc);
            }
        }
        hsum8(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
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
    use super::{unpack_scales_mins, Format, Q8KBlock, Q4K};

    /// A `pshufb` mask copying 16-bit lane `i` of each 128-bit half to all its lanes.
    #[inline(always)]
    fn broadcast_i16(i: usize) -> __m256i {
        let pair = (2 * i as i8) as u8 as i16 | ((2 * i as i8 + 1) as u8 as i16) << 8;
        // SAFETY: AVX is part of the target features of every caller.
        unsafe { _mm256_set1_epi16(pair) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_tile(w_rows: &[&[u8]], acts: &[&[Q8KBlock]], out: &mut [f32]) {
        dispatch_tile!(tile, w_rows, acts, out)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn tile<const W: usize, const A: usize>(w: [&[u8]; W], a: [&[Q8KBlock]; A]) -> [[f32; A]; W] {
        let blocks = w[0].len() / Q4K::BLOCK_BYTES;
        assert!(w.iter().all(|r| r.len() == blocks * Q4K::BLOCK_BYTES));
        assert!(a.iter().all(|r| r.len() == blocks));
        let mut acc = [[_mm256_setzero_ps(); A]; W];
        let mut acc_m = [[_mm_setzero_ps(); A]; W];
        let m4 = _mm256_set1_epi8(0x0F);
        for b in 0..blocks {
            // SAFETY: b < blocks, checked against every row above.
            // (Loops, not `array::from_fn`: its closures are not compiled with this function's
            // target features and stay out of line.)
            let mut ys: [&Q8KBlock; A] = [&a[0][b]; A];
            for i in 1..A {
                ys[i] = unsafe { a[i].get_unchecked(b) };
            }
            // Sums of the activations per sub-block of 32 (pairs of the 16-value bsums).
            // SAFETY: bsums holds 16 i16.
            let mut q8s = [_mm_setzero_si128(); A];
            for i in 0..A {
                q8s[i] = unsafe {
                    let p = ys[i].bsums.as_ptr() as *const __m128i;
                    _mm_hadd_epi16(_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)))
                };
            }
            let mut sumi = [[_mm256_setzero_si256(); A]; W];
            for k in 0..W {
                // SAFETY: b < blocks.
                let block = unsafe { w[k].get_unchecked(b * Q4K::BLOCK_BYTES..) };
                // SAFETY: a block starts with f16 d, f16 dmin and 12 bytes of scales.
                let (xd, xdmin, packed) = unsafe {
                    let p = block.as_ptr();
                    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
                    let packed: [u32; 3] = std::ptr::read_unaligned(p.add(4) as *const [u32; 3]);
                    (
                        _mm_cvtss_f32(dm),
                        _mm_cvtss_f32(_mm_movehdup_ps(dm)),
                        packed,
                    )
                };
                let [sc_lo, sc_hi, m_lo, m_hi] = unpack_scales_mins(packed);
                let sc = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, sc_hi as i32, sc_lo as i32));
                let scales = _mm256_set_m128i(sc, sc); // scale i in 16-bit lane i (and i + 8)
                let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, m_hi as i32, m_lo as i32));
                for j in 0..A {
                    let dmin = _mm_set1_ps(-ys[j].d * xdmin);
                    let prod = _mm_madd_epi16(mins, q8s[j]);
                    acc_m[k][j] = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(prod), acc_m[k][j]);
                }
                let qs = block[16..].as_ptr();
                for c in 0..4 {
                    let scale_l = _mm256_shuffle_epi8(scales, broadcast_i16(2 * c));
                    let scale_h = _mm256_shuffle_epi8(scales, broadcast_i16(2 * c + 1));
                    // SAFETY: 32 bytes of nibbles per 64 values, 128 in all.
                    let q4bits = unsafe { _mm256_loadu_si256(qs.add(32 * c) as *const __m256i) };
                    let q4l = _mm256_and_si256(q4bits, m4);
                    let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
                    for j in 0..A {
                        let q8 = ys[j].qs.as_ptr();
                        // SAFETY: 64 of the block's 256 bytes.
                        let (q8l, q8h) = unsafe {
                            (
                                _mm256_loadu_si256(q8.add(64 * c) as *const __m256i),
                                _mm256_loadu_si256(q8.add(64 * c + 32) as *const __m256i),
                            )
                        };
                        let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
                        let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
                        sumi[k][j] = _mm256_add_epi32(sumi[k][j], _mm256_add_epi32(p16l, p16h));
                    }
                }
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
                let am = _mm_add_ps(acc_m[k][j], _mm_movehl_ps(acc_m[k][j], acc_m[k][j]));
                let am = _mm_add_ss(am, _mm_movehdup_ps(am));
                out[k][j] = hsum8(lanes) + _mm_cvtss_f32(am);
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

    /// Random Q4_K bytes: f16 `d` and `dmin` in a plausible range, any scale and nibble bytes.
    pub(crate) fn random_q4_k(rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let vals = random(rows * cols / QK_K * 142, seed);
        let mut out = Vec::new();
        for chunk in vals.chunks_exact(142) {
            out.extend_from_slice(&f16::from_f32(chunk[0].abs() * 0.01 + 1e-4).to_le_bytes());
            out.extend_from_slice(&f16::from_f32(chunk[1].abs() * 0.01).to_le_bytes());
            for v in &chunk[2..] {
                out.push(((v + 0.5) * 255.99) as u8);
            }
        }
        out
    }

    #[test]
    fn passes_the_format_checks() {
        testing::format_checks::<Q4K>(
            candle_core::quantized::GgmlDType::Q4K,
            random_q4_k,
            (21, 512),
            (19, 768),
            (3, 512),
        );
    }

    #[test]
    fn scale_unpacking_is_get_scale_min_k4() {
        // Sub-blocks 0-3: low 6 bits of bytes 0-3 (scales) and 4-7 (mins); 4-7: nibbles of
        // bytes 8-11 with the top two bits of bytes 0-7 above them.
        let q = [
            0xC1, 0x02, 0x03, 0x04, 0x45, 0x06, 0x07, 0x08, 0x9A, 0x0B, 0x0C, 0x0D,
        ];
        let (sc, m) = scales_mins(&q);
        assert_eq!(sc, [1, 2, 3, 4, 0x3A, 0x0B, 0x0C, 0x0D]);
        assert_eq!(m, [5, 6, 7, 8, 0x19, 0x00, 0x00, 0x00]);
        // The word-wise unpacking of the SIMD kernel agrees, on every byte value.
        for seed in 0..64u32 {
            let bytes: Vec<u8> = random(12, seed)
                .iter()
                .map(|v| ((v + 0.5) * 255.99) as u8)
                .collect();
            let words: [u32; 3] = std::array::from_fn(|i| {
                u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap())
            });
            let (sc, m) = scales_mins(&bytes);
            let unpacked = unpack_scales_mins(words.map(u32::to_le));
            let as_bytes: Vec<u8> = unpacked.iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(as_bytes[..8], sc);
            assert_eq!(as_bytes[8..], m);
        }
    }
}
