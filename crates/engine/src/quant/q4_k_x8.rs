//! Q4_K in tiles of eight rows ([`super::interleaved`]).
//!
//! A tile (1184 bytes against 1152 for eight plain blocks): the eight f16 `d` and `dmin`, the
//! sub-block scales and mins as bytes (`[sub][row]`, and `[pair][row][2]` for the mins), and
//! the nibbles in runs of four bytes per row, `[chunk][group][row][4]`, so a 32-byte load holds
//! four nibble pairs of each row: low nibbles of sub-block `2 * chunk`, high ones of `2 * chunk
//! + 1`, as in the plain block.
//!
//! Arithmetic, per row and block: `sumi = sum_sub(scale * sum(q4 * q8))` and
//! `summ = sum_sub(min * sum(q8))` are exact integers; `acc = fma(d_x * d, sumi, acc)` and
//! `acc_m = fma(-d_x * dmin, summ, acc_m)` in f32, the result `acc + acc_m`. Kernels: AVX2
//! (`maddubs`), and one `vpdpbusd` per product with AVX-VNNI or AVX-512 VNNI.

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::interleaved::Isa;
use super::interleaved::{Interleaved, RowTiles, ROWS};
use super::q4_k::{scales_mins, Q4K};
use super::q8_k::Q8KBlock;
pub(super) const D: usize = 0; // f16 [8]
pub(super) const DMIN: usize = 16; // f16 [8]
pub(super) const SC: usize = 32; // u8 [sub 8][row 8]
pub(super) const MN: usize = 96; // u8 [pair 4][row 8][2]
pub(super) const QS: usize = 160; // u8 [chunk 4][group 8][row 8][4]
/// Bytes of one tile: one block of 256 weights of each of 8 rows.
pub const TILE_BYTES: usize = 1184;

/// Q4_K, eight rows to a tile.
#[derive(Debug, Clone, Copy)]
pub struct Q4KTiles;

impl RowTiles for Q4KTiles {
    type Plain = Q4K;
    const TILE_BYTES: usize = TILE_BYTES;
    // Five registers per activation row (three integer sums, two accumulators): 4 rows fit.
    const AVX512_ACTS: usize = 4;

    fn interleave(tile: &mut [u8], r: usize, raw: &[u8]) {
        tile[D + 2 * r..D + 2 * r + 2].copy_from_slice(&raw[0..2]);
        tile[DMIN + 2 * r..DMIN + 2 * r + 2].copy_from_slice(&raw[2..4]);
        let (sc, m) = scales_mins(&raw[4..16]);
        for sub in 0..8 {
            tile[SC + sub * ROWS + r] = sc[sub];
            tile[MN + (sub / 2) * 16 + r * 2 + sub % 2] = m[sub];
        }
        for c in 0..4 {
            for g in 0..8 {
                let to = QS + ((c * 8 + g) * ROWS + r) * 4;
                let from = 16 + 32 * c + 4 * g;
                tile[to..to + 4].copy_from_slice(&raw[from..from + 4]);
            }
        }
    }

    fn plain_block(tile: &[u8], lane: usize, raw: &mut [u8]) {
        raw[0..2].copy_from_slice(&tile[D + 2 * lane..D + 2 * lane + 2]);
        raw[2..4].copy_from_slice(&tile[DMIN + 2 * lane..DMIN + 2 * lane + 2]);
        let sc: [u8; 8] = std::array::from_fn(|sub| tile[SC + sub * ROWS + lane]);
        let m: [u8; 8] = std::array::from_fn(|sub| tile[MN + (sub / 2) * 16 + lane * 2 + sub % 2]);
        for j in 0..4 {
            raw[4 + j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            raw[8 + j] = m[j] | ((m[j + 4] >> 4) << 6);
            raw[12 + j] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
        }
        for c in 0..4 {
            for g in 0..8 {
                let from = QS + ((c * 8 + g) * ROWS + lane) * 4;
                raw[16 + 32 * c + 4 * g..][..4].copy_from_slice(&tile[from..from + 4]);
            }
        }
    }

    fn dot(tiles: &[u8], lane: usize, a: &[Q8KBlock]) -> f32 {
        let (mut acc, mut acc_m) = (0f32, 0f32);
        for (tile, y) in tiles.chunks_exact(TILE_BYTES).zip(a) {
            let half = |at: usize| f16::from_le_bytes([tile[at], tile[at + 1]]).to_f32();
            let (dw, dminw) = (half(D + 2 * lane), half(DMIN + 2 * lane));
            let mut sumi = 0i32;
            for c in 0..4 {
                let (mut lo, mut hi) = (0i32, 0i32);
                for g in 0..8 {
                    for j in 0..4 {
                        let q = tile[QS + ((c * 8 + g) * ROWS + lane) * 4 + j];
                        lo += (q & 0x0F) as i32 * y.qs[64 * c + 4 * g + j] as i32;
                        hi += (q >> 4) as i32 * y.qs[64 * c + 32 + 4 * g + j] as i32;
                    }
                }
                sumi += lo * tile[SC + 2 * c * ROWS + lane] as i32
                    + hi * tile[SC + (2 * c + 1) * ROWS + lane] as i32;
            }
            let mut summ = 0i32;
            for sub in 0..8 {
                let sums = y.bsums[2 * sub] as i32 + y.bsums[2 * sub + 1] as i32;
                summ += tile[MN + (sub / 2) * 16 + lane * 2 + sub % 2] as i32 * sums;
            }
            acc = (y.d * dw).mul_add(sumi as f32, acc);
            acc_m = (-y.d * dminw).mul_add(summ as f32, acc_m);
        }
        acc + acc_m
    }

    #[cfg(target_arch = "x86_64")]
    fn has_long_products(rows: usize) -> bool {
        super::amx::runs(rows)
    }

    #[cfg(target_arch = "x86_64")]
    fn long_products(matrix: &Interleaved<Self>, x: &[f32], n: usize) -> Vec<f32> {
        super::amx::matmul_t(matrix, x, n)
    }

    const PAIRS: bool = true;
    // Every decode-sized pass: `examples/kernels 131072 2048` read the weights 10-40% faster
    // four groups at a time for 1 to 8 activation rows.
    const STREAM_ROWS: usize = crate::rowwise::MAX_ROWS;
    // Eight activation rows per call unpack each block once for a pass of 8 rows: a 1024 x
    // 2048 product of 8 rows on one thread, alternating in one process, 0.321 -> 0.287 ms (4 at
    // a time before); whole 1B Q4_K_M passes of 8 rows 168 -> 135 ms (median).
    const STREAM_STEP: usize = 8;

    #[cfg(target_arch = "x86_64")]
    unsafe fn rows_pairs<const A: usize, const P: usize>(
        groups: [(&[u8], &[u8]); P],
        acts: [&[Q8KBlock]; A],
    ) -> [[[[f32; ROWS]; A]; 2]; P] {
        // SAFETY: the caller checked AVX-512F/VL/BW/VNNI (and AVX2, FMA, F16C).
        unsafe { x86_pair::pairs_avx512::<A, P>(groups, acts) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn rows<const A: usize>(tiles: &[u8], acts: [&[Q8KBlock]; A]) -> [[f32; ROWS]; A] {
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

    use super::{Q8KBlock, D, DMIN, MN, QS, ROWS, SC, TILE_BYTES};

    /// The 8 rows of one group of tiles times `A` activation rows: `[activation][row]`.
    /// `$pair(sum, nibbles, x)`: sum += products of the unsigned nibbles and the signed
    /// activation bytes, in any integer lanes (at most 8 * 2 * 15 * 128 = 30720 in magnitude
    /// per lane); `$quads(sum)`: those lanes as 8 i32 sums.
    macro_rules! tile_body {
        ($tiles:expr, $a:expr, $A:expr, $pair:expr, $quads:expr) => {{
            let (tiles, a) = ($tiles, $a);
            let blocks = tiles.len() / TILE_BYTES;
            assert!(a.iter().all(|r| r.len() == blocks));
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); $A];
            let mut acc_m = [_mm256_setzero_ps(); $A];
            for b in 0..blocks {
                // SAFETY: b < blocks; every offset below stays inside the tile.
                unsafe {
                    let t = tiles.as_ptr().add(b * TILE_BYTES);
                    crate::prefetch::ahead(t, TILE_BYTES);
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(D) as *const __m128i));
                    let dminw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(DMIN) as *const __m128i));
                    let mut q8 = [std::ptr::null::<i8>(); $A];
                    for j in 0..$A {
                        q8[j] = a[j].get_unchecked(b).qs.as_ptr();
                    }
                    let mut sumi = [_mm256_setzero_si256(); $A];
                    for c in 0..4 {
                        let mut lo = [_mm256_setzero_si256(); $A];
                        let mut hi = [_mm256_setzero_si256(); $A];
                        for g in 0..8 {
                            let w =
                                _mm256_loadu_si256(t.add(QS + (c * 8 + g) * 32) as *const __m256i);
                            let wl = _mm256_and_si256(w, m4);
                            let wh = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                            for j in 0..$A {
                                let p = q8[j].add(64 * c + 4 * g);
                                let al = _mm256_set1_epi32((p as *const i32).read_unaligned());
                                let ah =
                                    _mm256_set1_epi32((p.add(32) as *const i32).read_unaligned());
                                lo[j] = $pair(lo[j], wl, al);
                                hi[j] = $pair(hi[j], wh, ah);
                            }
                        }
                        let sl = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                            t.add(SC + 2 * c * ROWS) as *const __m128i
                        ));
                        let sh = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                            t.add(SC + (2 * c + 1) * ROWS) as *const __m128i,
                        ));
                        for j in 0..$A {
                            let l = _mm256_mullo_epi32($quads(lo[j]), sl);
                            let h = _mm256_mullo_epi32($quads(hi[j]), sh);
                            sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(l, h));
                        }
                    }
                    for j in 0..$A {
                        let y = a[j].get_unchecked(b);
                        let mut summ = _mm256_setzero_si256();
                        for k in 0..4 {
                            let s0 = y.bsums[4 * k] as i32 + y.bsums[4 * k + 1] as i32;
                            let s1 = y.bsums[4 * k + 2] as i32 + y.bsums[4 * k + 3] as i32;
                            let pair = (s0 as u16 as i32) | ((s1 as u16 as i32) << 16);
                            let mins = _mm256_cvtepu8_epi16(_mm_loadu_si128(
                                t.add(MN + 16 * k) as *const __m128i
                            ));
                            summ = _mm256_add_epi32(
                                summ,
                                _mm256_madd_epi16(mins, _mm256_set1_epi32(pair)),
                            );
                        }
                        let d = _mm256_mul_ps(_mm256_set1_ps(y.d), dw);
                        acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[j]), acc[j]);
                        let dm = _mm256_mul_ps(_mm256_set1_ps(-y.d), dminw);
                        acc_m[j] = _mm256_fmadd_ps(dm, _mm256_cvtepi32_ps(summ), acc_m[j]);
                    }
                }
            }
            for j in 0..$A {
                acc[j] = _mm256_add_ps(acc[j], acc_m[j]);
            }
            crate::quant::interleaved::lanes(acc)
        }};
    }

    /// AVX2: `maddubs` pairs summed in i16 (exact: see above), `madd` with ones.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn tile_avx2<const A: usize>(tiles: &[u8], a: [&[Q8KBlock]; A]) -> [[f32; ROWS]; A] {
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
    pub(super) fn tile_vnni<const A: usize>(tiles: &[u8], a: [&[Q8KBlock]; A]) -> [[f32; ROWS]; A] {
        tile_body!(
            tiles,
            a,
            A,
            |s, w, x| _mm256_dpbusd_avx_epi32(s, w, x),
            |s| s
        )
    }

    /// AVX-512 VNNI on 256-bit vectors (AVX-512VL): the same `vpdpbusd`, for CPUs without
    /// AVX-VNNI (AMD Zen 4, Intel Ice Lake servers), and 32 vector registers.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub(super) fn tile_avx512<const A: usize>(
        tiles: &[u8],
        a: [&[Q8KBlock]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(tiles, a, A, |s, w, x| _mm256_dpbusd_epi32(s, w, x), |s| s)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_pair {
    use std::arch::x86_64::*;

    use super::super::interleaved::pair::{block, blocks, both16, both32, both8, split};
    use super::{Q8KBlock, D, DMIN, MN, QS, ROWS, SC, TILE_BYTES};

    /// Two groups of tiles on 512-bit vectors: lanes 0-7 hold `first`'s rows, 8-15 `second`'s,
    /// and every lane does what a lane of `tile_avx512` does (the same exact integer sums, the
    /// same float operations in the same order), so each row's result is bit for bit the same.
    /// On CPUs with full-width AVX-512 units (Intel) a `vpdpbusd` on 512 bits does twice the
    /// work of one on 256 bits at nearly the same rate; passes of several activation rows are
    /// bound by it.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn pairs_avx512<const A: usize, const P: usize>(
        groups: [(&[u8], &[u8]); P],
        a: [&[Q8KBlock]; A],
    ) -> [[[[f32; ROWS]; A]; 2]; P] {
        let blocks = blocks(&groups, TILE_BYTES, a.iter().map(|r| r.len()));
        let m4 = _mm512_set1_epi8(0x0F);
        let mut accs = [[_mm512_setzero_ps(); A]; P];
        let mut accs_m = [[_mm512_setzero_ps(); A]; P];
        for b in 0..blocks {
            for ((first, second), (acc, acc_m)) in
                groups.iter().zip(accs.iter_mut().zip(&mut accs_m))
            {
                // SAFETY: b < blocks; every offset below stays inside the two tiles.
                unsafe {
                    let (s, u) = block(first, second, b, TILE_BYTES);
                    let both32 = |at: usize| both32(s, u, at);
                    let both16 = |at: usize| both16(s, u, at);
                    let both8 = |at: usize| both8(s, u, at);
                    let dw = _mm512_cvtph_ps(both16(D));
                    let dminw = _mm512_cvtph_ps(both16(DMIN));
                    let mut q8 = [std::ptr::null::<i8>(); A];
                    for j in 0..A {
                        q8[j] = a[j].get_unchecked(b).qs.as_ptr();
                    }
                    // Each sub-block's 32 products are summed as two halves of 16, whose
                    // sums (at most 16 * 15 * 128 in magnitude) fit 16 bits: one `vpdpwssd`
                    // then multiplies a half by its scale (the lane's low 16 bits; the scale
                    // vector's high 16 bits are 0) and adds it, the same integers as a
                    // 32-bit multiply of the whole.
                    // Low and high nibbles' sums in separate accumulators: shorter chains.
                    let mut sumi = [_mm512_setzero_si512(); A];
                    let mut sumi_h = [_mm512_setzero_si512(); A];
                    for c in 0..4 {
                        let sl = _mm512_cvtepu8_epi32(both8(SC + 2 * c * ROWS));
                        let sh = _mm512_cvtepu8_epi32(both8(SC + (2 * c + 1) * ROWS));
                        for half in 0..2 {
                            let mut lo = [_mm512_setzero_si512(); A];
                            let mut hi = [_mm512_setzero_si512(); A];
                            for g in 4 * half..4 * half + 4 {
                                let w = both32(QS + (c * 8 + g) * 32);
                                let wl = _mm512_and_si512(w, m4);
                                let wh = _mm512_and_si512(_mm512_srli_epi16::<4>(w), m4);
                                for j in 0..A {
                                    let p = q8[j].add(64 * c + 4 * g);
                                    let al = _mm512_set1_epi32((p as *const i32).read_unaligned());
                                    let ah = _mm512_set1_epi32(
                                        (p.add(32) as *const i32).read_unaligned(),
                                    );
                                    lo[j] = _mm512_dpbusd_epi32(lo[j], wl, al);
                                    hi[j] = _mm512_dpbusd_epi32(hi[j], wh, ah);
                                }
                            }
                            for j in 0..A {
                                sumi[j] = _mm512_dpwssd_epi32(sumi[j], lo[j], sl);
                                sumi_h[j] = _mm512_dpwssd_epi32(sumi_h[j], hi[j], sh);
                            }
                        }
                    }
                    // The mins times the sums of 32 activations, two sub-blocks per
                    // `vpdpwssd` (`[min(2k), min(2k + 1)]` per lane).
                    let mins: [__m512i; 4] =
                        std::array::from_fn(|k| _mm512_cvtepu8_epi16(both16(MN + 16 * k)));
                    for j in 0..A {
                        let y = a[j].get_unchecked(b);
                        let sums = y.sums32.as_ptr() as *const i32;
                        let mut summ = _mm512_setzero_si512();
                        for (k, &m) in mins.iter().enumerate() {
                            let pair = _mm512_set1_epi32(sums.add(k).read_unaligned());
                            summ = _mm512_dpwssd_epi32(summ, m, pair);
                        }
                        let d = _mm512_mul_ps(_mm512_set1_ps(y.d), dw);
                        let sumi = _mm512_add_epi32(sumi[j], sumi_h[j]);
                        acc[j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc[j]);
                        let dm = _mm512_mul_ps(_mm512_set1_ps(-y.d), dminw);
                        acc_m[j] = _mm512_fmadd_ps(dm, _mm512_cvtepi32_ps(summ), acc_m[j]);
                    }
                }
            }
        }
        std::array::from_fn(|p| {
            split(std::array::from_fn(|j| {
                _mm512_add_ps(accs[p][j], accs_m[p][j])
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::interleaved::testing;
    use super::super::q4_k::tests::random_q4_k;
    use super::super::{Format, PackedMatrix};
    use super::*;

    #[test]
    fn rows_rebuild_the_plain_blocks() {
        // The scale bytes may differ in bits the unpacking ignores; compare them unpacked.
        let same = |a: &[u8], b: &[u8]| {
            a[..4] == b[..4]
                && scales_mins(&a[4..16]) == scales_mins(&b[4..16])
                && a[16..] == b[16..]
        };
        testing::rows_rebuild_the_plain_blocks::<Q4KTiles>(&random_q4_k(16, 512, 7), 16, 512, same);
    }

    #[test]
    fn products_match_the_plain_layout_and_simd_equals_portable() {
        testing::products_match_the_plain_layout::<Q4KTiles>(random_q4_k(24, 768, 9), 24, 768);
    }

    #[test]
    fn products_of_two_groups_at_once_match_the_plain_layout() {
        // Where the CPU has AVX-512BW and VNNI, matmul_t takes 8 groups four at a time, a
        // quarter of the matrix apart, and 6 groups in pairs.
        testing::products_match_the_plain_layout::<Q4KTiles>(random_q4_k(64, 768, 11), 64, 768);
        testing::products_match_the_plain_layout::<Q4KTiles>(random_q4_k(48, 512, 12), 48, 512);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_two_group_kernel_equals_the_portable_code_for_each_group() {
        testing::two_group_kernel_equals_one_group::<Q4KTiles>(&random_q4_k(16, 1024, 5), 1024);
    }

    #[test]
    fn the_largest_integer_sums_stay_exact() {
        // Every nibble 15 and every scale and min 63, times activations all rounded to 127 in
        // magnitude (one sign per row): each half sub-block sums 16 * 15 * 127 = 30480, the
        // most the 16-bit scaling step of the 512-bit kernel may see.
        let (rows, cols, n) = (64, 512, 8);
        let mut data = vec![0xFFu8; rows * cols / 256 * 144];
        for b in data.chunks_exact_mut(144) {
            b[0..2].copy_from_slice(&f16::from_f32(1e-3).to_le_bytes());
            b[2..4].copy_from_slice(&f16::from_f32(2e-3).to_le_bytes());
        }
        let m = Interleaved::<Q4KTiles>::new(&data, rows, cols).unwrap();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| if (i / cols) % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        let got = m.matmul_t(&x, n);
        for (i, row) in x.chunks_exact(cols).enumerate() {
            let acts = Q4K::quantize(row);
            assert!(acts.iter().all(|a| a.qs.iter().all(|q| q.abs() == 127)));
            for r in 0..rows {
                assert_eq!(
                    got[i * rows + r].to_bits(),
                    m.dot(r, &acts).to_bits(),
                    "({i}, {r})"
                );
            }
        }
    }

    #[test]
    fn shapes_it_cannot_tile_are_errors() {
        testing::shapes_it_cannot_tile_are_errors::<Q4KTiles>(&random_q4_k(12, 256, 1));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_vnni_kernels_equal_the_portable_code() {
        testing::every_kernel_equals_the_portable_code::<Q4KTiles>(
            &random_q4_k(8, 768, 3),
            768,
            &[
                (Isa::Avx2, x86::tile_avx2::<2>),
                (Isa::AvxVnni, x86::tile_vnni::<2>),
                (Isa::Avx512Vnni, x86::tile_avx512::<2>),
            ],
        );
    }
}
