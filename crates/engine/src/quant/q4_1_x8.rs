//! Q4_1 in tiles of eight rows ([`super::interleaved`]).
//!
//! A tile (160 bytes, as eight plain blocks): the eight f16 scales `d`, the eight f16 minimums
//! `m`, then the nibble bytes in runs of four per row, `[group 4][row 8][4]`: byte `i` of a
//! row holds weight `i` in its low nibble and weight `i + 16` in its high one, as in the plain
//! block, so a 32-byte load holds four low and four high weights of each of the eight rows.
//!
//! Arithmetic: exactly that of the plain layout ([`super::q4_1`]), so a row's product is the
//! same bits in either layout: per row and block, the exact integer sum `sumi` of the 32
//! products, then `acc = fma(d_w * d_x, sumi, acc)` and `acc = fma(m_w, s_x, acc)`. Each 32-bit
//! lane holds one row; a block's integer sum is eight `vpdpbusd` (VNNI; `maddubs` + `madd`
//! on AVX2) of four nibbles and four activation bytes each, added as integers (any order
//! gives the same sum), then one conversion and two fused multiply-adds per activation row.

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::interleaved::Isa;
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
        let mut acc = 0f32;
        for (tile, y) in tiles.chunks_exact(TILE_BYTES).zip(a) {
            let half = |at: usize| f16::from_le_bytes([tile[at], tile[at + 1]]).to_f32();
            let (dw, mw) = (half(D + 2 * lane), half(M + 2 * lane));
            let mut sumi = 0i32;
            for g in 0..4 {
                for j in 0..4 {
                    let q = tile[QS + (g * ROWS + lane) * 4 + j];
                    sumi += (q & 0x0F) as i32 * y.qs[4 * g + j] as i32
                        + (q >> 4) as i32 * y.qs[16 + 4 * g + j] as i32;
                }
            }
            acc = (dw * y.d).mul_add(sumi as f32, acc);
            acc = mw.mul_add(y.s, acc);
        }
        acc
    }

    const AVX512_ACTS: usize = 4;
    const PAIRS: bool = true;
    // One activation row only: `examples/kernels` measured passes of 2 to 16 rows slower with
    // four groups side by side (4 or 8 rows per call: the sums spill) than in pairs.
    const STREAM_ROWS: usize = 1;

    #[cfg(target_arch = "x86_64")]
    unsafe fn rows_pairs<const A: usize, const P: usize>(
        groups: [(&[u8], &[u8]); P],
        acts: [&[Q8_1Block]; A],
    ) -> [[[[f32; ROWS]; A]; 2]; P] {
        // SAFETY: the caller checked AVX-512F/VL/BW/VNNI (and AVX2, FMA, F16C).
        unsafe { x86_pair::pairs_avx512::<A, P>(groups, acts) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn rows<const A: usize>(tiles: &[u8], acts: [&[Q8_1Block]; A]) -> [[f32; ROWS]; A] {
        if Isa::Avx512Vnni.available() {
            // SAFETY: the CPU has AVX-512 VNNI and VL; the caller checked AVX2, FMA and F16C.
            unsafe { x86::tile_avx512::<A>(tiles, acts) }
        } else if Isa::AvxVnni.available() {
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
    /// `$run(sums, nibbles, x)`: `sums` plus the 8 i32 sums of four products of unsigned
    /// nibbles and signed activation bytes.
    macro_rules! tile_body {
        ($tiles:expr, $a:expr, $A:expr, $run:expr) => {{
            let (tiles, a) = ($tiles, $a);
            let blocks = tiles.len() / TILE_BYTES;
            assert!(a.iter().all(|r| r.len() == blocks));
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); $A];
            for b in 0..blocks {
                // SAFETY: b < blocks; every offset below stays inside the tile, and an
                // activation block holds 32 values.
                unsafe {
                    let t = tiles.as_ptr().add(b * TILE_BYTES);
                    crate::prefetch::ahead(t, TILE_BYTES);
                    // Two integer sums per activation row (low and high nibbles), added at the
                    // end: half the dependent `vpdpbusd` chain.
                    let mut lo = [_mm256_setzero_si256(); $A];
                    let mut hi = [_mm256_setzero_si256(); $A];
                    for g in 0..4 {
                        let w = _mm256_loadu_si256(t.add(QS + g * 32) as *const __m256i);
                        let wl = _mm256_and_si256(w, m4);
                        let wh = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                        for j in 0..$A {
                            let p = a[j].get_unchecked(b).qs.as_ptr().add(4 * g);
                            let xl = _mm256_set1_epi32((p as *const i32).read_unaligned());
                            let xh = _mm256_set1_epi32((p.add(16) as *const i32).read_unaligned());
                            lo[j] = $run(lo[j], wl, xl);
                            hi[j] = $run(hi[j], wh, xh);
                        }
                    }
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(D) as *const __m128i));
                    let mw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(M) as *const __m128i));
                    for j in 0..$A {
                        let y = a[j].get_unchecked(b);
                        let d = _mm256_mul_ps(dw, _mm256_set1_ps(y.d));
                        let sumi = _mm256_cvtepi32_ps(_mm256_add_epi32(lo[j], hi[j]));
                        acc[j] = _mm256_fmadd_ps(d, sumi, acc[j]);
                        acc[j] = _mm256_fmadd_ps(mw, _mm256_set1_ps(y.s), acc[j]);
                    }
                }
            }
            super::super::interleaved::lanes(acc)
        }};
    }

    /// AVX2: `maddubs` (pairs of at most 2 * 15 * 128 in magnitude: exact), `madd` with ones.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn tile_avx2<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_1Block]; A],
    ) -> [[f32; ROWS]; A] {
        let ones = _mm256_set1_epi16(1);
        tile_body!(tiles, a, A, |s, w, x| _mm256_add_epi32(
            s,
            _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones)
        ))
    }

    /// AVX-512 VNNI on 256-bit vectors: one `vpdpbusd`, and 32 vector registers (eight
    /// accumulators per activation row do not fit in AVX2's 16 for two rows).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub(super) fn tile_avx512<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_1Block]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(tiles, a, A, |s, w, x| _mm256_dpbusd_epi32(s, w, x))
    }

    /// AVX-VNNI: one `vpdpbusd`.
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub(super) fn tile_vnni<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_1Block]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(tiles, a, A, |s, w, x| _mm256_dpbusd_avx_epi32(s, w, x))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_pair {
    use std::arch::x86_64::*;

    use super::super::interleaved::pair::{block, blocks, both16, both32, split};
    use super::{Q8_1Block, D, M, QS, ROWS, TILE_BYTES};

    /// Two groups of tiles on 512-bit vectors: lanes 0-7 hold `first`'s rows, 8-15 `second`'s,
    /// each lane doing what a lane of `tile_avx512` does (the same float operations in the same
    /// order), so each row's result is bit for bit the same.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn pairs_avx512<const A: usize, const P: usize>(
        groups: [(&[u8], &[u8]); P],
        a: [&[Q8_1Block]; A],
    ) -> [[[[f32; ROWS]; A]; 2]; P] {
        let blocks = blocks(&groups, TILE_BYTES, a.iter().map(|r| r.len()));
        let m4 = _mm512_set1_epi8(0x0F);
        let mut accs = [[_mm512_setzero_ps(); A]; P];
        for b in 0..blocks {
            for ((first, second), acc) in groups.iter().zip(accs.iter_mut()) {
                // SAFETY: b < blocks; every offset below stays inside the two tiles, and an
                // activation block holds 32 values.
                unsafe {
                    let (s, u) = block(first, second, b, TILE_BYTES);
                    let mut lo = [_mm512_setzero_si512(); A];
                    let mut hi = [_mm512_setzero_si512(); A];
                    for g in 0..4 {
                        let w = both32(s, u, QS + g * 32);
                        let wl = _mm512_and_si512(w, m4);
                        let wh = _mm512_and_si512(_mm512_srli_epi16::<4>(w), m4);
                        for j in 0..A {
                            let p = a[j].get_unchecked(b).qs.as_ptr().add(4 * g);
                            let xl = _mm512_set1_epi32((p as *const i32).read_unaligned());
                            let xh = _mm512_set1_epi32((p.add(16) as *const i32).read_unaligned());
                            lo[j] = _mm512_dpbusd_epi32(lo[j], wl, xl);
                            hi[j] = _mm512_dpbusd_epi32(hi[j], wh, xh);
                        }
                    }
                    let dw = _mm512_cvtph_ps(both16(s, u, D));
                    let mw = _mm512_cvtph_ps(both16(s, u, M));
                    for j in 0..A {
                        let y = a[j].get_unchecked(b);
                        let d = _mm512_mul_ps(dw, _mm512_set1_ps(y.d));
                        let sumi = _mm512_cvtepi32_ps(_mm512_add_epi32(lo[j], hi[j]));
                        acc[j] = _mm512_fmadd_ps(d, sumi, acc[j]);
                        acc[j] = _mm512_fmadd_ps(mw, _mm512_set1_ps(y.s), acc[j]);
                    }
                }
            }
        }
        std::array::from_fn(|p| split(accs[p]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::interleaved::{testing, Interleaved};
    use super::super::q4_1::tests::random_q4_1;
    use super::super::{BlockMatrix, PackedMatrix};
    use super::*;
    use crate::test_support::random;

    #[test]
    fn products_of_two_groups_at_once_match_the_plain_layout() {
        // 8 groups: where the CPU has AVX-512BW and VNNI, matmul_t takes them four at a time, a
        // quarter of the matrix apart, for one activation row, and in pairs for more.
        testing::products_match_the_plain_layout::<Q4_1Tiles>(random_q4_1(64, 96, 11), 64, 96);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_two_group_kernel_equals_the_portable_code_for_each_group() {
        testing::two_group_kernel_equals_one_group::<Q4_1Tiles>(&random_q4_1(16, 160, 5), 160);
    }

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
    fn products_are_the_plain_layout_s_to_the_bit() {
        let (rows, cols, n) = (16, 288, 5);
        let data = random_q4_1(rows, cols, 11);
        let tiled = Interleaved::<Q4_1Tiles>::new(&data, rows, cols).unwrap();
        let plain = BlockMatrix::<Q4_1>::new(data, rows, cols).unwrap();
        let x = random(n * cols, 12);
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(tiled.matmul_t(&x, n)), bits(plain.matmul_t(&x, n)));
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
            &[
                (Isa::Avx2, x86::tile_avx2::<2>),
                (Isa::AvxVnni, x86::tile_vnni::<2>),
                (Isa::Avx512Vnni, x86::tile_avx512::<2>),
            ],
        );
    }
}
