//! An OpenAI chat-completions client for the teacher model: `POST {base}/v1/chat/completions`
//! with a system and a user message, retried as `guardreasoner_guard::http` does, with token
//! usage read from each answer.

use crate::error::{Result, SynthError};
use guardreasoner_guard::http::{v1_url, JsonClient, RetryNotice, RetryPolicy};
use serde_json::{json, Value};
use std::time::Duration;

/// Teacher settings.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub temperature: f32,
    pub max_tokens: usize,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// One answer and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatAnswer {
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

pub struct ChatClient {
    config: ChatConfig,
    http: JsonClient,
    url: String,
}

impl ChatClient {
    pub fn new(config: ChatConfig) -> Self {
        let http = JsonClient::new(config.api_key.clone(), config.timeout, config.retry);
        let url = v1_url(&config.base_url, "chat/completions");
        ChatClient { config, http, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks the teacher; HTTP-level failures are retried inside, `on_retry` hears of each.
    pub fn complete(
        &self,
        system: &str,
        user: &str,
        on_retry: &mut dyn FnMut(&RetryNotice<'_>),
    ) -> Result<ChatAnswer> {
        let body = json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        });
        let value = self
            .http
            .post(&self.url, &body, on_retry)
            .map_err(SynthError::Api)?;
        let text = value
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                SynthError::Api(format!(
                    "{}: malformed answer: no choices[0].message.content",
                    self.url
                ))
            })?
            .to_string();
        let count = |k: &str| {
            value
                .pointer(&format!("/usage/{k}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Ok(ChatAnswer {
            text,
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
        })
    }
}
