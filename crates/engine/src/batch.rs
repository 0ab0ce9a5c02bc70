//! Batched decoding: several prompts generated together, each with its own cache, options,
//! observer and stop rules.
//!
//! Each prompt is prefilled on its own (as [`crate::generate`] does); then every unfinished
//! sequence advances one token per [`Llama::forward_batch`] step, in groups of at most
//! [`rowwise::MAX_ROWS`], and a sequence leaves the batch as soon as it stops (continuous
//! batching within one call). The sampling and stop rules are [`generate`]'s own code
//! (`Sequence`), and the batched step computes each sequence's row exactly as a one-sequence step
//! does, so greedy output is identical token for token to calling [`generate`] per prompt
//! (`tests/batch.rs`).
//!
//! Timings per sequence: `prefill_ms` is its own prefill; `decode_ms` runs from the start of
//! batched decoding (after all prefills) to the step where it stopped, so it includes the other
//! sequences' share of each step.
//!
//! [`generate`]: crate::generate::generate

use std::time::Instant;

use crate::error::{EngineError, Result};
use crate::generate::{validate_request, GenerateOptions, Generation, Sequence, StepObserver};
use crate::kv_cache::KvCache;
use crate::model::Llama;
use crate::prefix::PrefixKv;
use crate::rowwise;
use crate::tokenizer::Tokenizer;

/// Generate from every prompt in `prompts` (ids), decoding them together. `opts` holds either
/// one entry for all prompts or one per prompt; `observers` one per prompt, each seeing only
/// its own sequence's steps and logits. Results are in prompt order. An invalid request fails
/// the whole call before any compute.
pub fn generate_batch(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    opts: &[GenerateOptions],
    observers: &mut [&mut dyn StepObserver],
) -> Result<Vec<Generation>> {
    generate_batch_with_prefix(model, tokenizer, prompts, opts, observers, None)
}

/// [`generate_batch`], with each prompt's first positions taken from `prefix` when it covers
/// that prompt (as [`crate::generate::generate_with_prefix`] does for one).
pub fn generate_batch_with_prefix(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    opts: &[GenerateOptions],
    observers: &mut [&mut dyn StepObserver],
    prefix: Option<&PrefixKv>,
) -> Result<Vec<Generation>> {
    let n = prompts.len();
    if opts.len() != 1 && opts.len() != n {
        return Err(EngineError::InvalidRequest {
            field: "opts".into(),
            problem: format!("{} options for {n} prompts (give 1 or {n})", opts.len()),
        });
    }
    if observers.len() != n {
        return Err(EngineError::InvalidRequest {
            field: "observers".into(),
            problem: format!("{} observers for {n} prompts", observers.len()),
        });
    }
    let opts_of = |i: usize| options_for(opts, i);
    for (i, prompt) in prompts.iter().enumerate() {
        let o = opts_of(i);
        validate_request(prompt, o, prompt.len() + o.max_new_tokens)?;
    }

    let mut caches = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| model.new_cache(p.len() + opts_of(i).max_new_tokens))
        .collect::<Result<Vec<KvCache>>>()?;
    let mut seqs = Vec::with_capacity(n);
    let mut active = Vec::with_capacity(n); // indices of unfinished sequences, ascending
    for (i, (prompt, cache)) in prompts.iter().zip(caches.iter_mut()).enumerate() {
        let mut seq = Sequence::prefill(model, cache, prompt, opts_of(i), prefix)?;
        if !seq.accept(tokenizer, &mut *observers[i])? {
            active.push(i);
        }
        seqs.push(seq);
    }

    let decode_start = Instant::now();
    for &i in &active {
        seqs[i].set_decode_start(decode_start);
    }
    while !active.is_empty() {
        let mut still_active = Vec::with_capacity(active.len());
        for group in active.chunks(rowwise::MAX_ROWS) {
            let (tokens, positions): (Vec<u32>, Vec<usize>) =
                group.iter().map(|&i| seqs[i].next_input()).unzip();
            let mut group_caches = caches_of(&mut caches, group);
            let hidden = model.forward_batch_hidden(&tokens, &mut group_caches, &positions)?;
            // Greedy choices from the screen only when every sequence of the group is greedy
            // (the others need every logit; the greedy ones then take the argmax of theirs).
            let greedy = group.iter().all(|&i| opts_of(i).sampling.is_greedy());
            for (&i, next) in group.iter().zip(model.next_tokens(&hidden, greedy)?) {
                seqs[i].next = next;
                if !seqs[i].accept(tokenizer, &mut *observers[i])? {
                    still_active.push(i);
                }
            }
        }
        active = still_active;
    }
    seqs.into_iter().map(|s| s.finish(tokenizer)).collect()
}

/// Mutable borrows of `caches[i]` for each `i` of `indices` (ascending, distinct), in order.
fn caches_of<'c>(caches: &'c mut [KvCache], indices: &[usize]) -> Vec<&'c mut KvCache> {
    let mut wanted = indices.iter().peekable();
    caches
        .iter_mut()
        .enumerate()
        .filter_map(|(i, c)| match wanted.peek() {
            Some(&&w) if w == i => {
                wanted.next();
                Some(c)
            }
            _ => None,
        })
        .collect()
}

/// Sequence `i`'s options: `opts` holds one per sequence, or one for all.
pub(crate) fn options_for(opts: &[GenerateOptions], i: usize) -> &GenerateOptions {
    &opts[if opts.len() == 1 { 0 } else { i }]
}
