//! Errors of the synthesis crate; each names the file and line or the request that failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Input {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Api(String),
    #[error("{path}: {message}")]
    Prompt { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, SynthError>;

impl SynthError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SynthError::Io {
            path: path.into(),
            source,
        }
    }
}
