//! Bearer API keys: `Authorization: Bearer KEY` on every `/v1/*` route when keys are set.
//!
//! `/healthz`, `/readyz` and `/metrics` stay open (probes and scrapers carry no key).

use crate::error::ServerError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Middleware refusing requests without a valid key (401, `WWW-Authenticate: Bearer`).
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let keys = &state.config.api_keys;
    if keys.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let verdict = match presented {
        None => Err("missing API key: send `Authorization: Bearer KEY`"),
        Some(value) => match value.strip_prefix("Bearer ").map(str::trim) {
            None => Err("the Authorization header must be `Bearer KEY`"),
            Some(key) if keys.accepts(key) => Ok(()),
            Some(_) => Err("invalid API key"),
        },
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(reason) => ServerError::Unauthorized { reason }.into_response(),
    }
}
