//! Weight matrices stored eight rows at a time, for decode-sized products with fewer
//! instructions per weight than the plain GGML layout.
//!
//! In the plain layout every weight row is a separate dot product: its scales are unpacked,
//! its partial sums reduced across lanes and the activations loaded again for each row. A tile
//! here holds one block of each of eight rows (as llama.cpp's repacked `*_8x8` formats do, in
//! layouts of our own): a 32-byte load holds the same four positions of the eight rows, the
//! four activation bytes they meet are broadcast to all lanes, and each 32-bit lane
//! accumulates one row. Each format ([`super::q4_1_x8`], [`super::q8_0_x8`],
//! [`super::q4_k_x8`], [`super::q6_k_x8`]) says how its blocks are laid out in a tile and
//! computes them; this module does the rest. A row's result
//! depends on nothing else in the pass, and the SIMD kernels and the portable code do the same
//! operations (tested), so batched and speculative decoding keep their exactness.

use std::marker::PhantomData;

use super::{Format, PackedMatrix};
use crate::error::{EngineError, Result};
use crate::rowwise::simd_available;

/// Rows per tile.
pub const ROWS: usize = 8;

/// The activation blocks of a tiled format.
pub type Act<T> = <<T as RowTiles>::Plain as Format>::Act;

/// The x86 instruction sets the tile formats have kernels for, beyond AVX2 + FMA + F16C (which
/// every SIMD path needs: [`simd_available`]).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX2, FMA and F16C only (the kernels' fallback; named by their tests).
    #[cfg_attr(not(test), expect(dead_code))]
    Avx2,
    /// AVX-VNNI: `vpdpbusd` on 256-bit vectors, 16 registers.
    AvxVnni,
    /// AVX-512 VNNI with AVX-512VL: `vpdpbusd` on 256-bit vectors, 32 registers.
    Avx512Vnni,
}

#[cfg(target_arch = "x86_64")]
impl Isa {
    /// Whether this CPU runs kernels compiled for it (AVX2, FMA and F16C included).
    pub(crate) fn available(self) -> bool {
        use std::arch::is_x86_feature_detected as has;
        simd_available()
            && match self {
                Isa::Avx2 => true,
                Isa::AvxVnni => has!("avxvnni"),
                Isa::Avx512Vnni => has!("avx512f") && has!("avx512vl") && has!("avx512vnni"),
            }
    }
}

/// The result of a tile kernel from its accumulators: lane `r` of `acc[j]` is row `r`'s
/// product with activation row `j`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn lanes<const A: usize>(acc: [std::arch::x86_64::__m256; A]) -> [[f32; ROWS]; A] {
    // SAFETY: an __m256 is eight f32 lanes in order, 32 bytes like [f32; ROWS].
    acc.map(|v| unsafe { std::mem::transmute::<std::arch::x86_64::__m256, [f32; ROWS]>(v) })
}

/// A block format laid out eight rows to a tile.
pub trait RowTiles: Send + Sync + std::fmt::Debug + 'static {
    /// The plain GGML format.
    type Plain: Format;
    /// Bytes of one tile (one block of each of the 8 rows).
    const TILE_BYTES: usize;

    /// Write row `r`'s plain block into `tile`.
    fn interleave(tile: &mut [u8], r: usize, plain: &[u8]);
    /// Row `r`'s plain block from `tile`, into `plain`.
    fn plain_block(tile: &[u8], r: usize, plain: &mut [u8]);
    /// Row `r` of a group (`tiles`: its tiles, block after block) times one activation row,
    /// portable code.
    fn dot(tiles: &[u8], r: usize, a: &[Act<Self>]) -> f32;
    /// Activation rows [`Self::rows`] takes at once on CPUs with AVX-512 VNNI (32 vector
    /// registers): 2, or 4 where the format's accumulators for 4 rows fit them.
    const AVX512_ACTS: usize = 2;
    /// The 8 rows of a group times `A` (1 to [`Self::AVX512_ACTS`]; at most 2 without
    /// AVX-512) activation rows, SIMD: `[activation][row]`.
    ///
    /// # Safety
    /// Only called when [`simd_available`] is true.
    #[cfg(target_arch = "x86_64")]
    unsafe fn rows<const A: usize>(tiles: &[u8], acts: [&[Act<Self>]; A]) -> [[f32; ROWS]; A];
    /// Whether [`Self::long_products`] runs on this CPU for a matrix of `rows` rows.
    fn has_long_products(rows: usize) -> bool {
        let _ = rows;
        false
    }
    /// `x (n, cols)` times `matrix` transposed, `(n, rows)`, for passes of more than
    /// [`crate::rowwise::MAX_ROWS`] rows (prompt prefill), bit for bit what [`Self::rows`]
    /// gives. Only called when [`Self::has_long_products`].
    fn long_products(matrix: &Interleaved<Self>, x: &[f32], n: usize) -> Vec<f32>
    where
        Self: Sized,
    {
        let _ = (matrix, x, n);
        unreachable!("{} has no long-pass kernel", Self::Plain::NAME)
    }
    /// Whether the format has [`Self::rows_pairs`].
    const PAIRS: bool = false;
    /// Most activation rows of a pass that reads the weights as [`STREAM_PAIRS`] pairs at once
    /// (see there; formats with [`Self::PAIRS`] only).
    const STREAM_ROWS: usize = 1;
    /// Activation rows per call of those kernels (1 to 8). More rows per call unpack each
    /// block of weights fewer times (the unpacking is shared by the rows of a call), so 8 where
    /// the kernel still runs well with its accumulators partly on the stack.
    const STREAM_STEP: usize = 1;
    /// `P` pairs of groups, each pair on 512-bit vectors (the first group's rows in lanes 0-7,
    /// the second's in 8-15), times `A` (1 to [`Self::AVX512_ACTS`], or to
    /// [`Self::STREAM_STEP`] for the side-by-side passes) activation rows:
    /// `[pair][group][activation][row]`, bit for bit what [`Self::rows`] gives for each group
    /// (every lane does the same arithmetic). The pairs advance block by block together, so
    /// `2 P` runs of weights are read side by side ([`STREAM_PAIRS`]).
    ///
    /// # Safety
    /// Only called when [`Self::PAIRS`] and [`pairs_available`] are true.
    #[cfg(target_arch = "x86_64")]
    unsafe fn rows_pairs<const A: usize, const P: usize>(
        groups: [(&[u8], &[u8]); P],
        acts: [&[Act<Self>]; A],
    ) -> [[[[f32; ROWS]; A]; 2]; P] {
        let _ = (groups, acts);
        unreachable!("{} has no two-group kernel", Self::Plain::NAME)
    }
}

/// Pairs of groups that decode-sized passes ([`RowTiles::STREAM_ROWS`]) read side by side: four
/// groups a quarter of the matrix apart, so that each of the pool's threads reads four runs of
/// weights at once instead of one ([`crate::prefetch::side_by_side`]).
pub(crate) const STREAM_PAIRS: usize = 2;

/// Whether this CPU runs the two-group kernels ([`RowTiles::rows_pairs`]): AVX-512 VNNI with
/// AVX-512BW.
#[cfg(target_arch = "x86_64")]
pub(crate) fn pairs_available() -> bool {
    Isa::Avx512Vnni.available() && std::arch::is_x86_feature_detected!("avx512bw")
}

/// A `(rows, cols)` matrix in tiles of 8 rows; `rows` a multiple of 8.
#[derive(Debug, Clone)]
pub struct Interleaved<T: RowTiles> {
    tiles: Vec<u8>,
    rows: usize,
    cols: usize,
    _format: PhantomData<T>,
}

impl<T: RowTiles> Interleaved<T> {
    /// Interleave plain GGML bytes of a `(rows, cols)` matrix.
    pub fn new(data: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let name = T::Plain::NAME;
        let bad = |problem: String| EngineError::InvalidRequest {
            field: name.to_lowercase(),
            problem,
        };
        let block = T::Plain::BLOCK;
        if !cols.is_multiple_of(block) || !rows.is_multiple_of(ROWS) {
            return Err(bad(format!(
                "a ({rows}, {cols}) {name} matrix cannot be interleaved (rows a multiple of \
                 {ROWS}, columns of {block})"
            )));
        }
        let blocks = cols / block;
        let row_bytes = blocks * T::Plain::BLOCK_BYTES;
        if data.len() != rows * row_bytes {
            return Err(bad(format!(
                "{} bytes for a ({rows}, {cols}) matrix, expected {}",
                data.len(),
                rows * row_bytes
            )));
        }
        let mut tiles = vec![0u8; rows / ROWS * blocks * T::TILE_BYTES];
        for (t, tile) in tiles.chunks_exact_mut(T::TILE_BYTES).enumerate() {
            let (group, b) = (t / blocks, t % blocks);
            for r in 0..ROWS {
                let at = (group * ROWS + r) * row_bytes + b * T::Plain::BLOCK_BYTES;
                T::interleave(tile, r, &data[at..at + T::Plain::BLOCK_BYTES]);
            }
        }
        crate::hugepages::advise(&tiles);
        Ok(Self {
            tiles,
            rows,
            cols,
            _format: PhantomData,
        })
    }

    /// The tiles of the group of rows `group`, block after block.
    pub(crate) fn group(&self, group: usize) -> &[u8] {
        let bytes = self.cols / T::Plain::BLOCK * T::TILE_BYTES;
        &self.tiles[group * bytes..(group + 1) * bytes]
    }

    /// Portable product of row `r` and one activation row.
    #[cfg(test)]
    pub(crate) fn dot(&self, r: usize, a: &[Act<T>]) -> f32 {
        T::dot(self.group(r / ROWS), r % ROWS, a)
    }

    /// The plain block `b` of row `r`, rebuilt from its tile.
    pub(crate) fn plain_block(&self, r: usize, b: usize) -> Vec<u8> {
        let tile = &self.group(r / ROWS)[b * T::TILE_BYTES..][..T::TILE_BYTES];
        let mut plain = vec![0u8; T::Plain::BLOCK_BYTES];
        T::plain_block(tile, r % ROWS, &mut plain);
        plain
    }
}

impl<T: RowTiles> PackedMatrix for Interleaved<T> {
    fn format(&self) -> &'static str {
        T::Plain::NAME
    }

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn computes_long_passes(&self) -> bool {
        T::has_long_products(self.rows)
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (b, out) in out.chunks_exact_mut(T::Plain::BLOCK).enumerate() {
            T::Plain::dequantize_block(&self.plain_block(r, b), out);
        }
    }

    fn matmul_t(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "activations are not (n, cols)");
        if n > crate::rowwise::MAX_ROWS && T::has_long_products(self.rows) {
            return T::long_products(self, x, n);
        }
        let acts = super::quantize_rows(x, self.cols, T::Plain::quantize);
        let simd = simd_available();
        // The product (n, rows), written in place: each task's groups are its own 8-row runs of
        // every activation row's output (a transposed result and a transposing pass into a
        // second buffer cost a batched step's main thread an allocation, a fill and a copy).
        let rows = self.rows;
        let mut out = vec![0f32; n * rows];
        let base = crate::pool::SendPtr::new(out.as_mut_ptr());
        // `lane`: the 8 rows of group `group` with activation row `a`.
        let put = |group: usize, a: usize, lane: &[f32; ROWS]| {
            assert!(
                a < n && (group + 1) * ROWS <= rows,
                "no group {group} of row {a}"
            );
            // SAFETY: checked inside `out`; each group belongs to exactly one task, so no two
            // threads write the same values, and `out` outlives the parallel calls.
            unsafe {
                let dst = base.get().add(a * rows + group * ROWS);
                std::ptr::copy_nonoverlapping(lane.as_ptr(), dst, ROWS);
            }
        };
        #[cfg(target_arch = "x86_64")]
        if simd
            && T::PAIRS
            && n <= T::STREAM_ROWS
            && crate::prefetch::side_by_side()
            && (self.rows / ROWS).is_multiple_of(2 * STREAM_PAIRS)
            && pairs_available()
        {
            // SAFETY: PAIRS and pairs_available() hold.
            unsafe { stream_products::<T>(self, &acts, put) };
            return out;
        }
        #[cfg(target_arch = "x86_64")]
        if simd && T::PAIRS && (self.rows / ROWS).is_multiple_of(2) && pairs_available() {
            crate::pool::for_each_range(rows / ROWS / 2, |pairs| {
                for pair in pairs {
                    let (first, second) = (self.group(2 * pair), self.group(2 * pair + 1));
                    // SAFETY: PAIRS and pairs_available() hold.
                    unsafe {
                        pair_products::<T>(first, second, &acts, |g, a, lane| {
                            put(2 * pair + g, a, lane)
                        })
                    };
                }
            });
            return out;
        }
        crate::pool::for_each_range(rows / ROWS, |groups| {
            for group in groups {
                group_products::<T>(self.group(group), &acts, simd, |a, lane| {
                    put(group, a, lane)
                });
            }
        });
        out
    }
}

/// `put(a, lane)`: the 8 rows of a group (`tiles`) with each activation row `a`.
fn group_products<T: RowTiles>(
    tiles: &[u8],
    acts: &[Vec<Act<T>>],
    simd: bool,
    mut put: impl FnMut(usize, &[f32; ROWS]),
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        let n = acts.len();
        // Activation rows per pass over the tiles: 4 where the format's kernel takes them.
        let step = if T::AVX512_ACTS == 4 && n > 2 && Isa::Avx512Vnni.available() {
            4
        } else {
            2
        };
        for (a0, some) in acts.chunks(step).enumerate().map(|(i, p)| (step * i, p)) {
            let mut lanes = [[0f32; ROWS]; 4];
            // SAFETY: `simd` is only true when `simd_available()` saw AVX2, FMA and F16C; more
            // than 2 rows only when the CPU has AVX-512 VNNI.
            unsafe {
                match some {
                    [a] => lanes[..1].copy_from_slice(&T::rows::<1>(tiles, [a])),
                    [a, b] => lanes[..2].copy_from_slice(&T::rows::<2>(tiles, [a, b])),
                    [a, b, c] => lanes[..3].copy_from_slice(&T::rows::<3>(tiles, [a, b, c])),
                    [a, b, c, d] => lanes = T::rows::<4>(tiles, [a, b, c, d]),
                    _ => unreachable!(),
                }
            }
            for (j, lane) in lanes.iter().take(some.len()).enumerate() {
                put(a0 + j, lane);
            }
        }
        return;
    }
    let _ = simd;
    for (j, a) in acts.iter().enumerate() {
        put(j, &std::array::from_fn(|r| T::dot(tiles, r, a)));
    }
}

/// What the two-group kernels ([`RowTiles::rows_pairs`]) share: two tiles' bytes side by side
/// in one vector, and the result lanes split back into the two groups.
#[cfg(target_arch = "x86_64")]
pub(crate) mod pair {
    use std::arch::x86_64::*;

    use super::ROWS;

    /// The blocks of each group of `groups` (tiles of `bytes`), checked the same in every group
    /// and in every activation row (`act_blocks`: their lengths in blocks).
    pub(crate) fn blocks<const P: usize>(
        groups: &[(&[u8], &[u8]); P],
        bytes: usize,
        mut act_blocks: impl Iterator<Item = usize>,
    ) -> usize {
        let blocks = groups[0].0.len() / bytes;
        assert!(groups
            .iter()
            .all(|g| g.0.len() == blocks * bytes && g.1.len() == g.0.len()));
        assert!(act_blocks.all(|n| n == blocks));
        blocks
    }

    /// Block `b` of each group (tiles of `bytes`), both asked for ahead ([`crate::prefetch`]).
    ///
    /// # Safety
    /// Both slices hold more than `b` tiles.
    #[inline]
    pub(crate) unsafe fn block(
        first: &[u8],
        second: &[u8],
        b: usize,
        bytes: usize,
    ) -> (*const u8, *const u8) {
        // SAFETY: the caller's guarantee.
        let (s, u) = unsafe {
            (
                first.as_ptr().add(b * bytes),
                second.as_ptr().add(b * bytes),
            )
        };
        crate::prefetch::ahead(s, bytes);
        crate::prefetch::ahead(u, bytes);
        (s, u)
    }

    /// The 32 bytes at `at` of tile `s` (low half) and of tile `u` (high half).
    ///
    /// # Safety
    /// Both hold 32 bytes at `at`; the CPU has AVX-512F.
    #[inline]
    #[target_feature(enable = "avx2,avx512f")]
    pub(crate) unsafe fn both32(s: *const u8, u: *const u8, at: usize) -> __m512i {
        // SAFETY: the caller's guarantee.
        unsafe {
            let lo = _mm256_loadu_si256(s.add(at) as *const __m256i);
            let hi = _mm256_loadu_si256(u.add(at) as *const __m256i);
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        }
    }

    /// The 8 bytes at `at` of tile `s` (low half) and of tile `u` (high half).
    ///
    /// # Safety
    /// Both hold 8 bytes at `at`; the CPU has SSE2.
    #[inline]
    pub(crate) unsafe fn both8(s: *const u8, u: *const u8, at: usize) -> __m128i {
        // SAFETY: the caller's guarantee.
        unsafe {
            _mm_unpacklo_epi64(
                _mm_loadl_epi64(s.add(at) as *const __m128i),
                _mm_loadl_epi64(u.add(at) as *const __m128i),
            )
        }
    }

    /// The 16 bytes at `at` of tile `s` (low half) and of tile `u` (high half).
    ///
    /// # Safety
    /// Both hold 16 bytes at `at`; the CPU has AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn both16(s: *const u8, u: *const u8, at: usize) -> __m256i {
        // SAFETY: the caller's guarantee.
        unsafe {
            let lo = _mm_loadu_si128(s.add(at) as *const __m128i);
            let hi = _mm_loadu_si128(u.add(at) as *const __m128i);
            _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi)
        }
    }

    /// Lanes 0-7 of each accumulator as the first group's rows, 8-15 as the second's.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn split<const A: usize>(acc: [__m512; A]) -> [[[f32; ROWS]; A]; 2] {
        let mut out = [[[0f32; ROWS]; A]; 2];
        for (j, v) in acc.iter().enumerate() {
            // SAFETY: an __m512 is sixteen f32 lanes in order.
            let v: [f32; 2 * ROWS] = unsafe { std::mem::transmute(*v) };
            out[0][j].copy_from_slice(&v[..ROWS]);
            out[1][j].copy_from_slice(&v[ROWS..]);
        }
        out
    }
}

/// `put(group, a, lane)` for every group of `matrix` and activation row `a`, [`STREAM_PAIRS`]
/// pairs of groups at a time and [`RowTiles::STREAM_STEP`] activation rows per kernel call:
/// task `t` of `q = groups / 4` takes groups `t`, `t + q`, `t + 2q` and `t + 3q`, so the pool's
/// threads, each given a run of tasks, read four distant runs of weights side by side.
///
/// # Safety
/// [`RowTiles::PAIRS`] and [`pairs_available`] hold; the groups are a multiple of
/// `2 * STREAM_PAIRS`.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_products<T: RowTiles>(
    matrix: &Interleaved<T>,
    acts: &[Vec<Act<T>>],
    put: impl Fn(usize, usize, &[f32; ROWS]) + Sync,
) {
    let quarter = matrix.rows / ROWS / (2 * STREAM_PAIRS);
    crate::pool::for_each_range(quarter, |tasks| {
        for t in tasks {
            let g: [usize; 2 * STREAM_PAIRS] = std::array::from_fn(|k| t + k * quarter);
            let pairs: [(&[u8], &[u8]); STREAM_PAIRS] =
                std::array::from_fn(|p| (matrix.group(g[2 * p]), matrix.group(g[2 * p + 1])));
            // SAFETY: the caller's guarantee (the kernels' CPU features); a step of 1 to 8.
            unsafe {
                pairs_products::<T, STREAM_PAIRS>(pairs, acts, T::STREAM_STEP, |k, a, lane| {
                    put(g[k], a, lane)
                })
            };
        }
    });
}

/// `put(g, a, lane)` for the 8 rows of each of two groups (`g` 0: `first`, 1: `second`) and
/// every activation row `a`, up to [`RowTiles::AVX512_ACTS`] activation rows per pass over the
/// tiles.
///
/// # Safety
/// [`RowTiles::PAIRS`] and [`pairs_available`] hold.
#[cfg(target_arch = "x86_64")]
unsafe fn pair_products<T: RowTiles>(
    first: &[u8],
    second: &[u8],
    acts: &[Vec<Act<T>>],
    put: impl FnMut(usize, usize, &[f32; ROWS]),
) {
    let step = T::AVX512_ACTS.min(4);
    // SAFETY: the caller's guarantee; a step of 1 to 4.
    unsafe { pairs_products::<T, 1>([(first, second)], acts, step, put) }
}

/// The products of `P` pairs of groups ([`RowTiles::rows_pairs`]) with every activation row,
/// `step` of them per kernel call: `put(k, a, lane)` gets the 8 rows of group `k` (group
/// `k % 2` of pair `k / 2`) with activation row `a`.
///
/// # Safety
/// [`RowTiles::PAIRS`] and [`pairs_available`] hold; `step` is 1 to 8.
#[cfg(target_arch = "x86_64")]
unsafe fn pairs_products<T: RowTiles, const P: usize>(
    pairs: [(&[u8], &[u8]); P],
    acts: &[Vec<Act<T>>],
    step: usize,
    mut put: impl FnMut(usize, usize, &[f32; ROWS]),
) {
    /// Each group's 8 rows for each activation row of a call (`got`:
    /// `[pair][group][activation][row]`), to `put`.
    fn each<const A: usize, const P: usize>(
        got: [[[[f32; ROWS]; A]; 2]; P],
        a0: usize,
        put: &mut impl FnMut(usize, usize, &[f32; ROWS]),
    ) {
        for (p, pair) in got.iter().enumerate() {
            for (g, group) in pair.iter().enumerate() {
                for (j, lane) in group.iter().enumerate() {
                    put(2 * p + g, a0 + j, lane);
                }
            }
        }
    }
    for (a0, some) in acts.chunks(step).enumerate().map(|(i, c)| (step * i, c)) {
        let put = &mut put;
        // SAFETY: the caller's guarantee; `some` has 1 to 8 rows.
        unsafe {
            match some {
                [a] => each(T::rows_pairs::<1, P>(pairs, [a]), a0, put),
                [a, b] => each(T::rows_pairs::<2, P>(pairs, [a, b]), a0, put),
                [a, b, c] => each(T::rows_pairs::<3, P>(pairs, [a, b, c]), a0, put),
                [a, b, c, d] => each(T::rows_pairs::<4, P>(pairs, [a, b, c, d]), a0, put),
                [a, b, c, d, e] => each(T::rows_pairs::<5, P>(pairs, [a, b, c, d, e]), a0, put),
                [a, b, c, d, e, f] => {
                    each(T::rows_pairs::<6, P>(pairs, [a, b, c, d, e, f]), a0, put)
                }
                [a, b, c, d, e, f, g] => {
                    each(T::rows_pairs::<7, P>(pairs, [a, b, c, d, e, f, g]), a0, put)
                }
                [a, b, c, d, e, f, g, h] => each(
                    T::rows_pairs::<8, P>(pairs, [a, b, c, d, e, f, g, h]),
                    a0,
                    put,
                ),
                _ => unreachable!(),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Checks every interleaved format must pass.
    use super::super::BlockMatrix;
    use super::*;
    use crate::test_support::random;

    /// Tiles give back the plain blocks (compared with `same`, since a format may drop bits
    /// its plain layout ignores).
    pub(crate) fn rows_rebuild_the_plain_blocks<T: RowTiles>(
        data: &[u8],
        rows: usize,
        cols: usize,
        same: impl Fn(&[u8], &[u8]) -> bool,
    ) {
        let m = Interleaved::<T>::new(data, rows, cols).unwrap();
        let bytes = T::Plain::BLOCK_BYTES;
        let row_bytes = cols / T::Plain::BLOCK * bytes;
        for r in 0..rows {
            for b in 0..cols / T::Plain::BLOCK {
                let plain = &data[r * row_bytes + b * bytes..][..bytes];
                assert!(same(&m.plain_block(r, b), plain), "row {r} block {b}");
            }
        }
    }

    /// Products within float reordering of the plain layout's, SIMD equal to portable bit for
    /// bit, a row the same alone and in a batch of any size, and the same dequantized rows.
    pub(crate) fn products_match_the_plain_layout<T: RowTiles>(
        data: Vec<u8>,
        rows: usize,
        cols: usize,
    ) {
        // 9 rows: the side-by-side kernels take 8 at a time, then 1.
        let n = 9;
        let m = Interleaved::<T>::new(&data, rows, cols).unwrap();
        let plain = BlockMatrix::<T::Plain>::new(data, rows, cols).unwrap();
        let x = random(n * cols, 10);
        let ours = m.matmul_t(&x, n);
        let theirs = plain.matmul_t(&x, n);
        let acts: Vec<Vec<Act<T>>> = x.chunks_exact(cols).map(T::Plain::quantize).collect();
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

    /// A tile kernel of two activation rows, as the formats' x86 modules define them.
    #[cfg(target_arch = "x86_64")]
    pub(crate) type Kernel2<T> = unsafe fn(&[u8], [&[Act<T>]; 2]) -> [[f32; ROWS]; 2];

    /// Each x86 kernel of a format (with the instruction set it is compiled for), called
    /// directly whatever the CPU would pick, equals the portable code bit for bit where the
    /// CPU has its instruction set.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn every_kernel_equals_the_portable_code<T: RowTiles>(
        data: &[u8],
        cols: usize,
        kernels: &[(Isa, Kernel2<T>)],
    ) {
        if !simd_available() {
            return;
        }
        let m = Interleaved::<T>::new(data, ROWS, cols).unwrap();
        let tiles = m.group(0);
        let x = random(2 * cols, 4);
        let acts: Vec<Vec<Act<T>>> = x.chunks_exact(cols).map(T::Plain::quantize).collect();
        let want: [[u32; ROWS]; 2] =
            std::array::from_fn(|j| std::array::from_fn(|r| T::dot(tiles, r, &acts[j]).to_bits()));
        let bits = |v: [[f32; ROWS]; 2]| v.map(|row| row.map(f32::to_bits));
        for &(isa, kernel) in kernels {
            if isa.available() {
                // SAFETY: this CPU has the kernel's instruction set.
                let got = unsafe { kernel(tiles, [&acts[0], &acts[1]]) };
                assert_eq!(bits(got), want, "{isa:?}");
            }
        }
    }

    /// The two-group kernel of a format gives, for each of the two groups of a 16-row matrix
    /// (`data`) and 1, 2, 3, 4 or 8 activation rows, one pair or two side by side, bit for bit
    /// what the portable code and the one-group kernel give.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn two_group_kernel_equals_one_group<T: RowTiles>(data: &[u8], cols: usize) {
        if !(T::PAIRS && pairs_available()) {
            eprintln!("SKIPPED: no AVX-512BW + VNNI here");
            return;
        }
        let m = Interleaved::<T>::new(data, 2 * ROWS, cols).unwrap();
        let x = random(4 * cols, 6);
        let acts: Vec<Vec<Act<T>>> = x.chunks_exact(cols).map(T::Plain::quantize).collect();
        let want = |g: usize, j: usize| -> [u32; ROWS] {
            std::array::from_fn(|r| T::dot(m.group(g), r, &acts[j]).to_bits())
        };
        let pair = [(m.group(0), m.group(1))];
        let four = [&acts[0][..], &acts[1], &acts[2], &acts[3]];
        // SAFETY: PAIRS and pairs_available() hold (so do AVX2, FMA and F16C).
        unsafe {
            let got = T::rows_pairs::<1, 1>(pair, [&acts[3]])[0];
            for (g, rows) in got.iter().enumerate() {
                assert_eq!(rows[0].map(f32::to_bits), want(g, 3), "A=1 group {g}");
            }
            let got = T::rows_pairs::<3, 1>(pair, [four[0], four[1], four[2]])[0];
            for (g, rows) in got.iter().enumerate() {
                for (j, row) in rows.iter().enumerate() {
                    assert_eq!(row.map(f32::to_bits), want(g, j), "A=3 group {g} act {j}");
                }
            }
            // Two pairs side by side (the second pair is the first one swapped): each lane as
            // alone.
            let swapped = [(m.group(0), m.group(1)), (m.group(1), m.group(0))];
            let got = T::rows_pairs::<2, 2>(swapped, [four[1], four[2]]);
            for (p, pair) in got.iter().enumerate() {
                for (k, rows) in pair.iter().enumerate() {
                    let g = k ^ p;
                    for (j, row) in rows.iter().enumerate() {
                        assert_eq!(
                            row.map(f32::to_bits),
                            want(g, j + 1),
                            "P=2 group {g} act {j}"
                        );
                    }
                }
            }
            let got = T::rows_pairs::<4, 1>(pair, four)[0];
            for (g, rows) in got.iter().enumerate() {
                let single = T::rows::<4>(m.group(g), four);
                for (j, row) in rows.iter().enumerate() {
                    assert_eq!(row.map(f32::to_bits), want(g, j), "A=4 group {g} act {j}");
                    assert_eq!(row.map(f32::to_bits), single[j].map(f32::to_bits));
                }
            }
            // Eight activation rows (the side-by-side passes' step), the last four repeated.
            let eight = [
                four[0], four[1], four[2], four[3], four[3], four[2], four[1], four[0],
            ];
            let got = T::rows_pairs::<8, 2>(swapped, eight);
            for (p, pair) in got.iter().enumerate() {
                for (k, rows) in pair.iter().enumerate() {
                    let g = k ^ p;
                    for (j, row) in rows.iter().enumerate() {
                        let a = if j < 4 { j } else { 7 - j };
                        assert_eq!(row.map(f32::to_bits), want(g, a), "A=8 group {g} act {j}");
                    }
                }
            }
        }
    }

    /// Shapes that do not tile are refused, with the format named.
    pub(crate) fn shapes_it_cannot_tile_are_errors<T: RowTiles>(data: &[u8]) {
        // `data`: 12 rows of 256.
        let err = Interleaved::<T>::new(data, 12, 256).unwrap_err();
        assert!(
            err.to_string().contains(&T::Plain::NAME.to_lowercase()),
            "{err}"
        );
        assert!(Interleaved::<T>::new(&data[..100], 8, 256).is_err());
    }
}
