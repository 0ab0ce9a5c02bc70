//! `classify(request, response) -> verdict`: the guard pipeline.
//!
//! Renders the prompt exactly as the released models were evaluated (REFERENCE.md, "Prompt"),
//! generates with the reference decoding (greedy, up to 2048 new tokens) unless told otherwise,
//! parses the output with the protocol's one parser, and attaches a confidence to each answer:
//! the probability the model gave the answer's first token against the alternative label's, at
//! the step that wrote the answer in the final `Answers:` block.

use crate::backend::{BackendOutput, FinishReason, GenerationRequest, GuardBackend, LabelProbe};
use crate::error::Result;
use guardreasoner_engine::SamplingParams;
use guardreasoner_protocol::{
    answer_label_offsets, parse_verdict, GuardInput, HarmLabel, ParseIssue, PromptFormat,
    RefusalLabel, Task, TaskReasoning, Verdict,
};
use serde::Serialize;
use std::time::Instant;

/// How the guard prompts and decodes.
#[derive(Debug, Clone)]
pub struct GuardOptions {
    pub format: PromptFormat,
    /// Default 2048, the reference setting.
    pub max_new_tokens: usize,
    /// Default greedy, the reference setting.
    pub sampling: SamplingParams,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            format: PromptFormat::Raw,
            max_new_tokens: 2048,
            sampling: SamplingParams::greedy(),
        }
    }
}

/// Confidence of each answer, in [0, 1]; `None` where there is no answer or the backend could
/// not tell.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Confidences {
    pub request: Option<f32>,
    pub completion: Option<f32>,
    pub response: Option<f32>,
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Speculative decoding: generated tokens that were drafted (from the prompt, the output
    /// so far and earlier outputs) and confirmed by the model, so cost no pass of their own.
    pub accepted_draft_tokens: usize,
    /// Tokens drafted in all.
    pub drafted_tokens: usize,
}

/// Wall-clock times in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub total_ms: f64,
}

/// The verdict part of a [`GuardResult`] as it is serialized: answers, confidences, reasoning,
/// issues.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictReport<'a> {
    pub request: Option<HarmLabel>,
    pub completion: Option<RefusalLabel>,
    pub response: Option<HarmLabel>,
    pub confidence: Confidences,
    pub reasoning: &'a [TaskReasoning],
    pub issues: &'a [ParseIssue],
    /// Whether all answers a request needs were read (task 1 always; tasks 2 and 3 when there
    /// is a response).
    pub complete: bool,
}

/// Everything one classification produced.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardResult {
    pub verdict: Verdict,
    pub confidence: Confidences,
    pub raw_output: String,
    pub finish: FinishReason,
    pub usage: Usage,
    pub timing: Timing,
    /// Whether the input had a response (tasks 2 and 3 are meaningful only then).
    pub has_response: bool,
}

impl GuardResult {
    /// Whether every answer the input calls for was read.
    pub fn complete(&self) -> bool {
        self.verdict.request.is_some()
            && (!self.has_response
                || (self.verdict.completion.is_some() && self.verdict.response.is_some()))
    }

    /// The JSON shape shared by `classify --json` and the service: `verdict` (answers,
    /// confidences, steps, issues), `raw_output`, `finish_reason`, `usage`, `timing`.
    pub fn to_json(&self) -> serde_json::Value {
        let report = VerdictReport {
            request: self.verdict.request,
            completion: self.verdict.completion,
            response: self.verdict.response,
            confidence: self.confidence,
            reasoning: &self.verdict.reasoning,
            issues: &self.verdict.issues,
            complete: self.complete(),
        };
        serde_json::json!({
            "verdict": report,
            "raw_output": self.raw_output,
            "finish_reason": self.finish,
            "usage": self.usage,
            "timing": self.timing,
        })
    }
}

/// The guard over some backend.
pub struct Guard<B: GuardBackend> {
    backend: B,
    options: GuardOptions,
}

impl<B: GuardBackend> Guard<B> {
    pub fn new(backend: B, options: GuardOptions) -> Self {
        Guard { backend, options }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn options(&self) -> &GuardOptions {
        &self.options
    }

    /// Classifies one request (and optional response).
    pub fn classify(&self, input: &GuardInput) -> Result<GuardResult> {
        self.classify_streaming(input, &mut |_| {})
    }

    /// Classifies, passing the reasoning text to `on_text` as it is generated.
    pub fn classify_streaming(
        &self,
        input: &GuardInput,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GuardResult> {
        let prompt = input.render(self.options.format);
        let started = Instant::now();
        let output = self.backend.generate(
            &GenerationRequest {
                prompt: &prompt,
                max_new_tokens: self.options.max_new_tokens,
                sampling: self.options.sampling.clone(),
            },
            on_text,
        )?;
        let total_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(assemble(output, total_ms, input.response.is_some()))
    }
}

/// Parses a backend output into a result.
pub fn assemble(output: BackendOutput, total_ms: f64, has_response: bool) -> GuardResult {
    let verdict = parse_verdict(&output.text);
    let confidence = confidences(&output.text, &verdict, &output.probes);
    GuardResult {
        verdict,
        confidence,
        finish: output.finish,
        usage: Usage {
            prompt_tokens: output.prompt_tokens,
            generated_tokens: output.generated_tokens,
            accepted_draft_tokens: output.accepted_draft_tokens,
            drafted_tokens: output.drafted_tokens,
        },
        timing: Timing {
            prefill_ms: output.prefill_ms,
            decode_ms: output.decode_ms,
            total_ms,
        },
        raw_output: output.text,
        has_response,
    }
}

/// For each answer, the probe of the step that wrote its label word in the winning block.
fn confidences(text: &str, verdict: &Verdict, probes: &[LabelProbe]) -> Confidences {
    let mut c = Confidences::default();
    for (task, offset) in answer_label_offsets(text) {
        let Some(answer) = verdict.answer(task) else {
            continue;
        };
        // The label's first token covers the word's first byte (or ends just before it
        // when the space was its own token).
        let probe = probes
            .iter()
            .find(|p| p.start <= offset && offset < p.end && p.label == answer);
        let value = probe.map(|p| p.probability);
        match task {
            Task::Prompt => c.request = value,
            Task::Refusal => c.completion = value,
            Task::Response => c.response = value,
        }
    }
    c
}
