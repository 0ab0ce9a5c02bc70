//! Labelled input rows: a request, an optional response and any of the three ground-truth
//! labels, read from JSONL in one of the common public formats.
//!
//! Formats (field names of each dataset's public release):
//! - `generic` / `wildguardmix`: `prompt`, `response`, `prompt_harm_label`
//!   (harmful/unharmful), `response_refusal_label` (refusal/compliance), `response_harm_label`;
//! - `aegis` (Aegis 2.0): `prompt`, `response`, `prompt_label` and `response_label`
//!   (`safe`/`unsafe`);
//! - `beavertails`: `prompt`, `response`, `is_safe` (bool) for the response;
//! - `toxicchat`: `user_input`, `toxicity` (0/1) for the request; no response.
//!
//! A missing label is `None`: the teacher is told to decide that task itself (as the paper does
//! for Aegis, ToxicChat and BeaverTails).

use crate::error::{Result, SynthError};
use guardreasoner_protocol::{GuardInput, HarmLabel, RefusalLabel};
use serde_json::{Map, Value};
use std::path::Path;

/// The ground-truth labels given to the teacher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroundTruth {
    pub request: Option<HarmLabel>,
    pub completion: Option<RefusalLabel>,
    pub response: Option<HarmLabel>,
}

/// One labelled row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledSample {
    /// 1-based line in the input file: the sample's identity for resuming.
    pub line: usize,
    pub input: GuardInput,
    pub truth: GroundTruth,
}

/// An input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Generic,
    Aegis,
    BeaverTails,
    ToxicChat,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "generic" | "wildguardmix" => Ok(Format::Generic),
            "aegis" => Ok(Format::Aegis),
            "beavertails" => Ok(Format::BeaverTails),
            "toxicchat" => Ok(Format::ToxicChat),
            other => Err(format!(
                "unknown format `{other}` (expected generic, wildguardmix, aegis, beavertails or toxicchat)"
            )),
        }
    }
}

fn text(obj: &Map<String, Value>, field: &str) -> std::result::Result<Option<String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("field `{field}` must be a string")),
    }
}

fn harm(word: Option<String>, field: &str) -> std::result::Result<Option<HarmLabel>, String> {
    match word.as_deref().map(|w| w.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(w) => match w.as_str() {
            "harmful" | "unsafe" => Ok(Some(HarmLabel::Harmful)),
            "unharmful" | "safe" => Ok(Some(HarmLabel::Unharmful)),
            "" | "none" => Ok(None),
            _ => Err(format!(
                "field `{field}`: `{w}` is not harmful/unharmful (or safe/unsafe)"
            )),
        },
    }
}

fn refusal(word: Option<String>, field: &str) -> std::result::Result<Option<RefusalLabel>, String> {
    match word.as_deref().map(|w| w.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(w) => match w.as_str() {
            "refusal" => Ok(Some(RefusalLabel::Refusal)),
            "compliance" => Ok(Some(RefusalLabel::Compliance)),
            "" | "none" => Ok(None),
            _ => Err(format!("field `{field}`: `{w}` is not refusal/compliance")),
        },
    }
}

/// Parses one row of the given format.
pub fn parse_row(
    obj: &Map<String, Value>,
    format: Format,
) -> std::result::Result<(GuardInput, GroundTruth), String> {
    let required = |field: &str| -> std::result::Result<String, String> {
        text(obj, field)?.ok_or_else(|| format!("missing field `{field}`"))
    };
    let (request, response, truth) = match format {
        Format::Generic => (
            required("prompt")?,
            text(obj, "response")?,
            GroundTruth {
                request: harm(text(obj, "prompt_harm_label")?, "prompt_harm_label")?,
                completion: refusal(
                    text(obj, "response_refusal_label")?,
                    "response_refusal_label",
                )?,
                response: harm(text(obj, "response_harm_label")?, "response_harm_label")?,
            },
        ),
        Format::Aegis => (
            required("prompt")?,
            text(obj, "response")?,
            GroundTruth {
                request: harm(text(obj, "prompt_label")?, "prompt_label")?,
                completion: None,
                response: harm(text(obj, "response_label")?, "response_label")?,
            },
        ),
        Format::BeaverTails => {
            let response = harm_from_bool(obj.get("is_safe"), "is_safe", true)?;
            (
                required("prompt")?,
                Some(required("response")?),
                GroundTruth {
                    request: None,
                    completion: None,
                    response,
                },
            )
        }
        Format::ToxicChat => {
            let request = harm_from_bool(obj.get("toxicity"), "toxicity", false)?;
            (
                required("user_input")?,
                None,
                GroundTruth {
                    request,
                    completion: None,
                    response: None,
                },
            )
        }
    };
    let truth = if response.is_none() {
        GroundTruth {
            completion: None,
            response: None,
            ..truth
        }
    } else {
        truth
    };
    Ok((GuardInput::new(request, response), truth))
}

/// `is_safe: true` -> unharmful (`safe_is_true`), or `toxicity: 1` -> harmful.
fn harm_from_bool(
    v: Option<&Value>,
    field: &str,
    safe_is_true: bool,
) -> std::result::Result<Option<HarmLabel>, String> {
    let flag = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
            n.as_u64() == Some(1)
        }
        Some(_) => return Err(format!("field `{field}` must be a boolean or 0/1")),
    };
    let harmful = if safe_is_true { !flag } else { flag };
    Ok(Some(if harmful {
        HarmLabel::Harmful
    } else {
        HarmLabel::Unharmful
    }))
}

/// Reads every row; a malformed row is an error naming file and line (before any API call).
pub fn read_samples(path: &Path, format: Format) -> Result<Vec<LabeledSample>> {
    let text = std::fs::read_to_string(path).map_err(|e| SynthError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| SynthError::Input {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let value: Value =
            serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(bad("expected a JSON object".into()));
        };
        let (input, truth) = parse_row(&obj, format).map_err(bad)?;
        out.push(LabeledSample {
            line: i + 1,
            input,
            truth,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn importers_map_their_fields() {
        let (i, t) = parse_row(&obj(json!({"prompt": "p", "response": "r", "prompt_harm_label": "harmful", "response_refusal_label": "refusal", "response_harm_label": null})), Format::Generic).unwrap();
        assert_eq!(i.response.as_deref(), Some("r"));
        assert_eq!(
            t,
            GroundTruth {
                request: Some(HarmLabel::Harmful),
                completion: Some(RefusalLabel::Refusal),
                response: None
            }
        );
        let (_, t) = parse_row(&obj(json!({"prompt": "p", "response": "r", "prompt_label": "safe", "response_label": "unsafe"})), Format::Aegis).unwrap();
        assert_eq!(
            (t.request, t.response),
            (Some(HarmLabel::Unharmful), Some(HarmLabel::Harmful))
        );
        let (_, t) = parse_row(
            &obj(json!({"prompt": "p", "response": "r", "is_safe": false})),
            Format::BeaverTails,
        )
        .unwrap();
        assert_eq!((t.request, t.response), (None, Some(HarmLabel::Harmful)));
        let (i, t) = parse_row(
            &obj(json!({"user_input": "u", "toxicity": 1})),
            Format::ToxicChat,
        )
        .unwrap();
        assert_eq!((i.response, t.request), (None, Some(HarmLabel::Harmful)));
    }

    #[test]
    fn bad_rows_name_the_field() {
        assert!(parse_row(&obj(json!({"response": "r"})), Format::Generic)
            .unwrap_err()
            .contains("missing field `prompt`"));
        assert!(parse_row(
            &obj(json!({"prompt": "p", "prompt_harm_label": "maybe"})),
            Format::Generic
        )
        .unwrap_err()
        .contains("prompt_harm_label"));
        assert!(parse_row(
            &obj(json!({"user_input": "u", "toxicity": "yes"})),
            Format::ToxicChat
        )
        .unwrap_err()
        .contains("toxicity"));
    }

    #[test]
    fn labels_of_a_missing_response_are_dropped() {
        let (_, t) = parse_row(
            &obj(json!({"prompt": "p", "response_harm_label": "harmful"})),
            Format::Generic,
        )
        .unwrap();
        assert_eq!(t.response, None);
    }
}
