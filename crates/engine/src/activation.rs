//! The MLP's gated activation `silu(gate) * up` in one pass, on the pool's threads.
//!
//! candle computes `silu` and the product as two element-wise passes on one thread for the
//! sizes of a decode step (a twentieth of a batched step's time went there, the second thread
//! idle). Here each element is `g / (1 + exp(-g)) * u`: candle's `silu` formula for f32 (same
//! operations, same `exp`), then the product, so the values are the same bit for bit.

use candle_core::{Storage, Tensor};

use crate::error::Result;

/// Elements per task.
const CHUNK: usize = 4096;

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
    let (Storage::Cpu(g), Storage::Cpu(u)) = (&*g_storage, &*u_storage) else {
        return None;
    };
    let (g_start, g_end) = g_layout.contiguous_offsets()?;
    let (u_start, u_end) = u_layout.contiguous_offsets()?;
    let g = &g.as_slice::<f32>().ok()?[g_start..g_end];
    let u = &u.as_slice::<f32>().ok()?[u_start..u_end];
    let mut out = vec![0f32; g.len()];
    crate::pool::for_each_chunk_mut(&mut out, CHUNK, |i, out| {
        let (g, u) = (&g[i * CHUNK..], &u[i * CHUNK..]);
        for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;
    use candle_core::{DType, Device};

    #[test]
    fn equals_candles_silu_times_up_bit_for_bit() {
        let dev = Device::Cpu;
        // More than one task, not a multiple of the task size; values up to +-100 so that exp
        // over- and underflows are in.
        let n = 3 * CHUNK + 77;
        let wide = |seed| -> Vec<f32> { random(n, seed).iter().map(|v| v * 200.0).collect() };
        let gate = Tensor::from_vec(wide(1), (5, n / 5), &dev).unwrap();
        let up = Tensor::from_vec(wide(2), gate.shape(), &dev).unwrap();
        let want = (candle_nn::ops::silu(&gate).unwrap() * &up).unwrap();
        let got = silu_mul(&gate, &up).unwrap();
        assert_eq!(got.dims(), want.dims());
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(&got), bits(&want));
        // A strided view takes candle's path, with the same values.
        let t = gate.t().unwrap();
        let got = silu_mul(&t, &t).unwrap();
        let want = (candle_nn::ops::silu(&t).unwrap() * &t).unwrap();
        assert_eq!(bits(&got), bits(&want));
        assert_eq!(got.dtype(), DType::F32);
    }
}
