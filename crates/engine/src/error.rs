//! The one error type of the engine crate.
//!
//! Every variant carries the facts a user needs to fix the problem (file, tensor name, field,
//! shape, dtype) and renders as a single line that starts with the file it is about, e.g.
//! `model.gguf: truncated GGUF: tensor blk.3.attn_q.weight needs 1327104 bytes at offset
//! 2342912, only 1024 remaining`. Library code returns these; it never panics on bad input.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, EngineError>;

/// Everything that can go wrong while loading a model or running it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file the loader needs does not exist.
    #[error("{}: file not found{}", path.display(), hint_suffix(hint))]
    MissingFile { path: PathBuf, hint: Option<String> },

    /// The model path is neither a directory with `config.json` nor a `.gguf` file.
    #[error("{}: not a model (expected a Hugging Face model directory with config.json, or a .gguf file)", path.display())]
    NotAModel { path: PathBuf },

    /// A JSON file (config, index, generation config) does not parse or has a wrong type.
    #[error("{}: invalid JSON: {detail}", path.display())]
    InvalidJson { path: PathBuf, detail: String },

    /// Reading a file failed at the operating-system level.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A safetensors file ends before the data its header declares.
    #[error("{}: truncated safetensors: {detail}", path.display())]
    TruncatedSafetensors { path: PathBuf, detail: String },

    /// A safetensors file (or its index) is malformed in some other way.
    #[error("{}: invalid safetensors: {detail}", path.display())]
    InvalidSafetensors { path: PathBuf, detail: String },

    /// A GGUF file ends before the data its header declares.
    #[error("{}: truncated GGUF: {detail}", path.display())]
    TruncatedGguf { path: PathBuf, detail: String },

    /// A GGUF file is malformed in some other way (bad magic, bad metadata type, ...).
    #[error("{}: invalid GGUF: {detail}", path.display())]
    InvalidGguf { path: PathBuf, detail: String },

    /// A tensor is stored in a type this engine cannot compute with.
    #[error("{}: tensor {tensor} has unsupported type {dtype}{}", path.display(), hint_suffix(hint))]
    UnsupportedTensorType {
        path: PathBuf,
        tensor: String,
        dtype: String,
        hint: Option<String>,
    },

    /// A tensor the model needs is not in the checkpoint.
    #[error("{}: missing tensor {tensor}", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    /// A tensor has a different shape than the config implies.
    #[error("{}: tensor {tensor} has shape {actual:?}, expected {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    /// A configuration field (config.json, generation_config.json or GGUF metadata) is missing
    /// or out of range.
    #[error("{}: field {field}: {problem}", path.display())]
    InvalidConfig {
        path: PathBuf,
        field: String,
        problem: String,
    },

    /// The tokenizer could not be built from its file or metadata.
    #[error("{}: tokenizer: {detail}", path.display())]
    InvalidTokenizer { path: PathBuf, detail: String },

    /// Encoding or decoding text failed.
    #[error("tokenizer: {detail}")]
    Tokenize { detail: String },

    /// A forward pass would write past the preallocated KV cache.
    #[error("KV cache full: capacity {capacity} tokens, needed {needed}")]
    CacheFull { capacity: usize, needed: usize },

    /// A forward pass was asked to start at a position the cache has not reached.
    #[error("KV cache holds {cached} tokens, cannot start a forward pass at position {start_pos}")]
    CacheGap { cached: usize, start_pos: usize },

    /// A generation request is invalid (empty prompt, bad sampling parameter, ...).
    #[error("generation: {field}: {problem}")]
    InvalidRequest { field: String, problem: String },

    /// Writing a GGUF file (`quantize`) failed after its inputs were read.
    #[error("{}: {detail}", path.display())]
    Export { path: PathBuf, detail: String },

    /// A tensor operation failed (shape bug or device error), with candle's message.
    #[error("tensor operation: {0}")]
    Tensor(#[from] candle_core::Error),
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!(" ({h})"),
        None => String::new(),
    }
}

impl EngineError {
    /// Shorthand for [`EngineError::InvalidConfig`].
    pub(crate) fn config(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        EngineError::InvalidConfig {
            path: path.into(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Shorthand for [`EngineError::Io`], mapping `NotFound` to [`EngineError::MissingFile`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            EngineError::MissingFile { path, hint: None }
        } else {
            EngineError::Io { path, source }
        }
    }
}
