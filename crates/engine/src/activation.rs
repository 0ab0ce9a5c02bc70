//! The MLP's gated activation `silu(gate) * up` in one pass, on the pool's threads.
//!
//! candle computes `silu` and the product as two element-wise passes on one thread for the
//! sizes of a decode step (a twentieth of a batched step's time went there, the second thread
//! idle). Here each element is `g / (1 + exp(-g)) * u`, candle's `silu` formula, with the
//! kernels' own exponential ([`crate::expf`], within 2 ulp of libm's `expf`) 8 lanes at a time:
//! libm's scalar `expf` had made this pass 5% of a batched decode step of SmolLM2. The SIMD
//! and portable code give the same bits (tested), and prefill and decode both go through here.

use candle_core::Tensor;

use crate::error::Result;
use crate::rowwise::cpu_f32s;

/// Fewest elements per task.
const MIN_CHUNK: usize = 256;

/// Elements per task for `n`: about four tasks per thread of the pool (a decode step's 1,536
/// to 16,384 values were one to four tasks of 4,096, so one thread did most of them).
fn chunk_len(n: usize) -> usize {
    n.div_ceil(4 * crate::pool::threads()).max(MIN_CHUNK)
}

/// `silu(gate) * up` for two tensors of one shape; candle's operations where the fused pass
/// does not apply (another device or type, a strided view).
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if let Some(out) = fused(gate, up) {
        return Ok(Tensor::from_vec(out, gate.shape(), gate.device())?);
    }
    Ok((candle_nn::ops::silu(gate)? * up)?)
}

fn fused(gate: &Tensor, up: &Tensor) -> Option<Vec<f32>> {
    if gate.shape() != up.shape() {
        return None;
    }
    let (g_storage, g_layout) = gate.storage_and_layout();
    let (u_storage, u_layout) = up.storage_and_layout();
    let g = cpu_f32s(&g_storage, g_layout)?;
    let u = cpu_f32s(&u_storage, u_layout)?;
    let mut out = vec![0f32; g.len()];
    let chunk = chunk_len(g.len());
    crate::pool::for_each_chunk_mut(&mut out, chunk, |i, out| {
        let (g, u) = (&g[i * chunk..], &u[i * chunk..]);
        silu_mul_slices(&g[..out.len()], &u[..out.len()], out);
    });
    Some(out)
}

/// `out = g / (1 + exp(-g)) * u`, element by element.
fn silu_mul_slices(g: &[f32], u: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::rowwise::simd_available() {
        // SAFETY: `simd_available()` saw AVX2 and FMA on this CPU.
        unsafe { avx2::silu_mul(g, u, out) };
        return;
    }
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = silu_mul_one(g, u);
    }
}

/// One element of [`silu_mul_slices`].
#[inline(always)]
fn silu_mul_one(g: f32, u: f32) -> f32 {
    g / (1.0 + crate::expf::exp(-g)) * u
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::silu_mul_slices`], 8 lanes at a time with the portable operations.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
        let n = out.len();
        assert!(g.len() >= n && u.len() >= n);
        let full = n / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        let sign = _mm256_set1_ps(-0.0);
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 <= full <= n, inside all three slices.
            unsafe {
                let gv = _mm256_loadu_ps(g.as_ptr().add(i));
                let e = crate::expf::avx2::exp8(_mm256_xor_ps(gv, sign));
                let s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
                let o = _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr().add(i)));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), o);
            }
        }
        for i in full..n {
            out[i] = super::silu_mul_one(g[i], u[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;
    use candle_core::{DType, Device};

    #[test]
    fn matches_candles_silu_times_up_and_simd_equals_the_portable_code() {
        let dev = Device::Cpu;
        // More than one task, not a multiple of the task size nor of the vector width; values
        // up to +-100 so that the exponential's over- and underflows are in.
        let n = 40 * MIN_CHUNK + 75;
        assert!(chunk_len(n) < n && !n.is_multiple_of(chunk_len(n)));
        let wide = |seed| -> Vec<f32> { random(n, seed).iter().map(|v| v * 200.0).collect() };
        let (g, u) = (wide(1), wide(2));
        let gate = Tensor::from_vec(g.clone(), (5, n / 5), &dev).unwrap();
        let up = Tensor::from_vec(u.clone(), gate.shape(), &dev).unwrap();
        let want = (candle_nn::ops::silu(&gate).unwrap() * &up).unwrap();
        let got = silu_mul(&gate, &up).unwrap();
        assert_eq!(got.dims(), want.dims());
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (got, want) = (values(&got), values(&want));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 4.0 * f32::EPSILON * b.abs() + 1e-30,
                "{i}: {a} vs {b}"
            );
        }
        // Every element is the portable code's, bit for bit.
        let portable: Vec<u32> = g
            .iter()
            .zip(&u)
            .map(|(&g, &u)| silu_mul_one(g, u).to_bits())
            .collect();
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            portable
        );
        // A strided view takes candle's path.
        let t = gate.t().unwrap();
        let got = silu_mul(&t, &t).unwrap();
        let want = (candle_nn::ops::silu(&t).unwrap() * &t).unwrap();
        assert_eq!(values(&got), values(&want));
        assert_eq!(got.dtype(), DType::F32);
    }
}
