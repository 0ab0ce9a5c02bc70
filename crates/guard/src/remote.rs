//! A guard backend on a remote OpenAI-compatible completions server (vLLM, TGI, llama.cpp's
//! server, our own `serve`): `POST {base}/v1/completions` with the raw guard prompt.
//!
//! Retries 429, 5xx and connection failures with exponential backoff and jitter, honouring
//! `Retry-After`; every retry is logged to stderr with its reason, so a run's log shows them.
//! Other 4xx answers are errors at once (retrying cannot fix a bad request).

use crate::backend::{BackendOutput, FinishReason, GenerationRequest, GuardBackend};
use crate::error::{GuardError, Result};
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
        let base = self.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/completions")
    }
}

/// The remote backend.
pub struct RemoteBackend {
    config: RemoteConfig,
    agent: ureq::Agent,
}

impl RemoteBackend {
    pub fn new(config: RemoteConfig) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(config.timeout)
            .build();
        RemoteBackend { config, agent }
    }

    /// One attempt: `Ok` with the response body, or the error and whether to retry (and after
    /// how long the server asked to wait).
    fn attempt(
        &self,
        body: &Value,
    ) -> std::result::Result<Value, (String, bool, Option<Duration>)> {
        let mut req = self.agent.post(&self.config.completions_url());
        if let Some(key) = &self.config.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let req = req.set("Content-Type", "application/json");
        match req.send_string(&body.to_string()) {
            Ok(response) => response
                .into_string()
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
                .map_err(|e| (format!("unreadable response body: {e}"), true, None)),
            Err(ureq::Error::Status(code, response)) => {
                let retry_after = response
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(300.0)));
                let text = response.into_string().unwrap_or_default();
                let retry = code == 429 || code >= 500;
                Err((
                    format!(
                        "HTTP {code}: {}",
                        text.chars().take(200).collect::<String>()
                    ),
                    retry,
                    retry_after,
                ))
            }
            Err(ureq::Error::Transport(t)) => Err((format!("{t}"), true, None)),
        }
    }
}

/// A pseudo-random jitter factor in [1.0, 1.5) (no RNG dependency needed for this).
fn jitter(attempt: u32) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    1.0 + f64::from((nanos ^ attempt.wrapping_mul(2654435761)) % 1000) / 2000.0
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
        let mut attempt = 0;
        let value = loop {
            match self.attempt(&body) {
                Ok(v) => break v,
                Err((reason, retry, after)) => {
                    if !retry || attempt >= self.config.max_retries {
                        return Err(GuardError::Backend(format!(
                            "{}: {reason} (after {} attempts)",
                            self.config.completions_url(),
                            attempt + 1
                        )));
                    }
                    let backoff = self.config.initial_backoff.as_secs_f64()
                        * 2f64.powi(attempt as i32)
                        * jitter(attempt);
                    let wait = after.unwrap_or(Duration::from_secs_f64(backoff.min(60.0)));
                    attempt += 1;
                    eprintln!(
                        "retry {attempt}/{} in {:.2}s: {} answered {reason}",
                        self.config.max_retries,
                        wait.as_secs_f64(),
                        self.config.completions_url()
                    );
                    std::thread::sleep(wait);
                }
            }
        };
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
        })
    }
}
