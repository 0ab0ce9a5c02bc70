//! The router and the server's life cycle: bind, attach the backend (possibly after the
//! listener is up, so `/healthz` answers while the model loads), serve, shut down gracefully.
//!
//! Shutdown order: the signal fires → `/readyz` says `draining` → axum stops accepting and
//! waits for in-flight requests (whose jobs the workers are running or will run) → the queue
//! closes and the worker threads are joined.

use crate::auth;
use crate::config::ServerConfig;
use crate::error::{Result, ServerError};
use crate::routes::{chat, completions, guard, health, moderations};
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use guardreasoner_guard::GuardBackend;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/guard", post(guard::guard))
        .route("/v1/moderations", post(moderations::moderations))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/models", get(health::models))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let probes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));
    api.merge(probes)
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts every request by route and status and observes its latency.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .record_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// A bound server, not yet serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Server {
    /// Validates `config` and binds `addr` (e.g. `127.0.0.1:8080`; port 0 picks a free one).
    pub async fn bind(addr: &str, config: ServerConfig) -> Result<Server> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Io {
                what: format!("binding {addr}"),
                source,
            })?;
        Ok(Server {
            listener,
            state: AppState::new(config),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|source| ServerError::Io {
                what: "reading the bound address".into(),
                source,
            })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Starts the worker threads on `backend`; `/readyz` turns ready. May be called while
    /// [`Server::run`] already serves (through a clone of [`Server::state`]).
    pub fn start_backend(&self, backend: Arc<dyn GuardBackend>) -> Result<()> {
        start_backend(&self.state, backend)
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and stops the
    /// workers.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let state = self.state.clone();
        let draining = state.draining.clone();
        let signal = async move {
            shutdown.await;
            draining.store(true, Ordering::Relaxed);
        };
        let served = axum::serve(self.listener, router(state.clone()))
            .with_graceful_shutdown(signal)
            .await;
        let pool = state.pool.clone();
        tokio::task::spawn_blocking(move || pool.join())
            .await
            .map_err(|e| ServerError::Internal(format!("joining the workers: {e}")))?;
        served.map_err(|source| ServerError::Io {
            what: "serving".into(),
            source,
        })
    }
}

/// Starts the worker threads of `state` on `backend`.
pub fn start_backend(state: &AppState, backend: Arc<dyn GuardBackend>) -> Result<()> {
    state.pool.start(backend, state.config.workers)
}
