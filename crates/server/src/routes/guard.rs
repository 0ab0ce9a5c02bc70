//! `POST /v1/guard`: `{prompt, response?, max_new_tokens?}` → the verdict.
//!
//! The answer is [`GuardResult::to_json`] (the shape `classify --json` prints: `verdict`,
//! `raw_output`, `finish_reason`, `usage`, `timing`) plus `policy` (the decision under the
//! fail policy) and `truncated` (fields cut by the `truncate` input policy). With
//! `?stream=true` (or `"stream": true`) the reasoning arrives as `reasoning` events
//! (`{"text": delta}`) and the stream ends with one `verdict` event holding that same object,
//! or an `error` event.

use crate::error::{Result, ServerError};
use crate::policy::Decision;
use crate::queue::{Outcome, Work};
use crate::request::{stream_query, Fields, JsonBody, TextLimit, Truncation};
use crate::routes::{error_event, event_stream, json_event, EventSender};
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use guardreasoner_guard::GuardResult;
use guardreasoner_protocol::GuardInput;
use serde_json::{json, Map, Value};
use std::time::Instant;
use tokio::sync::mpsc;

/// A checked `/v1/guard` request.
#[derive(Debug, Clone)]
pub struct GuardRequest {
    pub input: GuardInput,
    pub max_new_tokens: usize,
    pub stream: bool,
    pub truncated: Vec<Truncation>,
}

const FIELDS: &[&str] = &["prompt", "response", "max_new_tokens", "stream"];

impl GuardRequest {
    pub fn parse(body: Map<String, Value>, query: Option<&str>, state: &AppState) -> Result<Self> {
        let config = &state.config;
        let query_stream = stream_query(query)?;
        let mut f = Fields::new(body, "", Some(FIELDS))?;
        let limit = TextLimit::from_config(config);
        let mut truncated = Vec::new();
        let prompt = f.required_string("prompt")?;
        let prompt = limit.check("prompt", prompt, true, &mut truncated)?;
        let response = match f.string("response")? {
            Some(r) => Some(limit.check("response", r, false, &mut truncated)?),
            None => None,
        };
        let max_new_tokens = f
            .token_count(
                "max_new_tokens",
                config.max_new_tokens_cap,
                "--max-new-tokens-cap",
            )?
            .unwrap_or(config.guard.max_new_tokens);
        let stream = query_stream.or(f.boolean("stream")?).unwrap_or(false);
        Ok(GuardRequest {
            input: GuardInput::new(prompt, response),
            max_new_tokens,
            stream,
            truncated,
        })
    }
}

/// The `/v1/guard` answer object.
pub fn guard_json(state: &AppState, result: &GuardResult, truncated: &[Truncation]) -> Value {
    let mut value = result.to_json();
    value["policy"] = Decision::of(result, state.config.fail_policy).to_json();
    value["truncated"] = json!(truncated);
    value
}

pub async fn guard(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let request = GuardRequest::parse(body, query.as_deref(), &state)?;
    let deadline = state.deadline();
    let work = Work::Guard {
        input: request.input.clone(),
        max_new_tokens: request.max_new_tokens,
    };
    if !request.stream {
        return match state.run(work, deadline).await? {
            Outcome::Guard(result) => {
                Ok(Json(guard_json(&state, &result, &request.truncated)).into_response())
            }
            Outcome::Completion(_) => Err(ServerError::Internal("wrong outcome".into())),
        };
    }
    let ticket = state.pool.submit(work, deadline, true)?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(forward(state, ticket, deadline, request.truncated, tx));
    Ok(Sse::new(event_stream(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Sends the job's text as `reasoning` events, then the `verdict` (or `error`) event.
async fn forward(
    state: AppState,
    mut ticket: crate::queue::Ticket,
    deadline: Instant,
    truncated: Vec<Truncation>,
    tx: EventSender,
) {
    if let Some(mut text) = ticket.text.take() {
        loop {
            match tokio::time::timeout_at(deadline.into(), text.recv()).await {
                Ok(Some(delta)) => {
                    let event = json_event(Some("reasoning"), &json!({ "text": delta }));
                    if tx.send(Ok(event)).await.is_err() {
                        return; // the client went away; the worker finishes on its own
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
    let event = match state.wait(ticket, deadline).await {
        Ok(Outcome::Guard(result)) => {
            json_event(Some("verdict"), &guard_json(&state, &result, &truncated))
        }
        Ok(Outcome::Completion(_)) => error_event(&ServerError::Internal("wrong outcome".into())),
        Err(e) => error_event(&e),
    };
    let _ = tx.send(Ok(event)).await;
}
