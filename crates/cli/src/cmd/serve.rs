//! `guardreasoner serve`: the guard as an HTTP service (see the `guardreasoner-server` crate).
//!
//! Flags resolve into a [`ServerConfig`]; the listener binds first, so `/healthz` answers and
//! `/readyz` says `loading` while the model loads on a blocking thread. Ctrl-C or SIGTERM
//! starts a graceful shutdown that finishes the requests in flight.

use crate::cmd::model::{load_backend, DecodeArgs, ModelArgs};
use anyhow::Context;
use clap::Args;
use guardreasoner_server::{
    start_backend, ApiKeys, FailPolicy, InputPolicy, Server, ServerConfig, UpstreamConfig,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GUARDREASONER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Worker threads running the model (each request runs on one; raise it for
    /// `--backend openai`, where a worker mostly waits on the remote server).
    #[arg(long, env = "GUARDREASONER_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Requests that may wait for a worker; beyond that the server answers 429 with
    /// Retry-After.
    #[arg(long, env = "GUARDREASONER_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,
    /// Seconds in the Retry-After header of 429 and 503 answers.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Per-request time limit in seconds, queue wait included (504 after it).
    #[arg(
        long,
        env = "GUARDREASONER_REQUEST_TIMEOUT_SECS",
        default_value_t = 300
    )]
    pub request_timeout_secs: u64,
    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "GUARDREASONER_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Longest text per field (prompt, response, moderation input, checked chat message), in
    /// characters.
    #[arg(long, env = "GUARDREASONER_MAX_INPUT_CHARS", default_value_t = 32 * 1024)]
    pub max_input_chars: usize,
    /// What to do with longer text: `reject` (413 naming the field and limit) or `truncate`
    /// (keep the first --max-input-chars characters; the answer's `truncated` says so).
    #[arg(long, env = "GUARDREASONER_INPUT_POLICY", default_value = "reject")]
    pub input_policy: InputPolicy,
    /// How a verdict the model did not give counts: `closed` (as harmful: flag / block) or
    /// `open` (as unharmful).
    #[arg(long, env = "GUARDREASONER_FAIL_POLICY", default_value = "closed")]
    pub fail_policy: FailPolicy,
    /// Largest max_new_tokens / max_tokens a request may ask for.
    #[arg(long, env = "GUARDREASONER_MAX_NEW_TOKENS_CAP", default_value_t = 2048)]
    pub max_new_tokens_cap: usize,
    /// Most inputs in one /v1/moderations request.
    #[arg(long, default_value_t = 32)]
    pub max_moderation_inputs: usize,
    /// File of bearer API keys clients must send, one per line (`#` starts a comment).
    #[arg(long, env = "GUARDREASONER_API_KEYS_FILE", value_name = "FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Comma-separated bearer API keys clients must send (in addition to --api-keys-file).
    #[arg(long, env = "GUARDREASONER_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// OpenAI-compatible chat server that /v1/chat/completions guards and forwards to.
    #[arg(long, env = "GUARDREASONER_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Bearer key for the upstream chat server.
    #[arg(long, env = "GUARDREASONER_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,
    /// The assistant message the chat proxy sends instead of a blocked completion.
    #[arg(long, default_value = guardreasoner_server::config::DEFAULT_REFUSAL)]
    pub refusal_message: String,
    /// The model name the OpenAI-compatible routes report (default: --model).
    #[arg(long, env = "GUARDREASONER_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut api_keys = ApiKeys::default();
        if let Some(path) = &self.api_keys_file {
            api_keys.extend(ApiKeys::from_file(path)?);
        }
        if let Some(list) = &self.api_keys {
            api_keys.extend(ApiKeys::from_list(list));
        }
        let timeout = Duration::from_secs(self.request_timeout_secs);
        Ok(ServerConfig {
            model_name: self
                .served_model_name
                .clone()
                .unwrap_or_else(|| self.model.model.clone()),
            guard: self.decode.guard_options()?,
            max_new_tokens_cap: self.max_new_tokens_cap,
            workers: self.workers,
            queue_capacity: self.queue_capacity,
            retry_after_secs: self.retry_after_secs,
            request_timeout: timeout,
            max_body_bytes: self.max_body_bytes,
            max_input_chars: self.max_input_chars,
            input_policy: self.input_policy,
            fail_policy: self.fail_policy,
            max_moderation_inputs: self.max_moderation_inputs,
            api_keys,
            upstream: self.upstream.clone().map(|base_url| UpstreamConfig {
                base_url,
                api_key: self.upstream_api_key.clone(),
                timeout,
            }),
            refusal_message: self.refusal_message.clone(),
        })
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs, config: ServerConfig) -> anyhow::Result<()> {
    let auth = if config.api_keys.is_empty() {
        "no API keys"
    } else {
        "API keys required"
    };
    let server = Server::bind(&args.addr, config).await?;
    let addr = server.local_addr()?;
    eprintln!("listening on http://{addr} ({auth}); loading the model...");
    let state = server.state().clone();
    let model = args.model.clone();
    let loading = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let backend = Arc::from(load_backend(&model)?);
        let described = guardreasoner_guard::GuardBackend::describe(&*backend);
        start_backend(&state, backend)?;
        Ok(described)
    });
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        match loading.await {
            Ok(Ok(described)) => eprintln!("ready: {described}"),
            Ok(Err(e)) => {
                let _ = fail_tx.send(format!("{e:#}"));
            }
            Err(e) => {
                let _ = fail_tx.send(e.to_string());
            }
        }
    });
    let failure = Arc::new(std::sync::Mutex::new(None));
    let failed = failure.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => eprintln!("shutting down: finishing requests in flight"),
            Ok(e) = fail_rx => {
                if let Ok(mut slot) = failed.lock() {
                    *slot = Some(e);
                }
            }
        }
    };
    server.run(shutdown).await?;
    let failure = failure.lock().ok().and_then(|mut slot| slot.take());
    match failure {
        Some(e) => anyhow::bail!("loading the model: {e}"),
        None => Ok(()),
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
