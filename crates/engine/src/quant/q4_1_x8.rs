//! Q4_1 in tiles of eight rows ([`super::interleaved`]).
//!
//! A tile (160 bytes, as eight plain blocks): the eight f16 scales `d`, the eight f16 minimums
//! `m`, then the nibble bytes in runs of four per row, `[group 4][row 8][4]`: byte `i` of a
//! row holds weight `i` in its low nibble and weight `i + 16` in its high one, as in the plain
//! block, so a 32-byte load holds four low and four high weights of each of the eight rows.
//!
//! Arithmetic, per row and block: `sumi = sum(q_w * q_x)` is an exact integer;
//! `acc = fma(d_w * d_x, sumi, acc)` and `acc_m = fma(m_w, s_x, acc_m)` in f32, block after
//! block, the result `acc + acc_m`. On CPUs with AVX-VNNI one `vpdpbusd` does the four
//! products and their sum (the nibbles are unsigned, as it wants).

use half::f16;

use super::interleaved::{RowTiles, ROWS};
use super::q4_1::{Q8_1Block, Q4_1};

const D: usize = 0; // f16 [8]
const M: usize = 16; // f16 [8]
const QS: usize = 32; // u8 [group 4][row 8][4]
/// Bytes of one tile: one block of 32 weights of each of 8 rows.
pub const TILE_BYTES: usize = 160;

/// Q4_1, eight rows to a tile.
#[derive(Debug, Clone, Copy)]
pub struct Q4_1Tiles;

impl RowTiles for Q4_1Tiles {
    type Plain = Q4_1;
    const TILE_BYTES: usize = TILE_BYTES;

    fn interleave(tile: &mut [u8], r: usize, raw: &[u8]) {
        tile[D + 2 * r..D + 2 * r + 2].copy_from_slice(&raw[0..2]);
        tile[M + 2 * r..M + 2 * r + 2].copy_from_slice(&raw[2..4]);
        for g in 0..4 {
            let to = QS + (g * ROWS + r) * 4;
            tile[to..to + 4].copy_from_slice(&raw[4 + 4 * g..4 + 4 * g + 4]);
        }
    }

    fn plain_block(tile: &[u8], lane: usize, raw: &mut [u8]) {
        raw[0..2].copy_from_slice(&tile[D + 2 * lane..D + 2 * lane + 2]);
        raw[2..4].copy_from_slice(&tile[M + 2 * lane..M + 2 * lane + 2]);
        for g in 0..4 {
            let from = QS + (g * ROWS + lane) * 4;
            raw[4 + 4 * g..4 + 4 * g + 4].copy_from_slice(&tile[from..from + 4]);
        }
    }

    fn dot(tiles: &[u8], lane: usize, a: &[Q8_1Block]) -> f32 {
        let (mut acc, mut acc_m) = (0f32, 0f32);
        for (tile, y) in tiles.chunks_exact(TILE_BYTES).zip(a) {
            let half = |at: usize| f16::from_le_bytes([tile[at], tile[at + 1]]).to_f32();
            let (dw, mw) = (half(D + 2 * lane), half(M + 2 * lane));
            let mut sumi = 0i32;
            for g in 0..4 {
                for j in 0..4 {
                    let q = tile[QS + (g * ROWS + lane) * 4 + j];
                    sumi += (q & 0x0F) as i32 * y.qs[4 * g + j] as i32;
                    sumi += (q >> 4) as i32 * y.qs[16 + 4 * g + j] as i32;
                }
            }
            acc = (dw * y.d).mul_add(sumi as f32, acc);
            acc_m = mw.mul_add(y.s, acc_m);
        }
        acc + acc_m
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn rows<const A: usize>(tiles: &[u8], acts: [&[Q8_1Block]; A]) -> [[f32; ROWS]; A] {
        if std::arch::is_x86_feature_detected!("avxvnni") {
            // SAFETY: the CPU has AVX-VNNI; the caller checked AVX2, FMA and F16C.
            unsafe { x86::tile_vnni::<A>(tiles, acts) }
        } else {
            // SAFETY: the caller checked AVX2, FMA and F16C.
            unsafe { x86::tile_avx2::<A>(tiles, acts) }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Q8_1Block, D, M, QS, ROWS, TILE_BYTES};

    /// The 8 rows of one group of tiles times `A` activation rows (`[activation][row]`).
    /// `$pair(sum, nibbles, x)`: sum += products of the unsigned nibbles and the signed
    /// activation bytes, in any integer lanes; `$quads(sum)`: those lanes as 8 i32 sums.
    macro_rules! tile_body {
        ($tiles:expr, $a:expr, $A:expr, $pair:expr, $quads:expr) => {{
            let (tiles, a) = ($tiles, $a);
            let blocks = tiles.len() / TILE_BYTES;
            assert!(a.iter().all(|r| r.len() == blocks));
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); $A];
            let mut acc_m = [_mm256_setzero_ps(); $A];
            for b in 0..blocks {
                // SAFETY: b < blocks; every offset below stays inside the tile, and an
                // activation block holds 32 values.
                unsafe {
                    let t = tiles.as_ptr().add(b * TILE_BYTES);
                    crate::prefetch::ahead(t, TILE_BYTES);
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(D) as *const __m128i));
                    let mw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(M) as *const __m128i));
                    let mut q8 = [std::ptr::null::<i8>(); $A];
                    for j in 0..$A {
                        q8[j] = a[j].get_unchecked(b).qs.as_ptr();
                    }
                    let mut sum = [[_mm256_setzero_si256(); 2]; $A];
                    for g in 0..4 {
                        let w = _mm256_loadu_si256(t.add(QS + g * 32) as *const __m256i);
                        let wl = _mm256_and_si256(w, m4);
                        let wh = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                        for j in 0..$A {
                            let p = q8[j].add(4 * g);
                            let xl = _mm256_set1_epi32((p as *const i32).read_unaligned());
                            let xh = _mm256_set1_epi32((p.add(16) as *const i32).read_unaligned());
                            sum[j][0] = $pair(sum[j][0], wl, xl);
                            sum[j][1] = $pair(sum[j][1], wh, xh);
                        }
                    }
                    for j in 0..$A {
                        let y = a[j].get_unchecked(b);
                        let s = _mm256_add_epi32($quads(sum[j][0]), $quads(sum[j][1]));
                        let d = _mm256_mul_ps(dw, _mm256_set1_ps(y.d));
                        acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[j]);
                        acc_m[j] = _mm256_fmadd_ps(mw, _mm256_set1_ps(y.s), acc_m[j]);
                    }
                }
            }
            let mut out = [[0f32; ROWS]; $A];
            for j in 0..$A {
                // SAFETY: 8 f32 fit a row of `out`.
                unsafe { _mm256_storeu_ps(out[j].as_mut_ptr(), _mm256_add_ps(acc[j], acc_m[j])) };
            }
            out
        }};
    }

    /// AVX2: `maddubs` pairs summed in i16 over the block (at most 4 * 2 * 15 * 128 = 15360
    /// in magnitude: exact), then `madd` with ones.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn tile_avx2<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_1Block]; A],
    ) -> [[f32; ROWS]; A] {
        let ones = _mm256_set1_epi16(1);
        tile_body!(
            tiles,
            a,
            A,
            |s, w, x| _mm256_add_epi16(s, _mm256_maddubs_epi16(w, x)),
            |s| _mm256_madd_epi16(s, ones)
        )
    }

    /// AVX-VNNI: one `vpdpbusd` into i32 lanes.
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub(super) fn tile_vnni<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_1Block]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(
            tiles,
            a,
            A,
            |s, w, x| _mm256_dpbusd_avx_epi32(s, w, x),
            |s| s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::interleaved::testing;
    use super::super::q4_1::tests::random_q4_1;
    use super::*;

    #[test]
    fn rows_rebuild_the_plain_blocks() {
        testing::rows_rebuild_the_plain_blocks::<Q4_1Tiles>(
            &random_q4_1(16, 96, 7),
            16,
            96,
            |a, b| a == b,
        );
    }

    #[test]
    fn products_match_the_plain_layout_and_simd_equals_portable() {
        testing::products_match_the_plain_layout::<Q4_1Tiles>(random_q4_1(24, 160, 9), 24, 160);
    }

    #[test]
    fn shapes_it_cannot_tile_are_errors() {
        testing::shapes_it_cannot_tile_are_errors::<Q4_1Tiles>(&random_q4_1(12, 256, 1));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_vnni_kernels_equal_the_portable_code() {
        testing::every_kernel_equals_the_portable_code::<Q4_1Tiles>(
            &random_q4_1(8, 320, 3),
            320,
            x86::tile_avx2::<2>,
            x86::tile_vnni::<2>,
        );
    }
}
