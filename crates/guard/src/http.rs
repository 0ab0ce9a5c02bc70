//! JSON-over-HTTP with retries, shared by every client of an OpenAI-compatible API (the remote
//! guard backend, the synthesis client).
//!
//! Retries 429, 5xx, connection failures and unreadable bodies with exponential backoff and
//! jitter, honouring `Retry-After` (seconds); other 4xx answers fail at once, since retrying
//! cannot fix a bad request. Each retry is reported to the caller's callback with its reason.

use serde_json::Value;
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// First backoff delay; doubled per retry, with up to 50% jitter, capped at 60 s.
    pub initial_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

/// One retry about to happen: attempt number (1-based), the reason, the wait.
pub struct RetryNotice<'a> {
    pub attempt: u32,
    pub max_retries: u32,
    pub reason: &'a str,
    pub wait: Duration,
}

/// A JSON POST client with a bearer key, a timeout and a retry policy.
pub struct JsonClient {
    agent: ureq::Agent,
    api_key: Option<String>,
    policy: RetryPolicy,
}

/// A pseudo-random jitter factor in [1.0, 1.5) (no RNG dependency needed for this).
fn jitter(attempt: u32) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    1.0 + f64::from((nanos ^ attempt.wrapping_mul(2_654_435_761)) % 1000) / 2000.0
}

impl JsonClient {
    pub fn new(api_key: Option<String>, timeout: Duration, policy: RetryPolicy) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(timeout)
            .build();
        JsonClient {
            agent,
            api_key,
            policy,
        }
    }

    /// One attempt: the parsed body, or the reason, whether to retry, and the server's
    /// `Retry-After`.
    fn attempt(&self, url: &str, body: &str) -> Result<Value, (String, bool, Option<Duration>)> {
        let mut req = self.agent.post(url).set("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        match req.send_string(body) {
            Ok(response) => response
                .into_string()
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
                .map_err(|e| (format!("unreadable response body: {e}"), true, None)),
            Err(ureq::Error::Status(code, response)) => {
                let retry_after = response
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(300.0)));
                let text = response.into_string().unwrap_or_default();
                let retry = code == 429 || code >= 500;
                let snippet: String = text.chars().take(200).collect();
                Err((format!("HTTP {code}: {snippet}"), retry, retry_after))
            }
            Err(ureq::Error::Transport(t)) => Err((t.to_string(), true, None)),
        }
    }

    /// POSTs `body` to `url` until it succeeds or the policy gives up; the error names the URL,
    /// the last reason and the number of attempts.
    pub fn post(
        &self,
        url: &str,
        body: &Value,
        on_retry: &mut dyn FnMut(&RetryNotice<'_>),
    ) -> Result<Value, String> {
        let body = body.to_string();
        let mut attempt = 0;
        loop {
            match self.attempt(url, &body) {
                Ok(v) => return Ok(v),
                Err((reason, retry, after)) => {
                    if !retry || attempt >= self.policy.max_retries {
                        return Err(format!("{url}: {reason} (after {} attempts)", attempt + 1));
                    }
                    let backoff = self.policy.initial_backoff.as_secs_f64()
                        * 2f64.powi(attempt as i32)
                        * jitter(attempt);
                    let wait = after.unwrap_or(Duration::from_secs_f64(backoff.min(60.0)));
                    attempt += 1;
                    on_retry(&RetryNotice {
                        attempt,
                        max_retries: self.policy.max_retries,
                        reason: &reason,
                        wait,
                    });
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

/// `{base}/v1/{endpoint}` for a base URL given with or without its `/v1`.
pub fn v1_url(base: &str, endpoint: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1/{endpoint}")
}

/// Logs a retry to stderr (the default for command-line tools).
pub fn log_retry(url: &str) -> impl FnMut(&RetryNotice<'_>) + '_ {
    move |n| {
        eprintln!(
            "retry {}/{} in {:.2}s: {url} answered {}",
            n.attempt,
            n.max_retries,
            n.wait.as_secs_f64(),
            n.reason
        )
    }
}
