//! Q8_0 in tiles of eight rows ([`super::interleaved`]).
//!
//! A tile (272 bytes against 272 for eight plain blocks): the eight f16 scales `d`, then the
//! signed bytes in runs of four per row, `[group 8][row 8][4]`, so a 32-byte load holds the
//! same four positions of the eight rows.
//!
//! Arithmetic, per row and block: `sumi = sum(q_w * q_x)` is an exact integer, and
//! `acc = fma(d_w * d_x, sumi, acc)` in f32, block after block. On CPUs with AVX-VNNI or
//! AVX-512 VNNI one `vpdpbusd` does the four products and their sum that AVX2 needs three
//! instructions for.

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::interleaved::Isa;
use super::interleaved::{RowTiles, ROWS};
use super::q8_0::{Q8_0Block, Q8_0};

const D: usize = 0; // f16 [8]
const QS: usize = 16; // i8 [group 8][row 8][4]
/// Bytes of one tile: one block of 32 weights of each of 8 rows.
pub const TILE_BYTES: usize = 272;

/// Q8_0, eight rows to a tile.
#[derive(Debug, Clone, Copy)]
pub struct Q8_0Tiles;

impl RowTiles for Q8_0Tiles {
    type Plain = Q8_0;
    const TILE_BYTES: usize = TILE_BYTES;
    // Three registers per activation row (two integer sums, an accumulator): 4 rows fit.
    const AVX512_ACTS: usize = 4;

    fn interleave(tile: &mut [u8], r: usize, raw: &[u8]) {
        tile[D + 2 * r..D + 2 * r + 2].copy_from_slice(&raw[0..2]);
        for g in 0..8 {
            let to = QS + (g * ROWS + r) * 4;
            tile[to..to + 4].copy_from_slice(&raw[2 + 4 * g..2 + 4 * g + 4]);
        }
    }

    fn plain_block(tile: &[u8], lane: usize, raw: &mut [u8]) {
        raw[0..2].copy_from_slice(&tile[D + 2 * lane..D + 2 * lane + 2]);
        for g in 0..8 {
            let from = QS + (g * ROWS + lane) * 4;
            raw[2 + 4 * g..2 + 4 * g + 4].copy_from_slice(&tile[from..from + 4]);
        }
    }

    fn dot(tiles: &[u8], lane: usize, a: &[Q8_0Block]) -> f32 {
        let mut acc = 0f32;
        for (tile, y) in tiles.chunks_exact(TILE_BYTES).zip(a) {
            let dw = f16::from_le_bytes([tile[D + 2 * lane], tile[D + 2 * lane + 1]]).to_f32();
            let mut sumi = 0i32;
            for g in 0..8 {
                for j in 0..4 {
                    let q = tile[QS + (g * ROWS + lane) * 4 + j] as i8;
                    sumi += q as i32 * y.qs[4 * g + j] as i32;
                }
            }
            acc = (dw * y.d).mul_add(sumi as f32, acc);
        }
        acc
    }

    const PAIRS: bool = true;

    #[cfg(target_arch = "x86_64")]
    unsafe fn rows_pairs<const A: usize, const P: usize>(
        groups: [(&[u8], &[u8]); P],
        acts: [&[Q8_0Block]; A],
    ) -> [[[[f32; ROWS]; A]; 2]; P] {
        // SAFETY: the caller checked AVX-512F/VL/BW/VNNI (and AVX2, FMA and F16C).
        unsafe { x86_pair::pairs_avx512::<A, P>(groups, acts) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn rows<const A: usize>(tiles: &[u8], acts: [&[Q8_0Block]; A]) -> [[f32; ROWS]; A] {
        if Isa::Avx512Vnni.available() {
            // SAFETY: the CPU has AVX-512F/VL/VNNI; the caller checked AVX2, FMA and F16C.
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

    use super::{Q8_0Block, D, QS, ROWS, TILE_BYTES};

    /// The 8 rows of one group of tiles times `A` activation rows (`[activation][row]`),
    /// `$sum(acc, |w|, a with w's signs)` adding four products per 32-bit lane to `acc`.
    macro_rules! tile_body {
        ($tiles:expr, $a:expr, $A:expr, $sum:expr) => {{
            let (tiles, a) = ($tiles, $a);
            let blocks = tiles.len() / TILE_BYTES;
            assert!(a.iter().all(|r| r.len() == blocks));
            let mut acc = [_mm256_setzero_ps(); $A];
            for b in 0..blocks {
                // SAFETY: b < blocks; every offset below stays inside the tile, and an
                // activation block holds 32 values.
                unsafe {
                    let t = tiles.as_ptr().add(b * TILE_BYTES);
                    crate::prefetch::ahead(t, TILE_BYTES);
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(D) as *const __m128i));
                    let mut q8 = [std::ptr::null::<i8>(); $A];
                    for j in 0..$A {
                        q8[j] = a[j].get_unchecked(b).qs.as_ptr();
                    }
                    // Two partial sums per activation row: independent chains for the CPU.
                    let mut sumi = [[_mm256_setzero_si256(); 2]; $A];
                    for g in 0..8 {
                        let w = _mm256_loadu_si256(t.add(QS + g * 32) as *const __m256i);
                        let aw = _mm256_sign_epi8(w, w);
                        for j in 0..$A {
                            let x = _mm256_set1_epi32(
                                (q8[j].add(4 * g) as *const i32).read_unaligned(),
                            );
                            let sx = _mm256_sign_epi8(x, w);
                            sumi[j][g % 2] = $sum(sumi[j][g % 2], aw, sx);
                        }
                    }
                    for j in 0..$A {
                        let s = _mm256_add_epi32(sumi[j][0], sumi[j][1]);
                        let d = _mm256_mul_ps(dw, _mm256_set1_ps(a[j].get_unchecked(b).d));
                        acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[j]);
                    }
                }
            }
            crate::quant::interleaved::lanes(acc)
        }};
    }

    /// AVX2: `maddubs` (pairs, |w| <= 128 and |x| <= 127 keep them exact in i16), `madd`
    /// with ones (quads), add.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn tile_avx2<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_0Block]; A],
    ) -> [[f32; ROWS]; A] {
        let ones = _mm256_set1_epi16(1);
        tile_body!(tiles, a, A, |acc, aw, sx| _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones)
        ))
    }

    /// AVX-VNNI: one `vpdpbusd`.
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub(super) fn tile_vnni<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_0Block]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(tiles, a, A, |acc, aw, sx| _mm256_dpbusd_avx_epi32(
            acc, aw, sx
        ))
    }

    /// AVX-512 VNNI on 256-bit vectors (AVX-512VL): the same `vpdpbusd`, for CPUs without
    /// AVX-VNNI (AMD Zen 4, Intel Ice Lake servers), and 32 vector registers.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub(super) fn tile_avx512<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_0Block]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(tiles, a, A, |acc, aw, sx| _mm256_dpbusd_epi32(acc, aw, sx))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_pair {
    use std::arch::x86_64::*;

    use super::super::interleaved::pair::{block, blocks, both16, both32, split};
    use super::{Q8_0Block, D, QS, ROWS, TILE_BYTES};

    /// Two groups of tiles on 512-bit vectors: lanes 0-7 hold `first`'s rows, 8-15 `second`'s,
    /// each lane doing what a lane of `tile_avx512` does (the same exact integer sums, the same
    /// float steps), so each row's result is bit for bit the same. AVX-512 has no `vpsignb`:
    /// `|w|` is `vpabsb`, and the activation bytes facing a negative weight are negated under
    /// that mask (a zero weight's product is zero either way).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn pairs_avx512<const A: usize, const P: usize>(
        groups: [(&[u8], &[u8]); P],
        a: [&[Q8_0Block]; A],
    ) -> [[[[f32; ROWS]; A]; 2]; P] {
        let blocks = blocks(&groups, TILE_BYTES, a.iter().map(|r| r.len()));
        let zero = _mm512_setzero_si512();
        let mut accs = [[_mm512_setzero_ps(); A]; P];
        for b in 0..blocks {
            for ((first, second), acc) in groups.iter().zip(accs.iter_mut()) {
                // SAFETY: b < blocks; every offset below stays inside the two tiles, and an
                // activation block holds 32 values.
                unsafe {
                    let (s, u) = block(first, second, b, TILE_BYTES);
                    // Two partial sums per activation row: independent chains for the CPU.
                    let mut sumi = [[zero; 2]; A];
                    for g in 0..8 {
                        let w = both32(s, u, QS + g * 32);
                        let aw = _mm512_abs_epi8(w);
                        let negative = _mm512_movepi8_mask(w);
                        for j in 0..A {
                            let p = a[j].get_unchecked(b).qs.as_ptr().add(4 * g);
                            let x = _mm512_set1_epi32((p as *const i32).read_unaligned());
                            let sx = _mm512_mask_sub_epi8(x, negative, zero, x);
                            sumi[j][g % 2] = _mm512_dpbusd_epi32(sumi[j][g % 2], aw, sx);
                        }
                    }
                    let dw = _mm512_cvtph_ps(both16(s, u, D));
                    for j in 0..A {
                        let sum = _mm512_add_epi32(sumi[j][0], sumi[j][1]);
                        let d = _mm512_mul_ps(dw, _mm512_set1_ps(a[j].get_unchecked(b).d));
                        acc[j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sum), acc[j]);
                    }
                }
            }
        }
        std::array::from_fn(|p| split(accs[p]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::interleaved::testing;
    use super::super::q8_0::tests::random_q8_0;
    use super::*;

    #[test]
    fn rows_rebuild_the_plain_blocks() {
        testing::rows_rebuild_the_plain_blocks::<Q8_0Tiles>(
            &random_q8_0(16, 96, 7),
            16,
            96,
            |a, b| a == b,
        );
    }

    #[test]
    fn products_match_the_plain_layout_and_simd_equals_portable() {
        testing::products_match_the_plain_layout::<Q8_0Tiles>(random_q8_0(24, 160, 9), 24, 160);
    }

    #[test]
    fn products_of_two_groups_at_once_match_the_plain_layout() {
        // 8 groups: where the CPU has AVX-512BW and VNNI, matmul_t takes them four at a time, a
        // quarter of the matrix apart, for one activation row, and in pairs for more.
        testing::products_match_the_plain_layout::<Q8_0Tiles>(random_q8_0(64, 96, 11), 64, 96);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_two_group_kernel_equals_the_portable_code_for_each_group() {
        testing::two_group_kernel_equals_one_group::<Q8_0Tiles>(&random_q8_0(16, 160, 5), 160);
    }

    #[test]
    fn shapes_it_cannot_tile_are_errors() {
        testing::shapes_it_cannot_tile_are_errors::<Q8_0Tiles>(&random_q8_0(12, 256, 1));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_vnni_kernels_equal_the_portable_code() {
        testing::every_kernel_equals_the_portable_code::<Q8_0Tiles>(
            &random_q8_0(8, 320, 3),
            320,
            &[
                (Isa::Avx2, x86::tile_avx2::<2>),
                (Isa::AvxVnni, x86::tile_vnni::<2>),
                (Isa::Avx512Vnni, x86::tile_avx512::<2>),
            ],
        );
    }
}
