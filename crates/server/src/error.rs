//! The server's one error type and its one error→status mapping.
//!
//! Every failure a client can see is a [`ServerError`] variant carrying the facts (field, value,
//! limit, flag); [`ServerError::status`] is the only place that picks an HTTP status, and
//! [`IntoResponse`] renders every error in the OpenAI error shape:
//! `{"error": {"message", "type", "param", "code"}}`, with `param` naming the offending field
//! (or header) and `limit` the limit it broke, where there is one. Startup failures (bind, key
//! file) use the same enum and never reach a client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything that can go wrong in the service.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("request body is empty; expected a JSON object")]
    EmptyBody,
    #[error("request body is larger than the limit of {limit} bytes (--max-body-bytes)")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("request body is not valid UTF-8 (first invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("request body is not valid JSON: {detail}")]
    InvalidJson { detail: String },
    #[error("Content-Type must be application/json, got {found:?}")]
    UnsupportedMediaType { found: String },
    #[error("field `{field}` is required")]
    MissingField { field: String },
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("unknown field `{field}` (expected one of: {expected})")]
    UnknownField { field: String, expected: String },
    #[error("field `{field}` is invalid: {reason}")]
    InvalidValue { field: String, reason: String },
    #[error("field `{field}` is {value}; the limit is {limit}{}", flag_note(flag))]
    OutOfRange {
        field: String,
        value: String,
        limit: String,
        flag: Option<&'static str>,
    },
    #[error("field `{field}` has {chars} characters; the limit is {limit} (--max-input-chars)")]
    InputTooLong {
        field: String,
        chars: usize,
        limit: usize,
    },
    #[error("query parameter `{param}` is invalid: {reason}")]
    InvalidQuery { param: String, reason: String },
    #[error("{reason}")]
    Unauthorized { reason: &'static str },
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("the queue is full ({capacity} requests waiting; --queue-capacity); retry after {retry_after_secs} s")]
    QueueFull {
        capacity: usize,
        retry_after_secs: u64,
    },
    #[error("the model is still loading; retry after {retry_after_secs} s")]
    NotReady { retry_after_secs: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the request took longer than the limit of {secs} s (--request-timeout-secs)")]
    Timeout { secs: u64 },
    #[error("the chat proxy is not configured: start the server with --upstream URL")]
    ProxyNotConfigured,
    #[error("upstream {url}: {reason}")]
    Upstream { url: String, reason: String },
    #[error("guard backend: {0}")]
    Backend(#[from] guardreasoner_guard::GuardError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
}

fn flag_note(flag: &Option<&'static str>) -> String {
    flag.map(|f| format!(" ({f})")).unwrap_or_default()
}

pub type Result<T> = std::result::Result<T, ServerError>;

impl ServerError {
    /// The one error→status mapping of the service.
    pub fn status(&self) -> StatusCode {
        use ServerError::*;
        match self {
            EmptyBody | BodyRead(_) | InvalidUtf8 { .. } | InvalidJson { .. } => {
                StatusCode::BAD_REQUEST
            }
            MissingField { .. } | WrongType { .. } | UnknownField { .. } => StatusCode::BAD_REQUEST,
            InvalidValue { .. } | OutOfRange { .. } | InvalidQuery { .. } => {
                StatusCode::BAD_REQUEST
            }
            BodyTooLarge { .. } | InputTooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            NotFound { .. } | ProxyNotConfigured => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            NotReady { .. } | ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Upstream { .. } => StatusCode::BAD_GATEWAY,
            Backend(_) | Internal(_) | Io { .. } | Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI `error.type`.
    fn kind(&self) -> &'static str {
        use ServerError::*;
        match self {
            Unauthorized { .. } => "authentication_error",
            NotFound { .. } | ProxyNotConfigured => "not_found_error",
            QueueFull { .. } => "rate_limit_error",
            NotReady { .. } | ShuttingDown | Timeout { .. } => "overloaded_error",
            Upstream { .. } | Backend(_) | Internal(_) | Io { .. } | Config(_) => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// A stable machine-readable `error.code`.
    fn code(&self) -> &'static str {
        use ServerError::*;
        match self {
            EmptyBody => "empty_body",
            BodyTooLarge { .. } => "body_too_large",
            BodyRead(_) => "body_unreadable",
            InvalidUtf8 { .. } => "invalid_utf8",
            InvalidJson { .. } => "invalid_json",
            UnsupportedMediaType { .. } => "unsupported_media_type",
            MissingField { .. } => "missing_field",
            WrongType { .. } => "wrong_type",
            UnknownField { .. } => "unknown_field",
            InvalidValue { .. } => "invalid_value",
            OutOfRange { .. } => "out_of_range",
            InputTooLong { .. } => "input_too_long",
            InvalidQuery { .. } => "invalid_query",
            Unauthorized { .. } => "invalid_api_key",
            NotFound { .. } => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            QueueFull { .. } => "queue_full",
            NotReady { .. } => "not_ready",
            ShuttingDown => "shutting_down",
            Timeout { .. } => "timeout",
            ProxyNotConfigured => "proxy_not_configured",
            Upstream { .. } => "upstream_error",
            Backend(_) => "backend_error",
            Internal(_) | Io { .. } | Config(_) => "internal_error",
        }
    }

    /// The field, query parameter or header the error is about.
    fn param(&self) -> Option<String> {
        use ServerError::*;
        match self {
            MissingField { field }
            | WrongType { field, .. }
            | UnknownField { field, .. }
            | InvalidValue { field, .. }
            | OutOfRange { field, .. }
            | InputTooLong { field, .. } => Some(field.clone()),
            InvalidQuery { param, .. } => Some(param.clone()),
            BodyTooLarge { .. } | EmptyBody | InvalidUtf8 { .. } | InvalidJson { .. } => {
                Some("body".into())
            }
            UnsupportedMediaType { .. } => Some("Content-Type".into()),
            Unauthorized { .. } => Some("Authorization".into()),
            _ => None,
        }
    }

    /// The limit the request broke, where there is one.
    fn limit(&self) -> Option<serde_json::Value> {
        use ServerError::*;
        match self {
            BodyTooLarge { limit } | InputTooLong { limit, .. } => Some(json!(limit)),
            OutOfRange { limit, .. } => Some(json!(limit)),
            QueueFull { capacity, .. } => Some(json!(capacity)),
            Timeout { secs } => Some(json!(secs)),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ServerError::QueueFull {
                retry_after_secs, ..
            }
            | ServerError::NotReady { retry_after_secs } => Some(*retry_after_secs),
            ServerError::ShuttingDown => Some(5),
            _ => None,
        }
    }

    /// The JSON error object (also used as the data of a streamed `error` event).
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = json!({
            "message": self.to_string(),
            "type": self.kind(),
            "param": self.param(),
            "code": self.code(),
        });
        if let Some(limit) = self.limit() {
            error["limit"] = limit;
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self.to_json())).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
