//! The exponential of the CPU kernels (the attention's softmax, the MLP's SiLU), in portable
//! code and 8 lanes at a time with the same bits.
//!
//! Cephes' `expf` polynomial (relative error under 2 ulp): `x = n ln 2 + r` with `n` rounded to
//! even and `|r| <= ln 2 / 2`, then `e^r` by a degree-6 polynomial times `2^n`. Below -87 (where
//! `e^x` leaves f32's normal range) it gives 0, above 88 infinity. Every step is one f32
//! operation or fused multiply-add, so each lane of the SIMD code gives the portable bits.

pub(crate) const EXP_MIN: f32 = -87.0;
pub(crate) const EXP_MAX: f32 = 88.0;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `e^x`: 0 below [`EXP_MIN`], infinity above [`EXP_MAX`], NaN for NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    if x < EXP_MIN {
        return 0.0;
    }
    if x > EXP_MAX {
        return f32::INFINITY;
    }
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO};

    /// [`super::exp`] of 8 lanes.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[inline(always)]
    pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        let e = _mm256_mul_ps(y, two_n);
        // Outside [EXP_MIN, EXP_MAX], where n would leave the exponent's range: 0 below,
        // infinity above.
        let small = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_MIN));
        let large = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_MAX));
        _mm256_blendv_ps(
            _mm256_andnot_ps(small, e),
            _mm256_set1_ps(f32::INFINITY),
            large,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_are_within_two_ulp_of_exp_and_simd_lanes_equal_the_portable_code() {
        let mut worst = 0f64;
        let xs: Vec<f32> = (0..=400_000)
            .map(|i| EXP_MIN + (EXP_MAX - EXP_MIN) * i as f32 / 400_000.0)
            .collect();
        for &x in &xs {
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.0 * f32::EPSILON as f64, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-87.5), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(88.5), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        #[cfg(target_arch = "x86_64")]
        if crate::rowwise::simd_available() {
            use std::arch::x86_64::*;
            let special = [
                0.0,
                -0.0,
                -87.5,
                88.5,
                f32::INFINITY,
                f32::NEG_INFINITY,
                1e-30,
            ];
            let all: Vec<f32> = xs.iter().copied().chain(special).collect();
            for chunk in all.chunks(8) {
                let mut lanes = [0f32; 8];
                lanes[..chunk.len()].copy_from_slice(chunk);
                let mut got = [0f32; 8];
                // SAFETY: AVX2 and FMA (`simd_available`); 8 floats each.
                unsafe {
                    _mm256_storeu_ps(
                        got.as_mut_ptr(),
                        avx2::exp8(_mm256_loadu_ps(lanes.as_ptr())),
                    )
                };
                for (x, g) in lanes.iter().zip(got) {
                    assert_eq!(g.to_bits(), exp(*x).to_bits(), "e^{x}");
                }
            }
        }
    }
}
