//! The HTTP routes, one module each; [`crate::app::router`] wires them.
//!
//! - [`guard`]: `POST /v1/guard` (the verdict as JSON, or streamed as server-sent events);
//! - [`moderations`]: `POST /v1/moderations` (OpenAI moderation shape);
//! - [`completions`]: `POST /v1/completions` (OpenAI raw completion, for `RemoteBackend`);
//! - [`chat`]: `POST /v1/chat/completions` (the guarding proxy in front of `--upstream`);
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`, `/v1/models`, and the JSON 404/405.

pub mod chat;
pub mod completions;
pub mod guard;
pub mod health;
pub mod moderations;

use crate::error::ServerError;
use axum::response::sse::Event;
use std::convert::Infallible;
use tokio::sync::mpsc;

/// The sender side of a server-sent event stream built by a spawned task.
pub type EventSender = mpsc::Sender<Result<Event, Infallible>>;

/// An SSE body reading the events a task sends (the task stops when the client is gone,
/// because its sends fail).
pub fn event_stream(
    rx: mpsc::Receiver<Result<Event, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (event, rx))
    })
}

/// A JSON `data:` event with an optional event name.
pub fn json_event(name: Option<&str>, data: &serde_json::Value) -> Event {
    let event = Event::default().data(data.to_string());
    match name {
        Some(name) => event.event(name),
        None => event,
    }
}

/// The `error` event closing a stream that failed after its headers were sent.
pub fn error_event(error: &ServerError) -> Event {
    json_event(Some("error"), &error.to_json())
}
