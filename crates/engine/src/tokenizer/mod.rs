//! The tokenizer wrapper: text <-> token ids, BOS/EOS ids, streaming detokenization.
//!
//! Backed by the `tokenizers` crate, from a `tokenizer.json` or from a GGUF file's
//! `tokenizer.ggml.*` metadata (see [`gguf`], which rebuilds the equivalent `tokenizer.json`).
//! Invariants:
//! - [`Tokenizer::encode`] never adds special tokens other than an optional leading BOS, and
//!   always parses special tokens written in the text (`<|eot_id|>` becomes one id), as
//!   Python `tokenizers` and llama.cpp (`parse_special = true`) do.
//! - [`StreamDecoder`] only ever emits complete UTF-8: a token ending inside a multi-byte
//!   character is held back until the character is complete.

pub mod gguf;

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use crate::config::SpecialTokens;
use crate::error::{EngineError, Result};

/// A byte-level BPE tokenizer with the model's special token ids.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
}

impl Tokenizer {
    /// Wrap a `tokenizers` tokenizer with the model's BOS/EOS ids.
    pub fn new(inner: tokenizers::Tokenizer, special: SpecialTokens) -> Self {
        Self { inner, special }
    }

    /// Load a `tokenizer.json`.
    pub fn from_file(path: &Path, special: SpecialTokens) -> Result<Self> {
        if !path.exists() {
            return Err(EngineError::MissingFile {
                path: path.to_path_buf(),
                hint: None,
            });
        }
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| EngineError::InvalidTokenizer {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        Ok(Self::new(inner, special))
    }

    /// Build from a GGUF file's `tokenizer.ggml.*` metadata; `path` is only for errors.
    pub fn from_gguf_metadata(
        metadata: &HashMap<String, Value>,
        special: SpecialTokens,
        path: &Path,
    ) -> Result<Self> {
        Ok(Self::new(gguf::build(metadata, path)?, special))
    }

    /// Token ids of `text`, with BOS first when `add_bos`.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| EngineError::Tokenize {
                detail: e.to_string(),
            })?;
        let ids = encoding.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if add_bos {
            out.push(self.special.bos);
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// Text of `ids`; special tokens are rendered as their text.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| EngineError::Tokenize {
                detail: e.to_string(),
            })
    }

    /// The beginning-of-sequence id.
    pub fn bos_id(&self) -> u32 {
        self.special.bos
    }

    /// Every id that ends generation (non-empty).
    pub fn eos_ids(&self) -> &[u32] {
        &self.special.eos
    }

    /// Also end generation at `id` (no-op when already listed).
    pub(crate) fn add_eos_id(&mut self, id: u32) {
        if !self.special.eos.contains(&id) {
            self.special.eos.push(id);
        }
    }

    /// BOS and EOS ids together.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Id of `text` when it is a special (added) token.
    pub fn control_token_id(&self, text: &str) -> Option<u32> {
        self.inner
            .get_added_tokens_decoder()
            .into_iter()
            .find(|(_, t)| t.special && t.content == text)
            .map(|(id, _)| id)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Incremental detokenizer for streaming: push ids one at a time, get text as soon as it forms
/// complete UTF-8 characters.
///
/// Keeps a window of recent ids and decodes it twice (with and without the new ids), emitting
/// the difference, as text-generation-inference's `decode_token` does; byte-level BPE tokens
/// that split a character decode to U+FFFD and are held back.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one id; returns the new complete text, if any.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let prefix_text = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let new_text = tokenizer.decode(&self.ids[self.prefix_offset..])?;
        if new_text.len() > prefix_text.len() && !new_text.ends_with('\u{FFFD}') {
            let delta = match new_text.get(prefix_text.len()..) {
                Some(d) if new_text.starts_with(&prefix_text) => d.to_string(),
                // The window re-tokenized differently: fall back to the whole new text minus
                // the common prefix.
                _ => {
                    let common = common_prefix_len(&prefix_text, &new_text);
                    new_text[common..].to_string()
                }
            };
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(Some(delta))
        } else {
            Ok(None)
        }
    }

    /// Text of ids pushed but not yet emitted (possibly with U+FFFD for an incomplete
    /// character at the very end of generation).
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>> {
        if self.read_offset == self.ids.len() {
            return Ok(None);
        }
        let prefix_text = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let new_text = tokenizer.decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        let common = common_prefix_len(&prefix_text, &new_text);
        Ok(Some(new_text[common..].to_string()).filter(|s| !s.is_empty()))
    }
}

/// Length in bytes of the longest common prefix of `a` and `b` that ends on a char boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| a.len().min(b.len()))
}
