//! Q6_K long passes (prompt prefill) on AMX tiles ([`super::amx`]), bit for bit what the
//! decode kernels give.
//!
//! A block's integer sum is `total = sum_sub(scale * sum(q8 * (q6 - 32)))` over sixteen
//! 16-value sub-blocks with signed 8-bit scales (the decode kernels compute it as `sumi - 32 *
//! summ`, the same integer). A tile product cannot apply a scale between its 64-value steps,
//! and `(q6 - 32) * scale` does not fit a byte; but each scale is `d0 + 8 * d1 + 64 * d2` with
//! digits in [-3, 4] (for any scale in [-128, 127]), and `(q6 - 32) * d` lies in [-128, 124].
//! So the weights are unpacked three times, once per digit, as signed bytes, three tiles sum the
//! whole block (`tdpbssd`), and `total = t0 + 8 * t1 + 64 * t2` exactly. The float step is the
//! decode kernels': `acc = fma(d_x * d, total, acc)`, so every product equals
//! [`super::interleaved::RowTiles::dot`]'s (tested).
//!
//! Three sums and three weight tiles leave room for one activation tile pair only, so the two
//! activation tiles of a pass are multiplied one after the other.

use std::arch::asm;
use std::arch::x86_64::*;

use super::amx::{Accumulators, AmxFormat, PackedActs, MTILE, N};
use super::interleaved::pair::{block, both16, both32};
use super::q6_k_x8::x86_pair::{sub_scales, values};
use super::q6_k_x8::{run, Q6KTiles, D, TILE_BYTES};
use super::q8_k::QK_K;

/// Every tile is 16 rows of 64 bytes: `tmm0`-`tmm2` the sums of the three digits (16 x 16
/// i32), `tmm3`-`tmm4` activations (16 rows x 64 values), `tmm5`-`tmm7` weights (16 rows of 4
/// values x 16 columns, one per digit).
const SHAPES: [(u8, u16); 8] = [(16, 64); 8];

/// One block of a pair of groups, unpacked for the tiles.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Prep {
    /// `(q6 - 32) * digit` per digit: `[digit][chunk of 64 values][k / 4][column][k % 4]`.
    w: [[[u8; 1024]; 4]; 3],
    d: [f32; N],
}

/// The sums of a block for one tile of activation rows: `[digit][row][column]`.
#[repr(C, align(64))]
struct Sums([[i32; MTILE * N]; 3]);

impl AmxFormat for Q6KTiles {
    type Prep = Prep;
    const EMPTY: Prep = Prep {
        w: [[[0; 1024]; 4]; 3],
        d: [0.0; N],
    };
    const SHAPES: [(u8, u16); 8] = SHAPES;
    const MINS: bool = false;

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
        for (h, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's guarantee (tiles configured, AVX-512F and FMA).
            unsafe { tile_products(p, acts, t + h, b, acc) }
        }
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
        // Per sub-block, its three digits for each column, as [d, d] i16 pairs in 32-bit lanes.
        let digits: [[__m512i; 3]; 16] = sub_scales(s, u).map(|scale| {
            let (three, seven) = (_mm512_set1_epi32(3), _mm512_set1_epi32(7));
            // d = ((x + 3) mod 8) - 3 in [-3, 4]; (x - d) / 8 is exact.
            let digit = |x: __m512i| {
                _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(x, three), seven), three)
            };
            let d0 = digit(scale);
            let r1 = _mm512_srai_epi32::<3>(_mm512_sub_epi32(scale, d0));
            let d1 = digit(r1);
            let d2 = _mm512_srai_epi32::<3>(_mm512_sub_epi32(r1, d1));
            let low = _mm512_set1_epi32(0xFFFF);
            [d0, d1, d2]
                .map(|d| _mm512_or_si512(_mm512_and_si512(d, low), _mm512_slli_epi32::<16>(d)))
        });
        let thirty_two = _mm512_set1_epi8(32);
        let low_bytes = _mm512_set1_epi16(0x00FF);
        for h in 0..2 {
            for g in 0..8 {
                let (wl0, wl1, wh) = (
                    both32(s, u, run(h, g, 0)),
                    both32(s, u, run(h, g, 1)),
                    both32(s, u, run(h, g, 2)),
                );
                // The 6-bit values of positions 128h + 32c + 4g.. (see `q6_k_x8`).
                let q = values(wl0, wl1, wh);
                for (c, &q) in q.iter().enumerate() {
                    let w = _mm512_sub_epi8(q, thirty_two);
                    // Signed bytes as i16: even bytes, odd bytes.
                    let even = _mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(w));
                    let odd = _mm512_srai_epi16::<8>(w);
                    let (kq, sub) = (32 * h + 8 * c + g, 8 * h + 2 * c + g / 4);
                    for (i, &d) in digits[sub].iter().enumerate() {
                        let lo = _mm512_and_si512(_mm512_mullo_epi16(even, d), low_bytes);
                        let hi = _mm512_slli_epi16::<8>(_mm512_mullo_epi16(odd, d));
                        let to = p.w[i][kq / 16][(kq % 16) * 64..].as_mut_ptr();
                        _mm512_storeu_si512(to as *mut __m512i, _mm512_or_si512(lo, hi));
                    }
                }
            }
        }
        _mm512_storeu_ps(p.d.as_mut_ptr(), _mm512_cvtph_ps(both16(s, u, D)));
    }
}

/// Block `b` of the 16 columns of `p` times block `b` of activation tile `t`, added to `acc`.
///
/// # Safety
/// The tiles are configured as [`SHAPES`]; the CPU has AVX-512F and FMA.
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile_products(p: &Prep, acts: &PackedActs, t: usize, b: usize, acc: &mut Accumulators) {
    let a = acts.values(t, b);
    assert_eq!(a.len(), MTILE * QK_K);
    // Written whole by the three tile stores below.
    let mut sums = std::mem::MaybeUninit::<Sums>::uninit();
    // SAFETY: tiles configured as SHAPES (the caller's guarantee). Activation tiles: 16 rows
    // of 64 bytes, 256 apart, inside `a`; weight tiles: 1 KiB inside `p`; sums: 1 KiB inside
    // `sums`.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tileloadd tmm3, [{a} + {sa}*1]",
            "tileloadd tmm5, [{w0} + {sb}*1]",
            "tdpbssd tmm0, tmm3, tmm5",
            "tileloadd tmm6, [{w1} + {sb}*1]",
            "tdpbssd tmm1, tmm3, tmm6",
            "tileloadd tmm7, [{w2} + {sb}*1]",
            "tdpbssd tmm2, tmm3, tmm7",
            "tileloadd tmm4, [{a} + {sa}*1 + 64]",
            "tileloadd tmm5, [{w0} + {sb}*1 + 1024]",
            "tdpbssd tmm0, tmm4, tmm5",
            "tileloadd tmm6, [{w1} + {sb}*1 + 1024]",
            "tdpbssd tmm1, tmm4, tmm6",
            "tileloadd tmm7, [{w2} + {sb}*1 + 1024]",
            "tdpbssd tmm2, tmm4, tmm7",
            "tileloadd tmm3, [{a} + {sa}*1 + 128]",
            "tileloadd tmm5, [{w0} + {sb}*1 + 2048]",
            "tdpbssd tmm0, tmm3, tmm5",
            "tileloadd tmm6, [{w1} + {sb}*1 + 2048]",
            "tdpbssd tmm1, tmm3, tmm6",
            "tileloadd tmm7, [{w2} + {sb}*1 + 2048]",
            "tdpbssd tmm2, tmm3, tmm7",
            "tileloadd tmm4, [{a} + {sa}*1 + 192]",
            "tileloadd tmm5, [{w0} + {sb}*1 + 3072]",
            "tdpbssd tmm0, tmm4, tmm5",
            "tileloadd tmm6, [{w1} + {sb}*1 + 3072]",
            "tdpbssd tmm1, tmm4, tmm6",
            "tileloadd tmm7, [{w2} + {sb}*1 + 3072]",
            "tdpbssd tmm2, tmm4, tmm7",
            "tilestored [{c} + {sb}*1], tmm0",
            "tilestored [{c} + {sb}*1 + 1024], tmm1",
            "tilestored [{c} + {sb}*1 + 2048], tmm2",
            a = in(reg) a.as_ptr(),
            w0 = in(reg) p.w[0].as_ptr(),
            w1 = in(reg) p.w[1].as_ptr(),
            w2 = in(reg) p.w[2].as_ptr(),
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
        let d_x = acts.scales(t, b);
        for (r, (&d_x, acc)) in d_x.iter().zip(acc.acc.iter_mut()).enumerate() {
            let row = |k: usize| _mm512_loadu_si512(sums.0[k][r * N..].as_ptr() as _);
            let total = _mm512_add_epi32(
                _mm512_add_epi32(row(0), _mm512_slli_epi32::<3>(row(1))),
                _mm512_slli_epi32::<6>(row(2)),
            );
            let d = _mm512_mul_ps(_mm512_set1_ps(d_x), dw);
            let to = acc.as_mut_ptr();
            let total = _mm512_cvtepi32_ps(total);
            _mm512_storeu_ps(to, _mm512_fmadd_ps(d, total, _mm512_loadu_ps(to)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::q6_k::tests::random_q6_k;
    use super::*;

    #[test]
    fn amx_products_equal_the_portable_code() {
        super::super::amx::testing::products_equal_the_portable_code::<Q6KTiles>(
            &random_q6_k(32, 768, 23),
            32,
            768,
        );
    }

    #[test]
    fn scales_split_into_three_digits_that_fit_a_byte_with_any_weight() {
        // The digit arithmetic of `prepare`, for every scale.
        for scale in -128i32..=127 {
            let digit = |x: i32| ((x + 3) & 7) - 3;
            let d0 = digit(scale);
            let r1 = (scale - d0) >> 3;
            let d1 = digit(r1);
            let d2 = (r1 - d1) >> 3;
            assert_eq!(d0 + 8 * d1 + 64 * d2, scale);
            for d in [d0, d1, d2] {
                assert!((-3..=4).contains(&d), "{scale}: digit {d}");
                assert!((-32 * d).abs() <= 128 && 31 * d.abs() <= 127);
            }
        }
    }
}
