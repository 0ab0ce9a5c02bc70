//! Prefix KV cache: the keys and values of a fixed leading part of every prompt, computed once.
//!
//! Every GuardReasoner prompt starts with the same instruction (about 100 tokens). A
//! [`PrefixKv`] holds that part's tokens and their cache entries; a prompt that starts with
//! those tokens (and goes on after them) copies the entries instead of recomputing them, and
//! its prefill starts where they end. A registered prefix is used for every prompt it covers,
//! so whether a prompt's prefill starts at 0 or at the prefix is a property of the prompt
//! alone, never of what ran before (results never depend on cache state). Copied entries are
//! the computed ones bit for bit (`tests/prefix.rs`).

use candle_core::Tensor;

use crate::error::{EngineError, Result};
use crate::kv_cache::KvCache;
use crate::model::Llama;

/// A prompt prefix with its computed cache entries.
#[derive(Debug)]
pub struct PrefixKv {
    tokens: Vec<u32>,
    cache: KvCache,
}

impl PrefixKv {
    /// Run `tokens` (BOS included, as prompts are encoded) through `model` in chunks of
    /// `chunk` and keep their cache entries.
    pub fn compute(model: &Llama, tokens: Vec<u32>, chunk: usize) -> Result<Self> {
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest {
                field: "prefix".into(),
                problem: "empty".into(),
            });
        }
        let mut cache = model.new_cache(tokens.len())?;
        prefill_hidden(model, &mut cache, &tokens, 0, chunk)?;
        Ok(Self { tokens, cache })
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How many leading tokens of `prompt` this prefix provides: all of them when the prompt
    /// starts with the prefix and goes on after it, else 0.
    pub fn covers(&self, prompt: &[u32]) -> usize {
        if prompt.len() > self.tokens.len() && prompt.starts_with(&self.tokens) {
            self.tokens.len()
        } else {
            0
        }
    }

    /// Copy the entries into the start of `cache` (replacing what it held).
    pub fn restore(&self, cache: &mut KvCache) -> Result<()> {
        cache.copy_prefix_from(&self.cache, self.tokens.len())
    }
}

/// Run `prompt[from..]` at positions `from..` in chunks of `chunk` (positions before `from`
/// already in `cache`); returns the last position's logits (none when `from` is past the
/// prompt's end).
pub fn prefill_range(
    model: &Llama,
    cache: &mut KvCache,
    prompt: &[u32],
    from: usize,
    chunk: usize,
) -> Result<Vec<f32>> {
    if from >= prompt.len() {
        return Ok(Vec::new());
    }
    let hidden = prefill_hidden(model, cache, prompt, from, chunk)?;
    model.last_position_logits(&hidden)
}

/// [`prefill_range`] up to the last position's final-normed hidden state `(1, hidden)`, which
/// must exist (`from` before the prompt's end). This is the prefill of [`crate::generate`].
pub fn prefill_hidden(
    model: &Llama,
    cache: &mut KvCache,
    prompt: &[u32],
    from: usize,
    chunk: usize,
) -> Result<Tensor> {
    if from >= prompt.len() {
        return Err(EngineError::InvalidRequest {
            field: "prompt".into(),
            problem: format!(
                "nothing to prefill: {} tokens from position {from}",
                prompt.len()
            ),
        });
    }
    let chunk = chunk.max(1);
    let mut start = from;
    loop {
        let end = (start + chunk).min(prompt.len());
        let hidden = model.forward_hidden(&prompt[start..end], cache, start)?; // (piece, hidden)
        if end == prompt.len() {
            return Ok(hidden.narrow(0, end - start - 1, 1)?); // (1, hidden)
        }
        start = end;
    }
}
