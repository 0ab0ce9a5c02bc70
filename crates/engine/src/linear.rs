//! The one linear-layer abstraction every projection of the model goes through.
//!
//! A weight is `(out_features, in_features)` as in PyTorch and GGUF (GGUF stores the dims
//! reversed on disk; candle's reader restores this order). It is either a dense f32 tensor
//! (safetensors, GGUF F32/F16/BF16 after conversion) or a GGML-quantized tensor computed with
//! candle's `QMatMul` (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, ...), which quantizes the
//! activations to 8 bits per block as llama.cpp does. The model code never looks inside: it
//! calls [`Linear::forward`], and [`Linear::embed`] for the token-embedding table, which is the
//! same kind of matrix (`(vocab, hidden)`) and doubles as the tied `lm_head`.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};

use crate::error::Result;
use crate::rowwise;

/// GGML types computed as dequantized f32 instead of with candle's kernel. candle 0.11 has no
/// SIMD kernel for Q4_1 (a 300-token SmolLM2-135M prefill takes ~35 s on two cores, against
/// ~1 s dequantized) and rounds its Q8_1 activation sums through f16; the dequantized weights
/// are exact, and the results differ from llama.cpp's only by llama.cpp's own 8-bit activation
/// rounding (see `tests/smollm2_parity.rs`). Costs 7x the memory of the file for these tensors.
///
/// F32/F16/BF16 GGUF tensors become dense f32 here too (as candle's `QMatMul` would do), so
/// that their decode steps take [`rowwise`] like safetensors weights.
const DEQUANTIZE_AT_LOAD: &[GgmlDType] = &[
    GgmlDType::Q4_1,
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
];

/// A `(out_features, in_features)` weight matrix, dense or quantized.
#[derive(Debug, Clone)]
pub enum Linear {
    /// f32 weight `(out, in)`.
    Dense(Tensor),
    /// GGML block-quantized weight `(out, in)` (float GGUF tensors are `Dense`).
    Quantized {
        matmul: QMatMul,
        shape: (usize, usize),
    },
}

impl Linear {
    /// A dense layer from an `(out, in)` tensor, converted to f32.
    pub fn dense(weight: Tensor) -> Result<Self> {
        Ok(Linear::Dense(weight.to_dtype(DType::F32)?))
    }

    /// A layer from a GGML tensor of shape `(out, in)`.
    pub fn quantized(weight: Arc<QTensor>) -> Result<Self> {
        if DEQUANTIZE_AT_LOAD.contains(&weight.dtype()) {
            return Ok(Linear::Dense(weight.dequantize(&weight.device())?));
        }
        let (out_features, in_features) = weight.shape().dims2()?;
        Ok(Linear::Quantized {
            matmul: QMatMul::from_arc(weight)?,
            shape: (out_features, in_features),
        })
    }

    /// `(out_features, in_features)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Linear::Dense(w) => {
                let dims = w.dims();
                (dims[0], dims[1])
            }
            Linear::Quantized { shape, .. } => *shape,
        }
    }

    /// `x @ W^T`: `(seq, in)` -> `(seq, out)`, f32. Dense weights with at most
    /// [`rowwise::MAX_ROWS`] rows (decode steps, one row per sequence) go through
    /// [`rowwise::forward`], so a sequence's row is the same alone and in a batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self {
            Linear::Dense(w) => match rowwise::forward(x, w)? {
                Some(y) => y,
                None => x.matmul(&w.t()?)?,
            },
            Linear::Quantized { matmul, .. } => matmul.forward(x)?,
        };
        Ok(y)
    }

    /// Row lookup, for the embedding table: `ids (seq)` -> `(seq, in)`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let rows = match self {
            Linear::Dense(w) => w.index_select(ids, 0)?,
            Linear::Quantized { matmul, .. } => matmul.embedding(ids)?,
        };
        Ok(rows)
    }
}
