//! Which GGML type each tensor gets: llama.cpp's choices, so that our files look like theirs.
//!
//! Follows llama.cpp `src/llama-quant.cpp` (`llama_tensor_get_type`) for the three file types
//! we write:
//! - `f16` (`LLAMA_FTYPE_MOSTLY_F16`): every matrix F16 (as `convert_hf_to_gguf.py --outtype f16`).
//! - `q8_0` (`LLAMA_FTYPE_MOSTLY_Q8_0`): every matrix Q8_0, the embedding table included.
//! - `q4_k_m` (`LLAMA_FTYPE_MOSTLY_Q4_K_M`): Q4_K by default; Q6_K for `output.weight`, or for
//!   `token_embd.weight` when the embeddings are tied and there is no `output.weight`; Q6_K for
//!   `blk.N.attn_v` and `blk.N.ffn_down` in the layers `use_more_bits(N, n_layers)` picks (the
//!   first and last eighth of the layers and every third layer in between). Every other matrix,
//!   `token_embd` of an untied model included, is Q4_K.
//!
//! Invariants: 1-D tensors (norms, `rope_freqs`) are always F32. A K-quant needs rows that
//! are a multiple of 256 values; where they are not (the tiny test model, hidden 64), the type
//! falls back as llama.cpp's `convert_incompatible_tensor` does: Q4_K -> Q5_0, Q6_K -> Q8_0.
//! Q8_0/Q5_0 need multiples of 32; a row that is not falls back to F16.

use std::fmt;
use std::str::FromStr;

use candle_core::quantized::GgmlDType;

/// The GGUF file types `guardreasoner quantize` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// All matrices 8-bit (GGML Q8_0, 8.5 bits per weight).
    Q8_0,
    /// llama.cpp's Q4_K_M mix (Q4_K, with Q6_K for the sensitive tensors).
    Q4KM,
    /// All matrices IEEE half precision.
    F16,
}

impl QuantType {
    /// Every type, in the order the CLI lists them.
    pub const ALL: [QuantType; 3] = [QuantType::Q8_0, QuantType::Q4KM, QuantType::F16];

    /// The name used on the command line and in file names (`q8_0`, `q4_k_m`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Q8_0 => "q8_0",
            QuantType::Q4KM => "q4_k_m",
            QuantType::F16 => "f16",
        }
    }

    /// llama.cpp's `llama_ftype`, stored as `general.file_type`.
    pub fn llama_ftype(self) -> u32 {
        match self {
            QuantType::F16 => 1,
            QuantType::Q8_0 => 7,
            QuantType::Q4KM => 15,
        }
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        QuantType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown type {s:?} (expected q8_0, q4_k_m or f16)"))
    }
}

/// What a tensor is, as far as the type choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// `token_embd.weight`
    TokenEmbedding,
    /// `output.weight` (absent when the embeddings are tied)
    Output,
    /// `blk.N.attn_v.weight`
    AttnV { layer: usize },
    /// `blk.N.ffn_down.weight`
    FfnDown { layer: usize },
    /// Any other matrix (`attn_q`, `attn_k`, `attn_output`, `ffn_gate`, `ffn_up`).
    OtherMatrix,
    /// A 1-D tensor (norm weights, `rope_freqs`).
    Vector,
}

/// llama.cpp's `use_more_bits(i_layer, n_layers)`.
pub fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    layer < n_layers / 8
        || layer >= 7 * n_layers / 8
        || (layer as isize - (n_layers / 8) as isize) % 3 == 2
}

/// The GGML type of a tensor with `row_len` values per row (`ne[0]`, the input features) in a
/// model of `n_layers` layers that has (`has_output`) or lacks a separate `output.weight`.
pub fn tensor_type(
    qtype: QuantType,
    role: TensorRole,
    row_len: usize,
    n_layers: usize,
    has_output: bool,
) -> GgmlDType {
    if role == TensorRole::Vector {
        return GgmlDType::F32;
    }
    let wanted = match qtype {
        QuantType::F16 => GgmlDType::F16,
        QuantType::Q8_0 => GgmlDType::Q8_0,
        QuantType::Q4KM => match role {
            TensorRole::Output => GgmlDType::Q6K,
            TensorRole::TokenEmbedding if !has_output => GgmlDType::Q6K,
            TensorRole::AttnV { layer } | TensorRole::FfnDown { layer }
                if use_more_bits(layer, n_layers) =>
            {
                GgmlDType::Q6K
            }
            _ => GgmlDType::Q4K,
        },
    };
    fallback(wanted, row_len)
}

/// llama.cpp's replacement for a type whose block does not divide the row.
fn fallback(wanted: GgmlDType, row_len: usize) -> GgmlDType {
    if row_len.is_multiple_of(wanted.block_size()) {
        return wanted;
    }
    let next = match wanted {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        _ => GgmlDType::F16,
    };
    fallback(next, row_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_cpp_for_16_and_28_layers() {
        let picked = |n| (0..n).filter(|&i| use_more_bits(i, n)).collect::<Vec<_>>();
        // Llama-3.2-1B Q4_K_M files from llama.cpp: attn_v / ffn_down Q6_K in these layers.
        assert_eq!(picked(16), vec![0, 1, 4, 7, 10, 13, 14, 15]);
        // Llama-3.2-3B (28 layers): n/8 = 3, 7n/8 = 24.
        assert_eq!(
            picked(28),
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]
        );
    }

    #[test]
    fn q4_k_m_mix_for_the_llama_3_2_1b_shape() {
        let t = |role, row| tensor_type(QuantType::Q4KM, role, row, 16, false);
        assert_eq!(t(TensorRole::TokenEmbedding, 2048), GgmlDType::Q6K);
        assert_eq!(t(TensorRole::AttnV { layer: 0 }, 2048), GgmlDType::Q6K);
        assert_eq!(t(TensorRole::AttnV { layer: 2 }, 2048), GgmlDType::Q4K);
        assert_eq!(t(TensorRole::FfnDown { layer: 4 }, 8192), GgmlDType::Q6K);
        assert_eq!(t(TensorRole::FfnDown { layer: 5 }, 8192), GgmlDType::Q4K);
        assert_eq!(t(TensorRole::OtherMatrix, 2048), GgmlDType::Q4K);
        assert_eq!(t(TensorRole::Vector, 2048), GgmlDType::F32);
        // Untied (8B): the embedding table stays Q4_K, output gets Q6_K.
        let untied = |role| tensor_type(QuantType::Q4KM, role, 4096, 32, true);
        assert_eq!(untied(TensorRole::TokenEmbedding), GgmlDType::Q4K);
        assert_eq!(untied(TensorRole::Output), GgmlDType::Q6K);
    }

    #[test]
    fn rows_not_divisible_by_256_fall_back_like_llama_cpp() {
        let t = |role| tensor_type(QuantType::Q4KM, role, 64, 2, false);
        assert_eq!(t(TensorRole::OtherMatrix), GgmlDType::Q5_0);
        assert_eq!(t(TensorRole::TokenEmbedding), GgmlDType::Q8_0);
        assert_eq!(
            tensor_type(QuantType::Q8_0, TensorRole::OtherMatrix, 48, 2, false),
            GgmlDType::F16
        );
    }

    #[test]
    fn type_names_round_trip() {
        for t in QuantType::ALL {
            assert_eq!(t.name().parse::<QuantType>(), Ok(t));
        }
        assert!("q5_k_m".parse::<QuantType>().is_err());
    }
}
