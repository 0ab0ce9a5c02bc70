//! The GuardReasoner guard as an HTTP service (`guardreasoner serve`).
//!
//! Layers, in request order:
//! - [`app`]: the router, metrics middleware, and the server's life cycle (bind, attach the
//!   backend, graceful shutdown);
//! - [`auth`]: optional bearer API keys on `/v1/*`;
//! - [`request`]: bodies become typed, checked requests at the edge (content type, size,
//!   UTF-8, JSON, each field, the input-length policy), every error naming field and limit;
//! - [`routes`]: one module per endpoint (`/v1/guard`, `/v1/moderations`, `/v1/completions`,
//!   `/v1/chat/completions`, probes);
//! - [`queue`]: the bounded queue and the worker threads that run the backend, so the async
//!   runtime never runs model compute;
//! - [`policy`]: verdict → decision under the fail policy (fail-closed by default);
//! - [`metrics`]: Prometheus text;
//! - [`error`]: the one error type and its one error→status mapping.
//!
//! The backend is any [`guardreasoner_guard::GuardBackend`]: the local engine, a remote
//! OpenAI-compatible server, or a scripted one in tests.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod policy;
pub mod queue;
pub mod request;
pub mod routes;
pub mod state;

pub use app::{router, start_backend, Server};
pub use config::{ApiKeys, FailPolicy, InputPolicy, ServerConfig, UpstreamConfig};
pub use error::{Result, ServerError};
pub use state::AppState;
