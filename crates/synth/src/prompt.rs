//! The synthesis prompt (paper section 3.1, in our own words): the teacher sees the interaction
//! and the ground-truth labels, and writes step-by-step reasoning for the three tasks that ends
//! in exactly those labels.
//!
//! The system message can be replaced from a file; the user message is always the guard's
//! input block followed by the labels (`decide` where a label is unknown).

use crate::error::{Result, SynthError};
use crate::sample::{GroundTruth, LabeledSample};
use std::path::Path;

/// The default system message.
pub const SYSTEM_PROMPT: &str = "You annotate training data for a safety classifier that reasons before it answers.\n\nYou are given an interaction between a human user and an AI assistant, and the correct labels of three tasks:\nTask 1: is the human user's request harmful or unharmful?\nTask 2: is the AI assistant's response a refusal or compliance?\nTask 3: is the AI assistant's response harmful or unharmful?\n\nThink step by step and explain how the correct label of each task follows from the interaction. Write your answer in exactly this shape:\n\n# Task 1\n\n## Reasoning Step 1\n(one observation or inference)\n\n## Reasoning Step 2\n...\n\n# Task 2\n\n## Reasoning Step 1\n...\n\n# Task 3\n\n## Reasoning Step 1\n...\n\n---\n\nAnswers: \nRequest: <label>\nCompletion: <label>\nResponse: <label>\n\nRules:\n- Each task has between 1 and 10 numbered reasoning steps, each a short paragraph.\n- The Answers block repeats the given labels unchanged. Where a label is given as `decide`, determine it yourself from the interaction.\n- When the AI assistant's response is None, reason that there is no response and answer None for Completion and Response.\n- The reasoning must agree with the answers.\n- Write nothing after the Answers block.\n";

/// The label line given to the teacher for one task.
fn given<T: std::fmt::Display>(
    label: Option<T>,
    has_response: bool,
    needs_response: bool,
) -> String {
    match label {
        Some(l) => l.to_string(),
        None if needs_response && !has_response => "None".to_string(),
        None => "decide".to_string(),
    }
}

/// The user message for one sample.
pub fn user_message(sample: &LabeledSample) -> String {
    let t: &GroundTruth = &sample.truth;
    let has_response = sample.input.response.is_some();
    format!(
        "{}Labels:\nRequest: {}\nCompletion: {}\nResponse: {}\n",
        sample.input.input_block(),
        given(t.request, has_response, false),
        given(t.completion, has_response, true),
        given(t.response, has_response, true),
    )
}

/// The system message: the default, or the contents of `path`.
pub fn system_prompt(path: Option<&Path>) -> Result<String> {
    let Some(path) = path else {
        return Ok(SYSTEM_PROMPT.to_string());
    };
    let text = std::fs::read_to_string(path).map_err(|e| SynthError::io(path, e))?;
    if text.trim().is_empty() {
        return Err(SynthError::Prompt {
            path: path.to_path_buf(),
            message: "the system prompt file is empty".into(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guardreasoner_protocol::{GuardInput, HarmLabel};

    #[test]
    fn user_message_gives_labels_and_marks_unknown_ones() {
        let sample = LabeledSample {
            line: 1,
            input: GuardInput::new("q", Some("a".into())),
            truth: GroundTruth {
                request: Some(HarmLabel::Harmful),
                completion: None,
                response: Some(HarmLabel::Unharmful),
            },
        };
        let m = user_message(&sample);
        assert!(m.starts_with("Human user:\nq\n\nAI assistant:\na\n\nLabels:\n"));
        assert!(m.ends_with("Request: harmful\nCompletion: decide\nResponse: unharmful\n"));
        let no_response = LabeledSample {
            input: GuardInput::new("q", None),
            truth: GroundTruth::default(),
            ..sample
        };
        assert!(user_message(&no_response)
            .ends_with("Request: decide\nCompletion: None\nResponse: None\n"));
    }
}
