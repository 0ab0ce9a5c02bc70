//! Errors of the evaluation crate; each names the file (and line) it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: invalid JSON: {message}")]
    JsonLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}:{line}: missing field `{field}`")]
    MissingField {
        path: PathBuf,
        line: usize,
        field: &'static str,
    },
    #[error("{path}:{line}: field `{field}` must be {expected}")]
    WrongType {
        path: PathBuf,
        line: usize,
        field: &'static str,
        expected: &'static str,
    },
    #[error("{path}: empty file (no prediction lines)")]
    Empty { path: PathBuf },
    #[error("{path}:{line}: ground truth `{label}` is not a {task} label")]
    BadLabel {
        path: PathBuf,
        line: usize,
        label: String,
        task: &'static str,
    },
    #[error("{path}:{line}: prediction does not belong to {benchmark} row {line} ({reason})")]
    Misaligned {
        path: PathBuf,
        line: usize,
        benchmark: &'static str,
        reason: String,
    },
    #[error("{path}: item {index}: {message}")]
    BadItem {
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("benchmark data not found: {path} does not exist (run `guardreasoner data fetch`, or point --data / GUARDREASONER_DATA_DIR at a directory holding benchmark/{file})")]
    DataMissing { path: PathBuf, file: &'static str },
    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },
    #[error("{path}: SHA-256 mismatch (expected {expected}, got {actual}); the file was not kept")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("run stopped: {0} (everything written before is kept; run the same command again to resume)")]
    Run(String),
    #[error("unknown benchmark `{0}` (known: {known})", known = crate::benchmark::known_names())]
    UnknownBenchmark(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.into(),
            source,
        }
    }
}
