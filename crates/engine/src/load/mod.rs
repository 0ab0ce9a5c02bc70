//! Loaders: turn a local checkpoint into a validated config, weights, tokenizer and special
//! tokens. File formats live here and only here; the model code sees [`LlamaWeights`].
//!
//! - [`safetensors`]: a Hugging Face model directory (`config.json`, `*.safetensors`,
//!   `tokenizer.json`, optional `generation_config.json`).
//! - [`gguf`]: a llama.cpp `.gguf` file (metadata, GGML tensors, embedded tokenizer).
//!
//! [`load_path`] decides between the two by what the path is. Resolving hub ids and downloading
//! is not done here; callers pass local paths.

pub mod gguf;
mod gguf_header;
pub mod safetensors;

use std::path::Path;

use candle_core::Device;
use serde::de::DeserializeOwned;

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::model::LlamaWeights;
use crate::tokenizer::Tokenizer;

/// Which on-disk format a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// Hugging Face directory with safetensors weights.
    HfSafetensors,
    /// llama.cpp GGUF file.
    Gguf,
}

/// Everything a loader produces.
#[derive(Debug)]
pub struct LoadedModel {
    pub config: LlamaConfig,
    pub weights: LlamaWeights,
    /// Tokenizer with the model's BOS and end-of-generation ids.
    pub tokenizer: Tokenizer,
}

/// What `path` holds: a directory is a Hugging Face checkpoint, a file a GGUF.
pub fn detect_format(path: &Path) -> Result<ModelFormat> {
    if path.is_dir() {
        if path.join("config.json").is_file() {
            Ok(ModelFormat::HfSafetensors)
        } else {
            Err(EngineError::MissingFile {
                path: path.join("config.json"),
                hint: Some("a Hugging Face model directory needs config.json".into()),
            })
        }
    } else if path.is_file() {
        Ok(ModelFormat::Gguf)
    } else if path.exists() {
        Err(EngineError::NotAModel {
            path: path.to_path_buf(),
        })
    } else {
        Err(EngineError::MissingFile {
            path: path.to_path_buf(),
            hint: None,
        })
    }
}

/// Load the checkpoint at `path` (directory or `.gguf` file) onto `device`.
pub fn load_path(path: &Path, device: &Device) -> Result<(ModelFormat, LoadedModel)> {
    let format = detect_format(path)?;
    let loaded = match format {
        ModelFormat::HfSafetensors => safetensors::load_hf_dir(path, device)?,
        ModelFormat::Gguf => gguf::load_gguf(path, device)?,
    };
    Ok((format, loaded))
}

/// Read and parse a JSON file, with errors naming the file.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| EngineError::InvalidJson {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}
