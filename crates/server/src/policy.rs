//! Policy: from a verdict to a decision (flag, block), with the fail-closed rule.
//!
//! A task's answer is harmful when the model said `harmful`. When the model gave no answer
//! for a task the input calls for (unreadable or truncated output), [`FailPolicy::Closed`]
//! (the default) counts it as harmful and [`FailPolicy::Open`] as unharmful. Task 3 counts only
//! when the input had a response.

use crate::config::FailPolicy;
use guardreasoner_guard::GuardResult;
use guardreasoner_protocol::HarmLabel;
use serde_json::{json, Value};

/// What the service does with one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub request_harmful: bool,
    pub response_harmful: bool,
    /// Some answer the input calls for is missing (the fail policy decided it).
    pub unreadable: bool,
    pub policy: FailPolicy,
}

impl Decision {
    pub fn of(result: &GuardResult, policy: FailPolicy) -> Self {
        let harmful = |answer: Option<HarmLabel>| match answer {
            Some(label) => label == HarmLabel::Harmful,
            None => policy == FailPolicy::Closed,
        };
        Decision {
            request_harmful: harmful(result.verdict.request),
            response_harmful: result.has_response && harmful(result.verdict.response),
            unreadable: !result.complete(),
            policy,
        }
    }

    pub fn flagged(&self) -> bool {
        self.request_harmful || self.response_harmful
    }

    /// The `policy` object added to `/v1/guard` answers.
    pub fn to_json(&self) -> Value {
        json!({
            "flagged": self.flagged(),
            "request_harmful": self.request_harmful,
            "response_harmful": self.response_harmful,
            "unreadable": self.unreadable,
            "fail_policy": match self.policy {
                FailPolicy::Closed => "closed",
                FailPolicy::Open => "open",
            },
        })
    }
}
