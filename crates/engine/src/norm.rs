//! RMSNorm on the CPU, candle's arithmetic with several rows at a time.
//!
//! candle normalizes a pass of up to 32 rows on the calling thread, one row after the other,
//! each row's sum of squares a serial chain of f32 additions (half a microsecond per row of
//! 576 values, a batched step of SmolLM2 needs 480 such rows; longer passes go to rayon's
//! threads, beside the pool's). Here each task takes [`GROUP`] rows and runs their chains side
//! by side, tasks spread over the pool; every row's operations are candle's, in its order
//! (`sum += v * v` from the first value to the last, `m = sqrt(sum / n + eps)`, `x / m * w`),
//! so the values are candle's bit for bit (tested).

use candle_core::Tensor;

use crate::error::Result;
use crate::rowwise::cpu_f32s;

/// Rows per task, their sums of squares side by side.
const GROUP: usize = 8;

/// `x / sqrt(mean(x^2) + eps) * weight` over the last dim of `x`; candle's kernel where this
/// one does not apply (another device or type; a strided view is made contiguous first).
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    if let Some(out) = on_cpu(x, weight, eps) {
        return Ok(Tensor::from_vec(out, x.shape(), x.device())?);
    }
    Ok(candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps)?)
}

fn on_cpu(x: &Tensor, weight: &Tensor, eps: f32) -> Option<Vec<f32>> {
    let dim = *x.dims().last()?;
    let (x_storage, x_layout) = x.storage_and_layout();
    let (w_storage, w_layout) = weight.storage_and_layout();
    let src = cpu_f32s(&x_storage, x_layout)?;
    let w = cpu_f32s(&w_storage, w_layout)?;
    if dim == 0 || w.len() != dim {
        return None;
    }
    let mut out = vec![0f32; src.len()];
    crate::pool::for_each_chunk_mut(&mut out, GROUP * dim, |t, out| {
        norm_rows(&src[t * GROUP * dim..][..out.len()], w, eps, out);
    });
    Some(out)
}

/// Up to [`GROUP`] rows of `w.len()` values.
fn norm_rows(src: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    let rows = src.len() / dim;
    assert!(rows <= GROUP && src.len() == rows * dim && out.len() == src.len());
    let mut sums = [0f32; GROUP];
    for i in 0..dim {
        for (r, sum) in sums.iter_mut().enumerate().take(rows) {
            let v = src[r * dim + i];
            *sum += v * v;
        }
    }
    for ((src, out), sum) in src
        .chunks_exact(dim)
        .zip(out.chunks_exact_mut(dim))
        .zip(sums)
    {
        let m = (sum / dim as f32 + eps).sqrt();
        for ((o, &s), &a) in out.iter_mut().zip(src).zip(w) {
            *o = s / m * a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;
    use candle_core::Device;

    #[test]
    fn equals_candles_rms_norm_bit_for_bit() {
        let dev = Device::Cpu;
        // 1, 8 and 13 rows (candle's one-thread path), 45 (its rayon path): groups of 8 and a
        // rest; values up to +-1000 and a zero row.
        let dim = 77;
        let weight = Tensor::from_vec(random(dim, 1), dim, &dev).unwrap();
        for rows in [1usize, 8, 13, 45] {
            let mut v: Vec<f32> = random(rows * dim, rows as u32)
                .iter()
                .map(|x| x * 2000.0)
                .collect();
            v[..dim].fill(0.0);
            let x = Tensor::from_vec(v, (rows, dim), &dev).unwrap();
            let want = candle_nn::ops::rms_norm(&x, &weight, 1e-5).unwrap();
            let got = rms_norm(&x, &weight, 1e-5).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            assert_eq!(got.dims(), want.dims());
            assert_eq!(bits(&got), bits(&want), "{rows} rows");
        }
        // A strided view is normalized as its contiguous copy.
        let x = Tensor::from_vec(random(dim * 4, 3), (dim, 4), &dev)
            .unwrap()
            .t()
            .unwrap();
        let w4 = Tensor::from_vec(random(dim, 5), dim, &dev).unwrap();
        let got = rms_norm(&x, &w4, 1e-5).unwrap();
        let want = candle_nn::ops::rms_norm(&x.contiguous().unwrap(), &w4, 1e-5).unwrap();
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            want.to_vec2::<f32>().unwrap()
        );
    }
}
