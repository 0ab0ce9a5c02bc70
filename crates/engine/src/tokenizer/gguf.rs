//! Rebuild a Hugging Face tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Only `tokenizer.ggml.model = "gpt2"` (byte-level BPE, what Llama 3 and SmolLM2 use) is
//! supported. The tokenizer is assembled as the `tokenizer.json` it corresponds to and parsed
//! by the `tokenizers` crate, so a reader can compare it with a checkpoint's own file:
//! - model: BPE over `tokens` / `merges` (`"a b"` strings).
//! - pre-tokenizer by `tokenizer.ggml.pre`, following llama.cpp `llama-vocab.cpp`:
//!   - `llama-bpe` / `llama3`: the Llama 3 split regex, then byte-level without regex;
//!     BPE `ignore_merges` (llama.cpp sets `tokenizer_ignore_merges` for it).
//!   - `smollm`: every digit split off (`\p{N}`), then the GPT-2 regex.
//!   - `default` / `gpt2` / absent: the GPT-2 regex (byte-level `use_regex`).
//! - added tokens: every token of `token_type` 3 (control) or 4 (user-defined), matched in the
//!   text as a whole token (llama.cpp with `parse_special = true`).
//! - decoder: byte-level. No normalizer, no post-processor (BOS is added by the wrapper).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Map};

use crate::error::{EngineError, Result};

/// The Llama 3 pre-tokenizer regex, as in Meta's `tokenizer.json`.
const LLAMA3_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types that are matched as whole special tokens in text.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

fn invalid(path: &Path, detail: impl Into<String>) -> EngineError {
    EngineError::InvalidTokenizer {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn string_array<'a>(
    metadata: &'a HashMap<String, Value>,
    key: &str,
    path: &Path,
) -> Result<Vec<&'a str>> {
    let Some(value) = metadata.get(key) else {
        return Err(invalid(path, format!("missing {key}")));
    };
    let Value::Array(items) = value else {
        return Err(invalid(path, format!("{key} is not an array")));
    };
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            other => Err(invalid(
                path,
                format!("{key} holds a {:?}, expected strings", other.value_type()),
            )),
        })
        .collect()
}

fn int_array(
    metadata: &HashMap<String, Value>,
    key: &str,
    path: &Path,
) -> Result<Option<Vec<i64>>> {
    let Some(value) = metadata.get(key) else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(invalid(path, format!("{key} is not an array")));
    };
    items
        .iter()
        .map(|v| match v {
            Value::I32(n) => Ok(*n as i64),
            Value::U32(n) => Ok(*n as i64),
            Value::I8(n) => Ok(*n as i64),
            Value::U8(n) => Ok(*n as i64),
            Value::I16(n) => Ok(*n as i64),
            Value::U16(n) => Ok(*n as i64),
            Value::I64(n) => Ok(*n),
            other => Err(invalid(
                path,
                format!("{key} holds a {:?}, expected integers", other.value_type()),
            )),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The pre-tokenizer (and BPE `ignore_merges`) for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: Option<&str>, path: &Path) -> Result<(serde_json::Value, bool)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    match pre {
        Some("llama-bpe") | Some("llama3") => Ok((
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT_REGEX},
                 "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]}),
            true,
        )),
        Some("smollm") => Ok((
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            false,
        )),
        None | Some("default") | Some("gpt2") | Some("gpt-2") => Ok((byte_level(true), false)),
        Some(other) => Err(invalid(
            path,
            format!(
                "tokenizer.ggml.pre {other:?} is not supported (supported: llama-bpe, smollm, default)"
            ),
        )),
    }
}

/// Build the tokenizer described by a GGUF file's metadata.
pub fn build(metadata: &HashMap<String, Value>, path: &Path) -> Result<tokenizers::Tokenizer> {
    match metadata.get("tokenizer.ggml.model") {
        Some(Value::String(m)) if m == "gpt2" => {}
        Some(Value::String(m)) => {
            return Err(invalid(
                path,
                format!(
                    "tokenizer.ggml.model {m:?} is not supported (only \"gpt2\" byte-level BPE)"
                ),
            ))
        }
        _ => return Err(invalid(path, "missing tokenizer.ggml.model")),
    }
    let pre = match metadata.get("tokenizer.ggml.pre") {
        Some(Value::String(p)) => Some(p.as_str()),
        _ => None,
    };
    let (pre_tokenizer, ignore_merges) = pre_tokenizer(pre, path)?;
    let tokens = string_array(metadata, "tokenizer.ggml.tokens", path)?;
    let merges = string_array(metadata, "tokenizer.ggml.merges", path)?;
    let token_types = int_array(metadata, "tokenizer.ggml.token_type", path)?;
    if let Some(types) = &token_types {
        if types.len() != tokens.len() {
            return Err(invalid(
                path,
                format!(
                    "tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {}",
                    types.len(),
                    tokens.len()
                ),
            ));
        }
    }

    let mut vocab = Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        vocab.insert(token.to_string(), json!(id));
        let ty = token_types.as_ref().map_or(1, |t| t[id]);
        if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true,
            }));
        }
    }
    let merges: Vec<serde_json::Value> = merges
        .iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok(json!([a, b])),
            None => Err(invalid(path, format!("merge {m:?} is not \"a b\""))),
        })
        .collect::<Result<_>>()?;
    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
            "vocab": vocab, "merges": merges,
        },
    });
    tokenizers::Tokenizer::from_str(&tokenizer_json.to_string())
        .map_err(|e| invalid(path, format!("building BPE from metadata: {e}")))
}
