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

/// llama.cpp's `quantize_row_q8_K_ref` for one row (`x.len()` a multiple of 256).
pub(crate) fn quantize(x: &[f32]) -> Vec<Q8KBlock> {
    x.chunks_exact(QK_K)
        .map(|v| {
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
            for (sum, pair) in block.sums32.iter_mut().zip(block.bsums.chunks_exact(2)) {
                *sum = pair[0] + pair[1];
            }
            block.d = 1.0 / iscale;
            block
        })
        .collect()
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
}
