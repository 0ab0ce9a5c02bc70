//! The one parser that turns guard-model text into a [`Verdict`].
//!
//! Rules (`REFERENCE.md`, "Output format"):
//! - answers come only from the text given (the model's output, never the prompt);
//! - an answers block starts at a line beginning `Answers:` (also `# Answers`, `**Answers:**`);
//!   for each task the final block that states it wins, so a `Request: unharmful` quoted in the
//!   reasoning never overrides the final `Request: harmful`;
//! - keys and labels are matched case-insensitively with any whitespace between, like the
//!   reference regexes; a label must end at a word boundary (`harmfulness` is not `harmful`);
//! - nothing is guessed: no block, no line or an unknown word leaves the answer `None` and
//!   records a [`ParseIssue`].
//!
//! Invariant: never panics, on any input (a property test feeds it arbitrary strings).

use crate::label::{HarmLabel, Label, RefusalLabel, Task};
use crate::text::{is_py_space, py_ci_eq, starts_with_ci};
use crate::verdict::{ParseIssue, ReasoningStep, TaskReasoning, Verdict};

/// The three answers of an `Answers:` block, as far as they were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Answers {
    pub request: Option<HarmLabel>,
    pub completion: Option<RefusalLabel>,
    pub response: Option<HarmLabel>,
}

impl Answers {
    pub fn get(&self, task: Task) -> Option<Label> {
        match task {
            Task::Prompt => self.request.map(Label::Harm),
            Task::Refusal => self.completion.map(Label::Refusal),
            Task::Response => self.response.map(Label::Harm),
        }
    }

    /// Records `label` as the answer of `task`; a label of another task's kind is ignored.
    fn put(&mut self, task: Task, label: Label) {
        match (task, label) {
            (Task::Prompt, Label::Harm(l)) => self.request = Some(l),
            (Task::Response, Label::Harm(l)) => self.response = Some(l),
            (Task::Refusal, Label::Refusal(l)) => self.completion = Some(l),
            _ => {}
        }
    }
}

/// What an answer line says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stated {
    Label(Label),
    /// The model wrote `None` (as it should for tasks 2 and 3 without a response).
    None,
    /// Some other word (or nothing) after the key.
    Other(String),
}

/// Parses the answers of `text` (model output, or a benchmark's label text such as
/// `Answers: \nRequest: None\nCompletion: None\nResponse: harmful\n`).
///
/// Returns the answers and the answer-related issues (no block, missing or invalid lines).
pub fn parse_answers(text: &str) -> (Answers, Vec<ParseIssue>) {
    let blocks = answer_blocks(text);
    let mut answers = Answers::default();
    let mut issues = Vec::new();
    if blocks.is_empty() {
        issues.push(ParseIssue::NoAnswersBlock);
        return (answers, issues);
    }
    for task in Task::ALL {
        let stated = winning_answer(text, &blocks, task).map(|(stated, _)| stated);
        match stated {
            Some(Stated::Label(label)) => answers.put(task, label),
            Some(Stated::None) => {}
            Some(Stated::Other(found)) => issues.push(ParseIssue::InvalidAnswer { task, found }),
            None => issues.push(ParseIssue::MissingAnswer { task }),
        }
    }
    (answers, issues)
}

/// Where the label word of each task's winning answer starts (byte offset into `text`), for
/// tasks whose answer is a label. Used to find the generation step that emitted it.
pub fn answer_label_offsets(text: &str) -> Vec<(Task, usize)> {
    let blocks = answer_blocks(text);
    Task::ALL
        .into_iter()
        .filter_map(|task| match winning_answer(text, &blocks, task) {
            Some((Stated::Label(_), offset)) => Some((task, offset)),
            _ => None,
        })
        .collect()
}

/// The answer of `task` in the last block that states it, with the byte offset of its word.
fn winning_answer(text: &str, blocks: &[(usize, usize)], task: Task) -> Option<(Stated, usize)> {
    blocks.iter().rev().find_map(|&(start, end)| {
        find_answer(&text[start..end], task).map(|(stated, offset)| (stated, start + offset))
    })
}

/// Parses a whole guard output: answers, reasoning sections and consistency checks.
pub fn parse_verdict(output: &str) -> Verdict {
    let (answers, mut issues) = parse_answers(output);
    let reasoning = parse_reasoning(output);
    for task in Task::ALL {
        if !reasoning.iter().any(|r| r.task == Some(task)) {
            issues.push(ParseIssue::MissingTask { task });
        }
    }
    for section in &reasoning {
        let (Some(task), Some(conclusion)) = (section.task, section.conclusion.as_deref()) else {
            continue;
        };
        if let (Some(said), Some(answer)) = (conclusion_label(task, conclusion), answers.get(task))
        {
            if said != answer {
                issues.push(ParseIssue::ConclusionContradicts {
                    task,
                    conclusion: said,
                    answer,
                });
            }
        }
    }
    Verdict {
        request: answers.request,
        completion: answers.completion,
        response: answers.response,
        reasoning,
        issues,
    }
}

/// Byte ranges `(start, end)` of the answers blocks: from just after the `Answers` header to the
/// next header (or the end of the text).
fn answer_blocks(text: &str) -> Vec<(usize, usize)> {
    let mut starts = Vec::new(); // (line start, block content start)
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let lead = line.len()
            - line
                .trim_start_matches(|c: char| c == '#' || c == '*' || c.is_whitespace())
                .len();
        let rest = &line[lead..];
        if let Some(n) = starts_with_ci(rest, "answers") {
            let after = &rest[n..];
            let tail = after.trim_start_matches(['*', ' ', '\t']);
            let header_end = if let Some(t) = tail.strip_prefix(':') {
                Some(line.len() - t.len())
            } else if tail.trim().is_empty() {
                Some(line.len())
            } else {
                None
            };
            if let Some(end) = header_end {
                starts.push((offset, offset + end));
            }
        }
        offset += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &(_, content))| {
            let end = starts.get(i + 1).map_or(text.len(), |&(line, _)| line);
            (content, end)
        })
        .collect()
}

/// The first `Key: word` of `task` in an answers block, with the byte offset of the word.
fn find_answer(block: &str, task: Task) -> Option<(Stated, usize)> {
    let key = task.answer_key().to_ascii_lowercase();
    let mut prev: Option<char> = None;
    for (i, c) in block.char_indices() {
        let boundary = prev.is_none_or(|p| !p.is_alphanumeric());
        prev = Some(c);
        if !boundary || !py_ci_eq(c, key.as_bytes()[0] as char) {
            continue;
        }
        let rest = &block[i..];
        let Some(n) = starts_with_ci(rest, &key) else {
            continue;
        };
        let Some(after) = rest[n..].strip_prefix(':') else {
            continue;
        };
        let after = after.trim_start_matches(|c: char| is_py_space(c) || c == '*');
        let offset = block.len() - after.len();
        let word_len = after
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(after.len());
        let word = &after[..word_len];
        let stated = if word.eq_ignore_ascii_case("none") {
            Stated::None
        } else {
            match task.parse_label(word) {
                Some(label) => Stated::Label(label),
                None => Stated::Other(word.to_string()),
            }
        };
        return Some((stated, offset));
    }
    None
}

/// What kind of line a line of model output is.
enum Line<'a> {
    Task(u32),
    Step(u32, &'a str),
    Conclusion(&'a str),
    AnswersHeader,
    Rule,
    Text(&'a str),
}

fn classify_line(line: &str) -> Line<'_> {
    let trimmed = line.trim();
    if trimmed.len() >= 3 && trimmed.chars().all(|c| c == '-') {
        return Line::Rule;
    }
    let hashes = trimmed.len() - trimmed.trim_start_matches('#').len();
    let rest = trimmed[hashes..].trim_start_matches(['*', ' ', '\t']);
    if let Some(n) = starts_with_ci(rest, "answers") {
        let tail = rest[n..].trim_start_matches(['*', ' ', '\t']);
        if tail.is_empty() || tail.starts_with(':') {
            return Line::AnswersHeader;
        }
    }
    if hashes == 0 {
        return Line::Text(line);
    }
    if let Some(n) = starts_with_ci(rest, "task") {
        if let Some((number, _)) = leading_number(&rest[n..]) {
            return Line::Task(number);
        }
    }
    if let Some(n) = starts_with_ci(rest, "reasoning step") {
        if let Some((number, tail)) = leading_number(&rest[n..]) {
            let inline = tail.trim_start_matches([':', '.', '*', ' ', '\t']).trim();
            return Line::Step(number, inline);
        }
    }
    if let Some(n) = starts_with_ci(rest, "conclusion") {
        let tail = &rest[n..];
        let inline = tail.split_once(':').map_or("", |(_, t)| t.trim());
        return Line::Conclusion(inline);
    }
    Line::Text(line)
}

/// `"  12: rest"` -> `(12, ": rest")`.
fn leading_number(s: &str) -> Option<(u32, &str)> {
    let s = s.trim_start();
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let number = s[..digits].parse().ok()?;
    Some((number, &s[digits..]))
}

/// Where following text lines go.
enum Sink {
    Nowhere,
    Step,
    Conclusion,
}

fn parse_reasoning(output: &str) -> Vec<TaskReasoning> {
    let mut sections: Vec<TaskReasoning> = Vec::new();
    let mut sink = Sink::Nowhere;
    fn current(sections: &mut Vec<TaskReasoning>) -> &mut TaskReasoning {
        if sections.is_empty() {
            sections.push(TaskReasoning {
                task: None,
                steps: Vec::new(),
                conclusion: None,
            });
        }
        let last = sections.len() - 1;
        &mut sections[last]
    }
    for line in output.lines() {
        match classify_line(line) {
            Line::Task(n) => {
                sections.push(TaskReasoning {
                    task: Task::from_number(n),
                    steps: Vec::new(),
                    conclusion: None,
                });
                sink = Sink::Nowhere;
            }
            Line::Step(number, inline) => {
                current(&mut sections).steps.push(ReasoningStep {
                    number,
                    text: inline.to_string(),
                });
                sink = Sink::Step;
            }
            Line::Conclusion(inline) => {
                current(&mut sections).conclusion = Some(inline.to_string());
                sink = Sink::Conclusion;
            }
            Line::AnswersHeader | Line::Rule => sink = Sink::Nowhere,
            Line::Text(text) => {
                let target = match sink {
                    Sink::Nowhere => None,
                    Sink::Step => current(&mut sections).steps.last_mut().map(|s| &mut s.text),
                    Sink::Conclusion => current(&mut sections).conclusion.as_mut(),
                };
                if let Some(target) = target {
                    if !target.is_empty() || !text.trim().is_empty() {
                        if !target.is_empty() {
                            target.push('\n');
                        }
                        target.push_str(text);
                    }
                }
            }
        }
    }
    for section in &mut sections {
        for step in &mut section.steps {
            step.text = step.text.trim().to_string();
        }
        if let Some(c) = &mut section.conclusion {
            *c = c.trim().to_string();
        }
    }
    sections
}

/// The label a conclusion sentence states, if it states exactly one.
fn conclusion_label(task: Task, conclusion: &str) -> Option<Label> {
    let lower = conclusion.to_lowercase();
    let [positive, negative] = task.labels();
    let count = |w: &str| lower.matches(w).count();
    let (n_pos, n_neg) = match task {
        Task::Prompt | Task::Response => {
            let un = count("unharmful") + count("not harmful");
            (
                count("harmful") - count("unharmful") - count("not harmful"),
                un,
            )
        }
        Task::Refusal => (count("refusal"), count("compliance")),
    };
    match (n_pos > 0, n_neg > 0) {
        (true, false) => Some(positive),
        (false, true) => Some(negative),
        _ => None,
    }
}
