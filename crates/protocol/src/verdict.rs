//! The guard's verdict: three answers, the reasoning behind them, and what went wrong while
//! reading them (`REFERENCE.md`, "Output format").

use crate::label::{HarmLabel, Label, RefusalLabel, Task};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One `## Reasoning Step N` of a task, in output order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasoningStep {
    /// The number the model gave the step (not necessarily consecutive).
    pub number: u32,
    /// The step's text, trimmed.
    pub text: String,
}

/// The reasoning written under one `# Task N` heading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReasoning {
    /// The task the heading names; `None` for steps written before any task heading.
    pub task: Option<Task>,
    pub steps: Vec<ReasoningStep>,
    /// The `## Conclusion` sentence, trimmed, if the model wrote one.
    pub conclusion: Option<String>,
}

/// Something in the model output that keeps the verdict from being complete or consistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParseIssue {
    /// The output has no `Answers:` block (typically a truncated generation).
    NoAnswersBlock,
    /// The `Answers:` block(s) have no line for this task.
    MissingAnswer { task: Task },
    /// The task's answer line holds a word that is not one of its labels (nor `None`).
    InvalidAnswer { task: Task, found: String },
    /// No `# Task N` section for this task.
    MissingTask { task: Task },
    /// The task's conclusion sentence names the other label than its answer.
    ConclusionContradicts {
        task: Task,
        conclusion: Label,
        answer: Label,
    },
}

impl fmt::Display for ParseIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseIssue::NoAnswersBlock => f.write_str("no `Answers:` block"),
            ParseIssue::MissingAnswer { task } => {
                write!(f, "no `{}:` answer", task.answer_key())
            }
            ParseIssue::InvalidAnswer { task, found } => {
                write!(f, "`{}: {found}` is not a label", task.answer_key())
            }
            ParseIssue::MissingTask { task } => write!(f, "no `# Task {}` section", task.number()),
            ParseIssue::ConclusionContradicts {
                task,
                conclusion,
                answer,
            } => write!(
                f,
                "task {} concludes {conclusion} but answers {answer}",
                task.number()
            ),
        }
    }
}

/// The parsed output of the guard model.
///
/// An answer is `None` when the model did not give one of the task's labels (it wrote `None`,
/// left the line out, wrote something else, or never reached the `Answers:` block); `issues`
/// says which.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Verdict {
    /// Task 1: the human user's request.
    pub request: Option<HarmLabel>,
    /// Task 2: the AI assistant's response, refusal or compliance.
    pub completion: Option<RefusalLabel>,
    /// Task 3: the AI assistant's response.
    pub response: Option<HarmLabel>,
    /// The reasoning sections in output order.
    pub reasoning: Vec<TaskReasoning>,
    pub issues: Vec<ParseIssue>,
}

impl Verdict {
    /// The answer of one task as a task-independent label.
    pub fn answer(&self, task: Task) -> Option<Label> {
        match task {
            Task::Prompt => self.request.map(Label::Harm),
            Task::Refusal => self.completion.map(Label::Refusal),
            Task::Response => self.response.map(Label::Harm),
        }
    }

    /// The reasoning section of a task, if the model wrote one.
    pub fn task_reasoning(&self, task: Task) -> Option<&TaskReasoning> {
        self.reasoning.iter().find(|r| r.task == Some(task))
    }

    /// Total number of reasoning steps over all sections.
    pub fn step_count(&self) -> usize {
        self.reasoning.iter().map(|r| r.steps.len()).sum()
    }
}
