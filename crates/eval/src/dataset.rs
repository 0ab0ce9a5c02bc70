//! Loader for the official benchmark files (`data/benchmark/*.json`): a JSON list of
//! `{instruction, input, output}` items; WildGuardTest adds the label columns
//! `prompt_harm_label`, `response_refusal_label`, `response_harm_label` (null where unlabelled).

use crate::error::{EvalError, Result};
use guardreasoner_protocol::GuardInput;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One benchmark item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchmarkItem {
    /// The instruction text the official prompt starts with.
    pub instruction: String,
    /// The input block (`Human user:\n...\n\nAI assistant:\n...\n\n`).
    pub input: String,
    /// The reference answer text (a label word, or an `Answers:` block).
    pub output: String,
    pub prompt_harm_label: Option<String>,
    pub response_refusal_label: Option<String>,
    pub response_harm_label: Option<String>,
}

impl BenchmarkItem {
    /// The prompt exactly as the official generation script rendered it: instruction + `\n` +
    /// input.
    pub fn official_prompt(&self) -> String {
        format!("{}\n{}", self.instruction, self.input)
    }

    /// The request and response this item asks about.
    pub fn guard_input(
        &self,
    ) -> std::result::Result<GuardInput, guardreasoner_protocol::prompt::InputBlockError> {
        GuardInput::from_input_block(&self.input)
    }

    /// A label column by its name (`prompt_harm_label`, ...).
    pub fn column(&self, name: &str) -> Option<&str> {
        match name {
            "prompt_harm_label" => self.prompt_harm_label.as_deref(),
            "response_refusal_label" => self.response_refusal_label.as_deref(),
            "response_harm_label" => self.response_harm_label.as_deref(),
            _ => None,
        }
    }
}

/// A loaded benchmark file.
#[derive(Debug, Clone)]
pub struct BenchmarkFile {
    pub path: PathBuf,
    pub items: Vec<BenchmarkItem>,
}

/// Loads a benchmark file; a malformed item is reported with its index.
pub fn load_benchmark(path: &Path) -> Result<BenchmarkFile> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| EvalError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let Value::Array(list) = value else {
        return Err(EvalError::Json {
            path: path.to_path_buf(),
            message: "expected a JSON list of items".into(),
        });
    };
    let bad = |index: usize, message: String| EvalError::BadItem {
        path: path.to_path_buf(),
        index,
        message,
    };
    let mut items = Vec::with_capacity(list.len());
    for (index, item) in list.into_iter().enumerate() {
        let Value::Object(mut obj) = item else {
            return Err(bad(index, "not a JSON object".into()));
        };
        let mut text = |field: &str| match obj.remove(field) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(bad(index, format!("field `{field}` must be a string"))),
            None => Err(bad(index, format!("missing field `{field}`"))),
        };
        let instruction = text("instruction")?;
        let input = text("input")?;
        let output = text("output")?;
        let mut column = |field: &str| match obj.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(
                index,
                format!("field `{field}` must be a string or null"),
            )),
        };
        items.push(BenchmarkItem {
            instruction,
            input,
            output,
            prompt_harm_label: column("prompt_harm_label")?,
            response_refusal_label: column("response_refusal_label")?,
            response_harm_label: column("response_harm_label")?,
        });
    }
    Ok(BenchmarkFile {
        path: path.to_path_buf(),
        items,
    })
}
