//! `POST /v1/moderations` in the OpenAI shape.
//!
//! `input` is a string, an array of strings (one result each), or an array of content parts
//! (`{"type": "text", "text": ...}`; the parts are one input, joined by newlines, as OpenAI
//! treats a multi-modal array as one input; other part types are refused). Each input is
//! judged as a request alone (GuardReasoner task 1).
//!
//! Category mapping: GuardReasoner decides harmfulness as one binary label and names no
//! category. So `flagged` and the extra category `harmful` carry the verdict (under the fail
//! policy), with `category_scores.harmful` the model's probability of `harmful` (its
//! confidence in the answer, or 1/0 when the backend reports no probabilities). The OpenAI
//! categories (`harassment`, `hate`, `illicit`, `self-harm`, `sexual`, `violence` and their
//! subcategories) are present for client compatibility and always `false` / `0.0`: read
//! `flagged`, not them. Each result also carries the full verdict under `guardreasoner`.

use crate::error::{Result, ServerError};
use crate::policy::Decision;
use crate::queue::{Outcome, Work};
use crate::request::{Fields, JsonBody, TextLimit, Truncation};
use crate::routes::guard::guard_json;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use guardreasoner_guard::GuardResult;
use guardreasoner_protocol::{GuardInput, HarmLabel};
use serde_json::{json, Map, Value};

/// OpenAI's moderation categories (reported, always false: see the module doc).
pub const OPENAI_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

const FIELDS: &[&str] = &["input", "model"];

/// A checked moderation request: one text per result.
#[derive(Debug, Clone)]
pub struct ModerationRequest {
    pub inputs: Vec<String>,
    pub truncated: Vec<Truncation>,
}

impl ModerationRequest {
    pub fn parse(body: Map<String, Value>, state: &AppState) -> Result<Self> {
        let mut f = Fields::new(body, "", Some(FIELDS))?;
        let _model = f.string("model")?;
        let limit = TextLimit::from_config(&state.config);
        let max_inputs = state.config.max_moderation_inputs;
        let mut truncated = Vec::new();
        let inputs = match f.required("input")? {
            Value::String(s) => vec![limit.check("input", s, true, &mut truncated)?],
            Value::Array(items) if items.is_empty() => {
                return Err(ServerError::InvalidValue {
                    field: "input".into(),
                    reason: "must not be an empty array".into(),
                })
            }
            Value::Array(items) if items.len() > max_inputs => {
                return Err(ServerError::OutOfRange {
                    field: "input".into(),
                    value: format!("an array of {} items", items.len()),
                    limit: format!("{max_inputs} items"),
                    flag: Some("--max-moderation-inputs"),
                })
            }
            Value::Array(items) if items.iter().all(Value::is_object) => {
                let text = parts_text(items, "input")?;
                vec![limit.check("input", text, true, &mut truncated)?]
            }
            Value::Array(items) => {
                let mut inputs = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let field = format!("input[{i}]");
                    let Value::String(s) = item else {
                        return Err(ServerError::WrongType {
                            field,
                            expected: "a string (all items of `input` must have one type)",
                        });
                    };
                    inputs.push(limit.check(&field, s, true, &mut truncated)?);
                }
                inputs
            }
            _ => {
                return Err(f.wrong(
                    "input",
                    "a string, an array of strings, or an array of text parts",
                ))
            }
        };
        Ok(ModerationRequest { inputs, truncated })
    }
}

/// The text of an array of OpenAI content parts (`{"type": "text", "text": ...}`), joined
/// by newlines. `path` names the array in errors.
pub fn parts_text(items: Vec<Value>, path: &str) -> Result<String> {
    let mut texts = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let part_path = format!("{path}[{i}]");
        let mut part = Fields::object(item, &part_path, None)?;
        let kind = part.required_string("type")?;
        if kind != "text" {
            return Err(ServerError::InvalidValue {
                field: format!("{part_path}.type"),
                reason: format!("part type `{kind}` is not supported (expected text)"),
            });
        }
        texts.push(part.required_string("text")?);
    }
    Ok(texts.join("\n"))
}

/// One moderation result.
fn result_json(state: &AppState, result: &GuardResult, truncated: &[Truncation]) -> Value {
    let decision = Decision::of(result, state.config.fail_policy);
    let score = match (result.verdict.request, result.confidence.request) {
        (Some(HarmLabel::Harmful), Some(c)) => f64::from(c),
        (Some(HarmLabel::Unharmful), Some(c)) => 1.0 - f64::from(c),
        _ => {
            if decision.request_harmful {
                1.0
            } else {
                0.0
            }
        }
    };
    let mut categories = Map::new();
    let mut scores = Map::new();
    for name in OPENAI_CATEGORIES {
        categories.insert(name.into(), json!(false));
        scores.insert(name.into(), json!(0.0));
    }
    categories.insert("harmful".into(), json!(decision.request_harmful));
    scores.insert("harmful".into(), json!(score));
    json!({
        "flagged": decision.request_harmful,
        "categories": categories,
        "category_scores": scores,
        "guardreasoner": guard_json(state, result, truncated),
    })
}

pub async fn moderations(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>> {
    let request = ModerationRequest::parse(body, &state)?;
    let deadline = state.deadline();
    let max_new_tokens = state.config.guard.max_new_tokens;
    // Queue every input first (all or nothing: a refused one drops the tickets already taken,
    // and the workers skip those jobs), then wait for them in order.
    let mut tickets = Vec::with_capacity(request.inputs.len());
    for text in &request.inputs {
        let work = Work::Guard {
            input: GuardInput::new(text.clone(), None),
            max_new_tokens,
        };
        tickets.push(state.pool.submit(work, deadline, false)?);
    }
    let mut results = Vec::with_capacity(tickets.len());
    for (i, ticket) in tickets.into_iter().enumerate() {
        let Outcome::Guard(result) = state.wait(ticket, deadline).await? else {
            return Err(ServerError::Internal("wrong outcome".into()));
        };
        let field = if request.inputs.len() == 1 {
            "input".to_string()
        } else {
            format!("input[{i}]")
        };
        let cut: Vec<Truncation> = request
            .truncated
            .iter()
            .filter(|t| t.field == field || t.field == "input")
            .cloned()
            .collect();
        results.push(result_json(&state, &result, &cut));
    }
    Ok(Json(json!({
        "id": state.next_id("modr"),
        "model": state.config.model_name,
        "results": results,
    })))
}
