//! Prediction files in the official layout: `<dir>/<Benchmark>/generated_predictions.jsonl`,
//! one JSON object per line with `prompt`, `label` and `predict` (LLaMA-Factory's output).
//!
//! Malformed lines are errors naming the file and the 1-based line number. Blank lines are
//! skipped (but counted for line numbers).

use crate::benchmark::Benchmark;
use crate::error::{EvalError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The file name of a prediction file inside its benchmark directory.
pub const PREDICTIONS_FILE: &str = "generated_predictions.jsonl";

/// One line of a prediction file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictionRecord {
    /// The full prompt the model was given.
    pub prompt: String,
    /// The reference answer (label word or answers text); `null` when there is none.
    pub label: Option<String>,
    /// The model's output.
    pub predict: String,
}

/// A loaded prediction file.
#[derive(Debug, Clone)]
pub struct PredictionFile {
    pub path: PathBuf,
    /// `(line number, record)` for every non-blank line.
    pub records: Vec<(usize, PredictionRecord)>,
}

/// The path of a benchmark's prediction file under a run directory.
pub fn prediction_path(dir: &Path, benchmark: Benchmark) -> PathBuf {
    dir.join(benchmark.name()).join(PREDICTIONS_FILE)
}

/// Parses one line; `None` for a blank line.
pub fn parse_line(path: &Path, line_no: usize, line: &str) -> Result<Option<PredictionRecord>> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(line).map_err(|e| EvalError::JsonLine {
        path: path.to_path_buf(),
        line: line_no,
        message: e.to_string(),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(EvalError::JsonLine {
            path: path.to_path_buf(),
            line: line_no,
            message: "expected a JSON object".into(),
        });
    };
    let mut string = |field: &'static str, nullable: bool| -> Result<Option<String>> {
        match obj.remove(field) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Null) if nullable => Ok(None),
            None => Err(EvalError::MissingField {
                path: path.to_path_buf(),
                line: line_no,
                field,
            }),
            Some(_) => Err(EvalError::WrongType {
                path: path.to_path_buf(),
                line: line_no,
                field,
                expected: if nullable {
                    "a string or null"
                } else {
                    "a string"
                },
            }),
        }
    };
    let prompt = string("prompt", false)?.unwrap_or_default();
    let label = string("label", true)?;
    let predict = string("predict", false)?.unwrap_or_default();
    Ok(Some(PredictionRecord {
        prompt,
        label,
        predict,
    }))
}

/// Loads a prediction file. An empty file (no records) is an error.
pub fn load_predictions(path: &Path) -> Result<PredictionFile> {
    let text = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
    let mut records = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = std::str::from_utf8(raw).map_err(|e| EvalError::JsonLine {
            path: path.to_path_buf(),
            line: line_no,
            message: format!("invalid UTF-8: {e}"),
        })?;
        if let Some(record) = parse_line(path, line_no, line)? {
            records.push((line_no, record));
        }
    }
    if records.is_empty() {
        return Err(EvalError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(PredictionFile {
        path: path.to_path_buf(),
        records,
    })
}
