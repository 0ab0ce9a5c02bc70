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
use crate::model::Llama;
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
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 2048,
            sampling: SamplingParams::greedy(),
            prefill_chunk: 512,
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
    /// Logits `(vocab)` the id was chosen from (before temperature).
    pub logits: &'a [f32],
    /// Text completed by this id (complete UTF-8 only; empty when held back or for EOS).
    pub text: &'a str,
    /// Whether `token` ends generation.
    pub is_eos: bool,
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

/// Index of the largest logit (the first one on ties, as torch and llama.cpp).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
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
pub fn candidate_probs(logits: &[f32], candidates: &[u32]) -> Vec<f32> {
    let values: Vec<f32> = candidates
        .iter()
        .map(|&c| logits.get(c as usize).copied().unwrap_or(f32::NEG_INFINITY))
        .collect();
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
    if needed > cache.capacity() {
        return Err(EngineError::CacheFull {
            capacity: cache.capacity(),
            needed,
        });
    }
    cache.clear();
    let mut rng = StdRng::seed_from_u64(opts.sampling.seed);
    let eos = tokenizer.eos_ids();
    let mut stream = StreamDecoder::new();

    let start = Instant::now();
    let chunk = opts.prefill_chunk.max(1);
    let mut logits = Vec::new();
    for (i, piece) in prompt.chunks(chunk).enumerate() {
        let hidden = model.forward_hidden(piece, cache, i * chunk)?; // (piece, hidden)
        if (i + 1) * chunk >= prompt.len() {
            logits = model.last_position_logits(&hidden)?; // (vocab)
        }
    }
    let mut prefill_ms = 0.0;
    let mut decode_start = start;
    let mut tokens = Vec::new();
    let mut stop = StopReason::MaxTokens;
    for index in 0..opts.max_new_tokens {
        if index > 0 {
            let pos = prompt.len() + index - 1;
            let hidden = model.forward_hidden(&tokens[index - 1..index], cache, pos)?;
            logits = model.last_position_logits(&hidden)?;
        }
        let token = sample(&logits, &opts.sampling, &mut rng);
        if index == 0 {
            prefill_ms = ms_since(start);
            decode_start = Instant::now();
        }
        tokens.push(token);
        let is_eos = eos.contains(&token);
        let piece = if is_eos {
            None
        } else {
            stream.push(tokenizer, token)?
        };
        let control = observer.on_step(&Step {
            index,
            token,
            logits: &logits,
            text: piece.as_deref().unwrap_or(""),
            is_eos,
        });
        if is_eos {
            stop = StopReason::Eos(token);
            break;
        }
        if control == StepControl::Stop {
            stop = StopReason::Observer;
            break;
        }
    }
    let decode_ms = ms_since(decode_start);
    let text_ids = match stop {
        StopReason::Eos(_) => &tokens[..tokens.len() - 1],
        _ => &tokens[..],
    };
    let text = tokenizer.decode(text_ids)?;
    Ok(Generation {
        timings: Timings {
            prompt_tokens: prompt.len(),
            generated_tokens: tokens.len(),
            prefill_ms,
            decode_ms,
        },
        tokens,
        text,
        stop,
    })
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
        let p = candidate_probs(&[0.0, 2.0_f32.ln(), 5.0], &[0, 1]);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-6 && (p[1] - 2.0 / 3.0).abs() < 1e-6);
        let lp = log_softmax(&[1.0, 1.0]);
        assert!((lp[0] - 0.5f32.ln()).abs() < 1e-6);
    }
}
