//! Autoregressive generation: prefill, sample, decode, stop.
//!
//! Greedy decoding is the default (REFERENCE.md: the released models were evaluated with
//! temperature 0, top-p 1); temperature / top-k / top-p sampling with a seed is optional.
//! Generation stops at the first id in the tokenizer's end-of-generation list (Llama 3:
//! 128001, 128008, 128009) or after `max_new_tokens`.
//!
//! [`sample`] is a plain function of the logits, separate from the model's forward pass. A
//! [`StepObserver`] sees every generated step with that step's logits (for label confidences)
//! and the newly completed text (for streaming), and may stop generation early.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{EngineError, Result};
use crate::kv_cache::KvCache;
use crate::lookup::{plan, DraftCorpus, PromptLookup};
use crate::model::Llama;
use crate::model::NextToken;
use crate::prefix::{prefill_hidden, PrefixKv};
use crate::screen::GreedyScreen;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it before softmax.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`
    /// (1.0 keeps everything).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 keeps everything).
    pub top_k: usize,
    /// Seed of the random generator (ignored when greedy).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: &str, problem: String| {
            Err(EngineError::InvalidRequest {
                field: field.into(),
                problem,
            })
        };
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", format!("{} must be >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} must be in (0, 1]", self.top_p));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Options of one generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Upper bound on generated tokens (the stopping token included). Default 2048.
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Prompt tokens per forward pass during prefill (bounds attention memory). Default 512.
    pub prefill_chunk: usize,
    /// Speculative decoding (greedy on the CPU only; the output is identical to plain greedy
    /// decoding, see [`crate::lookup`]): drafts from prompt lookup and, where the caller gives
    /// one ([`Reuse::corpus`], as [`crate::Engine`] does), from a corpus of earlier outputs. On
    /// by default; `None` turns drafting off, and the corpus does not learn this output.
    pub prompt_lookup: Option<PromptLookup>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 2048,
            sampling: SamplingParams::greedy(),
            prefill_chunk: 512,
            prompt_lookup: Some(PromptLookup::default()),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced this end-of-generation id.
    Eos(u32),
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The observer asked to stop.
    Observer,
}

/// Token counts and wall-clock times of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Prompt forward passes plus choosing the first token.
    pub prefill_ms: f64,
    /// All later steps.
    pub decode_ms: f64,
    /// Speculative decoding: draft tokens proposed, how many of them the model confirmed, and
    /// the verification passes that checked them (all 0 without prompt lookup).
    pub drafted_tokens: usize,
    pub accepted_draft_tokens: usize,
    pub verify_passes: usize,
}

impl Timings {
    /// Prompt tokens per second of prefill.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        per_second(self.prompt_tokens, self.prefill_ms)
    }

    /// Generated tokens per second after the first.
    pub fn decode_tokens_per_s(&self) -> f64 {
        per_second(self.generated_tokens.saturating_sub(1), self.decode_ms)
    }
}

fn per_second(tokens: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        tokens as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated ids, including the end-of-generation id when that is why it stopped.
    pub tokens: Vec<u32>,
    /// Text of `tokens` without the end-of-generation id.
    pub text: String,
    pub stop: StopReason,
    pub timings: Timings,
}

/// One generated step, as shown to a [`StepObserver`].
#[derive(Debug)]
pub struct Step<'a> {
    /// 0 for the first generated token.
    pub index: usize,
    /// The chosen id.
    pub token: u32,
    /// Logits `(vocab)` the id was chosen from (before temperature): computed already, or on
    /// demand for greedy steps of a model with the greedy screen (same values).
    pub logits: StepLogits<'a>,
    /// Text completed by this id (complete UTF-8 only; empty when held back or for EOS).
    pub text: &'a str,
    /// Whether `token` ends generation.
    pub is_eos: bool,
}

/// The logits of a step as an observer sees them: every one computed already (sampling, or a
/// model without the greedy screen), or any of them computed on demand (greedy steps of a
/// model with it, see [`Llama::with_greedy_screen`]): the same values either way, bit for bit.
#[derive(Clone, Copy)]
pub struct StepLogits<'a>(LogitSource<'a>);

#[derive(Clone, Copy)]
enum LogitSource<'a> {
    Computed(&'a [f32]),
    OnDemand {
        screen: &'a GreedyScreen,
        hidden: &'a [f32],
    },
}

impl<'a> StepLogits<'a> {
    /// Logits of the final-normed `hidden` row, computed when asked for.
    pub(crate) fn on_demand(screen: &'a GreedyScreen, hidden: &'a [f32]) -> Self {
        Self(LogitSource::OnDemand { screen, hidden })
    }

    /// The vocabulary size.
    pub fn len(&self) -> usize {
        match self.0 {
            LogitSource::Computed(logits) => logits.len(),
            LogitSource::OnDemand { screen, .. } => screen.rows(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The logit of `token`; `None` past the vocabulary.
    pub fn get(&self, token: u32) -> Option<f32> {
        ((token as usize) < self.len()).then(|| self.values(&[token])[0])
    }

    /// The logits of `tokens` (negative infinity past the vocabulary).
    pub fn values(&self, tokens: &[u32]) -> Vec<f32> {
        match self.0 {
            LogitSource::Computed(logits) => tokens
                .iter()
                .map(|&t| logits.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY))
                .collect(),
            LogitSource::OnDemand { screen, hidden } => {
                let known: Vec<u32> = tokens
                    .iter()
                    .copied()
                    .filter(|&t| (t as usize) < screen.rows())
                    .collect();
                let mut exact = screen.exact(hidden, &known).into_iter();
                tokens
                    .iter()
                    .map(|&t| match (t as usize) < screen.rows() {
                        true => exact.next().unwrap_or(f32::NEG_INFINITY),
                        false => f32::NEG_INFINITY,
                    })
                    .collect()
            }
        }
    }

    /// Every logit (on demand, this is a whole output projection).
    pub fn to_vec(&self) -> Vec<f32> {
        match self.0 {
            LogitSource::Computed(logits) => logits.to_vec(),
            LogitSource::OnDemand { screen, hidden } => screen.exact_all(hidden),
        }
    }

    /// The logits, when they are computed already.
    pub fn as_slice(&self) -> Option<&'a [f32]> {
        match self.0 {
            LogitSource::Computed(logits) => Some(logits),
            LogitSource::OnDemand { .. } => None,
        }
    }
}

impl<'a> From<&'a [f32]> for StepLogits<'a> {
    fn from(logits: &'a [f32]) -> Self {
        Self(LogitSource::Computed(logits))
    }
}

impl std::fmt::Debug for StepLogits<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.0 {
            LogitSource::Computed(_) => "computed",
            LogitSource::OnDemand { .. } => "on demand",
        };
        f.debug_struct("StepLogits")
            .field("len", &self.len())
            .field("source", &source)
            .finish()
    }
}

/// Whether to go on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepControl {
    Continue,
    Stop,
}

/// Sees every generated step; closures `FnMut(&Step) -> StepControl` implement it.
pub trait StepObserver {
    fn on_step(&mut self, step: &Step<'_>) -> StepControl;
}

impl<F: FnMut(&Step<'_>) -> StepControl> StepObserver for F {
    fn on_step(&mut self, step: &Step<'_>) -> StepControl {
        self(step)
    }
}

/// An observer that watches nothing.
pub struct NoObserver;

impl StepObserver for NoObserver {
    fn on_step(&mut self, _: &Step<'_>) -> StepControl {
        StepControl::Continue
    }
}

/// Index of the largest logit (the first one on ties, as torch and llama.cpp). NaN logits are
/// never chosen, except the first one when it is NaN (then 0).
pub fn argmax(logits: &[f32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if crate::rowwise::simd_available() && logits.len() >= 64 {
        // SAFETY: `simd_available()` saw AVX2 on this CPU.
        return unsafe { avx2::argmax(logits) };
    }
    argmax_plain(logits)
}

/// [`argmax`], one logit after the other.
fn argmax_plain(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::argmax`] in two passes over 8 lanes: the largest value (NaN lanes skipped),
    /// then the first index holding it, which is where the one-by-one scan stops moving.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn argmax(logits: &[f32]) -> u32 {
        if logits.is_empty() || logits[0].is_nan() {
            return 0;
        }
        let full = logits.len() / 8 * 8;
        let p = logits.as_ptr();
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 <= full <= logits.len(). `max(v, acc)` gives `acc` where `v` is NaN.
            acc = _mm256_max_ps(unsafe { _mm256_loadu_ps(p.add(i)) }, acc);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for &v in &logits[full..] {
            if v > max {
                max = v;
            }
        }
        let target = _mm256_set1_ps(max);
        for i in (0..full).step_by(8) {
            // SAFETY: as above.
            let hit = _mm256_cmp_ps::<_CMP_EQ_OQ>(unsafe { _mm256_loadu_ps(p.add(i)) }, target);
            let mask = _mm256_movemask_ps(hit);
            if mask != 0 {
                return (i + mask.trailing_zeros() as usize) as u32;
            }
        }
        logits[full..]
            .iter()
            .position(|&v| v == max)
            .map_or(0, |j| (full + j) as u32)
    }
}

/// Choose the next id from `logits (vocab)`.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut StdRng) -> u32 {
    if params.is_greedy() || logits.len() <= 1 {
        return argmax(logits);
    }
    // Candidates sorted by logit, descending (stable: ties keep the lower id first).
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if params.top_k > 0 {
        order.truncate(params.top_k);
    }
    let max = logits[order[0] as usize];
    let mut probs: Vec<f32> = order
        .iter()
        .map(|&i| ((logits[i as usize] - max) / params.temperature).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if params.top_p < 1.0 {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= params.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f32 = probs.iter().sum();
    let mut r = rng.random::<f32>() * total;
    for (i, p) in probs.iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return order[i];
        }
    }
    order[probs.len() - 1]
}

/// Probability of each of `candidates` under `logits`, renormalised over the candidates only
/// (e.g. P(harmful) / (P(harmful) + P(unharmful)) over the labels' first tokens).
pub fn candidate_probs(logits: StepLogits<'_>, candidates: &[u32]) -> Vec<f32> {
    let values = logits.values(candidates);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![0.0; candidates.len()];
    }
    let exps: Vec<f32> = values.iter().map(|v| (v - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// Log-softmax of a logits row.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_total = logits.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max;
    logits.iter().map(|v| v - log_total).collect()
}

/// Generate from `prompt` ids. The cache is cleared first and must hold
/// `prompt.len() + opts.max_new_tokens - 1` positions.
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    cache: &mut KvCache,
    prompt: &[u32],
    opts: &GenerateOptions,
    observer: &mut dyn StepObserver,
) -> Result<Generation> {
    generate_with_prefix(model, tokenizer, cache, prompt, opts, observer, None)
}

/// [`generate`], with the first positions taken from `prefix` when it covers the prompt.
pub fn generate_with_prefix(
    model: &Llama,
    tokenizer: &Tokenizer,
    cache: &mut KvCache,
    prompt: &[u32],
    opts: &GenerateOptions,
    observer: &mut dyn StepObserver,
    prefix: Option<&PrefixKv>,
) -> Result<Generation> {
    let reuse = Reuse {
        prefix,
        corpus: None,
    };
    generate_reusing(model, tokenizer, cache, prompt, opts, observer, reuse)
}

/// What a generation may take from earlier ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reuse<'a> {
    /// Cache entries of a prompt prefix, used when they cover the prompt.
    pub prefix: Option<&'a PrefixKv>,
    /// Earlier outputs to draft from (with [`GenerateOptions::prompt_lookup`] on); the output of
    /// this generation is learned into it.
    pub corpus: Option<&'a DraftCorpus>,
}

/// [`generate`], reusing a prefix's cache entries and a corpus of earlier outputs.
pub fn generate_reusing(
    model: &Llama,
    tokenizer: &Tokenizer,
    cache: &mut KvCache,
    prompt: &[u32],
    opts: &GenerateOptions,
    observer: &mut dyn StepObserver,
    reuse: Reuse<'_>,
) -> Result<Generation> {
    let prefix = reuse.prefix;
    let mut seq = Sequence::prefill(model, cache, prompt, opts, prefix)?;
    let mut done = seq.accept(tokenizer, observer)?;
    // Verification rows equal one-token steps bit for bit only with the CPU's decode-sized
    // kernels (`rowwise`, `attention`, `quant`); elsewhere drafting could change the output.
    let lookup = opts
        .prompt_lookup
        .filter(|_| opts.sampling.is_greedy() && model.device().is_cpu());
    let mut history = prompt.to_vec(); // prompt and every chosen token, for drafting
    history.push(seq.last_token());
    while !done {
        let (token, pos) = seq.next_input();
        let proposed = match &lookup {
            // Room for the draft: the cache (positions pos+1..=pos+k) and the token budget.
            Some(l) => {
                let room = cache.capacity().saturating_sub(pos + 1);
                let budget = opts.max_new_tokens.saturating_sub(seq.generated());
                plan(&history, l, reuse.corpus, room.min(budget))
            }
            None => Vec::new(),
        };
        if proposed.is_empty() {
            let hidden = model.forward_hidden(&[token], cache, pos)?; // (1, hidden)
            seq.next = one(model.next_tokens(&hidden, opts.sampling.is_greedy())?);
            done = seq.accept(tokenizer, observer)?;
            history.push(seq.last_token());
            continue;
        }
        // Verify: one pass over the last token and the draft. Row i holds the logits after
        // input i, valid while every earlier draft token was the one chosen; each row is what a
        // one-token step would compute (rows are independent in the decode-sized kernels).
        let mut input = Vec::with_capacity(proposed.len() + 1);
        input.push(token);
        input.extend_from_slice(&proposed);
        let hidden = model.forward_hidden(&input, cache, pos)?; // (1 + k, hidden)
        let rows = model.next_tokens(&hidden, true)?; // drafting is greedy only
        seq.record_draft(proposed.len());
        for (i, row) in rows.into_iter().enumerate() {
            seq.next = row;
            done = seq.accept(tokenizer, observer)?;
            let chosen = seq.last_token();
            history.push(chosen);
            if done || proposed.get(i) != Some(&chosen) {
                break;
            }
            seq.record_accepted_draft();
        }
    }
    let generation = seq.finish(tokenizer)?;
    if let (Some(corpus), Some(_)) = (reuse.corpus, opts.prompt_lookup) {
        corpus.learn(&history, prompt.len());
    }
    Ok(generation)
}

/// The only element of `next` (one row of hidden states in, one out).
pub(crate) fn one(mut next: Vec<NextToken>) -> NextToken {
    debug_assert_eq!(next.len(), 1);
    next.swap_remove(0)
}

/// Check a request before any compute: non-empty prompt, `max_new_tokens > 0`, valid sampling,
/// and a cache of `capacity` positions big enough.
pub(crate) fn validate_request(
    prompt: &[u32],
    opts: &GenerateOptions,
    capacity: usize,
) -> Result<()> {
    if prompt.is_empty() {
        return Err(EngineError::InvalidRequest {
            field: "prompt".into(),
            problem: "empty".into(),
        });
    }
    if opts.max_new_tokens == 0 {
        return Err(EngineError::InvalidRequest {
            field: "max_new_tokens".into(),
            problem: "must be > 0".into(),
        });
    }
    opts.sampling.validate()?;
    let needed = prompt.len() + opts.max_new_tokens - 1;
    if needed > capacity {
        return Err(EngineError::CacheFull { capacity, needed });
    }
    Ok(())
}

/// The state of one sequence being generated, shared by [`generate`] and
/// [`crate::batch::generate_batch`] so both apply the same sampling and stop rules: prefill
/// fills `next`, then each [`Sequence::accept`] takes the token `next` gives (sampled from its
/// logits, or its greedy choice) and the caller computes the next `next` at
/// [`Sequence::next_input`] until `accept` says it is done.
pub(crate) struct Sequence<'o> {
    opts: &'o GenerateOptions,
    prompt_len: usize,
    rng: StdRng,
    stream: StreamDecoder,
    /// What the model gave for the last position: logits to sample from, or its greedy choice.
    pub(crate) next: NextToken,
    tokens: Vec<u32>,
    stop: StopReason,
    start: Instant,
    prefill_ms: f64,
    decode_start: Instant,
    decode_ms: f64,
    drafted: usize,
    accepted: usize,
    verify_passes: usize,
}

impl<'o> Sequence<'o> {
    /// Validate the request, clear `cache` and run the prompt through it chunk by chunk.
    /// A `prefix` that covers the prompt provides its first positions (see [`PrefixKv`]).
    pub(crate) fn prefill(
        model: &Llama,
        cache: &mut KvCache,
        prompt: &[u32],
        opts: &'o GenerateOptions,
        prefix: Option<&PrefixKv>,
    ) -> Result<Self> {
        validate_request(prompt, opts, cache.capacity())?;
        cache.clear();
        let start = Instant::now();
        let from = match prefix {
            Some(p) if p.covers(prompt) > 0 => {
                p.restore(cache)?;
                p.len()
            }
            _ => 0,
        };
        let hidden = prefill_hidden(model, cache, prompt, from, opts.prefill_chunk)?;
        let next = one(model.next_tokens(&hidden, opts.sampling.is_greedy())?);
        Ok(Self {
            opts,
            prompt_len: prompt.len(),
            rng: StdRng::seed_from_u64(opts.sampling.seed),
            stream: StreamDecoder::new(),
            next,
            tokens: Vec::new(),
            stop: StopReason::MaxTokens,
            start,
            prefill_ms: 0.0,
            decode_start: start,
            decode_ms: 0.0,
            drafted: 0,
            accepted: 0,
            verify_passes: 0,
        })
    }

    /// Measure decoding from `t` (batched decoding starts after every sequence's prefill).
    pub(crate) fn set_decode_start(&mut self, t: Instant) {
        self.decode_start = t;
    }

    /// Tokens generated so far.
    pub(crate) fn generated(&self) -> usize {
        self.tokens.len()
    }

    /// The latest chosen id.
    pub(crate) fn last_token(&self) -> u32 {
        self.tokens.last().copied().unwrap_or_default()
    }

    /// A speculative pass proposed `k` draft tokens.
    pub(crate) fn record_draft(&mut self, k: usize) {
        self.drafted += k;
        self.verify_passes += 1;
    }

    /// One draft token was the model's own choice.
    pub(crate) fn record_accepted_draft(&mut self) {
        self.accepted += 1;
    }

    /// The last chosen id and the position it is fed at.
    pub(crate) fn next_input(&self) -> (u32, usize) {
        let n = self.tokens.len();
        (
            self.tokens.last().copied().unwrap_or_default(),
            self.prompt_len + n.saturating_sub(1),
        )
    }

    /// Take the next id from `next`, show it to the observer and apply the stop rules.
    /// Returns whether the sequence is finished.
    pub(crate) fn accept(
        &mut self,
        tokenizer: &Tokenizer,
        observer: &mut dyn StepObserver,
    ) -> Result<bool> {
        let index = self.tokens.len();
        let token = match &self.next {
            NextToken::Logits(logits) => sample(logits, &self.opts.sampling, &mut self.rng),
            NextToken::Greedy { token, .. } => *token,
        };
        if index == 0 {
            self.prefill_ms = ms_since(self.start);
            self.decode_start = Instant::now();
        }
        self.tokens.push(token);
        let is_eos = tokenizer.eos_ids().contains(&token);
        let piece = if is_eos {
            None
        } else {
            self.stream.push(tokenizer, token)?
        };
        let control = observer.on_step(&Step {
            index,
            token,
            logits: self.next.logits(),
            text: piece.as_deref().unwrap_or(""),
            is_eos,
        });
        let done = if is_eos {
            self.stop = StopReason::Eos(token);
            true
        } else if control == StepControl::Stop {
            self.stop = StopReason::Observer;
            true
        } else {
            self.tokens.len() >= self.opts.max_new_tokens
        };
        if done {
            self.decode_ms = ms_since(self.decode_start);
        }
        Ok(done)
    }

    /// The finished generation (text decoded without the end-of-generation id).
    pub(crate) fn finish(self, tokenizer: &Tokenizer) -> Result<Generation> {
        let text_ids = match self.stop {
            StopReason::Eos(_) => &self.tokens[..self.tokens.len() - 1],
            _ => &self.tokens[..],
        };
        let text = tokenizer.decode(text_ids)?;
        Ok(Generation {
            timings: Timings {
                prompt_tokens: self.prompt_len,
                generated_tokens: self.tokens.len(),
                prefill_ms: self.prefill_ms,
                decode_ms: self.decode_ms,
                drafted_tokens: self.drafted,
                accepted_draft_tokens: self.accepted,
                verify_passes: self.verify_passes,
            },
            tokens: self.tokens,
            text,
            stop: self.stop,
        })
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
        // The SIMD scan against the one-by-one scan: ties, signed zeros, infinities and NaN
        // in the 8-lane part and in the tail, lengths around the vector width.
        let nan = f32::NAN;
        for len in [64usize, 65, 71, 72, 200, 1001] {
            let base: Vec<f32> = crate::test_support::random(len, len as u32);
            let mut cases = vec![base.clone()];
            let mut tie = base.clone();
            tie[len - 1] = 9.0;
            tie[len / 3] = 9.0;
            cases.push(tie);
            let mut zeros = vec![-0.0f32; len];
            zeros[5] = 0.0;
            cases.push(zeros);
            cases.push(vec![f32::NEG_INFINITY; len]);
            let mut nans = base.clone();
            nans[3] = nan;
            nans[len - 1] = nan;
            cases.push(nans.clone());
            nans[0] = nan;
            cases.push(nans);
            let mut all_nan = vec![nan; len];
            all_nan[len - 2] = f32::NEG_INFINITY;
            cases.push(all_nan);
            let mut inf = base.clone();
            inf[len - 1] = f32::INFINITY;
            cases.push(inf);
            for (k, case) in cases.iter().enumerate() {
                assert_eq!(argmax(case), argmax_plain(case), "length {len}, case {k}");
            }
        }
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            sample(&[0.5, -1.0, 2.0], &SamplingParams::greedy(), &mut rng),
            2
        );
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_repeat() {
        let logits = [0.1, 0.4, 0.3, 0.2];
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 1,
            seed: 7,
        };
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(sample(&logits, &params, &mut rng), 1);
        let params = SamplingParams { top_k: 0, ..params };
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample(&logits, &params, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert!(
            draw(3).iter().any(|&t| t != 1),
            "temperature 1 should not always pick the max"
        );
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 0 holds ~0.87 of the mass: with top_p 0.5 it is the only candidate.
        let logits = [4.0, 2.0, 0.0, 0.0];
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            top_k: 0,
            seed: 1,
        };
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            assert_eq!(sample(&logits, &params, &mut rng), 0);
        }
    }

    #[test]
    fn candidate_probs_renormalise() {
        let p = candidate_probs([0.0, 2.0_f32.ln(), 5.0][..].into(), &[0, 1]);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-6 && (p[1] - 2.0 / 3.0).abs() < 1e-6);
        let lp = log_softmax(&[1.0, 1.0]);
        assert!((lp[0] - 0.5f32.ln()).abs() < 1e-6);
    }
}
