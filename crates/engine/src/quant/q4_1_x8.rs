//! Q4_1 in tiles of eight rows ([`super::interleaved`]).
//!
//! A tile (160 bytes, as eight plain blocks): the eight f16 scales `d`, the eight f16 minimums
//! `m`, then the nibble bytes in runs of four per row, `[group 4][row 8][4]`: byte `i` of a
//! row holds weight `i` in its low nibble and weight `i + 16` in its high one, as in the plain
//! block, so a 32-byte load holds four low and four high weights of each of the eight rows.
//!
//! Arithmetic: exactly that of the plain layout ([`super::q4_1`], llama.cpp's order), so a
//! row's product is the same bits in either layout: per row, eight f32 accumulators, one per
//! run of four weights of the block (`acc[k] = fma(d_w * d_x, sum of the run's four integer
//! products, acc[k])`, runs 0-3 the low nibbles of bytes 4k.., runs 4-7 the high ones), the
//! minimum terms `acc_m = fma(m_w, s_x, acc_m)`, and at the end [`super::hsum8`] of the eight
//! plus `acc_m`. Each 32-bit lane holds one row, so the eight runs are eight vectors. On CPUs
//! with AVX-VNNI one `vpdpbusd` makes a run's sum (the nibbles are unsigned, as it wants).

use half::f16;

use super::hsum8;
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
        let mut acc = [0f32; 8];
        let mut acc_m = 0f32;
        for (tile, y) in tiles.chunks_exact(TILE_BYTES).zip(a) {
            let half = |at: usize| f16::from_le_bytes([tile[at], tile[at + 1]]).to_f32();
            let (dw, mw) = (half(D + 2 * lane), half(M + 2 * lane));
            acc_m = mw.mul_add(y.s, acc_m);
            let d = dw * y.d;
            for g in 0..4 {
                let (mut lo, mut hi) = (0i32, 0i32);
                for j in 0..4 {
                    let q = tile[QS + (g * ROWS + lane) * 4 + j];
                    lo += (q & 0x0F) as i32 * y.qs[4 * g + j] as i32;
                    hi += (q >> 4) as i32 * y.qs[16 + 4 * g + j] as i32;
                }
                acc[g] = d.mul_add(lo as f32, acc[g]);
                acc[4 + g] = d.mul_add(hi as f32, acc[4 + g]);
            }
        }
        hsum8(acc) + acc_m
    }

    const PAIRS: bool = true;
    // One activation row only: two rows side by side in four groups need 32 accumulators, and
    // `examples/kernels` measured 2 to 8 rows slower that way than in pairs.
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
    /// `$run(nibbles, x)`: the 8 i32 sums of four products of unsigned nibbles and signed
    /// activation bytes.
    macro_rules! tile_body {
        ($tiles:expr, $a:expr, $A:expr, $run:expr) => {{
            let (tiles, a) = ($tiles, $a);
            let blocks = tiles.len() / TILE_BYTES;
            assert!(a.iter().all(|r| r.len() == blocks));
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = [[_mm256_setzero_ps(); 8]; $A];
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
                    let mut d = [_mm256_setzero_ps(); $A];
                    for j in 0..$A {
                        let y = a[j].get_unchecked(b);
                        q8[j] = y.qs.as_ptr();
                        acc_m[j] = _mm256_fmadd_ps(mw, _mm256_set1_ps(y.s), acc_m[j]);
                        d[j] = _mm256_mul_ps(dw, _mm256_set1_ps(y.d));
                    }
                    for g in 0..4 {
                        let w = _mm256_loadu_si256(t.add(QS + g * 32) as *const __m256i);
                        let wl = _mm256_and_si256(w, m4);
                        let wh = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                        for j in 0..$A {
                            let p = q8[j].add(4 * g);
                            let xl = _mm256_set1_epi32((p as *const i32).read_unaligned());
                            let xh = _mm256_set1_epi32((p.add(16) as *const i32).read_unaligned());
                            let lo = _mm256_cvtepi32_ps($run(wl, xl));
                            let hi = _mm256_cvtepi32_ps($run(wh, xh));
                            acc[j][g] = _mm256_fmadd_ps(d[j], lo, acc[j][g]);
                            acc[j][4 + g] = _mm256_fmadd_ps(d[j], hi, acc[j][4 + g]);
                        }
                    }
                }
            }
            let mut out = [[0f32; ROWS]; $A];
            for j in 0..$A {
                // hsum8 of each row's eight accumulators, lane by lane, then the minimums.
                let mut r = [_mm256_setzero_ps(); 4];
                for k in 0..4 {
                    r[k] = _mm256_add_ps(acc[j][4 + k], acc[j][k]);
                }
                let s = _mm256_add_ps(_mm256_add_ps(r[0], r[2]), _mm256_add_ps(r[1], r[3]));
                // SAFETY: 8 f32 fit a row of `out`.
                unsafe { _mm256_storeu_ps(out[j].as_mut_ptr(), _mm256_add_ps(s, acc_m[j])) };
            }
            out
        }};
    }

    /// AVX2: `maddubs` (pairs of at most 2 * 15 * 128 in magnitude: exact), `madd` with ones.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn tile_avx2<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_1Block]; A],
    ) -> [[f32; ROWS]; A] {
        let ones = _mm256_set1_epi16(1);
        tile_body!(tiles, a, A, |w, x| _mm256_madd_epi16(
            _mm256_maddubs_epi16(w, x),
            ones
        ))
    }

    /// AVX-512 VNNI on 256-bit vectors: one `vpdpbusd`, and 32 vector registers (eight
    /// accumulators per activation row do not fit in AVX2's 16 for two rows).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub(super) fn tile_avx512<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_1Block]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(tiles, a, A, |w, x| _mm256_dpbusd_epi32(
            _mm256_setzero_si256(),
            w,
            x
        ))
    }

    /// AVX-VNNI: one `vpdpbusd`.
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub(super) fn tile_vnni<const A: usize>(
        tiles: &[u8],
        a: [&[Q8_1Block]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(tiles, a, A, |w, x| _mm256_dpbusd_avx_epi32(
            _mm256_setzero_si256(),
            w,
            x
        ))
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
        let mut accs = [[[_mm512_setzero_ps(); 8]; A]; P];
        let mut accs_m = [[_mm512_setzero_ps(); A]; P];
        for b in 0..blocks {
            for ((first, second), (acc, acc_m)) in
                groups.iter().zip(accs.iter_mut().zip(&mut accs_m))
            {
                // SAFETY: b < blocks; every offset below stays inside the two tiles, and an
                // activation block holds 32 values.
                unsafe {
                    let (s, u) = block(first, second, b, TILE_BYTES);
                    let both16 = |at: usize| both16(s, u, at);
                    let dw = _mm512_cvtph_ps(both16(D));
                    let mw = _mm512_cvtph_ps(both16(M));
                    let mut q8 = [std::ptr::null::<i8>(); A];
                    let mut d = [_mm512_setzero_ps(); A];
                    for j in 0..A {
                        let y = a[j].get_unchecked(b);
                        q8[j] = y.qs.as_ptr();
                        acc_m[j] = _mm512_fmadd_ps(mw, _mm512_set1_ps(y.s), acc_m[j]);
                        d[j] = _mm512_mul_ps(dw, _mm512_set1_ps(y.d));
                    }
                    for g in 0..4 {
                        let w = both32(s, u, QS + g * 32);
                        let wl = _mm512_and_si512(w, m4);
                        let wh = _mm512_and_si512(_mm512_srli_epi16::<4>(w), m4);
                        for j in 0..A {
                            let p = q8[j].add(4 * g);
                            let xl = _mm512_set1_epi32((p as *const i32).read_unaligned());
                            let xh = _mm512_set1_epi32((p.add(16) as *const i32).read_unaligned());
                            let zero = _mm512_setzero_si512();
                            let lo = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, wl, xl));
                            let hi = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, wh, xh));
                            acc[j][g] = _mm512_fmadd_ps(d[j], lo, acc[j][g]);
                            acc[j][4 + g] = _mm512_fmadd_ps(d[j], hi, acc[j][4 + g]);
                        }
                    }
                }
            }
        }
        // hsum8 of each row's eight accumulators, lane by lane, then the minimums.
        std::array::from_fn(|p| {
            let (acc, acc_m) = (&accs[p], &accs_m[p]);
            split(std::array::from_fn(|j| {
                let r: [__m512; 4] =
                    std::array::from_fn(|k| _mm512_add_ps(acc[j][4 + k], acc[j][k]));
                let sum = _mm512_add_ps(_mm512_add_ps(r[0], r[2]), _mm512_add_ps(r[1], r[3]));
                _mm512_add_ps(sum, acc_m[j])
            }))
        })
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
