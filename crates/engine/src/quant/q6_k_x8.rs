//! Q6_K weights of eight rows interleaved, for decode-sized products (the layout idea of
//! [`super::q4_k_x8`] for Q6_K).
//!
//! A tile holds one block of 256 weights of each of 8 rows with nothing added: the low
//! nibbles (`ql`) and high bit pairs (`qh`) in runs of four bytes per row, so that a 32-byte
//! load has the same four positions of the eight rows, the sixteen scales as `[pair][row][2]`,
//! and the eight f16 `d`. Activations are broadcast four bytes at a time, each 32-bit lane
//! accumulates one row.
//!
//! Arithmetic, per row and block: `sumi = sum_sub(scale * sum(q * q8))` with the unsigned
//! 6-bit `q`, `summ = sum_sub(scale * bsum)`, then `acc = fma(d_x * d, sumi - 32 * summ,
//! acc)` in f32: the integers are exact (|sumi| < 2^28), the float steps the same in the SIMD
//! kernel and the portable code, so they agree bit for bit.

use half::f16;

use super::q6_k::Q6K;
use super::q8_k::{self, Q8KBlock, QK_K};
use super::{Format, PackedMatrix};
use crate::error::{EngineError, Result};
use crate::rowwise::simd_available;

/// Rows per tile.
pub const ROWS: usize = 8;
const QL: usize = 0; // u8 [half 2][s 2][group 8][row 8][4]
const QH: usize = 1024; // u8 [half 2][group 8][row 8][4]
const SC: usize = 1536; // i8 [pair 8][row 8][2]
const D: usize = 1664; // f16 [8]
/// Bytes of one tile: exactly eight Q6_K blocks.
pub const TILE_BYTES: usize = 1680;

/// A Q6_K matrix whose row count is a multiple of 8, in tiles of 8 rows.
#[derive(Debug, Clone)]
pub struct Q6KInterleaved {
    tiles: Vec<u8>,
    rows: usize,
    cols: usize,
}

/// Plain-block offsets of the tile's regions for row-local byte `(half, s, group, j)` etc.
fn ql_at(h: usize, s: usize, g: usize, j: usize) -> usize {
    64 * h + 32 * s + 4 * g + j
}
fn qh_at(h: usize, g: usize, j: usize) -> usize {
    128 + 32 * h + 4 * g + j
}

impl Q6KInterleaved {
    /// Interleave plain GGML Q6_K bytes of a `(rows, cols)` matrix; `rows` a multiple of 8.
    pub fn new(data: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let bad = |problem: String| EngineError::InvalidRequest {
            field: "q6_k".into(),
            problem,
        };
        if !cols.is_multiple_of(QK_K) || !rows.is_multiple_of(ROWS) {
            return Err(bad(format!(
                "a ({rows}, {cols}) matrix cannot be interleaved (rows a multiple of {ROWS}, \
                 columns of {QK_K})"
            )));
        }
        let blocks = cols / QK_K;
        let row_bytes = blocks * Q6K::BLOCK_BYTES;
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
                let at = (group * ROWS + r) * row_bytes + b * Q6K::BLOCK_BYTES;
                let raw = &data[at..at + Q6K::BLOCK_BYTES];
                // Runs of four bytes (ql, qh), then the scales and d.
                for h in 0..2 {
                    for g in 0..8 {
                        for s in 0..2 {
                            let to = QL + (((h * 2 + s) * 8 + g) * ROWS + r) * 4;
                            let from = ql_at(h, s, g, 0);
                            tile[to..to + 4].copy_from_slice(&raw[from..from + 4]);
                        }
                        let to = QH + ((h * 8 + g) * ROWS + r) * 4;
                        let from = qh_at(h, g, 0);
                        tile[to..to + 4].copy_from_slice(&raw[from..from + 4]);
                    }
                }
                for sub in 0..16 {
                    tile[SC + ((sub / 2) * ROWS + r) * 2 + sub % 2] = raw[192 + sub];
                }
                tile[D + 2 * r..D + 2 * r + 2].copy_from_slice(&raw[208..210]);
            }
        }
        Ok(Self { tiles, rows, cols })
    }

    fn blocks(&self) -> usize {
        self.cols / QK_K
    }

    fn tile(&self, r: usize, b: usize) -> &[u8] {
        &self.tiles[((r / ROWS) * self.blocks() + b) * TILE_BYTES..][..TILE_BYTES]
    }

    /// The plain 210-byte block `b` of row `r`, rebuilt from its tile.
    fn plain_block(&self, r: usize, b: usize) -> [u8; 210] {
        let tile = self.tile(r, b);
        let mut raw = [0u8; 210];
        for (to, from) in tile_map(r % ROWS) {
            raw[from] = tile[to];
        }
        raw
    }

    /// Portable dot product of row `r` and one activation row (the module's arithmetic).
    fn dot(&self, r: usize, a: &[Q8KBlock]) -> f32 {
        let mut acc = 0f32;
        for (b, y) in a.iter().enumerate() {
            let raw = self.plain_block(r, b);
            let (mut sumi, mut summ) = (0i32, 0i32);
            for sub in 0..16 {
                let scale = raw[192 + sub] as i8 as i32;
                let mut s = 0i32;
                for e in 16 * sub..16 * (sub + 1) {
                    s += q6(&raw, e) * y.qs[e] as i32;
                }
                sumi += scale * s;
                summ += scale * y.bsums[sub] as i32;
            }
            let d = y.d * f16::from_le_bytes([raw[208], raw[209]]).to_f32();
            acc = d.mul_add((sumi - 32 * summ) as f32, acc);
        }
        acc
    }
}

/// The unsigned 6-bit value of element `e` of a plain Q6_K block.
fn q6(raw: &[u8], e: usize) -> i32 {
    let (h, c, l) = (e / 128, (e % 128) / 32, e % 32);
    let ql = raw[64 * h + 32 * (c & 1) + l];
    let low = if c < 2 { ql & 0x0F } else { ql >> 4 };
    let high = (raw[128 + 32 * h + l] >> (2 * c)) & 3;
    (low | (high << 4)) as i32
}

/// `(tile offset, plain-block offset)` of every byte of row `r` in a tile.
fn tile_map(r: usize) -> impl Iterator<Item = (usize, usize)> {
    let ql = (0..2).flat_map(move |h| {
        (0..2).flat_map(move |s| {
            (0..8).flat_map(move |g| {
                (0..4).map(move |j| {
                    (
                        QL + (((h * 2 + s) * 8 + g) * ROWS + r) * 4 + j,
                        ql_at(h, s, g, j),
                    )
                })
            })
        })
    });
    let qh = (0..2).flat_map(move |h| {
        (0..8).flat_map(move |g| {
            (0..4).map(move |j| (QH + ((h * 8 + g) * ROWS + r) * 4 + j, qh_at(h, g, j)))
        })
    });
    let sc = (0..16).map(move |sub| (SC + ((sub / 2) * ROWS + r) * 2 + sub % 2, 192 + sub));
    let d = (0..2).map(move |k| (D + 2 * r + k, 208 + k));
    ql.chain(qh).chain(sc).chain(d)
}

impl PackedMatrix for Q6KInterleaved {
    fn format(&self) -> &'static str {
        "Q6_K"
    }

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (b, out) in out.chunks_exact_mut(QK_K).enumerate() {
            Q6K::dequantize_block(&self.plain_block(r, b), out);
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
    m: &Q6KInterleaved,
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

    use super::{Q8KBlock, D, QH, QL, ROWS, SC, TILE_BYTES};

    /// The 8 rows of one group of tiles times `A` activation rows: `[activation][row]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn tile<const A: usize>(tiles: &[u8], a: [&Vec<Q8KBlock>; A]) -> [[f32; ROWS]; A] {
        let blocks = tiles.len() / TILE_BYTES;
        assert!(a.iter().all(|r| r.len() == blocks));
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(3);
        let mut acc = [_mm256_setzero_ps(); A];
        for b in 0..blocks {
            // SAFETY: b < blocks; every offset below stays inside the tile.
            unsafe {
                let t = tiles.as_ptr().add(b * TILE_BYTES);
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(t.add(D) as *const __m128i));
                let mut q8 = [std::ptr::null::<i8>(); A];
                for j in 0..A {
                    q8[j] = a[j].get_unchecked(b).qs.as_ptr();
                }
                let mut sumi = [_mm256_setzero_si256(); A];
                let mut summ = [_mm256_setzero_si256(); A];
                // Per sub-block, its scale for each row, duplicated over the row's two 16-bit
                // lanes (the pair sums of `maddubs`).
                let mut scales = [_mm256_setzero_si256(); 16];
                for pair in 0..8 {
                    // Scales of sub-blocks 2 * pair and 2 * pair + 1 as [row][2] i16.
                    let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(
                        t.add(SC + 16 * pair) as *const __m128i
                    ));
                    scales[2 * pair] =
                        _mm256_shufflehi_epi16(_mm256_shufflelo_epi16(sc, 0xA0), 0xA0);
                    scales[2 * pair + 1] =
                        _mm256_shufflehi_epi16(_mm256_shufflelo_epi16(sc, 0xF5), 0xF5);
                    for j in 0..A {
                        let y = a[j].get_unchecked(b);
                        let bs = (y.bsums[2 * pair] as u16 as i32)
                            | ((y.bsums[2 * pair + 1] as u16 as i32) << 16);
                        summ[j] =
                            _mm256_add_epi32(summ[j], _mm256_madd_epi16(sc, _mm256_set1_epi32(bs)));
                    }
                }
                for h in 0..2 {
                    for g in 0..8 {
                        let wl0 = _mm256_loadu_si256(
                            t.add(QL + ((h * 2) * 8 + g) * 32) as *const __m256i
                        );
                        let wl1 = _mm256_loadu_si256(
                            t.add(QL + ((h * 2 + 1) * 8 + g) * 32) as *const __m256i
                        );
                        let wh = _mm256_loadu_si256(t.add(QH + (h * 8 + g) * 32) as *const __m256i);
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
                                _mm256_slli_epi16(
                                    _mm256_and_si256(_mm256_srli_epi16(wh, 4), m2),
                                    4,
                                ),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(wl1, 4), m4),
                                _mm256_slli_epi16(
                                    _mm256_and_si256(_mm256_srli_epi16(wh, 6), m2),
                                    4,
                                ),
                            ),
                        ];
                        for (c, &qc) in q.iter().enumerate() {
                            // Element 128h + 32c + 4g + j: sub-block 8h + 2c + g / 4.
                            let sub = 8 * h + 2 * c + g / 4;
                            let scale = scales[sub];
                            for j in 0..A {
                                let p = q8[j].add(128 * h + 32 * c + 4 * g) as *const i32;
                                let act = _mm256_set1_epi32(p.read_unaligned());
                                // 6-bit x 8-bit pairs: at most 2 * 63 * 127, no overflow.
                                let p16 = _mm256_maddubs_epi16(qc, act);
                                sumi[j] = _mm256_add_epi32(sumi[j], _mm256_madd_epi16(p16, scale));
                            }
                        }
                    }
                }
                for j in 0..A {
                    let y = a[j].get_unchecked(b);
                    let total = _mm256_sub_epi32(sumi[j], _mm256_slli_epi32(summ[j], 5));
                    let d = _mm256_mul_ps(_mm256_set1_ps(y.d), dw);
                    acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(total), acc[j]);
                }
            }
        }
        let mut out = [[0f32; ROWS]; A];
        for j in 0..A {
            // SAFETY: 8 f32 fit a row of `out`.
            unsafe { _mm256_storeu_ps(out[j].as_mut_ptr(), acc[j]) };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::q6_k::tests::random_q6_k;
    use super::super::BlockMatrix;
    use super::*;
    use crate::test_support::random;

    #[test]
    fn rows_rebuild_the_plain_blocks() {
        let (rows, cols) = (16, 512);
        let data = random_q6_k(rows, cols, 7);
        let m = Q6KInterleaved::new(&data, rows, cols).unwrap();
        let row_bytes = cols / QK_K * 210;
        for r in 0..rows {
            for b in 0..cols / QK_K {
                assert_eq!(
                    m.plain_block(r, b)[..],
                    data[r * row_bytes + b * 210..][..210]
                );
            }
        }
    }

    #[test]
    fn products_match_the_plain_layout_and_simd_equals_portable() {
        let (rows, cols, n) = (24, 768, 5);
        let data = random_q6_k(rows, cols, 9);
        let m = Q6KInterleaved::new(&data, rows, cols).unwrap();
        let plain = BlockMatrix::<Q6K>::new(data, rows, cols).unwrap();
        let x = random(n * cols, 10);
        let ours = m.matmul_t(&x, n);
        let theirs = plain.matmul_t(&x, n);
        let acts: Vec<Vec<Q8KBlock>> = x.chunks_exact(cols).map(q8_k::quantize).collect();
        for i in 0..n {
            for r in 0..rows {
                let (a, b) = (ours[i * rows + r], theirs[i * rows + r]);
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "({i}, {r}): {a} vs {b}"
                );
                assert_eq!(a.to_bits(), m.dot(r, &acts[i]).to_bits(), "({i}, {r})");
            }
        }
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
        let data = random_q6_k(12, 256, 1);
        assert!(Q6KInterleaved::new(&data, 12, 256).is_err());
        assert!(Q6KInterleaved::new(&data[..100], 8, 256).is_err());
    }
}
