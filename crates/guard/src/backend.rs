//! Guard backends: something that turns a prompt into the guard model's output text.
//!
//! [`GuardBackend`] is the one interface eval, the service and the data tools use; a remote
//! OpenAI-compatible server will implement it too. A backend also reports [`LabelProbe`]s:
//! at each step where it emitted the first token of a label word (` harmful`, ` un`harmful,
//! ` refusal`, ` compliance`), the probability of that label against its alternative, so the
//! pipeline can attach confidences to the final answers.

use crate::error::{GuardError, Result};
use guardreasoner_engine::{
    candidate_probs, Engine, GenerateOptions, Generation, SamplingParams, Step, StepControl,
    StepObserver, StopReason,
};
use guardreasoner_protocol::{prompt_prefix, HarmLabel, Label, PromptFormat, RefusalLabel};
use serde::Serialize;
use std::sync::Mutex;

/// One generation request.
#[derive(Debug, Clone)]
pub struct GenerationRequest<'a> {
    /// The full prompt text (no BOS; the backend adds it).
    pub prompt: &'a str,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-sequence token.
    Stop,
    /// `max_new_tokens` was reached (the output may be truncated).
    Length,
}

/// At one generated step that emitted the first token of a label: which label, and its
/// probability against the alternative label's first token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelProbe {
    /// Byte range of the step's text in the output.
    pub start: usize,
    pub end: usize,
    pub label: Label,
    /// P(label) / (P(label) + P(alternative)) over the two first tokens.
    pub probability: f32,
}

/// What a backend returns.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendOutput {
    pub text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub finish: FinishReason,
    pub probes: Vec<LabelProbe>,
    /// Speculative decoding: tokens drafted, and how many of them the model confirmed (0 for
    /// backends that do not report it).
    pub drafted_tokens: usize,
    pub accepted_draft_tokens: usize,
}

/// Something that generates guard outputs.
pub trait GuardBackend: Send + Sync {
    /// A short description for logs and run records (model path, server URL).
    fn describe(&self) -> String;

    /// Generates a completion of `request.prompt`; `on_text` receives the output as it grows.
    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<BackendOutput>;

    /// How many requests [`GuardBackend::generate_batch`] profitably runs together (a server
    /// takes up to this many waiting jobs at once). 1 unless the backend really batches.
    fn preferred_batch(&self) -> usize {
        1
    }

    /// Generates a completion of every request, one result per request in order (no text
    /// streaming). The default runs them one after another; a backend that can decode several
    /// sequences at once (the local engine) overrides it.
    fn generate_batch(&self, requests: &[GenerationRequest<'_>]) -> Vec<Result<BackendOutput>> {
        requests
            .iter()
            .map(|r| self.generate(r, &mut |_| {}))
            .collect()
    }
}

/// The first token ids of the four label words, as the model would emit them after `: `.
#[derive(Debug, Clone, Copy)]
struct LabelTokens {
    harmful: u32,
    unharmful: u32,
    refusal: u32,
    compliance: u32,
}

impl LabelTokens {
    fn new(engine: &Engine) -> Result<Self> {
        let first = |word: &str| -> Result<u32> {
            engine
                .tokenizer()
                .encode(word, false)?
                .first()
                .copied()
                .ok_or_else(|| {
                    GuardError::Backend(format!("tokenizer gives no token for {word:?}"))
                })
        };
        Ok(LabelTokens {
            harmful: first(" harmful")?,
            unharmful: first(" unharmful")?,
            refusal: first(" refusal")?,
            compliance: first(" compliance")?,
        })
    }

    /// The label whose first token is `id`, with the (label, alternative) id pair.
    fn probe(&self, id: u32) -> Option<(Label, [u32; 2])> {
        let harm = [self.harmful, self.unharmful];
        let refusal = [self.refusal, self.compliance];
        if self.harmful != self.unharmful {
            if id == self.harmful {
                return Some((Label::Harm(HarmLabel::Harmful), harm));
            }
            if id == self.unharmful {
                return Some((Label::Harm(HarmLabel::Unharmful), [harm[1], harm[0]]));
            }
        }
        if self.refusal != self.compliance {
            if id == self.refusal {
                return Some((Label::Refusal(RefusalLabel::Refusal), refusal));
            }
            if id == self.compliance {
                return Some((
                    Label::Refusal(RefusalLabel::Compliance),
                    [refusal[1], refusal[0]],
                ));
            }
        }
        None
    }
}

/// Our engine, in process.
pub struct LocalBackend {
    engine: Engine,
    labels: LabelTokens,
}

impl LocalBackend {
    /// Wrap a loaded engine. Unless the engine already has a prefix, the instruction part of the
    /// raw guard prompt (the evaluation format) is registered as its prefix, so every request
    /// reuses its cache entries instead of recomputing them.
    pub fn new(mut engine: Engine) -> Result<Self> {
        let labels = LabelTokens::new(&engine)?;
        if engine.prefix().is_none() {
            engine.set_prefix(&prompt_prefix(PromptFormat::Raw))?;
        }
        Ok(LocalBackend { engine, labels })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl GuardBackend for LocalBackend {
    fn describe(&self) -> String {
        format!("local:{}", self.engine.path().display())
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<BackendOutput> {
        let mut observer = ProbeObserver::new(self.labels, Some(on_text));
        let generation =
            self.engine
                .generate_text(request.prompt, &options_of(request), &mut observer)?;
        Ok(output_of(generation, observer.probes))
    }

    /// The engine's decode group: up to this many sequences share each weight read.
    fn preferred_batch(&self) -> usize {
        guardreasoner_engine::rowwise::MAX_ROWS
    }

    /// Decodes all requests together with the engine's batched path (label probes per
    /// sequence, as in `generate`). If the batch as a whole is refused (one invalid request),
    /// the requests run one at a time so each gets its own result.
    fn generate_batch(&self, requests: &[GenerationRequest<'_>]) -> Vec<Result<BackendOutput>> {
        let prompts: Vec<&str> = requests.iter().map(|r| r.prompt).collect();
        let opts: Vec<GenerateOptions> = requests.iter().map(options_of).collect();
        let mut observers: Vec<ProbeObserver<'_>> = requests
            .iter()
            .map(|_| ProbeObserver::new(self.labels, None))
            .collect();
        let mut refs: Vec<&mut dyn StepObserver> = observers
            .iter_mut()
            .map(|o| o as &mut dyn StepObserver)
            .collect();
        match self.engine.generate_batch_text(&prompts, &opts, &mut refs) {
            Ok(generations) => generations
                .into_iter()
                .zip(observers)
                .map(|(g, o)| Ok(output_of(g, o.probes)))
                .collect(),
            Err(_) => requests
                .iter()
                .map(|r| self.generate(r, &mut |_| {}))
                .collect(),
        }
    }
}

fn options_of(request: &GenerationRequest<'_>) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: request.max_new_tokens,
        sampling: request.sampling.clone(),
        ..GenerateOptions::default()
    }
}

fn output_of(generation: Generation, probes: Vec<LabelProbe>) -> BackendOutput {
    BackendOutput {
        prompt_tokens: generation.timings.prompt_tokens,
        generated_tokens: generation.timings.generated_tokens,
        prefill_ms: generation.timings.prefill_ms,
        decode_ms: generation.timings.decode_ms,
        drafted_tokens: generation.timings.drafted_tokens,
        accepted_draft_tokens: generation.timings.accepted_draft_tokens,
        finish: match generation.stop {
            StopReason::Eos(_) => FinishReason::Stop,
            _ => FinishReason::Length,
        },
        text: generation.text,
        probes,
    }
}

/// Watches one sequence's steps: records a [`LabelProbe`] at every label's first token and
/// passes the text on.
struct ProbeObserver<'t> {
    labels: LabelTokens,
    offset: usize,
    probes: Vec<LabelProbe>,
    on_text: Option<&'t mut dyn FnMut(&str)>,
}

impl<'t> ProbeObserver<'t> {
    fn new(labels: LabelTokens, on_text: Option<&'t mut dyn FnMut(&str)>) -> Self {
        ProbeObserver {
            labels,
            offset: 0,
            probes: Vec::new(),
            on_text,
        }
    }
}

impl StepObserver for ProbeObserver<'_> {
    fn on_step(&mut self, step: &Step<'_>) -> StepControl {
        if let Some((label, pair)) = self.labels.probe(step.token) {
            let p = candidate_probs(step.logits, &pair);
            self.probes.push(LabelProbe {
                start: self.offset,
                end: self.offset + step.text.len(),
                label,
                probability: p[0],
            });
        }
        self.offset += step.text.len();
        if let Some(on_text) = self.on_text.as_mut() {
            if !step.text.is_empty() {
                on_text(step.text);
            }
        }
        StepControl::Continue
    }
}

/// Returns fixed outputs in turn (cycling), for tests and demos.
///
/// With `label_probability`, every label word in the output gets a probe with that probability,
/// so confidence handling can be tested without a model.
pub struct ScriptedBackend {
    outputs: Vec<String>,
    next: Mutex<usize>,
    label_probability: Option<f32>,
    delay: std::time::Duration,
}

impl ScriptedBackend {
    pub fn new(outputs: Vec<String>) -> Self {
        ScriptedBackend {
            outputs,
            next: Mutex::new(0),
            label_probability: None,
            delay: std::time::Duration::ZERO,
        }
    }

    /// Sleeps this long per output (to test interruption of long runs).
    pub fn with_delay(mut self, delay: std::time::Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_label_probability(mut self, p: f32) -> Self {
        self.label_probability = Some(p);
        self
    }
}

impl GuardBackend for ScriptedBackend {
    fn describe(&self) -> String {
        format!("scripted:{} outputs", self.outputs.len())
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<BackendOutput> {
        let index = {
            let mut next = self
                .next
                .lock()
                .map_err(|_| GuardError::Backend("scripted backend poisoned".into()))?;
            let i = *next % self.outputs.len().max(1);
            *next += 1;
            i
        };
        let text = self
            .outputs
            .get(index)
            .cloned()
            .ok_or_else(|| GuardError::Backend("scripted backend has no outputs".into()))?;
        std::thread::sleep(self.delay);
        let words: Vec<&str> = text.split_inclusive(char::is_whitespace).collect();
        for w in &words {
            on_text(w);
        }
        let mut probes = Vec::new();
        if let Some(p) = self.label_probability {
            for (task, offset) in guardreasoner_protocol::answer_label_offsets(&text) {
                let word_len = text[offset..]
                    .find(|c: char| !c.is_alphanumeric())
                    .unwrap_or(text.len() - offset);
                if let Some(label) = task.parse_label(&text[offset..offset + word_len]) {
                    probes.push(LabelProbe {
                        start: offset.saturating_sub(1),
                        end: offset + word_len,
                        label,
                        probability: p,
                    });
                }
            }
        }
        Ok(BackendOutput {
            prompt_tokens: request.prompt.split_whitespace().count(),
            generated_tokens: words.len(),
            prefill_ms: 0.0,
            decode_ms: 0.0,
            finish: FinishReason::Stop,
            text,
            probes,
            drafted_tokens: 0,
            accepted_draft_tokens: 0,
        })
    }
}

/// A backend behind a smart pointer is a backend (every method forwards, batching included).
macro_rules! forward_backend {
    ($($pointer:ident)::+) => {
        impl<T: GuardBackend + ?Sized> GuardBackend for $($pointer)::+<T> {
            fn describe(&self) -> String {
                (**self).describe()
            }

            fn generate(
                &self,
                request: &GenerationRequest<'_>,
                on_text: &mut dyn FnMut(&str),
            ) -> Result<BackendOutput> {
                (**self).generate(request, on_text)
            }

            fn preferred_batch(&self) -> usize {
                (**self).preferred_batch()
            }

            fn generate_batch(
                &self,
                requests: &[GenerationRequest<'_>],
            ) -> Vec<Result<BackendOutput>> {
                (**self).generate_batch(requests)
            }
        }
    };
}

forward_backend!(Box);
forward_backend!(std::sync::Arc);
