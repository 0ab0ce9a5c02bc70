//! Parse, don't validate: HTTP bodies become typed, checked requests at the edge.
//!
//! [`JsonBody`] reads a body under the byte limit, checks the content type, UTF-8 and JSON;
//! [`Fields`] then walks the JSON object field by field so every error names its field (with
//! its path, e.g. `messages[2].content`) and the limit it broke. The typed requests of each
//! route live next to their handlers; this module holds the shared machinery and the
//! input-length policy ([`TextLimit`]). Follows text-generation-inference's `validation.rs`.

use crate::config::{InputPolicy, ServerConfig};
use crate::error::{Result, ServerError};
use crate::state::AppState;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

/// A request body that is a JSON object (content type, size, UTF-8 and syntax checked).
pub struct JsonBody(pub Map<String, Value>);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let limit = state.config.max_body_bytes;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let is_json = content_type.as_deref().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !is_json {
            return Err(ServerError::UnsupportedMediaType {
                found: content_type.unwrap_or_else(|| "(none)".into()),
            });
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ServerError::BodyTooLarge { limit });
        }
        let mut stream = req.into_body().into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ServerError::BodyRead(e.to_string()))?;
            if bytes.len() + chunk.len() > limit {
                return Err(ServerError::BodyTooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ServerError::EmptyBody);
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| ServerError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        let value: Value = serde_json::from_str(text).map_err(|e| ServerError::InvalidJson {
            detail: e.to_string(),
        })?;
        match value {
            Value::Object(map) => Ok(JsonBody(map)),
            _ => Err(ServerError::WrongType {
                field: "body".into(),
                expected: "a JSON object",
            }),
        }
    }
}

/// A JSON object read field by field; unknown fields are refused by [`Fields::new`].
pub struct Fields {
    map: Map<String, Value>,
    prefix: String,
}

impl Fields {
    /// `prefix` is the path of the object (`""` for the body, `"messages[2]."` for a part);
    /// `allowed` lists every field the object may have (`None`: any).
    pub fn new(map: Map<String, Value>, prefix: &str, allowed: Option<&[&str]>) -> Result<Self> {
        if let Some(allowed) = allowed {
            if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(ServerError::UnknownField {
                    field: format!("{prefix}{unknown}"),
                    expected: allowed.join(", "),
                });
            }
        }
        Ok(Fields {
            map,
            prefix: prefix.to_string(),
        })
    }

    /// The object `value` at path `path` (ending in `.` for its fields).
    pub fn object(value: Value, path: &str, allowed: Option<&[&str]>) -> Result<Self> {
        match value {
            Value::Object(map) => Fields::new(map, &format!("{path}."), allowed),
            _ => Err(ServerError::WrongType {
                field: path.to_string(),
                expected: "an object",
            }),
        }
    }

    pub fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The field's value; `null` counts as absent.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    pub fn required(&mut self, key: &str) -> Result<Value> {
        self.take(key).ok_or_else(|| ServerError::MissingField {
            field: self.path(key),
        })
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    pub fn required_string(&mut self, key: &str) -> Result<String> {
        match self.required(key)? {
            Value::String(s) => Ok(s),
            _ => Err(self.wrong(key, "a string")),
        }
    }

    pub fn boolean(&mut self, key: &str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    pub fn number(&mut self, key: &str) -> Result<Option<f64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number")),
            Some(_) => Err(self.wrong(key, "a number")),
        }
    }

    /// A non-negative integer.
    pub fn integer(&mut self, key: &str) -> Result<Option<u64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer")),
            Some(_) => Err(self.wrong(key, "a non-negative integer")),
        }
    }

    /// An integer in `1..=cap` (`flag` names the server setting behind `cap`).
    pub fn token_count(
        &mut self,
        key: &str,
        cap: usize,
        flag: &'static str,
    ) -> Result<Option<usize>> {
        let Some(n) = self.integer(key)? else {
            return Ok(None);
        };
        if n == 0 || n > cap as u64 {
            return Err(ServerError::OutOfRange {
                field: self.path(key),
                value: n.to_string(),
                limit: format!("1..={cap}"),
                flag: Some(flag),
            });
        }
        Ok(Some(n as usize))
    }

    pub fn wrong(&self, key: &str, expected: &'static str) -> ServerError {
        ServerError::WrongType {
            field: self.path(key),
            expected,
        }
    }

    /// Whatever fields were not taken (for the proxy, which forwards them).
    pub fn into_rest(self) -> Map<String, Value> {
        self.map
    }
}

/// A text field cut to the input-length limit (policy `truncate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Truncation {
    pub field: String,
    pub original_chars: usize,
    pub kept_chars: usize,
}

/// The input-length policy applied to user text fields.
#[derive(Debug, Clone, Copy)]
pub struct TextLimit {
    pub max_chars: usize,
    pub policy: InputPolicy,
}

impl TextLimit {
    pub fn from_config(config: &ServerConfig) -> Self {
        TextLimit {
            max_chars: config.max_input_chars,
            policy: config.input_policy,
        }
    }

    /// Checks one text field: not blank (when `required`), no NUL character, within the
    /// length limit (or cut to it, recording the cut in `truncated`).
    pub fn check(
        &self,
        field: &str,
        text: String,
        required: bool,
        truncated: &mut Vec<Truncation>,
    ) -> Result<String> {
        if required && text.trim().is_empty() {
            return Err(ServerError::InvalidValue {
                field: field.to_string(),
                reason: "must not be empty".into(),
            });
        }
        if let Some(at) = text.find('\0') {
            return Err(ServerError::InvalidValue {
                field: field.to_string(),
                reason: format!("contains a NUL character (at byte {at})"),
            });
        }
        // Counting stops just past the limit, so a huge field costs no more than a small one.
        let counted = text.chars().take(self.max_chars + 1).count();
        if counted <= self.max_chars {
            return Ok(text);
        }
        let chars = text.chars().count();
        match self.policy {
            InputPolicy::Reject => Err(ServerError::InputTooLong {
                field: field.to_string(),
                chars,
                limit: self.max_chars,
            }),
            InputPolicy::Truncate => {
                let cut = text
                    .char_indices()
                    .nth(self.max_chars)
                    .map_or(text.len(), |(i, _)| i);
                truncated.push(Truncation {
                    field: field.to_string(),
                    original_chars: chars,
                    kept_chars: self.max_chars,
                });
                let mut text = text;
                text.truncate(cut);
                Ok(text)
            }
        }
    }
}

/// The `?stream=` query parameter (the only one the routes take).
pub fn stream_query(query: Option<&str>) -> Result<Option<bool>> {
    let mut stream = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "stream" {
            return Err(ServerError::InvalidQuery {
                param: key.to_string(),
                reason: "unknown query parameter (expected: stream)".into(),
            });
        }
        stream = Some(match value {
            "true" | "1" | "" => true,
            "false" | "0" => false,
            other => {
                return Err(ServerError::InvalidQuery {
                    param: "stream".into(),
                    reason: format!("`{other}` is not true or false"),
                })
            }
        });
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        let limit = TextLimit {
            max_chars: 3,
            policy: InputPolicy::Truncate,
        };
        let mut cut = Vec::new();
        let kept = limit
            .check("prompt", "héllo".into(), true, &mut cut)
            .unwrap();
        assert_eq!(kept, "hél");
        assert_eq!(cut[0].original_chars, 5);
    }

    #[test]
    fn stream_query_forms() {
        assert_eq!(stream_query(Some("stream=true")).unwrap(), Some(true));
        assert_eq!(stream_query(Some("stream=0")).unwrap(), Some(false));
        assert_eq!(stream_query(None).unwrap(), None);
        assert!(stream_query(Some("stream=maybe")).is_err());
        assert!(stream_query(Some("x=1")).is_err());
    }
}
