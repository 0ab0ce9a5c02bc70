//! The one linear-layer abstraction every projection of the model goes through.
//!
//! A weight is `(out_features, in_features)` as in PyTorch and GGUF (GGUF stores the dims
//! reversed on disk; candle's reader restores this order). It is either a dense f32 tensor
//! (safetensors, GGUF F32/F16/BF16 after conversion) or a GGML-quantized tensor computed with
//! candle's `QMatMul` (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, ...), which quantizes the
//! activations to 8 bits per block as llama.cpp does. The model code never looks inside: it
//! calls [`Linear::forward`], and [`Linear::embed`] for the token-embedding table, which is the
//! same kind of matrix (`(vocab, hidden)`) and doubles as the tied `lm_head`.
//!
//! On the CPU, the formats with kernels of our own ([`crate::quant`]: Q4_1, Q8_0, Q4_K, Q6_K)
//! are `Packed`: passes of up to [`rowwise::MAX_ROWS`] rows (decode steps, batched decode,
//! speculative verification) use our kernels, with llama.cpp's arithmetic and one weight read
//! for all the rows. Longer passes (prompt prefill) of Q4_K and Q6_K use our AMX kernels where
//! the CPU has AMX ([`crate::quant::amx`]: the decode kernels' bits, 2-3x their speed there);
//! otherwise, and for Q8_0, candle's GEMM on the same bytes where candle has its AVX-512 VNNI /
//! AVX-VNNI kernels, which beat ours there. Other GGML types use candle's `QMatMul`.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};

use crate::error::Result;
use crate::quant::{self, PackedMatrix};
use crate::rowwise;

/// GGML types computed as dense weights (as candle's `QMatMul` would do), so that their decode
/// steps take [`rowwise`] like safetensors weights; F16/BF16 stay half precision on the CPU.
const DEQUANTIZE_AT_LOAD: &[GgmlDType] = &[GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16];

/// Whether candle computes K-quants and Q8_0 with its AVX-512 VNNI / AVX-VNNI kernels on
/// repacked weights (its own runtime choice, `MISTRALRS_FORCE_AVX2=1` turning it off). They
/// beat ours on every format for long passes (docs/BENCHMARKS.md); without
/// them candle's single-row products are its portable code (this build does not enable AVX
/// at compile time), and ours are used throughout.
fn candle_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if std::env::var("MISTRALRS_FORCE_AVX2").as_deref() == Ok("1") {
            return false;
        }
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"))
            || (is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether candle's repacked VNNI kernels take a `(rows, cols)` K-quant or Q8_0 matrix: they
/// need the CPU feature, rows in tiles of 16 and whole 256-value blocks per row (candle's
/// `repack_x86::select`); otherwise candle falls back to one row at a time.
fn candle_repacks(rows: usize, cols: usize) -> bool {
    candle_has_vnni() && rows.is_multiple_of(16) && cols.is_multiple_of(256)
}

/// The shortest pass for which candle computes Q4_K with AMX tiles (`repack::try_matmul_f32`),
/// repacking the weights for them on first use.
const CANDLE_AMX_MIN_ROWS: usize = 32;

/// A `(out_features, in_features)` weight matrix, dense or quantized.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Dense weight `(out, in)`: f32, or bf16/f16 on the CPU (widened exactly when used).
    Dense(Tensor),
    /// Q4_1, Q8_0, Q4_K or Q6_K on the CPU, computed by [`crate::quant`]'s kernels, and by
    /// candle's `gemm` (same bytes) for passes of more than [`rowwise::MAX_ROWS`] rows where
    /// the matrix does not compute those itself (`PackedMatrix::computes_long_passes`).
    Packed {
        matrix: Arc<dyn PackedMatrix>,
        gemm: Option<QMatMul>,
    },
    /// GGML block-quantized weight `(out, in)` (float GGUF tensors are `Dense`).
    Quantized {
        matmul: QMatMul,
        shape: (usize, usize),
    },
}

impl Linear {
    /// A dense layer from an `(out, in)` tensor. bf16/f16 weights stay in their type on the CPU
    /// (half the memory and half the bytes per decode step; [`rowwise`] widens them exactly);
    /// everything else is converted to f32.
    pub fn dense(weight: Tensor) -> Result<Self> {
        let weight =
            if weight.device().is_cpu() && matches!(weight.dtype(), DType::BF16 | DType::F16) {
                weight.contiguous()?
            } else {
                weight.to_dtype(DType::F32)?
            };
        crate::hugepages::advise_tensor(&weight);
        Ok(Linear::Dense(weight))
    }

    /// A layer from a GGML tensor of shape `(out, in)`.
    pub fn quantized(weight: Arc<QTensor>) -> Result<Self> {
        let (out_features, in_features) = weight.shape().dims2()?;
        if weight.device().is_cpu() && !DEQUANTIZE_AT_LOAD.contains(&weight.dtype()) {
            let bytes = quant::Bytes::of(weight.clone())?;
            if let Some(matrix) = quant::pack(weight.dtype(), bytes, out_features, in_features)? {
                let gemm = (weight.dtype() != GgmlDType::Q4_1
                    && !matrix.computes_long_passes()
                    && candle_repacks(out_features, in_features))
                .then(|| QMatMul::from_arc(weight.clone()))
                .transpose()?;
                if let Some(gemm) = &gemm {
                    // candle repacks the weights for its GEMM on first use (seconds for a 1B
                    // model): do it now, at load, rather than in the first prompt's time. Q4_K
                    // has a second layout, for its AMX kernel, made by the first pass of at
                    // least 32 rows on CPUs with AMX: probe with that many.
                    let rows = (rowwise::MAX_ROWS + 1).max(CANDLE_AMX_MIN_ROWS);
                    let probe = Tensor::zeros((rows, in_features), DType::F32, &weight.device())?;
                    gemm.forward(&probe)?;
                }
                return Ok(Linear::Packed { matrix, gemm });
            }
        }
        if weight.dtype() == GgmlDType::Q4_1 {
            // Off the CPU: candle has no Q4_1 kernel there worth using; exact f32 weights.
            return Ok(Linear::Dense(weight.dequantize(&weight.device())?));
        }
        if DEQUANTIZE_AT_LOAD.contains(&weight.dtype()) {
            let device = weight.device();
            // Half precision stays half precision on the CPU (candle's CUDA backend has no
            // f16 -> f16 dequantize; off the CPU `dense` makes f32 anyway).
            // The file's half-precision values are taken as they are: candle's dequantize
            // goes through an f32 copy of the matrix on one thread (most of a 1B F16 file's
            // 15-20 s load here).
            let half = match weight.dtype() {
                GgmlDType::F16 => Some(DType::F16),
                GgmlDType::BF16 => Some(DType::BF16),
                _ => None,
            };
            return Linear::dense(match half {
                Some(dtype) if device.is_cpu() => Tensor::from_raw_buffer(
                    &weight.data()?,
                    dtype,
                    &[out_features, in_features],
                    &device,
                )?,
                _ => weight.dequantize(&device)?,
            });
        }
        Ok(Linear::Quantized {
            matmul: QMatMul::from_arc(weight)?,
            shape: (out_features, in_features),
        })
    }

    /// This layer with Q4_1 weights dequantized to dense f32 (exact weights, no activation
    /// rounding); other layers unchanged.
    pub fn dequantize_q4_1(self) -> Result<Self> {
        let Linear::Packed { matrix: m, .. } = &self else {
            return Ok(self);
        };
        if m.format() != "Q4_1" {
            return Ok(self);
        }
        let (rows, cols) = m.shape();
        let mut values = vec![0f32; rows * cols];
        for (r, out) in values.chunks_exact_mut(cols).enumerate() {
            m.dequantize_row(r, out);
        }
        Ok(Linear::Dense(Tensor::from_vec(
            values,
            (rows, cols),
            &candle_core::Device::Cpu,
        )?))
    }

    /// `(out_features, in_features)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Linear::Dense(w) => {
                let dims = w.dims();
                (dims[0], dims[1])
            }
            Linear::Packed { matrix, .. } => matrix.shape(),
            Linear::Quantized { shape, .. } => *shape,
        }
    }

    /// `x @ W^T`: `(seq, in)` -> `(seq, out)`, f32. Dense weights with at most
    /// [`rowwise::MAX_ROWS`] rows (decode steps, one row per sequence) go through
    /// [`rowwise::forward`], so a sequence's row is the same alone and in a batch; longer
    /// passes through [`rowwise::forward_long`] (same products) on CPUs with AVX-512F.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self {
            Linear::Dense(w) => match rowwise::forward(x, w)? {
                Some(y) => y,
                None if let Some(y) = rowwise::forward_long(x, w)? => y,
                // Prefill chunks without AVX-512: candle's f32 GEMM (half-precision weights
                // widened per call).
                None if w.dtype() == DType::F32 => x.matmul(&w.t()?)?,
                None => {
                    let wide = match rowwise::widen(w)? {
                        Some(wide) => wide,
                        None => w.to_dtype(DType::F32)?,
                    };
                    x.matmul(&wide.t()?)?
                }
            },
            Linear::Packed {
                gemm: Some(gemm), ..
            } if x.dims2()?.0 > rowwise::MAX_ROWS => gemm.forward(x)?,
            Linear::Packed { matrix: m, .. } => {
                let (n, _) = x.dims2()?;
                let y = rowwise::with_values(x, |x| m.matmul_t(x, n))?;
                Tensor::from_vec(y, (n, m.shape().0), x.device())?
            }
            Linear::Quantized { matmul, .. } => matmul.forward(x)?,
        };
        Ok(y)
    }

    /// Row lookup, for the embedding table: `ids (seq)` -> `(seq, in)`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let rows = match self {
            Linear::Dense(w) => w.index_select(ids, 0)?.to_dtype(DType::F32)?,
            Linear::Packed { matrix: m, .. } => {
                let (vocab, cols) = m.shape();
                let list = ids.to_vec1::<u32>()?;
                let mut rows = vec![0f32; list.len() * cols];
                for (&id, out) in list.iter().zip(rows.chunks_exact_mut(cols)) {
                    if id as usize >= vocab {
                        return Err(crate::error::EngineError::InvalidRequest {
                            field: "tokens".into(),
                            problem: format!("id {id} is outside the embedding table of {vocab}"),
                        });
                    }
                    m.dequantize_row(id as usize, out);
                }
                Tensor::from_vec(rows, (list.len(), cols), ids.device())?
            }
            Linear::Quantized { matmul, .. } => matmul.embedding(ids)?,
        };
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random;
    use candle_core::Device;

    #[test]
    fn half_precision_ggml_tensors_keep_their_values_and_type() {
        let dev = Device::Cpu;
        let (out, inp) = (6, 40);
        let w = Tensor::from_vec(random(out * inp, 11), (out, inp), &dev).unwrap();
        for (ggml, dtype) in [(GgmlDType::F16, DType::F16), (GgmlDType::BF16, DType::BF16)] {
            let q = Arc::new(QTensor::quantize(&w, ggml).unwrap());
            let want = q.dequantize(&dev).unwrap().to_vec2::<f32>().unwrap();
            let Linear::Dense(dense) = Linear::quantized(q).unwrap() else {
                panic!("{ggml:?} is not dense");
            };
            assert_eq!(dense.dtype(), dtype);
            assert_eq!(dense.dims(), &[out, inp]);
            let got = dense
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert_eq!(got, want, "{ggml:?}");
        }
    }
}
