//! `POST /v1/chat/completions`: the guarding proxy in front of `--upstream URL`.
//!
//! 1. The last `user` message is checked alone (task 1). If harmful (or unreadable under the
//!    fail-closed policy) the upstream is never called: the answer is a refusal
//!    (`finish_reason: "content_filter"`, content `--refusal-message`).
//! 2. Otherwise the body is forwarded unchanged to the upstream's `/v1/chat/completions`.
//!    - Not streaming: the upstream's answer (`choices[0].message.content`) is checked with
//!      the user message (tasks 1-3); a harmful answer is replaced by the refusal, otherwise
//!      the upstream's body is returned as it came.
//!    - Streaming: the upstream's event stream is passed through byte for byte once the
//!      request check allows it; the answer is not checked (it cannot be recalled once sent).
//! 3. Every JSON answer carries the verdicts in the extension field `guardreasoner`:
//!    `{"blocked": null | "request" | "response", "request": <guard answer>, "response":
//!    <guard answer> | null}`; a passed-through stream carries the request verdict in the
//!    `X-GuardReasoner-Request` header instead.
//!
//! Upstream calls run on blocking threads (the async runtime only moves bytes).

use crate::config::UpstreamConfig;
use crate::error::{Result, ServerError};
use crate::policy::Decision;
use crate::queue::{Outcome, Work};
use crate::request::{Fields, JsonBody, TextLimit, Truncation};
use crate::routes::guard::guard_json;
use crate::routes::moderations::parts_text;
use crate::routes::{event_stream, json_event};
use crate::state::{unix_secs, AppState};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use guardreasoner_guard::GuardResult;
use guardreasoner_protocol::GuardInput;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::time::Instant;
use tokio::sync::mpsc;

/// A checked chat request: the body to forward and the message to check.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub body: Map<String, Value>,
    pub user_message: String,
    pub stream: bool,
    pub model: Option<String>,
    pub truncated: Vec<Truncation>,
}

impl ChatRequest {
    pub fn parse(body: Map<String, Value>, state: &AppState) -> Result<Self> {
        let forwarded = body.clone();
        let mut f = Fields::new(body, "", None)?;
        let model = f.string("model")?;
        let stream = f.boolean("stream")?.unwrap_or(false);
        let messages = match f.required("messages")? {
            Value::Array(m) if m.is_empty() => {
                return Err(ServerError::InvalidValue {
                    field: "messages".into(),
                    reason: "must not be empty".into(),
                })
            }
            Value::Array(m) => m,
            _ => return Err(f.wrong("messages", "an array of messages")),
        };
        let mut last_user = None;
        for (i, message) in messages.into_iter().enumerate() {
            let path = format!("messages[{i}]");
            let mut m = Fields::object(message, &path, None)?;
            let role = m.required_string("role")?;
            if role == "user" {
                let content = match m.required("content")? {
                    Value::String(s) => s,
                    Value::Array(parts) => parts_text(parts, &format!("{path}.content"))?,
                    _ => return Err(m.wrong("content", "a string or an array of text parts")),
                };
                last_user = Some((format!("{path}.content"), content));
            }
        }
        let Some((field, content)) = last_user else {
            return Err(ServerError::InvalidValue {
                field: "messages".into(),
                reason: "has no message with role `user` to check".into(),
            });
        };
        let mut truncated = Vec::new();
        let user_message =
            TextLimit::from_config(&state.config).check(&field, content, true, &mut truncated)?;
        Ok(ChatRequest {
            body: forwarded,
            user_message,
            stream,
            model,
            truncated,
        })
    }
}

async fn check(state: &AppState, input: GuardInput, deadline: Instant) -> Result<GuardResult> {
    let work = Work::Guard {
        input,
        max_new_tokens: state.config.guard.max_new_tokens,
    };
    match state.run(work, deadline).await? {
        Outcome::Guard(result) => Ok(result),
        Outcome::Completion(_) => Err(ServerError::Internal("wrong outcome".into())),
    }
}

pub async fn chat(State(state): State<AppState>, JsonBody(body): JsonBody) -> Result<Response> {
    let upstream = state
        .config
        .upstream
        .clone()
        .ok_or(ServerError::ProxyNotConfigured)?;
    let request = ChatRequest::parse(body, &state)?;
    let deadline = state.deadline();
    let policy = state.config.fail_policy;
    let input = GuardInput::new(request.user_message.clone(), None);
    let request_check = check(&state, input, deadline).await?;
    let request_json = guard_json(&state, &request_check, &request.truncated);
    if Decision::of(&request_check, policy).request_harmful {
        let verdicts = json!({ "blocked": "request", "request": request_json, "response": null });
        return Ok(refusal(&state, &request, verdicts));
    }
    let forwarded = Value::Object(request.body.clone());
    let agent = state.agent.clone();
    let up = upstream.clone();
    let response = blocking(move || post(&agent, &up, &forwarded)).await?;
    if request.stream {
        return Ok(pass_through(response, &request_check));
    }
    let url = upstream.chat_url();
    let mut answer: Value = blocking(move || {
        let text = response.into_string().map_err(|e| ServerError::Upstream {
            url: url.clone(),
            reason: format!("unreadable body: {e}"),
        })?;
        serde_json::from_str(&text).map_err(|e| ServerError::Upstream {
            url,
            reason: format!("body is not JSON: {e}"),
        })
    })
    .await?;
    let content = answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(content) = content else {
        // Nothing to check (e.g. tool calls only): pass it on with the request verdict.
        answer["guardreasoner"] =
            json!({ "blocked": null, "request": request_json, "response": null });
        return Ok(Json(answer).into_response());
    };
    let input = GuardInput::new(request.user_message.clone(), Some(content));
    let response_check = check(&state, input, deadline).await?;
    let response_json = guard_json(&state, &response_check, &request.truncated);
    if Decision::of(&response_check, policy).response_harmful {
        let verdicts =
            json!({ "blocked": "response", "request": request_json, "response": response_json });
        return Ok(refusal(&state, &request, verdicts));
    }
    answer["guardreasoner"] =
        json!({ "blocked": null, "request": request_json, "response": response_json });
    Ok(Json(answer).into_response())
}

/// Runs blocking I/O off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Internal(format!("upstream task failed: {e}")))?
}

/// Sends the chat body upstream; non-2xx answers become 502 naming the upstream's status.
fn post(agent: &ureq::Agent, upstream: &UpstreamConfig, body: &Value) -> Result<ureq::Response> {
    let url = upstream.chat_url();
    let mut request = agent.post(&url).set("Content-Type", "application/json");
    if let Some(key) = &upstream.api_key {
        request = request.set("Authorization", &format!("Bearer {key}"));
    }
    request.send_string(&body.to_string()).map_err(|e| match e {
        ureq::Error::Status(code, response) => {
            let text = response.into_string().unwrap_or_default();
            ServerError::Upstream {
                url: url.clone(),
                reason: format!(
                    "answered HTTP {code}: {}",
                    text.chars().take(300).collect::<String>()
                ),
            }
        }
        ureq::Error::Transport(t) => ServerError::Upstream {
            url: url.clone(),
            reason: t.to_string(),
        },
    })
}

/// Streams the upstream's body through as it arrives.
fn pass_through(response: ureq::Response, request_check: &GuardResult) -> Response {
    let content_type = response.content_type().to_string();
    let (tx, rx) = mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break; // the client went away: stop reading the upstream
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let label = request_check.verdict.request.map_or("none", |l| l.as_str());
    headers.insert("x-guardreasoner-request", HeaderValue::from_static(label));
    response
}

/// The refusal answer, as a chat completion or (when streaming) a one-chunk stream.
fn refusal(state: &AppState, request: &ChatRequest, verdicts: Value) -> Response {
    let id = state.next_id("chatcmpl");
    let model = request
        .model
        .clone()
        .unwrap_or_else(|| state.config.model_name.clone());
    let text = &state.config.refusal_message;
    if !request.stream {
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": unix_secs(),
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "finish_reason": "content_filter",
            }],
            "usage": { "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 },
            "guardreasoner": verdicts,
        });
        return Json(body).into_response();
    }
    let chunk = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": unix_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "delta": { "role": "assistant", "content": text },
            "finish_reason": "content_filter",
        }],
        "guardreasoner": verdicts,
    });
    let (tx, rx) = mpsc::channel(2);
    // The channel holds both events, so these sends cannot wait.
    let _ = tx.try_send(Ok(json_event(None, &chunk)));
    let _ = tx.try_send(Ok(Event::default().data("[DONE]")));
    Sse::new(event_stream(rx)).into_response()
}
