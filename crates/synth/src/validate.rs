//! Checks a teacher's answer before it becomes training data, with the protocol's parser.
//!
//! Accepted when: there is an `Answers:` block and nothing but its three lines after it; every
//! given label comes back unchanged; every task the teacher had to decide has a label (tasks 2
//! and 3 of a sample without a response may say `None`); each task has at least one reasoning
//! step; no conclusion contradicts its answer. The accepted text is normalised to the shape of
//! GuardReasonerTrain: reasoning, `---`, then `Answers: \nRequest: ..\nCompletion: ..\nResponse: ..`.

use crate::sample::GroundTruth;
use guardreasoner_protocol::{parse_verdict, Label, ParseIssue, Task};
use std::fmt;

/// Why an answer was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    NoAnswers,
    TextAfterAnswers,
    /// A given label came back different (or not at all).
    Contradicts {
        task: Task,
        given: Label,
        got: Option<Label>,
    },
    /// A label the teacher had to decide is missing.
    Undecided {
        task: Task,
    },
    NoReasoning {
        task: Task,
    },
    Inconsistent {
        task: Task,
    },
}

impl Rejection {
    /// A short stable key for the summary's table of reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::NoAnswers => "no_answers_block",
            Rejection::TextAfterAnswers => "text_after_answers",
            Rejection::Contradicts { .. } => "contradicts_given_label",
            Rejection::Undecided { .. } => "undecided_label",
            Rejection::NoReasoning { .. } => "task_without_reasoning",
            Rejection::Inconsistent { .. } => "conclusion_contradicts_answer",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NoAnswers => f.write_str("no `Answers:` block"),
            Rejection::TextAfterAnswers => f.write_str("text after the `Answers:` block"),
            Rejection::Contradicts { task, given, got } => write!(
                f,
                "task {} answers {} but the given label is {given}",
                task.number(),
                got.map_or("nothing".to_string(), |l| l.to_string())
            ),
            Rejection::Undecided { task } => write!(f, "task {} has no label", task.number()),
            Rejection::NoReasoning { task } => {
                write!(f, "task {} has no reasoning step", task.number())
            }
            Rejection::Inconsistent { task } => {
                write!(
                    f,
                    "task {}'s conclusion contradicts its answer",
                    task.number()
                )
            }
        }
    }
}

/// An accepted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The normalised training target.
    pub output: String,
    /// Reasoning steps per task (1, 2, 3).
    pub steps: [usize; 3],
}

fn given(truth: &GroundTruth, task: Task) -> Option<Label> {
    match task {
        Task::Prompt => truth.request.map(Label::Harm),
        Task::Refusal => truth.completion.map(Label::Refusal),
        Task::Response => truth.response.map(Label::Harm),
    }
}

/// Where the final answers block starts (the line beginning `Answers`), if any.
fn final_answers_line(text: &str) -> Option<usize> {
    let mut offset = 0;
    let mut found = None;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start_matches(['#', '*', ' ', '\t']);
        if t.len() >= 7 && t[..7].eq_ignore_ascii_case("answers") {
            found = Some(offset);
        }
        offset += line.len();
    }
    found
}

/// Validates `output` for a sample with `truth` (and a response or not).
pub fn validate(
    output: &str,
    truth: &GroundTruth,
    has_response: bool,
) -> Result<Accepted, Rejection> {
    let verdict = parse_verdict(output);
    let start = final_answers_line(output).ok_or(Rejection::NoAnswers)?;
    if verdict.issues.contains(&ParseIssue::NoAnswersBlock) {
        return Err(Rejection::NoAnswers);
    }
    // after the header line: only `Request:`, `Completion:`, `Response:` lines
    let block = &output[start..];
    for line in block.lines().skip(1) {
        let l = line.trim();
        let is_answer = ["request:", "completion:", "response:"]
            .iter()
            .any(|k| l.len() >= k.len() && l[..k.len()].eq_ignore_ascii_case(k));
        if !l.is_empty() && !is_answer {
            return Err(Rejection::TextAfterAnswers);
        }
    }
    let mut steps = [0usize; 3];
    let mut answers: [Option<Label>; 3] = [None; 3];
    for (i, task) in Task::ALL.into_iter().enumerate() {
        let got = verdict.answer(task);
        match given(truth, task) {
            Some(g) if got != Some(g) => {
                return Err(Rejection::Contradicts {
                    task,
                    given: g,
                    got,
                })
            }
            None if got.is_none() && (task == Task::Prompt || has_response) => {
                return Err(Rejection::Undecided { task })
            }
            _ => {}
        }
        answers[i] = got;
        steps[i] = verdict.task_reasoning(task).map_or(0, |r| r.steps.len());
        if steps[i] == 0 {
            return Err(Rejection::NoReasoning { task });
        }
    }
    if let Some(ParseIssue::ConclusionContradicts { task, .. }) = verdict
        .issues
        .iter()
        .find(|i| matches!(i, ParseIssue::ConclusionContradicts { .. }))
    {
        return Err(Rejection::Inconsistent { task: *task });
    }
    let reasoning = output[..start].trim_end();
    let reasoning = reasoning
        .strip_suffix("---")
        .unwrap_or(reasoning)
        .trim_end();
    let word = |l: Option<Label>| l.map_or("None", Label::as_str);
    let output = format!(
        "{reasoning}\n\n---\n\nAnswers: \nRequest: {}\nCompletion: {}\nResponse: {}",
        word(answers[0]),
        word(answers[1]),
        word(answers[2])
    );
    Ok(Accepted { output, steps })
}
