//! Q6_K in tiles of eight rows ([`super::interleaved`]).
//!
//! A tile is exactly eight plain blocks (1680 bytes): the eight f16 `d`, the sixteen scales as
//! `[pair][row][2]`, then the low nibbles (`ql`) and high bit pairs (`qh`) in runs of four bytes
//! per row, so that a 32-byte load has the same four positions of the eight rows. The kernels
//! read a tile front to back: for each group of four positions, its two `ql` vectors then its
//! `qh` vector. With `ql` and `qh` in two regions 1 KiB apart, as in the plain block, the
//! kernels' reads jumped back and forth inside each tile; read in order, the 1B output matrix
//! (`examples/kernels 128256 2048`, from memory) went 21.3 -> 26.3 GB/s (median of 5
//! alternating runs on a Zen 4).
//!
//! Arithmetic, per row and block: `sumi = sum_sub(scale * sum(q * q8))` with the unsigned
//! 6-bit `q`, `summ = sum_sub(scale * bsum)`, then `acc = fma(d_x * d, sumi - 32 * summ,
//! acc)` in f32; the integers are exact (|sumi| < 2^28).

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::interleaved::Isa;
use super::interleaved::{RowTiles, ROWS};
use super::q6_k::{value, Q6K};
use super::q8_k::Q8KBlock;
pub(super) const D: usize = 0; // f16 [8]
pub(super) const SC: usize = 16; // i8 [pair 8][row 8][2]
const Q: usize = 144; // u8 [half 2][group 8][ql s = 0, ql s = 1, qh][row 8][4]
/// Bytes of one tile: exactly eight Q6_K blocks.
pub const TILE_BYTES: usize = 1680;

/// Plain-block offsets of the tile's regions for row-local byte `(half, s, group, j)` etc.
fn ql_at(h: usize, s: usize, g: usize, j: usize) -> usize {
    64 * h + 32 * s + 4 * g + j
}
fn qh_at(h: usize, g: usize, j: usize) -> usize {
    128 + 32 * h + 4 * g + j
}

/// Tile offset of the 32-byte run `part` (0, 1: `ql` with `s` = part; 2: `qh`) of group `g` of
/// half `h`.
pub(super) const fn run(h: usize, g: usize, part: usize) -> usize {
    Q + ((h * 8 + g) * 3 + part) * 32
}

/// Q6_K, eight rows to a tile.
#[derive(Debug, Clone, Copy)]
pub struct Q6KTiles;

impl RowTiles for Q6KTiles {
    type Plain = Q6K;
    const TILE_BYTES: usize = TILE_BYTES;
    // Seven registers per activation row; 4 rows spill a little and still beat 2 + 2
    // (`examples/kernels.rs`, 4 and 8 rows: 15-25% less time on a Zen 4).
    const AVX512_ACTS: usize = 4;

    fn interleave(tile: &mut [u8], r: usize, raw: &[u8]) {
        // Runs of four bytes (ql, qh), then the scales and d.
        for h in 0..2 {
            for g in 0..8 {
                for s in 0..2 {
                    let to = run(h, g, s) + r * 4;
                    let from = ql_at(h, s, g, 0);
                    tile[to..to + 4].copy_from_slice(&raw[from..from + 4]);
                }
                let to = run(h, g, 2) + r * 4;
                let from = qh_at(h, g, 0);
                tile[to..to + 4].copy_from_slice(&raw[from..from + 4]);
            }
        }
        for sub in 0..16 {
            tile[SC + ((sub / 2) * ROWS + r) * 2 + sub % 2] = raw[192 + sub];
        }
        tile[D + 2 * r..D + 2 * r + 2].copy_from_slice(&raw[208..210]);
    }

    fn plain_block(tile: &[u8], lane: usize, raw: &mut [u8]) {
        for h in 0..2 {
            for g in 0..8 {
                for s in 0..2 {
                    let from = run(h, g, s) + lane * 4;
                    raw[ql_at(h, s, g, 0)..][..4].copy_from_slice(&tile[from..from + 4]);
                }
                let from = run(h, g, 2) + lane * 4;
                raw[qh_at(h, g, 0)..][..4].copy_from_slice(&tile[from..from + 4]);
            }
        }
        for sub in 0..16 {
            raw[192 + sub] = tile[SC + ((sub / 2) * ROWS + lane) * 2 + sub % 2];
        }
        raw[208..210].copy_from_slice(&tile[D + 2 * lane..D + 2 * lane + 2]);
    }

    fn dot(tiles: &[u8], lane: usize, a: &[Q8KBlock]) -> f32 {
        let mut acc = 0f32;
        let mut raw = [0u8; 210];
        for (tile, y) in tiles.chunks_exact(TILE_BYTES).zip(a) {
            Self::plain_block(tile, lane, &mut raw);
            let (mut sumi, mut summ) = (0i32, 0i32);
            for sub in 0..16 {
                let scale = raw[192 + sub] as i8 as i32;
                let mut s = 0i32;
                for e in 16 * sub..16 * (sub + 1) {
                    s += value(&raw, e).0 * y.qs[e] as i32;
                }
                sumi += scale * s;
                summ += scale * y.bsums[sub] as i32;
            }
            let d = y.d * f16::from_le_bytes([raw[208], raw[209]]).to_f32();
            acc = d.mul_add((sumi - 32 * summ) as f32, acc);
        }
        acc
    }

    #[cfg(target_arch = "x86_64")]
    fn has_long_products(rows: usize) -> bool {
        super::amx::runs(rows)
    }

    #[cfg(target_arch = "x86_64")]
    fn long_products(
        matrix: &super::interleaved::Interleaved<Self>,
        x: &[f32],
        n: usize,
    ) -> Vec<f32> {
        super::amx::matmul_t(matrix, x, n)
    }

    const PAIRS: bool = true;
    // Every decode-sized pass: `examples/kernels 131072 2048` read the weights 10-40% faster
    // four groups at a time for 1 to 8 activation rows.
    const STREAM_ROWS: usize = crate::rowwise::MAX_ROWS;
    // Eight activation rows per call unpack each block once for a pass of 8 rows: a 1024 x
    // 2048 product of 8 rows on one thread, alternating in one process, 0.516 -> 0.432 ms (4 at
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
            unsafe { x86::tile_avxvnni::<A>(tiles, acts) }
        } else {
            // SAFETY: the caller checked AVX2, FMA and F16C.
            unsafe { x86::tile_avx2::<A>(tiles, acts) }
        }
    }
}

/// The x86 kernels: per i32 lane, sums of four 6-bit x 8-bit products (one `vpdpbusd` with
/// VNNI; `maddubs` and `madd` with ones on AVX2, exact since 2 * 63 * 127 fits an i16),
/// accumulated over a sub-block's four runs, then multiplied by the sub-block's scale once.
/// Integer sums are exact, so every kernel gives the portable code's result.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{run, Q8KBlock, D, ROWS, SC, TILE_BYTES};

    macro_rules! tile_body {
        ($tiles:expr, $a:expr, $A:expr, $dp:expr) => {{
            let (tiles, a) = ($tiles, $a);
            let blocks = tiles.len() / TILE_BYTES;
            assert!(a.iter().all(|r| r.len() == blocks));
            let m4 = _mm256_set1_epi8(0x0F);
            let m2 = _mm256_set1_epi8(3);
            let m30 = _mm256_set1_epi8(0x30);
            // Even and odd bytes of 16 (a pair of sub-blocks' scales, `[row][2]`).
            let even = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
            let odd = _mm_setr_epi8(1, 3, 5, 7, 9, 11, 13, 15, -1, -1, -1, -1, -1, -1, -1, -1);
            let mut acc = [_mm256_setzero_ps(); $A];
            for b in 0..blocks {
                // SAFETY: b < blocks; every offset below stays inside the tile.
                unsafe {
                    let t = tiles.as_ptr().add(b * TILE_BYTES);
                    crate::prefetch::ahead(t, TILE_BYTES);
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(D) as *const __m128i));
                    let mut q8 = [std::ptr::null::<i8>(); $A];
                    for j in 0..$A {
                        q8[j] = a[j].get_unchecked(b).qs.as_ptr();
                    }
                    let mut sumi = [_mm256_setzero_si256(); $A];
                    let mut summ = [_mm256_setzero_si256(); $A];
                    // Per sub-block, its scale for each row as i32 lanes.
                    let mut scales = [_mm256_setzero_si256(); 16];
                    for pair in 0..8 {
                        let raw = _mm_loadu_si128(t.add(SC + 16 * pair) as *const __m128i);
                        scales[2 * pair] = _mm256_cvtepi8_epi32(_mm_shuffle_epi8(raw, even));
                        scales[2 * pair + 1] = _mm256_cvtepi8_epi32(_mm_shuffle_epi8(raw, odd));
                        // Scales of sub-blocks 2 * pair and 2 * pair + 1 as [row][2] i16.
                        let sc = _mm256_cvtepi8_epi16(raw);
                        for j in 0..$A {
                            let y = a[j].get_unchecked(b);
                            let bs = (y.bsums[2 * pair] as u16 as i32)
                                | ((y.bsums[2 * pair + 1] as u16 as i32) << 16);
                            summ[j] = _mm256_add_epi32(
                                summ[j],
                                _mm256_madd_epi16(sc, _mm256_set1_epi32(bs)),
                            );
                        }
                    }
                    for h in 0..2 {
                        // Groups 0-3 and 4-7 of a run belong to two sub-blocks.
                        for gh in 0..2 {
                            let mut part = [[_mm256_setzero_si256(); $A]; 4];
                            for g in 4 * gh..4 * gh + 4 {
                                let wl0 = _mm256_loadu_si256(t.add(run(h, g, 0)) as *const __m256i);
                                let wl1 = _mm256_loadu_si256(t.add(run(h, g, 1)) as *const __m256i);
                                let wh = _mm256_loadu_si256(t.add(run(h, g, 2)) as *const __m256i);
                                // High bit pairs 0-1, 2-3, 4-5, 6-7 of each byte, at bits 4-5.
                                let q = [
                                    _mm256_or_si256(
                                        _mm256_and_si256(wl0, m4),
                                        _mm256_slli_epi16(_mm256_and_si256(wh, m2), 4),
                                    ),
                                    _mm256_or_si256(
                                        _mm256_and_si256(wl1, m4),
                                        _mm256_slli_epi16(
                                            _mm256_and_si256(_mm256_srli_epi16(wh, 2), m2),
                                            4,
                                        ),
                                    ),
                                    _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srli_epi16(wl0, 4), m4),
                                        _mm256_and_si256(wh, m30),
                                    ),
                                    _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srli_epi16(wl1, 4), m4),
                                        _mm256_and_si256(_mm256_srli_epi16(wh, 2), m30),
                                    ),
                                ];
                                for (c, &qc) in q.iter().enumerate() {
                                    for j in 0..$A {
                                        // Element 128h + 32c + 4g: four activation bytes.
                                        let p = q8[j].add(128 * h + 32 * c + 4 * g) as *const i32;
                                        let act = _mm256_set1_epi32(p.read_unaligned());
                                        part[c][j] = $dp(part[c][j], qc, act);
                                    }
                                }
                            }
                            for (c, part) in part.iter().enumerate() {
                                let scale = scales[8 * h + 2 * c + gh];
                                for j in 0..$A {
                                    sumi[j] = _mm256_add_epi32(
                                        sumi[j],
                                        _mm256_mullo_epi32(part[j], scale),
                                    );
                                }
                            }
                        }
                    }
                    for j in 0..$A {
                        let y = a[j].get_unchecked(b);
                        let total = _mm256_sub_epi32(sumi[j], _mm256_slli_epi32(summ[j], 5));
                        let d = _mm256_mul_ps(_mm256_set1_ps(y.d), dw);
                        acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(total), acc[j]);
                    }
                }
            }
            crate::quant::interleaved::lanes(acc)
        }};
    }

    /// AVX2.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn tile_avx2<const A: usize>(tiles: &[u8], a: [&[Q8KBlock]; A]) -> [[f32; ROWS]; A] {
        let ones = _mm256_set1_epi16(1);
        tile_body!(tiles, a, A, |s, w, x| _mm256_add_epi32(
            s,
            _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones)
        ))
    }

    /// AVX-512 VNNI on 256-bit vectors (AVX-512VL), 32 vector registers.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub(super) fn tile_avx512<const A: usize>(
        tiles: &[u8],
        a: [&[Q8KBlock]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(tiles, a, A, |s, w, x| _mm256_dpbusd_epi32(s, w, x))
    }

    /// AVX-VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub(super) fn tile_avxvnni<const A: usize>(
        tiles: &[u8],
        a: [&[Q8KBlock]; A],
    ) -> [[f32; ROWS]; A] {
        tile_body!(tiles, a, A, |s, w, x| _mm256_dpbusd_avx_epi32(s, w, x))
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86_pair {
    use std::arch::x86_64::*;

    use super::super::interleaved::pair::{block, blocks, both16, both32, split};
    use super::{run, Q8KBlock, D, ROWS, SC, TILE_BYTES};

    /// The 6-bit values of a run's three 32-byte parts (`ql` with `s` = 0 and 1, `qh`) of two
    /// groups: for `c` in 0..4, positions `128h + 32c + 4g..` of every row, one byte each.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in super::super) fn values(wl0: __m512i, wl1: __m512i, wh: __m512i) -> [__m512i; 4] {
        let (m4, m2, m30) = (
            _mm512_set1_epi8(0x0F),
            _mm512_set1_epi8(3),
            _mm512_set1_epi8(0x30),
        );
        [
            _mm512_or_si512(
                _mm512_and_si512(wl0, m4),
                _mm512_slli_epi16::<4>(_mm512_and_si512(wh, m2)),
            ),
            _mm512_or_si512(
                _mm512_and_si512(wl1, m4),
                _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<2>(wh), m2)),
            ),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(wl0), m4),
                _mm512_and_si512(wh, m30),
            ),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(wl1), m4),
                _mm512_and_si512(_mm512_srli_epi16::<2>(wh), m30),
            ),
        ]
    }

    /// The signed scale of each of the 16 sub-blocks for the 16 rows of two tiles `s` and `u`
    /// (rows of `s` in lanes 0-7, of `u` in 8-15), one i32 lane per row.
    ///
    /// # Safety
    /// `s` and `u` are tiles; the CPU has AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,ssse3")]
    pub(in super::super) unsafe fn sub_scales(s: *const u8, u: *const u8) -> [__m512i; 16] {
        // Even and odd bytes of 16 (a pair of sub-blocks' scales, `[row][2]`).
        let even = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
        let odd = _mm_setr_epi8(1, 3, 5, 7, 9, 11, 13, 15, -1, -1, -1, -1, -1, -1, -1, -1);
        std::array::from_fn(|sub| {
            // SAFETY: the scales are inside both tiles (the caller's guarantee).
            let (rs, ru) = unsafe {
                let at = SC + 16 * (sub / 2);
                (
                    _mm_loadu_si128(s.add(at) as *const __m128i),
                    _mm_loadu_si128(u.add(at) as *const __m128i),
                )
            };
            let m = if sub % 2 == 0 { even } else { odd };
            _mm512_cvtepi8_epi32(_mm_unpacklo_epi64(
                _mm_shuffle_epi8(rs, m),
                _mm_shuffle_epi8(ru, m),
            ))
        })
    }

    /// Two groups of tiles on 512-bit vectors: lanes 0-7 hold `first`'s rows, 8-15 `second`'s,
    /// each lane doing what a lane of `tile_avx512` does, so each row's result is bit for bit
    /// the same (see `q4_k_x8`'s two-group kernel for why).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) fn pairs_avx512<const A: usize, const P: usize>(
        groups: [(&[u8], &[u8]); P],
        a: [&[Q8KBlock]; A],
    ) -> [[[[f32; ROWS]; A]; 2]; P] {
        let blocks = blocks(&groups, TILE_BYTES, a.iter().map(|r| r.len()));
        let mut accs = [[_mm512_setzero_ps(); A]; P];
        for b in 0..blocks {
            for ((first, second), acc) in groups.iter().zip(accs.iter_mut()) {
                // SAFETY: b < blocks; every offset below stays inside the two tiles.
                unsafe {
                    let (s, u) = block(first, second, b, TILE_BYTES);
                    let both32 = |at: usize| both32(s, u, at);
                    let both16 = |at: usize| both16(s, u, at);
                    let dw = _mm512_cvtph_ps(both16(D));
                    let mut q8 = [std::ptr::null::<i8>(); A];
                    for j in 0..A {
                        q8[j] = a[j].get_unchecked(b).qs.as_ptr();
                    }
                    let mut sumi = [_mm512_setzero_si512(); A];
                    let mut summ = [_mm512_setzero_si512(); A];
                    let scales = sub_scales(s, u);
                    // Two sub-blocks' scales times their activation sums per `vpdpwssd`, the
                    // two sums read as one 32-bit word.
                    for pair in 0..8 {
                        let sc = _mm512_cvtepi8_epi16(both16(SC + 16 * pair));
                        for j in 0..A {
                            let sums = a[j].get_unchecked(b).bsums.as_ptr() as *const i32;
                            let bs = _mm512_set1_epi32(sums.add(pair).read_unaligned());
                            summ[j] = _mm512_dpwssd_epi32(summ[j], sc, bs);
                        }
                    }
                    for h in 0..2 {
                        for gh in 0..2 {
                            let mut part = [[_mm512_setzero_si512(); A]; 4];
                            for g in 4 * gh..4 * gh + 4 {
                                let wl0 = both32(run(h, g, 0));
                                let wl1 = both32(run(h, g, 1));
                                let wh = both32(run(h, g, 2));
                                let q = values(wl0, wl1, wh);
                                for (c, &qc) in q.iter().enumerate() {
                                    for j in 0..A {
                                        let p = q8[j].add(128 * h + 32 * c + 4 * g) as *const i32;
                                        let act = _mm512_set1_epi32(p.read_unaligned());
                                        part[c][j] = _mm512_dpbusd_epi32(part[c][j], qc, act);
                                    }
                                }
                            }
                            for (c, part) in part.iter().enumerate() {
                                let scale = scales[8 * h + 2 * c + gh];
                                for j in 0..A {
                                    sumi[j] = _mm512_add_epi32(
                                        sumi[j],
                                        _mm512_mullo_epi32(part[j], scale),
                                    );
                                }
                            }
                        }
                    }
                    for j in 0..A {
                        let y = a[j].get_unchecked(b);
                        let total = _mm512_sub_epi32(sumi[j], _mm512_slli_epi32::<5>(summ[j]));
                        let d = _mm512_mul_ps(_mm512_set1_ps(y.d), dw);
                        acc[j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(total), acc[j]);
                    }
                }
            }
        }
        accs.map(|acc| split(acc))
    }
}

#[cfg(test)]
mod tests {
    use super::super::interleaved::testing;
    use super::super::q6_k::tests::random_q6_k;
    use super::*;

    #[test]
    fn products_of_two_groups_at_once_match_the_plain_layout() {
        // Where the CPU has AVX-512BW and VNNI, matmul_t takes 8 groups four at a time, a
        // quarter of the matrix apart, and 6 groups in pairs.
        testing::products_match_the_plain_layout::<Q6KTiles>(random_q6_k(64, 768, 11), 64, 768);
        testing::products_match_the_plain_layout::<Q6KTiles>(random_q6_k(48, 512, 12), 48, 512);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_two_group_kernel_equals_the_portable_code_for_each_group() {
        testing::two_group_kernel_equals_one_group::<Q6KTiles>(&random_q6_k(16, 1024, 5), 1024);
    }

    #[test]
    fn rows_rebuild_the_plain_blocks() {
        testing::rows_rebuild_the_plain_blocks::<Q6KTiles>(
            &random_q6_k(16, 512, 7),
            16,
            512,
            |a, b| a == b,
        );
    }

    #[test]
    fn products_match_the_plain_layout_and_simd_equals_portable() {
        testing::products_match_the_plain_layout::<Q6KTiles>(random_q6_k(24, 768, 9), 24, 768);
    }

    #[test]
    fn shapes_it_cannot_tile_are_errors() {
        testing::shapes_it_cannot_tile_are_errors::<Q6KTiles>(&random_q6_k(12, 256, 1));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_kernel_equals_the_portable_code() {
        testing::every_kernel_equals_the_portable_code::<Q6KTiles>(
            &random_q6_k(8, 768, 3),
            768,
            &[
                (Isa::Avx2, x86::tile_avx2::<2>),
                (Isa::AvxVnni, x86::tile_avxvnni::<2>),
                (Isa::Avx512Vnni, x86::tile_avx512::<2>),
            ],
        );
    }
}
