//! The state every handler shares: configuration, worker pool, metrics, the drain flag, and
//! the HTTP client of the chat proxy.

use crate::config::ServerConfig;
use crate::error::{Result, ServerError};
use crate::metrics::Metrics;
use crate::queue::{Outcome, Ticket, Work, WorkerPool};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Cheap to clone: everything is behind an `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub pool: Arc<WorkerPool>,
    pub metrics: Arc<Metrics>,
    /// Set once graceful shutdown has begun (`/readyz` answers 503).
    pub draining: Arc<AtomicBool>,
    /// The proxy's client for the upstream server (blocking; used on blocking threads).
    pub agent: ureq::Agent,
    ids: Arc<AtomicU64>,
}

impl AppState {
    pub fn new(config: ServerConfig) -> Self {
        let metrics = Arc::new(Metrics::new(config.queue_capacity));
        let pool = Arc::new(WorkerPool::new(
            config.queue_capacity,
            config.retry_after_secs,
            config.guard.clone(),
            metrics.clone(),
        ));
        let timeout = config
            .upstream
            .as_ref()
            .map_or(Duration::from_secs(600), |u| u.timeout);
        let upstream = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(timeout)
            .build();
        AppState {
            config: Arc::new(config),
            pool,
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            agent: upstream,
            ids: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A fresh response id such as `modr-18c2f0a1b2c-7`.
    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}-{n}", unix_millis())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The deadline of a request that arrives now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }

    /// Queues `work` without streaming and waits for its outcome until `deadline`.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Outcome> {
        let ticket = self.pool.submit(work, deadline, false)?;
        self.wait(ticket, deadline).await
    }

    /// Waits for a submitted job's outcome until `deadline` (504 after it).
    pub async fn wait(&self, ticket: Ticket, deadline: Instant) -> Result<Outcome> {
        match tokio::time::timeout_at(deadline.into(), ticket.reply).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ServerError::ShuttingDown),
            Err(_) => Err(self.timeout()),
        }
    }

    pub fn timeout(&self) -> ServerError {
        ServerError::Timeout {
            secs: self.config.request_timeout.as_secs(),
        }
    }
}

/// Seconds since the Unix epoch (the OpenAI `created` field).
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
