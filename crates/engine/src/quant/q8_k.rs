//! Q8_K: the activation rounding llama.cpp pairs with every K-quant weight format.
//!
//! `quantize_row_q8_K_ref`: per block of 256, the value of largest magnitude `max` (signed)
//! gives `iscale = -127 / max`, values are `nearest_int(iscale * x)` capped at 127, `d =
//! 1 / iscale` stays f32, and `bsums` holds the sums of each 16 values (for the weight
//! formats' minimum / offset terms).

use super::nearest_int;

/// Values per K-quant block.
pub const QK_K: usize = 256;

/// One block of 256 activations rounded to 8 bits.
#[derive(Debug, Clone, Copy)]
pub struct Q8KBlock {
    pub(crate) d: f32,
    pub(crate) qs: [i8; QK_K],
    pub(crate) bsums: [i16; QK_K / 16],
    /// Sums of each 32 values (`bsums` in pairs), so that a kernel reads the sums of two
    /// sub-blocks as one 32-bit word (`[sums32[2k], sums32[2k + 1]]`).
    pub(crate) sums32: [i16; QK_K / 32],
}

/// llama.cpp's `quantize_row_q8_K_ref` for one row (`x.len()` a multiple of 256), on 512-bit
/// vectors where the CPU has AVX-512 (the same bits: the same float steps per value, the sums
/// exact).
pub(crate) fn quantize(x: &[f32]) -> Vec<Q8KBlock> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return x
            .chunks_exact(QK_K)
            .map(|v| unsafe { x86::block(v) })
            .collect();
    }
    x.chunks_exact(QK_K).map(block).collect()
}

/// One block, portable code.
fn block(v: &[f32]) -> Q8KBlock {
    let (mut max, mut amax) = (0f32, 0f32);
    for &e in v {
        if e.abs() > amax {
            amax = e.abs();
            max = e;
        }
    }
    let mut block = Q8KBlock {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
        sums32: [0; QK_K / 32],
    };
    if amax == 0.0 {
        return block;
    }
    let iscale = -127.0 / max;
    for (q, &e) in block.qs.iter_mut().zip(v) {
        *q = nearest_int(iscale * e).min(127) as i8;
    }
    for (sum, qs) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
        *sum = qs.iter().map(|&q| q as i16).sum();
    }
    sums32(&mut block);
    block.d = 1.0 / iscale;
    block
}

fn sums32(block: &mut Q8KBlock) {
    for (sum, pair) in block.sums32.iter_mut().zip(block.bsums.chunks_exact(2)) {
        *sum = pair[0] + pair[1];
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::rounding_x86::nearest_int16;
    use super::{sums32, Q8KBlock, QK_K};

    /// [`super::block`] on 512-bit vectors: the same value of largest magnitude (the first
    /// one, as the portable loop keeps it), the same `iscale * x` rounded by the same
    /// `nearest_int` addition. Blocks with a NaN or an infinity take the portable code.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(v: &[f32]) -> Q8KBlock {
        assert_eq!(v.len(), QK_K);
        // SAFETY: 16 loads of 16 values within the 256 of `v`.
        let x: [__m512; 16] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_ps(v.as_ptr().add(16 * i)) });
        let abs = |a: __m512| _mm512_abs_ps(a);
        let mut top = abs(x[0]);
        let mut finite = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(top, _mm512_set1_ps(f32::INFINITY));
        for &xi in &x[1..] {
            top = _mm512_max_ps(top, abs(xi));
            finite &= _mm512_cmp_ps_mask::<_CMP_LT_OQ>(abs(xi), _mm512_set1_ps(f32::INFINITY));
        }
        if finite != 0xFFFF {
            return super::block(v);
        }
        let amax = _mm512_reduce_max_ps(top);
        if amax == 0.0 {
            return super::block(v);
        }
        // The first value whose magnitude is `amax`.
        let at = x
            .iter()
            .enumerate()
            .find_map(|(i, &xi)| {
                let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(abs(xi), _mm512_set1_ps(amax));
                (hit != 0).then(|| 16 * i + hit.trailing_zeros() as usize)
            })
            .expect("amax is one of the values");
        let iscale = -127.0 / v[at];
        let scale = _mm512_set1_ps(iscale);
        let mut block = Q8KBlock {
            d: 1.0 / iscale,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
            sums32: [0; QK_K / 32],
        };
        for (i, &xi) in x.iter().enumerate() {
            let q = _mm512_min_epi32(nearest_int16(xi, scale), _mm512_set1_epi32(127));
            block.bsums[i] = _mm512_reduce_add_epi32(q) as i16;
            // SAFETY: 16 bytes at 16 * i within the 256 of `qs`.
            unsafe {
                _mm_storeu_si128(
                    block.qs.as_mut_ptr().add(16 * i) as *mut __m128i,
                    _mm512_cvtepi32_epi8(q),
                )
            };
        }
        sums32(&mut block);
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_llama_cpp_s() {
        // The largest magnitude is negative: iscale = -127 / -127 = 1, ties to even.
        let mut x = vec![0f32; QK_K];
        x[..6].copy_from_slice(&[-127.0, 100.0, 0.5, 1.5, -2.5, 3.0]);
        x[20] = 7.0;
        let b = &quantize(&x)[0];
        assert_eq!(&b.qs[..6], &[-127, 100, 0, 2, -2, 3]);
        assert_eq!(b.d, 1.0);
        assert_eq!(b.bsums[0], -127 + 100 + 2 - 2 + 3);
        assert_eq!(b.bsums[1], 7);
        // Positive max: iscale = -127 / max, so values come out negated and d negative.
        let b = &quantize(&[2.0; QK_K])[0];
        assert_eq!((b.qs[0], b.d), (-127, -2.0 / 127.0));
        let zero = &quantize(&[0f32; QK_K])[0];
        assert_eq!((zero.d, zero.qs, zero.bsums), (0.0, [0; QK_K], [0; 16]));
    }

    fn same(a: &Q8KBlock, b: &Q8KBlock) -> bool {
        a.d.to_bits() == b.d.to_bits() && a.qs == b.qs && a.bsums == b.bsums && a.sums32 == b.sums32
    }

    #[test]
    fn simd_rounding_equals_the_portable_code() {
        let mut rows: Vec<Vec<f32>> = (0..40)
            .map(|s| {
                crate::test_support::random(QK_K, s)
                    .iter()
                    .map(|v| v * (1 << (s % 20)) as f32)
                    .collect()
            })
            .collect();
        // Ties of magnitude with both signs, the first one deciding the sign of `d`.
        let mut tie = vec![0.25f32; QK_K];
        tie[7] = -3.0;
        tie[200] = 3.0;
        rows.push(tie.clone());
        tie[7] = 3.0;
        tie[200] = -3.0;
        rows.push(tie.clone());
        tie[9] = -3.0;
        rows.push(tie);
        // Halfway values (ties to even), zeros, one value only, tiny values.
        rows.push((0..QK_K).map(|i| i as f32 - 127.5).collect());
        rows.push(vec![0.0; QK_K]);
        let mut one = vec![0.0f32; QK_K];
        one[255] = -1e-30;
        rows.push(one);
        // Not finite: the portable code decides.
        let mut odd = vec![1.0f32; QK_K];
        odd[3] = f32::NAN;
        rows.push(odd.clone());
        odd[3] = f32::INFINITY;
        rows.push(odd);
        for (i, row) in rows.iter().enumerate() {
            let want = block(row);
            let got = quantize(row);
            assert!(same(&got[0], &want), "row {i}");
            assert_eq!(want.sums32[3], want.bsums[6] + want.bsums[7]);
        }
    }
}
