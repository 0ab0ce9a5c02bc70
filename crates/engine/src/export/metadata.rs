//! GGUF metadata for a LLaMA checkpoint: llama.cpp's `llama.*` hyperparameter keys and the
//! `tokenizer.ggml.*` vocabulary, as `convert_hf_to_gguf.py` (`LlamaModel`,
//! `TextModel.get_vocab_base`, gguf-py `SpecialVocab`) writes them for Llama 3.
//!
//! Vocabulary: the ids `0..vocab_size` of `tokenizer.json` (model vocabulary plus
//! `added_tokens`); an id no token has becomes `[PAD{id}]` (user-defined); an added token at
//! or beyond `vocab_size` has no embedding row and is left out. Token types:
//! added tokens marked `special` -> control (3), other added tokens -> user-defined (4),
//! everything else normal (1). Merges are written as `"a b"` strings. Only Llama 3's
//! pre-tokenizer is recognised (`tokenizer.ggml.pre = llama-bpe`); other tokenizers are
//! refused rather than written with a pre-tokenizer llama.cpp would apply differently.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::gguf_writer::MetaValue;
use super::mix::QuantType;
use crate::config::{LlamaConfig, SpecialTokens};
use crate::error::{EngineError, Result};

/// Meta's Llama 3 split regex (`tokenizer.json` pre-tokenizer), llama.cpp's `llama-bpe`.
const LLAMA3_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

fn invalid(path: &Path, detail: impl Into<String>) -> EngineError {
    EngineError::InvalidTokenizer {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// The `llama.*` and `general.*` keys.
pub fn model_metadata(
    config: &LlamaConfig,
    name: &str,
    qtype: QuantType,
) -> Vec<(String, MetaValue)> {
    let u32_of = |n: usize| MetaValue::U32(u32::try_from(n).unwrap_or(u32::MAX));
    vec![
        (
            "general.architecture".into(),
            MetaValue::String("llama".into()),
        ),
        ("general.type".into(), MetaValue::String("model".into())),
        ("general.name".into(), MetaValue::String(name.into())),
        (
            "general.file_type".into(),
            MetaValue::U32(qtype.llama_ftype()),
        ),
        ("general.quantization_version".into(), MetaValue::U32(2)),
        ("llama.vocab_size".into(), u32_of(config.vocab_size)),
        (
            "llama.context_length".into(),
            u32_of(config.max_position_embeddings),
        ),
        ("llama.embedding_length".into(), u32_of(config.hidden_size)),
        ("llama.block_count".into(), u32_of(config.num_layers)),
        (
            "llama.feed_forward_length".into(),
            u32_of(config.intermediate_size),
        ),
        ("llama.rope.dimension_count".into(), u32_of(config.head_dim)),
        (
            "llama.attention.head_count".into(),
            u32_of(config.num_heads),
        ),
        (
            "llama.attention.head_count_kv".into(),
            u32_of(config.num_kv_heads),
        ),
        ("llama.attention.key_length".into(), u32_of(config.head_dim)),
        (
            "llama.attention.value_length".into(),
            u32_of(config.head_dim),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            MetaValue::F32(config.rms_norm_eps as f32),
        ),
        (
            "llama.rope.freq_base".into(),
            MetaValue::F32(config.rope_theta as f32),
        ),
    ]
}

/// The `tokenizer.ggml.*` keys from a parsed `tokenizer.json` (at `path`, for errors), the
/// optional `tokenizer_config.json`, and the checkpoint's special tokens.
pub fn tokenizer_metadata(
    tokenizer: &Value,
    path: &Path,
    tokenizer_config: Option<&Value>,
    special: &SpecialTokens,
    vocab_size: usize,
) -> Result<Vec<(String, MetaValue)>> {
    let model = &tokenizer["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(invalid(
            path,
            "model.type is not BPE (quantize supports Llama 3 tokenizers)",
        ));
    }
    if !is_llama3_pre_tokenizer(&tokenizer["pre_tokenizer"]) {
        return Err(invalid(
            path,
            "pre_tokenizer is not Llama 3's split regex + byte-level (quantize supports Llama 3 tokenizers, tokenizer.ggml.pre = llama-bpe)",
        ));
    }
    let Some(vocab) = model["vocab"].as_object() else {
        return Err(invalid(path, "model.vocab is not an object"));
    };
    let mut by_id: HashMap<usize, (String, i32)> = HashMap::with_capacity(vocab.len());
    for (token, id) in vocab {
        let Some(id) = id.as_u64() else {
            return Err(invalid(
                path,
                format!("model.vocab[{token:?}] is not an id"),
            ));
        };
        by_id.insert(id as usize, (token.clone(), TOKEN_NORMAL));
    }
    for added in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            return Err(invalid(path, "an added_tokens entry lacks id or content"));
        };
        if id as usize >= vocab_size {
            // No embedding row: the model can neither read nor emit it (e.g. `<|image|>`,
            // 128256, in the Llama 3.2 Vision tokenizer paired with a 128256-row text model).
            continue;
        }
        let kind = if added["special"].as_bool() == Some(true) {
            TOKEN_CONTROL
        } else {
            TOKEN_USER_DEFINED
        };
        by_id.insert(id as usize, (content.to_string(), kind));
    }
    if let Some(&max) = by_id.keys().max() {
        if max >= vocab_size {
            return Err(invalid(
                path,
                format!("token id {max} is outside the model's vocab_size {vocab_size}"),
            ));
        }
    }
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for id in 0..vocab_size {
        match by_id.remove(&id) {
            Some((token, kind)) => {
                tokens.push(token);
                types.push(kind);
            }
            None => {
                tokens.push(format!("[PAD{id}]"));
                types.push(TOKEN_USER_DEFINED);
            }
        }
    }
    let merges = merges(&model["merges"], path)?;

    let id_of = |text: &str| tokens.iter().position(|t| t == text);
    // gguf-py SpecialVocab: tokenizer_config.json's eos_token wins, then config's first eos.
    let configured_eos = tokenizer_config
        .and_then(|c| match &c["eos_token"] {
            Value::String(s) => Some(s.as_str()),
            other => other["content"].as_str(),
        })
        .and_then(id_of);
    let eos = configured_eos.map_or(special.eos[0], |id| id as u32);
    let add_bos = tokens.get(special.bos as usize).is_some_and(|bos| {
        tokenizer["post_processor"]
            .to_string()
            .contains(bos.as_str())
    });

    let mut meta = vec![
        (
            "tokenizer.ggml.model".into(),
            MetaValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            MetaValue::String("llama-bpe".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::StringArray(tokens.clone()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            MetaValue::I32Array(types),
        ),
        (
            "tokenizer.ggml.merges".into(),
            MetaValue::StringArray(merges),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            MetaValue::U32(special.bos),
        ),
        ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(eos)),
    ];
    // End-of-turn: Llama 3's <|eot_id|>, when the checkpoint stops on it.
    if let Some(eot) = id_of("<|eot_id|>").map(|id| id as u32) {
        if eot != eos && special.eos.contains(&eot) {
            meta.push(("tokenizer.ggml.eot_token_id".into(), MetaValue::U32(eot)));
        }
    }
    meta.push((
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(add_bos),
    ));
    if let Some(template) = tokenizer_config.and_then(|c| c["chat_template"].as_str()) {
        meta.push((
            "tokenizer.chat_template".into(),
            MetaValue::String(template.to_string()),
        ));
    }
    Ok(meta)
}

/// `Split(LLAMA3 regex)` followed by byte-level without its own regex.
fn is_llama3_pre_tokenizer(pre: &Value) -> bool {
    let Some(steps) = pre["pretokenizers"].as_array() else {
        return false;
    };
    let split = steps.iter().any(|s| {
        s["type"] == "Split" && s["pattern"]["Regex"].as_str() == Some(LLAMA3_SPLIT_REGEX)
    });
    let byte_level = steps
        .iter()
        .any(|s| s["type"] == "ByteLevel" && s["use_regex"].as_bool() != Some(true));
    split && byte_level
}

/// `model.merges` as `"a b"` strings; `tokenizer.json` has them either so or as `[a, b]` pairs.
fn merges(value: &Value, path: &Path) -> Result<Vec<String>> {
    let Some(items) = value.as_array() else {
        return Err(invalid(path, "model.merges is not an array"));
    };
    items
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match (pair.first(), pair.get(1), pair.len()) {
                (Some(Value::String(a)), Some(Value::String(b)), 2) => Ok(format!("{a} {b}")),
                _ => Err(invalid(path, format!("merge {m} is not a pair of strings"))),
            },
            other => Err(invalid(path, format!("merge {other} is not a string"))),
        })
        .collect()
}
