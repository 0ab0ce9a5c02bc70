//! Errors of the guard layer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Engine(#[from] guardreasoner_engine::EngineError),
    #[error("{0}")]
    Hub(String),
    #[error("model path {path} does not exist (expected a Hugging Face model directory or a .gguf file)")]
    ModelNotFound { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("backend: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, GuardError>;
