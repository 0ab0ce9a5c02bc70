//! A guard backend on a remote OpenAI-compatible completions server (vLLM, TGI, llama.cpp's
//! server, our own `serve`): `POST {base}/v1/completions` with the raw guard prompt.
//!
//! Retries as [`crate::http`] does (429, 5xx, connection failures; backoff with jitter;
//! `Retry-After`); every retry is logged to stderr with its reason, so a run's log shows them.

use crate::backend::{BackendOutput, FinishReason, GenerationRequest, GuardBackend};
use crate::error::{GuardError, Result};
use crate::http::{log_retry, v1_url, JsonClient, RetryPolicy};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// e.g. `http://127.0.0.1:8000` (with or without a trailing `/v1`).
    pub base_url: String,
    pub api_key: Option<String>,
    /// The `model` field of each request.
    pub model: String,
    /// Attempts after the first.
    pub max_retries: u32,
    /// First backoff delay; doubled per retry, with up to 50% jitter, capped at 60 s.
    pub initial_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl RemoteConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        RemoteConfig {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            max_retries: 6,
            initial_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(600),
        }
    }

    fn completions_url(&self) -> String {
        v1_url(&self.base_url, "completions")
    }
}

/// The remote backend.
pub struct RemoteBackend {
    config: RemoteConfig,
    client: JsonClient,
}

impl RemoteBackend {
    pub fn new(config: RemoteConfig) -> Self {
        let policy = RetryPolicy {
            max_retries: config.max_retries,
            initial_backoff: config.initial_backoff,
        };
        let client = JsonClient::new(config.api_key.clone(), config.timeout, policy);
        RemoteBackend { config, client }
    }
}

impl GuardBackend for RemoteBackend {
    fn describe(&self) -> String {
        format!(
            "openai:{} ({})",
            self.config.completions_url(),
            self.config.model
        )
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<BackendOutput> {
        let s = &request.sampling;
        let mut body = json!({
            "model": self.config.model,
            "prompt": request.prompt,
            "max_tokens": request.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "stream": false,
        });
        if s.top_k > 0 {
            body["top_k"] = json!(s.top_k);
        }
        if s.temperature > 0.0 {
            body["seed"] = json!(s.seed);
        }
        let started = Instant::now();
        let url = self.config.completions_url();
        let value = self
            .client
            .post(&url, &body, &mut log_retry(&url))
            .map_err(GuardError::Backend)?;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let malformed = |what: &str| {
            GuardError::Backend(format!(
                "{}: malformed completion response: {what}",
                self.config.completions_url()
            ))
        };
        let choice = value
            .get("choices")
            .and_then(|c| c.get(0))
            .ok_or_else(|| malformed("no choices[0]"))?;
        let text = choice
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("no choices[0].text"))?
            .to_string();
        on_text(&text);
        let usage = value.get("usage");
        let count = |k: &str| {
            usage
                .and_then(|u| u.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize
        };
        Ok(BackendOutput {
            prompt_tokens: count("prompt_tokens"),
            generated_tokens: count("completion_tokens"),
            prefill_ms: 0.0,
            decode_ms: elapsed_ms,
            finish: match choice.get("finish_reason").and_then(Value::as_str) {
                Some("length") => FinishReason::Length,
                _ => FinishReason::Stop,
            },
            text,
            probes: Vec::new(),
            drafted_tokens: 0,
            accepted_draft_tokens: 0,
        })
    }
}
