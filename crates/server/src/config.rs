//! The service's validated configuration: what the CLI's flags resolve into.
//!
//! [`ServerConfig`] has no `Option`s except where absence is a setting (no upstream, no API
//! keys); [`ServerConfig::validate`] checks it once before the server binds. Defaults are the
//! documented ones (README, "Service").

use crate::error::{Result, ServerError};
use guardreasoner_guard::GuardOptions;
use std::path::Path;
use std::time::Duration;

/// What to do with a request whose text is longer than `max_input_chars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPolicy {
    /// Answer 413 naming the field and the limit (default).
    Reject,
    /// Keep the first `max_input_chars` characters and say so in the response (`truncated`).
    Truncate,
}

impl std::str::FromStr for InputPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "reject" => Ok(InputPolicy::Reject),
            "truncate" => Ok(InputPolicy::Truncate),
            other => Err(format!(
                "unknown input policy `{other}` (expected reject or truncate)"
            )),
        }
    }
}

/// How an answer the guard did not give (unreadable or truncated output) counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPolicy {
    /// A missing answer counts as harmful: the request is flagged / blocked (default).
    Closed,
    /// A missing answer counts as unharmful.
    Open,
}

impl std::str::FromStr for FailPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "closed" => Ok(FailPolicy::Closed),
            "open" => Ok(FailPolicy::Open),
            other => Err(format!(
                "unknown fail policy `{other}` (expected closed or open)"
            )),
        }
    }
}

/// Bearer API keys; empty means no authentication.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<String>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

impl ApiKeys {
    pub fn new(keys: impl IntoIterator<Item = String>) -> Self {
        ApiKeys(
            keys.into_iter()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
        )
    }

    /// Keys from a comma-separated list (the `GUARDREASONER_API_KEYS` form).
    pub fn from_list(list: &str) -> Self {
        ApiKeys::new(list.split(',').map(str::to_string))
    }

    /// Keys from a file, one per line; blank lines and lines starting with `#` are skipped.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::Io {
            what: format!("API key file {}", path.display()),
            source,
        })?;
        let keys = ApiKeys::new(
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(str::to_string),
        );
        if keys.is_empty() {
            return Err(ServerError::Config(format!(
                "API key file {} holds no keys",
                path.display()
            )));
        }
        Ok(keys)
    }

    pub fn extend(&mut self, other: ApiKeys) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` is one of the keys (compared in constant time per key).
    pub fn accepts(&self, candidate: &str) -> bool {
        self.0
            .iter()
            .fold(false, |hit, key| hit | constant_time_eq(key, candidate))
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The upstream chat server of the guarding proxy.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// e.g. `http://127.0.0.1:8000` (with or without `/v1`).
    pub base_url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl UpstreamConfig {
    pub fn chat_url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/chat/completions")
    }
}

/// Everything the service needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The `model` reported by the OpenAI-compatible routes.
    pub model_name: String,
    /// Prompt format, default sampling and the default `max_new_tokens` of `/v1/guard`.
    pub guard: GuardOptions,
    /// The largest `max_new_tokens` / `max_tokens` a request may ask for (default 2048).
    pub max_new_tokens_cap: usize,
    /// Worker threads running the backend (default 1).
    pub workers: usize,
    /// Requests that may wait for a worker; beyond that the answer is 429 (default 64).
    pub queue_capacity: usize,
    /// The `Retry-After` sent with 429 and 503 (default 1 s).
    pub retry_after_secs: u64,
    /// From arrival to answer, queue wait included (default 300 s).
    pub request_timeout: Duration,
    /// Request bodies larger than this get 413 (default 2 MiB).
    pub max_body_bytes: usize,
    /// Per text field (`prompt`, `response`, each moderation input, the checked chat
    /// message), in characters (default 32768).
    pub max_input_chars: usize,
    pub input_policy: InputPolicy,
    pub fail_policy: FailPolicy,
    /// Most inputs in one `/v1/moderations` request (default 32).
    pub max_moderation_inputs: usize,
    pub api_keys: ApiKeys,
    pub upstream: Option<UpstreamConfig>,
    /// The assistant message sent instead of a blocked chat completion.
    pub refusal_message: String,
}

/// The refusal the chat proxy sends when the guard blocks a request or answer.
pub const DEFAULT_REFUSAL: &str = "I can't help with that request.";

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_name: "guardreasoner".into(),
            guard: GuardOptions::default(),
            max_new_tokens_cap: 2048,
            workers: 1,
            queue_capacity: 64,
            retry_after_secs: 1,
            request_timeout: Duration::from_secs(300),
            max_body_bytes: 2 * 1024 * 1024,
            max_input_chars: 32 * 1024,
            input_policy: InputPolicy::Reject,
            fail_policy: FailPolicy::Closed,
            max_moderation_inputs: 32,
            api_keys: ApiKeys::default(),
            upstream: None,
            refusal_message: DEFAULT_REFUSAL.into(),
        }
    }
}

impl ServerConfig {
    /// Checks the settings that must be positive and consistent.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("--workers", self.workers),
            ("--queue-capacity", self.queue_capacity),
            ("--max-new-tokens-cap", self.max_new_tokens_cap),
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-input-chars", self.max_input_chars),
            ("--max-new-tokens", self.guard.max_new_tokens),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(ServerError::Config(format!("{flag} must be at least 1")));
            }
        }
        if self.guard.max_new_tokens > self.max_new_tokens_cap {
            return Err(ServerError::Config(format!(
                "--max-new-tokens {} is above --max-new-tokens-cap {}",
                self.guard.max_new_tokens, self.max_new_tokens_cap
            )));
        }
        if self.request_timeout.is_zero() {
            return Err(ServerError::Config(
                "--request-timeout-secs must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The longest raw prompt `/v1/completions` accepts: room for a guard prompt whose request
    /// and response are both at `max_input_chars`, plus the instruction.
    pub fn max_completion_prompt_chars(&self) -> usize {
        self.max_input_chars
            .saturating_mul(2)
            .saturating_add(guardreasoner_protocol::INSTRUCTION.len() + 512)
    }
}
