//! Q4_K weights of eight rows interleaved, for decode-sized products with fewer instructions
//! per weight than the plain layout.
//!
//! In the plain layout ([`super::q4_k`], llama.cpp's `ggml_vec_dot_q4_K_q8_K`) every weight
//! row is a separate dot product: its scales are unpacked, its partial sums reduced across
//! lanes and its activations loaded again for each row. Here eight rows are stored together
//! (as llama.cpp's repacked `q4_K_8x8` does, in our own layout): a 32-byte load holds four
//! consecutive nibble pairs of each of the eight rows, the four activation bytes they meet are
//! broadcast to all lanes, and each 32-bit lane accumulates one row. Scales and mins are
//! stored per sub-block for the eight rows, `d` and `dmin` as f16; a tile is 1184 bytes
//! against 1152 for eight plain blocks.
//!
//! Arithmetic, per row and block: `sumi = sum_sub(scale * sum(q4 * q8))` and
//! `summ = sum_sub(min * sum(q8))` are exact integers; `acc = fma(d_x * d, sumi, acc)` and
//! `acc_m = fma(-d_x * dmin, summ, acc_m)` in f32, the result `acc + acc_m`. The SIMD kernel
//! and the portable code do exactly these operations (lane `r` is row `r`), so they agree bit
//! for bit, and a row's result depends on nothing else in the pass.

use half::f16;

use super::q4_k::{scales_mins, Q4K};
use super::q8_k::{self, Q8KBlock, QK_K};
use super::{Format, PackedMatrix};
use crate::error::{EngineError, Result};
use crate::rowwise::simd_available;

/// Rows per tile.
pub const ROWS: usize = 8;
const D: usize = 0; // f16 [8]
const DMIN: usize = 16; // f16 [8]
const SC: usize = 32; // u8 [sub 8][row 8]
const MN: usize = 96; // u8 [pair 4][row 8][2]
const QS: usize = 160; // u8 [chunk 4][group 8][row 8][4]
/// Bytes of one tile: one block of 256 weights of each of 8 rows.
pub const TILE_BYTES: usize = 1184;

/// A Q4_K matrix whose row count is a multiple of 8, in tiles of 8 rows.
#[derive(Debug, Clone)]
pub struct Q4KInterleaved {
    tiles: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl Q4KInterleaved {
    /// Interleave plain GGML Q4_K bytes of a `(rows, cols)` matrix; `rows` a multiple of 8.
    pub fn new(data: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let bad = |problem: String| EngineError::InvalidRequest {
            field: "q4_k".into(),
            problem,
        };
        if !cols.is_multiple_of(QK_K) || !rows.is_multiple_of(ROWS) {
            return Err(bad(format!(
                "a ({rows}, {cols}) matrix cannot be interleaved (rows a multiple of {ROWS}, \
                 columns of {QK_K})"
            )));
        }
        let blocks = cols / QK_K;
        let row_bytes = blocks * Q4K::BLOCK_BYTES;
        if data.len() != rows * row_bytes {
            return Err(bad(format!(
                "{} bytes for a ({rows}, {cols}) matrix, expected {}",
                data.len(),
                rows * row_bytes
            )));
        }
        let mut tiles = vec![0u8; rows / ROWS * blocks * TILE_BYTES];
        for (t, tile) in tiles.chunks_exact_mut(TILE_BYTES).enumerate() {
            let (group, b) = (t / blocks, t % blocks);
            for r in 0..ROWS {
                let at = (group * ROWS + r) * row_bytes + b * Q4K::BLOCK_BYTES;
                let raw = &data[at..at + Q4K::BLOCK_BYTES];
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
        }
        Ok(Self { tiles, rows, cols })
    }

    fn blocks(&self) -> usize {
        self.cols / QK_K
    }

    /// The plain 144-byte Q4_K block `b` of row `r`, rebuilt from its tile.
    fn plain_block(&self, r: usize, b: usize) -> [u8; 144] {
        let (group, lane) = (r / ROWS, r % ROWS);
        let tile = &self.tiles[(group * self.blocks() + b) * TILE_BYTES..][..TILE_BYTES];
        let mut raw = [0u8; 144];
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
        raw
    }

    /// Portable dot product of row `r` and one activation row (the module's arithmetic).
    fn dot(&self, r: usize, a: &[Q8KBlock]) -> f32 {
        let (group, lane) = (r / ROWS, r % ROWS);
        let (mut acc, mut acc_m) = (0f32, 0f32);
        for (b, y) in a.iter().enumerate() {
            let tile = &self.tiles[(group * self.blocks() + b) * TILE_BYTES..][..TILE_BYTES];
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
}

impl PackedMatrix for Q4KInterleaved {
    fn format(&self) -> &'static str {
        "Q4_K"
    }

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (b, out) in out.chunks_exact_mut(QK_K).enumerate() {
            Q4K::dequantize_block(&self.plain_block(r, b), out);
        }
    }

    fn matmul_t(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "activations are not (n, cols)");
        let acts: Vec<Vec<Q8KBlock>> = x.chunks_exact(self.cols).map(q8_k::quantize).collect();
        let group_bytes = self.blocks() * TILE_BYTES;
        let simd = simd_available();
        let mut out_t = vec![0f32; self.rows * n]; // (rows, n)
        crate::pool::for_each_chunk_mut(&mut out_t, ROWS * n, |group, out| {
            let tiles = &self.tiles[group * group_bytes..(group + 1) * group_bytes];
            group_products(self, group, tiles, &acts, out, simd);
        });
        super::transpose(out_t, self.rows, n)
    }
}

/// `out[r * n + a]` for the 8 rows of `group` and every activation row.
fn group_products(
    m: &Q4KInterleaved,
    group: usize,
    tiles: &[u8],
    acts: &[Vec<Q8KBlock>],
    out: &mut [f32],
    simd: bool,
) {
    let n = acts.len();
    #[cfg(target_arch = "x86_64")]
    if simd {
        for (a0, pair) in acts.chunks(2).enumerate().map(|(i, p)| (2 * i, p)) {
            // SAFETY: `simd` is only true when `simd_available()` saw AVX2, FMA and F16C.
            let lanes: Vec<[f32; ROWS]> = unsafe {
                match pair {
                    [a] => avx2::tile::<1>(tiles, [a]).to_vec(),
                    [a, b] => avx2::tile::<2>(tiles, [a, b]).to_vec(),
                    _ => unreachable!(),
                }
            };
            for (j, lane) in lanes.iter().enumerate() {
                for (r, &v) in lane.iter().enumerate() {
                    out[r * n + a0 + j] = v;
                }
            }
        }
        return;
    }
    let _ = (simd, tiles);
    for r in 0..ROWS {
        for (j, a) in acts.iter().enumerate() {
            out[r * n + j] = m.dot(group * ROWS + r, a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Q8KBlock, D, DMIN, MN, QS, ROWS, SC, TILE_BYTES};

    /// The 8 rows of one group of tiles times `A` activation rows: `[activation][row]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn tile<const A: usize>(tiles: &[u8], a: [&Vec<Q8KBlock>; A]) -> [[f32; ROWS]; A] {
        let blocks = tiles.len() / TILE_BYTES;
        assert!(a.iter().all(|r| r.len() == blocks));
        let m4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); A];
        let mut acc_m = [_mm256_setzero_ps(); A];
        for b in 0..blocks {
            // SAFETY: b < blocks; every offset below stays inside the tile.
            unsafe {
                let t = tiles.as_ptr().add(b * TILE_BYTES);
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(D) as *const __m128i));
                let dminw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(DMIN) as *const __m128i));
                let mut q8 = [std::ptr::null::<i8>(); A];
                for j in 0..A {
                    q8[j] = a[j].get_unchecked(b).qs.as_ptr();
                }
                let mut sumi = [_mm256_setzero_si256(); A];
                for c in 0..4 {
                    // Pair sums of at most 2 * 15 * 127, eight of them: no i16 overflow.
                    let mut lo = [_mm256_setzero_si256(); A];
                    let mut hi = [_mm256_setzero_si256(); A];
                    for g in 0..8 {
                        let w = _mm256_loadu_si256(t.add(QS + (c * 8 + g) * 32) as *const __m256i);
                        let wl = _mm256_and_si256(w, m4);
                        let wh = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
                        for j in 0..A {
                            let p = q8[j].add(64 * c + 4 * g);
                            let al = _mm256_set1_epi32((p as *const i32).read_unaligned());
                            let ah = _mm256_set1_epi32((p.add(32) as *const i32).read_unaligned());
                            lo[j] = _mm256_add_epi16(lo[j], _mm256_maddubs_epi16(wl, al));
                            hi[j] = _mm256_add_epi16(hi[j], _mm256_maddubs_epi16(wh, ah));
                        }
                    }
                    let sl = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        t.add(SC + 2 * c * ROWS) as *const __m128i
                    ));
                    let sh = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        t.add(SC + (2 * c + 1) * ROWS) as *const __m128i
                    ));
                    for j in 0..A {
                        let l = _mm256_mullo_epi32(_mm256_madd_epi16(lo[j], ones), sl);
                        let h = _mm256_mullo_epi32(_mm256_madd_epi16(hi[j], ones), sh);
                        sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(l, h));
                    }
                }
                for j in 0..A {
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
        let mut out = [[0f32; ROWS]; A];
        for j in 0..A {
            // SAFETY: 8 f32 fit a row of `out`.
            unsafe { _mm256_storeu_ps(out[j].as_mut_ptr(), _mm256_add_ps(acc[j], acc_m[j])) };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::q4_k::tests::random_q4_k;
    use super::super::BlockMatrix;
    use super::*;
    use crate::test_support::random;

    #[test]
    fn rows_rebuild_the_plain_blocks() {
        let (rows, cols) = (16, 512);
        let data = random_q4_k(rows, cols, 7);
        let m = Q4KInterleaved::new(&data, rows, cols).unwrap();
        let row_bytes = cols / QK_K * 144;
        for r in 0..rows {
            for b in 0..cols / QK_K {
                let plain = &data[r * row_bytes + b * 144..][..144];
                // The scale bytes may differ in bits the unpacking ignores; compare unpacked.
                let rebuilt = m.plain_block(r, b);
                assert_eq!(rebuilt[..4], plain[..4]);
                assert_eq!(scales_mins(&rebuilt[4..16]), scales_mins(&plain[4..16]));
                assert_eq!(rebuilt[16..], plain[16..]);
            }
        }
    }

    #[test]
    fn products_match_the_plain_layout_and_simd_equals_portable() {
        let (rows, cols, n) = (24, 768, 5);
        let data = random_q4_k(rows, cols, 9);
        let m = Q4KInterleaved::new(&data, rows, cols).unwrap();
        let plain = BlockMatrix::<Q4K>::new(data, rows, cols).unwrap();
        let x = random(n * cols, 10);
        let ours = m.matmul_t(&x, n);
        let theirs = plain.matmul_t(&x, n);
        let acts: Vec<Vec<Q8KBlock>> = x.chunks_exact(cols).map(q8_k::quantize).collect();
        for i in 0..n {
            for r in 0..rows {
                let (a, b) = (ours[i * rows + r], theirs[i * rows + r]);
                // Same integers, float steps in another order.
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "({i}, {r}): {a} vs {b}"
                );
                assert_eq!(a.to_bits(), m.dot(r, &acts[i]).to_bits(), "({i}, {r})");
            }
        }
        // A row's product is the same alone and in a batch of any size.
        for k in 1..=n {
            assert_eq!(m.matmul_t(&x[..k * cols], k)[..], ours[..k * rows]);
        }
        let mut deq = vec![f32::NAN; cols];
        let mut want = vec![f32::NAN; cols];
        for r in 0..rows {
            m.dequantize_row(r, &mut deq);
            plain.dequantize_row(r, &mut want);
            assert_eq!(deq, want, "row {r}");
        }
    }

    #[test]
    fn shapes_it_cannot_tile_are_errors() {
        let data = random_q4_k(12, 256, 1);
        assert!(Q4KInterleaved::new(&data, 12, 256).is_err());
        assert!(Q4KInterleaved::new(&data[..100], 8, 256).is_err());
    }
}
