//! Loading a LLaMA model from a GGUF v3 file (llama.cpp's format).
//!
//! Metadata keys and tensor names are llama.cpp's (`llama.embedding_length`,
//! `blk.{i}.attn_q.weight`, ...; see llama.cpp `convert_hf_to_gguf.py` and `llama-arch.cpp`).
//! Tensors stay in their GGML type (F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, and the
//! other types candle computes with) behind [`Linear`]. `convert_hf_to_gguf.py` permutes the
//! rows of `attn_q`/`attn_k` for llama.cpp's interleaved RoPE, so the weights are marked
//! [`RopeLayout::Interleaved`] and used as stored. Llama 3 frequency scaling comes as the
//! optional `rope_freqs.weight` tensor. The tokenizer is built from `tokenizer.ggml.*`.
//!
//! Before candle reads anything, [`super::gguf_header`] walks the header itself so that a
//! truncated file or a tensor type candle cannot compute with is reported by file and tensor
//! name rather than as a generic read error.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use super::gguf_header;
use super::LoadedModel;
use crate::config::{special_tokens_from_gguf, GgufLlamaMetadata, LlamaConfig};
use crate::error::{EngineError, Result};
use crate::linear::Linear;
use crate::model::{LayerWeights, LlamaWeights};
use crate::rope::RopeLayout;
use crate::tokenizer::Tokenizer;

/// Token texts llama.cpp treats as end-of-generation, whatever their token type
/// (`llama_vocab::impl::load`, the `special_eog_ids` scan).
const EOG_TOKEN_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Fill-in-the-middle pad / repository / file-separator token texts; llama.cpp takes the first
/// of each group found in the vocabulary and also ends generation on it.
const FIM_EOG_GROUPS: &[&[&str]] = &[
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];

/// Load model, tokenizer and special tokens from a `.gguf` file onto `device`.
pub fn load_gguf(path: &Path, device: &Device) -> Result<LoadedModel> {
    // Our own pass over the header: names the tensor of an unsupported type or past the end.
    gguf_header::check(path)?;
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| EngineError::InvalidGguf {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let meta = read_metadata(&content.metadata, path)?;
    let mut tensors = TensorReader {
        content: &content,
        reader: &mut reader,
        path,
        device,
    };

    let has_output = content.tensor_infos.contains_key("output.weight");
    let rope_freqs = if content.tensor_infos.contains_key("rope_freqs.weight") {
        let t = tensors.dense("rope_freqs.weight", None)?;
        Some(t.to_vec1::<f32>()?)
    } else {
        None
    };
    let config = LlamaConfig::from_gguf(&meta, !has_output, rope_freqs, path)?;

    let hidden = config.hidden_size;
    let q_out = config.num_heads * config.head_dim;
    let kv_out = config.num_kv_heads * config.head_dim;
    let inter = config.intermediate_size;
    let embed_tokens = tensors.linear("token_embd.weight", (config.vocab_size, hidden))?;
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let name = |suffix: &str| format!("blk.{i}.{suffix}.weight");
        layers.push(LayerWeights {
            input_layernorm: tensors.dense(&name("attn_norm"), Some(&[hidden]))?,
            q_proj: tensors.linear(&name("attn_q"), (q_out, hidden))?,
            k_proj: tensors.linear(&name("attn_k"), (kv_out, hidden))?,
            v_proj: tensors.linear(&name("attn_v"), (kv_out, hidden))?,
            o_proj: tensors.linear(&name("attn_output"), (hidden, q_out))?,
            post_attention_layernorm: tensors.dense(&name("ffn_norm"), Some(&[hidden]))?,
            gate_proj: tensors.linear(&name("ffn_gate"), (inter, hidden))?,
            up_proj: tensors.linear(&name("ffn_up"), (inter, hidden))?,
            down_proj: tensors.linear(&name("ffn_down"), (hidden, inter))?,
        });
    }
    let norm = tensors.dense("output_norm.weight", Some(&[hidden]))?;
    let lm_head = if has_output {
        tensors.linear("output.weight", (config.vocab_size, hidden))?
    } else {
        embed_tokens.clone()
    };

    let tokenizer = tokenizer_from_metadata(&content.metadata, &meta, path)?;
    Ok(LoadedModel {
        config,
        weights: LlamaWeights {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope_layout: RopeLayout::Interleaved,
        },
        tokenizer,
    })
}

/// Load only the tokenizer of a `.gguf` file (reads the metadata, not the tensors).
pub fn load_gguf_tokenizer(path: &Path) -> Result<Tokenizer> {
    gguf_header::check(path)?;
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let content =
        Content::read(&mut BufReader::new(file)).map_err(|e| EngineError::InvalidGguf {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let meta = read_metadata(&content.metadata, path)?;
    tokenizer_from_metadata(&content.metadata, &meta, path)
}

/// The embedded tokenizer with BOS and end-of-generation ids: `eos`, `eot`, `eom` ids from the
/// metadata plus the tokens llama.cpp recognises as end-of-generation by their text, so that
/// generation stops where llama.cpp's would.
fn tokenizer_from_metadata(
    metadata: &HashMap<String, Value>,
    meta: &GgufLlamaMetadata,
    path: &Path,
) -> Result<Tokenizer> {
    let special = special_tokens_from_gguf(meta, path)?;
    let mut tokenizer = Tokenizer::from_gguf_metadata(metadata, special, path)?;
    let fim = FIM_EOG_GROUPS
        .iter()
        .filter_map(|group| group.iter().find_map(|t| tokenizer.token_id(t)));
    let by_text: Vec<u32> = EOG_TOKEN_TEXTS
        .iter()
        .filter_map(|t| tokenizer.token_id(t))
        .chain(fim)
        .collect();
    for id in by_text {
        tokenizer.add_eos_id(id);
    }
    Ok(tokenizer)
}

struct TensorReader<'a> {
    content: &'a Content,
    reader: &'a mut BufReader<File>,
    path: &'a Path,
    device: &'a Device,
}

impl TensorReader<'_> {
    fn read(&mut self, name: &str) -> Result<QTensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(EngineError::MissingTensor {
                path: self.path.to_path_buf(),
                tensor: name.to_string(),
            });
        }
        self.content
            .tensor(self.reader, name, self.device)
            .map_err(|e| EngineError::InvalidGguf {
                path: self.path.to_path_buf(),
                detail: format!("tensor {name}: {e}"),
            })
    }

    fn check_shape(&self, name: &str, actual: &[usize], expected: &[usize]) -> Result<()> {
        if actual != expected {
            return Err(EngineError::ShapeMismatch {
                path: self.path.to_path_buf(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                actual: actual.to_vec(),
            });
        }
        Ok(())
    }

    /// A weight matrix `(out, in)`, kept in its GGML type.
    fn linear(&mut self, name: &str, expected: (usize, usize)) -> Result<Linear> {
        let q = self.read(name)?;
        self.check_shape(name, q.shape().dims(), &[expected.0, expected.1])?;
        Linear::quantized(Arc::new(q))
    }

    /// A small tensor (norm weight, rope factors), dequantized to f32.
    fn dense(&mut self, name: &str, expected: Option<&[usize]>) -> Result<Tensor> {
        let q = self.read(name)?;
        if let Some(expected) = expected {
            self.check_shape(name, q.shape().dims(), expected)?;
        }
        Ok(q.dequantize(self.device)?.to_dtype(DType::F32)?)
    }
}

/// Read an unsigned integer of any GGUF integer type.
pub(crate) fn meta_usize(
    metadata: &HashMap<String, Value>,
    key: &str,
    path: &Path,
) -> Result<Option<usize>> {
    let Some(value) = metadata.get(key) else {
        return Ok(None);
    };
    let n: Option<i128> = match value {
        Value::U8(v) => Some(*v as i128),
        Value::I8(v) => Some(*v as i128),
        Value::U16(v) => Some(*v as i128),
        Value::I16(v) => Some(*v as i128),
        Value::U32(v) => Some(*v as i128),
        Value::I32(v) => Some(*v as i128),
        Value::U64(v) => Some(*v as i128),
        Value::I64(v) => Some(*v as i128),
        _ => None,
    };
    match n.and_then(|n| usize::try_from(n).ok()) {
        Some(n) => Ok(Some(n)),
        None => Err(EngineError::config(
            path,
            key,
            format!("expected a non-negative integer, found {value:?}"),
        )),
    }
}

fn meta_f64(metadata: &HashMap<String, Value>, key: &str, path: &Path) -> Result<Option<f64>> {
    match metadata.get(key) {
        None => Ok(None),
        Some(Value::F32(v)) => Ok(Some(*v as f64)),
        Some(Value::F64(v)) => Ok(Some(*v)),
        Some(other) => Err(EngineError::config(
            path,
            key,
            format!("expected a float, found {other:?}"),
        )),
    }
}

pub(crate) fn meta_string<'a>(
    metadata: &'a HashMap<String, Value>,
    key: &str,
    path: &Path,
) -> Result<Option<&'a str>> {
    match metadata.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(EngineError::config(
            path,
            key,
            format!("expected a string, found {:?}", other.value_type()),
        )),
    }
}

fn meta_u32(metadata: &HashMap<String, Value>, key: &str, path: &Path) -> Result<Option<u32>> {
    match meta_usize(metadata, key, path)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| EngineError::config(path, key, format!("{n} is not a token id"))),
    }
}

/// Fill the metadata mirror from the raw key/value map.
fn read_metadata(metadata: &HashMap<String, Value>, path: &Path) -> Result<GgufLlamaMetadata> {
    let vocab_size = match meta_usize(metadata, "llama.vocab_size", path)? {
        Some(n) => Some(n),
        None => match metadata.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => Some(tokens.len()),
            _ => None,
        },
    };
    let mut eos_token_ids = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = meta_u32(metadata, key, path)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    Ok(GgufLlamaMetadata {
        architecture: meta_string(metadata, "general.architecture", path)?.map(str::to_string),
        embedding_length: meta_usize(metadata, "llama.embedding_length", path)?,
        feed_forward_length: meta_usize(metadata, "llama.feed_forward_length", path)?,
        block_count: meta_usize(metadata, "llama.block_count", path)?,
        head_count: meta_usize(metadata, "llama.attention.head_count", path)?,
        head_count_kv: meta_usize(metadata, "llama.attention.head_count_kv", path)?,
        key_length: meta_usize(metadata, "llama.attention.key_length", path)?,
        rope_dimension_count: meta_usize(metadata, "llama.rope.dimension_count", path)?,
        layer_norm_rms_epsilon: meta_f64(metadata, "llama.attention.layer_norm_rms_epsilon", path)?,
        rope_freq_base: meta_f64(metadata, "llama.rope.freq_base", path)?,
        rope_scaling_type: meta_string(metadata, "llama.rope.scaling.type", path)?
            .map(str::to_string),
        context_length: meta_usize(metadata, "llama.context_length", path)?,
        vocab_size,
        bos_token_id: meta_u32(metadata, "tokenizer.ggml.bos_token_id", path)?,
        eos_token_ids,
    })
}
