//! Loading a LLaMA model from a local Hugging Face model directory.
//!
//! Expects `config.json`, `tokenizer.json`, weights as `model.safetensors` or sharded with
//! `model.safetensors.index.json` (its `weight_map` names the shard of every tensor), and
//! optionally `generation_config.json` (its `eos_token_id` list wins over config.json's).
//! Tensor names are transformers' `LlamaForCausalLM` names verbatim
//! (`model.layers.{i}.self_attn.q_proj.weight`, ...). BF16/F16/F32 weights are converted to
//! f32 for computing; the rows of `q_proj`/`k_proj` are in Hugging Face's rotate-half order, so
//! the weights are marked [`RopeLayout::HalfSplit`]. `lm_head.weight` is optional: without it
//! (or with `tie_word_embeddings`) the embedding table is the output projection.
//!
//! Every shard is checked against its header before use: a file shorter than the data its
//! header declares is reported as truncated, naming the file.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::{read_json, LoadedModel};
use crate::config::{
    special_tokens_from_hf, HfConfig, HfGenerationConfig, LlamaConfig, SpecialTokens,
};
use crate::error::{EngineError, Result};
use crate::linear::Linear;
use crate::model::{LayerWeights, LlamaWeights};
use crate::rope::RopeLayout;
use crate::tokenizer::Tokenizer;

const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

/// `model.safetensors.index.json`, as written on disk.
#[derive(Debug, Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

/// The validated config of a Hugging Face model directory (`config.json`) and its special
/// tokens (`config.json`, overridden by `generation_config.json` when present).
pub(crate) fn read_model_config(dir: &Path) -> Result<(LlamaConfig, SpecialTokens)> {
    let config_path = dir.join("config.json");
    let hf: HfConfig = read_json(&config_path)?;
    let config = LlamaConfig::from_hf(&hf, &config_path)?;
    let generation_path = dir.join("generation_config.json");
    let generation: Option<HfGenerationConfig> = if generation_path.exists() {
        Some(read_json(&generation_path)?)
    } else {
        None
    };
    let special = special_tokens_from_hf(&hf, generation.as_ref(), &config_path)?;
    Ok((config, special))
}

/// Load model, tokenizer and special tokens from a Hugging Face model directory.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let (config, special) = read_model_config(dir)?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), special)?;

    let shards = Shards::open(dir)?;
    let mut tensors = TensorSource {
        shards: &shards,
        device,
    };
    let hidden = config.hidden_size;
    let q_out = config.num_heads * config.head_dim;
    let kv_out = config.num_kv_heads * config.head_dim;
    let inter = config.intermediate_size;
    let embed_tokens = Linear::dense(
        tensors.get_native("model.embed_tokens.weight", &[config.vocab_size, hidden])?,
    )?;
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        let mut linear = |name: String, shape: [usize; 2]| -> Result<Linear> {
            Linear::dense(tensors.get_native(&name, &shape)?)
        };
        layers.push(LayerWeights {
            q_proj: linear(format!("{p}.self_attn.q_proj.weight"), [q_out, hidden])?,
            k_proj: linear(format!("{p}.self_attn.k_proj.weight"), [kv_out, hidden])?,
            v_proj: linear(format!("{p}.self_attn.v_proj.weight"), [kv_out, hidden])?,
            o_proj: linear(format!("{p}.self_attn.o_proj.weight"), [hidden, q_out])?,
            gate_proj: linear(format!("{p}.mlp.gate_proj.weight"), [inter, hidden])?,
            up_proj: linear(format!("{p}.mlp.up_proj.weight"), [inter, hidden])?,
            down_proj: linear(format!("{p}.mlp.down_proj.weight"), [hidden, inter])?,
            input_layernorm: tensors.get(&format!("{p}.input_layernorm.weight"), &[hidden])?,
            post_attention_layernorm: tensors
                .get(&format!("{p}.post_attention_layernorm.weight"), &[hidden])?,
        });
    }
    let norm = tensors.get("model.norm.weight", &[hidden])?;
    let lm_head = if config.tie_word_embeddings || !shards.contains("lm_head.weight") {
        embed_tokens.clone()
    } else {
        Linear::dense(tensors.get_native("lm_head.weight", &[config.vocab_size, hidden])?)?
    };
    Ok(LoadedModel {
        config,
        weights: LlamaWeights {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope_layout: RopeLayout::HalfSplit,
        },
        tokenizer,
    })
}

/// The memory-mapped safetensors files of a checkpoint and which file holds each tensor.
pub(crate) struct Shards {
    files: Vec<(PathBuf, Mmap)>,
    /// tensor name -> index into `files`
    location: HashMap<String, usize>,
}

impl Shards {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        let single_path = dir.join(SINGLE_FILE);
        let (names, weight_map): (Vec<String>, Option<HashMap<String, String>>) =
            if index_path.exists() {
                let index: ShardIndex = read_json(&index_path)?;
                let names: BTreeSet<String> = index.weight_map.values().cloned().collect();
                (names.into_iter().collect(), Some(index.weight_map))
            } else if single_path.exists() {
                (vec![SINGLE_FILE.to_string()], None)
            } else {
                return Err(EngineError::MissingFile {
                    path: single_path,
                    hint: Some(format!("nor {INDEX_FILE} for sharded weights")),
                });
            };
        let mut files = Vec::with_capacity(names.len());
        let mut location = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let path = dir.join(name);
            let mmap = map_checked(&path)?;
            let st = deserialize(&path, &mmap)?;
            for tensor in st.names() {
                location.insert(tensor.to_string(), i);
            }
            files.push((path, mmap));
        }
        if let Some(weight_map) = weight_map {
            for (tensor, file) in weight_map {
                let listed = names.iter().position(|n| *n == file);
                if listed != location.get(&tensor).copied() {
                    return Err(EngineError::InvalidSafetensors {
                        path: index_path.clone(),
                        detail: format!(
                            "weight_map puts {tensor} in {file}, which does not contain it"
                        ),
                    });
                }
            }
        }
        Ok(Self { files, location })
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }
}

pub(crate) struct TensorSource<'a> {
    pub(crate) shards: &'a Shards,
    pub(crate) device: &'a Device,
}

impl TensorSource<'_> {
    /// Tensor `name`, checked against `expected` shape, on the device in its stored type
    /// (bf16, f16 or f32).
    pub(crate) fn get_native(&mut self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let Some(&file_idx) = self.shards.location.get(name) else {
            let path = match self.shards.files.as_slice() {
                [(path, _)] => path.clone(),
                _ => self
                    .shards
                    .files
                    .first()
                    .map(|(p, _)| p.with_file_name(INDEX_FILE))
                    .unwrap_or_default(),
            };
            return Err(EngineError::MissingTensor {
                path,
                tensor: name.to_string(),
            });
        };
        let (path, mmap) = &self.shards.files[file_idx];
        let st = deserialize(path, mmap)?;
        let view = st
            .tensor(name)
            .map_err(|e| EngineError::InvalidSafetensors {
                path: path.clone(),
                detail: format!("tensor {name}: {e}"),
            })?;
        if view.shape() != expected {
            return Err(EngineError::ShapeMismatch {
                path: path.clone(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let dtype = match view.dtype() {
            Dtype::BF16 => DType::BF16,
            Dtype::F16 => DType::F16,
            Dtype::F32 => DType::F32,
            other => {
                return Err(EngineError::UnsupportedTensorType {
                    path: path.clone(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?}"),
                    hint: Some("supported: BF16, F16, F32".into()),
                })
            }
        };
        Ok(Tensor::from_raw_buffer(
            view.data(),
            dtype,
            view.shape(),
            self.device,
        )?)
    }

    /// Like [`Self::get_native`], converted to f32.
    pub(crate) fn get(&mut self, name: &str, expected: &[usize]) -> Result<Tensor> {
        Ok(self.get_native(name, expected)?.to_dtype(DType::F32)?)
    }
}

/// Map a safetensors file after checking that it holds all the bytes its header declares.
fn map_checked(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    // SAFETY: the file is opened read-only; like every mmap-based loader we assume it is not
    // modified while mapped.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
    let truncated = |detail: String| EngineError::TruncatedSafetensors {
        path: path.to_path_buf(),
        detail,
    };
    let len = mmap.len() as u64;
    if len < 8 {
        return Err(truncated(format!(
            "{len} bytes, shorter than the 8-byte header length"
        )));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&mmap[..8]);
    let header_len = u64::from_le_bytes(n);
    if header_len.saturating_add(8) > len {
        return Err(truncated(format!(
            "header declares {header_len} bytes of JSON, file has {len} bytes"
        )));
    }
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&mmap[8..8 + header_len as usize]).map_err(|e| {
            EngineError::InvalidSafetensors {
                path: path.to_path_buf(),
                detail: format!("header: {e}"),
            }
        })?;
    let data_end = header
        .values()
        .filter_map(|v| v.get("data_offsets")?.as_array()?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let needed = 8 + header_len + data_end;
    if needed > len {
        return Err(truncated(format!(
            "header declares {needed} bytes, file has {len}"
        )));
    }
    Ok(mmap)
}

fn deserialize<'a>(path: &Path, mmap: &'a Mmap) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(mmap).map_err(|e| EngineError::InvalidSafetensors {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}
