//! Q4_K long passes (prompt prefill) on AMX tiles ([`super::amx`]), bit for bit what the
//! decode kernels give.
//!
//! Sixteen output columns (two groups of eight weight rows in [`super::q4_k_x8`]'s tiles)
//! times 32 activation rows (two tiles) at a time. A block's integer sum `sumi =
//! sum_sub(scale * sum(q8 * q4))` has a 6-bit scale per 32-value sub-block, which a tile
//! product cannot apply between its 64-value steps. Split as `scale = lo + 8 * hi` (3 bits
//! each), `q4 * lo` and `q4 * hi` are at most 105 and fit the unsigned bytes `tdpbsud` takes,
//! so the weights are unpacked with the scales in them and two tiles sum the whole block:
//! `sumi = sum(q8 * q4 * lo) + 8 * sum(q8 * q4 * hi)`, the same integer. The min term `summ =
//! sum_sub(min * sum(q8))` is the decode kernels' (the activations' block sums times the mins,
//! `vpdpwssd`). Per block, the vector units then do what the decode kernels do: `acc =
//! fma(d_x * d, sumi, acc)`, `acc_m = fma(-d_x * dmin, summ, acc_m)`, and the result is `acc +
//! acc_m`: the same integers and float operations in the same order, so every product equals
//! [`super::interleaved::RowTiles::dot`]'s (tested).
//!
//! Measured on the AMX of docs/BENCHMARKS.md's Xeon: a product runs at full rate only with
//! several independent sums in flight, a tile store costs about what a product does (1 KiB at
//! 64 bytes a cycle), and a tile load from L2 waits for its rows one at a time. So two
//! activation tiles share each weight tile (four sums in flight), the sums leave the tiles
//! once per block, and the next activation tiles are asked into L1 ahead. The weights of a
//! pair of groups are unpacked one block at a time (8 KiB, in L1) and used for every tile of a
//! panel of activation rows (about 1 MiB, which stays in L2), whose float accumulators stay in
//! memory between blocks.

use std::arch::asm;
use std::arch::x86_64::*;

use super::amx::{Accumulators, AmxFormat, PackedActs, MTILE, N};
use super::interleaved::pair::{block, both16, both32, both8};
use super::interleaved::ROWS;
use super::q4_k_x8::{Q4KTiles, D, DMIN, MN, QS, SC, TILE_BYTES};
use super::q8_k::QK_K;

/// Every tile is 16 rows of 64 bytes: `tmm0`-`tmm3` sums (16 x 16 i32: lo and hi of the first
/// activation tile, lo and hi of the second), `tmm4`-`tmm5` activations (16 rows x 64
/// values), `tmm6`-`tmm7` weights (16 rows of 4 values x 16 columns, lo and hi).
const SHAPES: [(u8, u16); 8] = [(16, 64); 8];

/// One block of a pair of groups, unpacked for the tiles.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Prep {
    /// `q4 * (scale & 7)`: `[chunk of 64 values][k / 4][column][k % 4]`.
    lo: [[u8; 1024]; 4],
    /// `q4 * (scale >> 3)`, the same layout.
    hi: [[u8; 1024]; 4],
    /// `[pair k][column][2]`: the mins of sub-blocks `2k` and `2k + 1`.
    mins: [[i16; 2 * N]; 4],
    d: [f32; N],
    dmin: [f32; N],
}

/// The integer sums of a block for two tiles of activation rows: `[lo, hi (first tile), lo,
/// hi (second)][row][column]`.
#[repr(C, align(64))]
struct Sums([[i32; MTILE * N]; 4]);

/// The Q4_K kernel.
impl AmxFormat for Q4KTiles {
    type Prep = Prep;
    const EMPTY: Prep = Prep {
        lo: [[0; 1024]; 4],
        hi: [[0; 1024]; 4],
        mins: [[0; 2 * N]; 4],
        d: [0.0; N],
        dmin: [0.0; N],
    };
    const SHAPES: [(u8, u16); 8] = SHAPES;
    const MINS: bool = true;

    unsafe fn prepare(first: &[u8], second: &[u8], b: usize, p: &mut Prep) {
        // SAFETY: AVX-512F/BW/VL and F16C (`amx::available`).
        unsafe { prepare(first, second, b, p) }
    }

    unsafe fn block_products(
        p: &Prep,
        acts: &PackedActs,
        t: usize,
        b: usize,
        acc: &mut [Accumulators],
    ) {
        // SAFETY: the caller's guarantee (tiles configured, AVX-512 VNNI).
        unsafe { block_products(p, acts, t, b, acc) }
    }
}

/// Unpack block `b` of the two groups `first` and `second` into `p`.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn prepare(first: &[u8], second: &[u8], b: usize, p: &mut Prep) {
    assert!(first.len() >= (b + 1) * TILE_BYTES && second.len() >= (b + 1) * TILE_BYTES);
    // SAFETY: both tiles are in bounds (checked); every offset stays inside a tile.
    unsafe {
        // Both tiles, with the weights a fixed distance on asked for (`crate::prefetch`).
        let (s, u) = block(first, second, b, TILE_BYTES);
        let m4 = _mm512_set1_epi8(0x0F);
        // Per sub-block, one 32-bit lane per column.
        let scale: [__m512i; 8] =
            std::array::from_fn(|sub| _mm512_cvtepu8_epi32(both8(s, u, SC + sub * ROWS)));
        let put = |to: &mut [u8; 1024], row: usize, v: __m512i| {
            _mm512_storeu_si512(to[row * 64..].as_mut_ptr() as *mut __m512i, v)
        };
        for c in 0..4 {
            for g in 0..8 {
                // Low nibbles: positions 4g.. of sub-block 2c (rows 0-7 of the chunk); high
                // nibbles: the same positions of sub-block 2c + 1 (rows 8-15).
                let w = both32(s, u, QS + (c * 8 + g) * 32);
                let halves = [
                    _mm512_and_si512(w, m4),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(w), m4),
                ];
                for (h, q) in halves.into_iter().enumerate() {
                    // Each byte times its column's 3-bit part: at most 105, no carry between
                    // the bytes of a lane.
                    let sc = scale[2 * c + h];
                    let lo = _mm512_and_si512(sc, _mm512_set1_epi32(7));
                    put(&mut p.lo[c], 8 * h + g, _mm512_mullo_epi32(q, lo));
                    let hi = _mm512_srli_epi32::<3>(sc);
                    put(&mut p.hi[c], 8 * h + g, _mm512_mullo_epi32(q, hi));
                }
            }
            let mins = _mm512_cvtepu8_epi16(both16(s, u, MN + 16 * c));
            _mm512_storeu_si512(p.mins[c].as_mut_ptr() as *mut __m512i, mins);
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), _mm512_cvtph_ps(both16(s, u, D)));
        _mm512_storeu_ps(p.dmin.as_mut_ptr(), _mm512_cvtph_ps(both16(s, u, DMIN)));
    }
}

/// Block `b` of the 16 columns of `p` times block `b` of activation tiles `t` and `t + 1`,
/// added to `acc[0]` and `acc[1]`.
///
/// # Safety
/// The tiles are configured as [`SHAPES`]; the CPU has AVX-512F/BW/VL/VNNI and FMA.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block_products(
    p: &Prep,
    acts: &PackedActs,
    t: usize,
    b: usize,
    acc: &mut [Accumulators],
) {
    // Written whole by the four tile stores below.
    let mut sums = std::mem::MaybeUninit::<Sums>::uninit();
    let (a0, a1) = (acts.values(t, b), acts.values(t + 1, b));
    assert!(acc.len() == 2 && a0.len() == MTILE * QK_K && a1.len() == MTILE * QK_K);
    // SAFETY: tiles configured as SHAPES (the caller's guarantee). Activation tiles: 16 rows
    // of 64 bytes, 256 apart, inside `a0` / `a1`; weight tiles: 1 KiB inside `p`; sums: 1 KiB
    // inside `sums`.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm6, [{lo} + {sb}*1]",
            "tdpbsud tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{hi} + {sb}*1]",
            "tdpbsud tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tdpbsud tmm2, tmm5, tmm6",
            "tdpbsud tmm3, tmm5, tmm7",
            "tileloadd tmm4, [{a0} + {sa}*1 + 64]",
            "tileloadd tmm6, [{lo} + {sb}*1 + 1024]",
            "tdpbsud tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{hi} + {sb}*1 + 1024]",
            "tdpbsud tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa}*1 + 64]",
            "tdpbsud tmm2, tmm5, tmm6",
            "tdpbsud tmm3, tmm5, tmm7",
            "tileloadd tmm4, [{a0} + {sa}*1 + 128]",
            "tileloadd tmm6, [{lo} + {sb}*1 + 2048]",
            "tdpbsud tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{hi} + {sb}*1 + 2048]",
            "tdpbsud tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa}*1 + 128]",
            "tdpbsud tmm2, tmm5, tmm6",
            "tdpbsud tmm3, tmm5, tmm7",
            "tileloadd tmm4, [{a0} + {sa}*1 + 192]",
            "tileloadd tmm6, [{lo} + {sb}*1 + 3072]",
            "tdpbsud tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{hi} + {sb}*1 + 3072]",
            "tdpbsud tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa}*1 + 192]",
            "tdpbsud tmm2, tmm5, tmm6",
            "tdpbsud tmm3, tmm5, tmm7",
            "tilestored [{c} + {sb}*1], tmm0",
            "tilestored [{c} + {sb}*1 + 1024], tmm1",
            "tilestored [{c} + {sb}*1 + 2048], tmm2",
            "tilestored [{c} + {sb}*1 + 3072], tmm3",
            a0 = in(reg) a0.as_ptr(),
            a1 = in(reg) a1.as_ptr(),
            lo = in(reg) p.lo.as_ptr(),
            hi = in(reg) p.hi.as_ptr(),
            c = in(reg) sums.as_mut_ptr(),
            sa = in(reg) QK_K,
            sb = in(reg) 64usize,
            options(nostack),
        );
    }
    // SAFETY: the tile stores wrote all of `sums`; 16 lanes inside `p`, `sums` and `acc`.
    unsafe {
        let sums = sums.assume_init_ref();
        let dw = _mm512_loadu_ps(p.d.as_ptr());
        let dminw = _mm512_loadu_ps(p.dmin.as_ptr());
        let mins: [__m512i; 4] =
            std::array::from_fn(|k| _mm512_loadu_si512(p.mins[k].as_ptr() as *const __m512i));
        for (h, acc) in acc.iter_mut().enumerate() {
            let d_x = acts.scales(t + h, b);
            let pairs = acts.sums(t + h, b);
            for r in 0..MTILE {
                let row = |k: usize| _mm512_loadu_si512(sums.0[2 * h + k][r * N..].as_ptr() as _);
                let sumi = _mm512_add_epi32(row(0), _mm512_slli_epi32::<3>(row(1)));
                let mut summ = _mm512_setzero_si512();
                for (k, &m) in mins.iter().enumerate() {
                    summ = _mm512_dpwssd_epi32(summ, m, _mm512_set1_epi32(pairs[4 * r + k]));
                }
                let d = _mm512_mul_ps(_mm512_set1_ps(d_x[r]), dw);
                let to = acc.acc[r].as_mut_ptr();
                let sumi = _mm512_cvtepi32_ps(sumi);
                _mm512_storeu_ps(to, _mm512_fmadd_ps(d, sumi, _mm512_loadu_ps(to)));
                let dm = _mm512_mul_ps(_mm512_set1_ps(-d_x[r]), dminw);
                let to = acc.acc_m[r].as_mut_ptr();
                let summ = _mm512_cvtepi32_ps(summ);
                _mm512_storeu_ps(to, _mm512_fmadd_ps(dm, summ, _mm512_loadu_ps(to)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::q4_k::tests::random_q4_k;
    use super::*;

    #[test]
    fn amx_products_equal_the_portable_code() {
        super::super::amx::testing::products_equal_the_portable_code::<Q4KTiles>(
            &random_q4_k(32, 768, 21),
            32,
            768,
        );
    }
}
