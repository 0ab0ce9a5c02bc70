//! `POST /v1/completions`: OpenAI-compatible raw completion, so the evaluation and synthesis
//! tools (`--backend openai`, i.e. `RemoteBackend`) can use a running server as their backend.
//!
//! Takes `prompt` (a string, or an array of one string), `max_tokens` (default 16, as in
//! OpenAI; at most `--max-new-tokens-cap`), `temperature` (default 1; 0 is greedy), `top_p`,
//! `top_k`, `seed`, `stream`. `n`, `best_of` must be 1, `echo` false, `logprobs` and `stop`
//! absent; `user`, `suffix` (null), `presence_penalty`, `frequency_penalty`, `logit_bias`
//! and `stream_options` are accepted and ignored. The prompt is used as given (no guard
//! template); it may be up to [`ServerConfig::max_completion_prompt_chars`] long and is never
//! truncated. Streaming sends `text_completion` chunks and ends with `data: [DONE]`.
//!
//! [`ServerConfig::max_completion_prompt_chars`]: crate::config::ServerConfig::max_completion_prompt_chars

use crate::config::InputPolicy;
use crate::error::{Result, ServerError};
use crate::queue::{Outcome, Ticket, Work};
use crate::request::{Fields, JsonBody, TextLimit};
use crate::routes::{error_event, event_stream, EventSender};
use crate::state::{unix_secs, AppState};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use guardreasoner_engine::SamplingParams;
use guardreasoner_guard::{BackendOutput, FinishReason};
use serde_json::{json, Map, Value};
use std::time::Instant;
use tokio::sync::mpsc;

const FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stream",
    "n",
    "best_of",
    "echo",
    "logprobs",
    "stop",
    "user",
    "suffix",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "stream_options",
];

/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: usize = 16;

/// A checked completion request.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub prompt: String,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stream: bool,
}

impl CompletionRequest {
    pub fn parse(body: Map<String, Value>, state: &AppState) -> Result<Self> {
        let config = &state.config;
        let mut f = Fields::new(body, "", Some(FIELDS))?;
        let _model = f.string("model")?;
        let prompt = match f.required("prompt")? {
            Value::String(s) => s,
            Value::Array(items) if items.len() == 1 && items[0].is_string() => {
                items[0].as_str().unwrap_or_default().to_string()
            }
            Value::Array(_) => {
                return Err(ServerError::InvalidValue {
                    field: "prompt".into(),
                    reason: "an array prompt must hold exactly one string (batched prompts are not supported)".into(),
                })
            }
            _ => return Err(f.wrong("prompt", "a string")),
        };
        let limit = TextLimit {
            max_chars: config.max_completion_prompt_chars(),
            policy: InputPolicy::Reject,
        };
        let prompt = limit.check("prompt", prompt, true, &mut Vec::new())?;
        let max_tokens = f
            .token_count(
                "max_tokens",
                config.max_new_tokens_cap,
                "--max-new-tokens-cap",
            )?
            .unwrap_or(DEFAULT_MAX_TOKENS.min(config.max_new_tokens_cap));
        let temperature = f.number("temperature")?.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(out_of_range("temperature", temperature, "0..=2"));
        }
        let top_p = f.number("top_p")?.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(out_of_range("top_p", top_p, "(0, 1]"));
        }
        let top_k = f.integer("top_k")?.unwrap_or(0) as usize;
        let seed = f.integer("seed")?.unwrap_or(0);
        let stream = f.boolean("stream")?.unwrap_or(false);
        for key in ["n", "best_of"] {
            if let Some(n) = f.integer(key)? {
                if n != 1 {
                    return Err(out_of_range(key, n as f64, "1"));
                }
            }
        }
        if f.boolean("echo")? == Some(true) {
            return Err(unsupported("echo", "echo is not supported (must be false)"));
        }
        if f.take("logprobs").is_some() {
            return Err(unsupported("logprobs", "logprobs are not supported"));
        }
        match f.take("stop") {
            None => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(_) => return Err(unsupported("stop", "stop sequences are not supported")),
        }
        if f.string("suffix")?.is_some() {
            return Err(unsupported("suffix", "suffix is not supported"));
        }
        let _user = f.string("user")?;
        for key in ["presence_penalty", "frequency_penalty"] {
            let _ignored = f.number(key)?;
        }
        let _ignored = (f.take("logit_bias"), f.take("stream_options"));
        Ok(CompletionRequest {
            prompt,
            max_tokens,
            sampling: SamplingParams {
                temperature: temperature as f32,
                top_p: top_p as f32,
                top_k,
                seed,
            },
            stream,
        })
    }
}

fn out_of_range(field: &str, value: f64, limit: &str) -> ServerError {
    ServerError::OutOfRange {
        field: field.into(),
        value: value.to_string(),
        limit: limit.into(),
        flag: None,
    }
}

fn unsupported(field: &str, reason: &str) -> ServerError {
    ServerError::InvalidValue {
        field: field.into(),
        reason: reason.into(),
    }
}

fn finish_reason(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn completion_json(state: &AppState, id: &str, output: &BackendOutput) -> Value {
    json!({
        "id": id,
        "object": "text_completion",
        "created": unix_secs(),
        "model": state.config.model_name,
        "choices": [{
            "text": output.text,
            "index": 0,
            "logprobs": null,
            "finish_reason": finish_reason(output.finish),
        }],
        "usage": {
            "prompt_tokens": output.prompt_tokens,
            "completion_tokens": output.generated_tokens,
            "total_tokens": output.prompt_tokens + output.generated_tokens,
        },
    })
}

fn chunk_json(state: &AppState, id: &str, text: &str, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "text_completion",
        "created": unix_secs(),
        "model": state.config.model_name,
        "choices": [{ "text": text, "index": 0, "logprobs": null, "finish_reason": finish }],
    })
}

pub async fn completions(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let request = CompletionRequest::parse(body, &state)?;
    let deadline = state.deadline();
    let id = state.next_id("cmpl");
    let work = Work::Complete {
        prompt: request.prompt,
        max_new_tokens: request.max_tokens,
        sampling: request.sampling,
    };
    if !request.stream {
        let Outcome::Completion(output) = state.run(work, deadline).await? else {
            return Err(ServerError::Internal("wrong outcome".into()));
        };
        return Ok(Json(completion_json(&state, &id, &output)).into_response());
    }
    let ticket = state.pool.submit(work, deadline, true)?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(forward(state, ticket, deadline, id, tx));
    Ok(Sse::new(event_stream(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn forward(
    state: AppState,
    mut ticket: Ticket,
    deadline: Instant,
    id: String,
    tx: EventSender,
) {
    let data = |v: Value| Ok(Event::default().data(v.to_string()));
    if let Some(mut text) = ticket.text.take() {
        loop {
            match tokio::time::timeout_at(deadline.into(), text.recv()).await {
                Ok(Some(delta)) => {
                    if tx
                        .send(data(chunk_json(&state, &id, &delta, None)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    let _ = tx.send(Ok(error_event(&state.timeout()))).await;
                    return;
                }
            }
        }
    }
    match state.wait(ticket, deadline).await {
        Ok(Outcome::Completion(output)) => {
            let mut last = chunk_json(&state, &id, "", Some(finish_reason(output.finish)));
            last["usage"] = json!({
                "prompt_tokens": output.prompt_tokens,
                "completion_tokens": output.generated_tokens,
                "total_tokens": output.prompt_tokens + output.generated_tokens,
            });
            let _ = tx.send(data(last)).await;
            let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
        }
        Ok(Outcome::Guard(_)) => {
            let _ = tx
                .send(Ok(error_event(&ServerError::Internal(
                    "wrong outcome".into(),
                ))))
                .await;
        }
        Err(e) => {
            let _ = tx.send(Ok(error_event(&e))).await;
        }
    }
}
