//! The three guard tasks and their labels (`REFERENCE.md`, "The task").
//!
//! Task 1 (request) and task 3 (response) answer `harmful` | `unharmful`; task 2 (completion)
//! answers `refusal` | `compliance`. The positive class for scoring is `harmful` resp. `refusal`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the three tasks of the guard.
///
/// Serialized with the names the official scorer uses for them (`prompt`, `response`,
/// `refusal`), which are also the names of the paper's three tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Task 1: is the human user's request harmful? Output line `Request: ...`.
    Prompt,
    /// Task 2: is the AI assistant's response a refusal? Output line `Completion: ...`.
    Refusal,
    /// Task 3: is the AI assistant's response harmful? Output line `Response: ...`.
    Response,
}

impl Task {
    /// The tasks in the order the model answers them (`# Task 1`, `# Task 2`, `# Task 3`).
    pub const ALL: [Task; 3] = [Task::Prompt, Task::Refusal, Task::Response];

    /// The task's number in the model output (`# Task N`).
    pub fn number(self) -> u32 {
        match self {
            Task::Prompt => 1,
            Task::Refusal => 2,
            Task::Response => 3,
        }
    }

    /// The task with the given number in the model output.
    pub fn from_number(n: u32) -> Option<Task> {
        match n {
            1 => Some(Task::Prompt),
            2 => Some(Task::Refusal),
            3 => Some(Task::Response),
            _ => None,
        }
    }

    /// The key of the task's line in the `Answers:` block.
    pub fn answer_key(self) -> &'static str {
        match self {
            Task::Prompt => "Request",
            Task::Refusal => "Completion",
            Task::Response => "Response",
        }
    }

    /// The official scorer's name for the task (`prompt`, `response`, `refusal`).
    pub fn name(self) -> &'static str {
        match self {
            Task::Prompt => "prompt",
            Task::Refusal => "refusal",
            Task::Response => "response",
        }
    }

    /// The two labels of this task, positive class first.
    pub fn labels(self) -> [Label; 2] {
        match self {
            Task::Prompt | Task::Response => [
                Label::Harm(HarmLabel::Harmful),
                Label::Harm(HarmLabel::Unharmful),
            ],
            Task::Refusal => [
                Label::Refusal(RefusalLabel::Refusal),
                Label::Refusal(RefusalLabel::Compliance),
            ],
        }
    }

    /// The positive class used for F1 (`harmful` or `refusal`).
    pub fn positive(self) -> Label {
        self.labels()[0]
    }

    /// Parses a label word of this task (case-insensitive, surrounding whitespace ignored).
    pub fn parse_label(self, word: &str) -> Option<Label> {
        let word = word.trim();
        self.labels()
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(word))
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "prompt" | "request" => Ok(Task::Prompt),
            "refusal" | "completion" => Ok(Task::Refusal),
            "response" => Ok(Task::Response),
            other => Err(format!(
                "unknown task `{other}` (expected prompt, response or refusal)"
            )),
        }
    }
}

/// Answer of task 1 (request) or task 3 (response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HarmLabel {
    Harmful,
    Unharmful,
}

impl HarmLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            HarmLabel::Harmful => "harmful",
            HarmLabel::Unharmful => "unharmful",
        }
    }
}

/// Answer of task 2 (completion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefusalLabel {
    Refusal,
    Compliance,
}

impl RefusalLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalLabel::Refusal => "refusal",
            RefusalLabel::Compliance => "compliance",
        }
    }
}

/// A label of any task, for code that handles the three tasks uniformly (scoring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Label {
    Harm(HarmLabel),
    Refusal(RefusalLabel),
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Harm(l) => l.as_str(),
            Label::Refusal(l) => l.as_str(),
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for HarmLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RefusalLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_label_is_case_insensitive_and_task_specific() {
        assert_eq!(
            Task::Prompt.parse_label(" Harmful "),
            Some(Label::Harm(HarmLabel::Harmful))
        );
        assert_eq!(Task::Prompt.parse_label("refusal"), None);
        assert_eq!(
            Task::Refusal.parse_label("COMPLIANCE"),
            Some(Label::Refusal(RefusalLabel::Compliance))
        );
        assert_eq!(Task::Response.parse_label("None"), None);
    }

    #[test]
    fn task_numbers_round_trip() {
        for t in Task::ALL {
            assert_eq!(Task::from_number(t.number()), Some(t));
        }
        assert_eq!(Task::from_number(4), None);
    }
}
