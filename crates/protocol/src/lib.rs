//! The GuardReasoner protocol: what goes into the guard model and what comes out.
//!
//! Follows `REFERENCE.md` ("Prompt", "Output format", "Scoring"): the instruction text and input
//! block byte for byte, the three tasks and their labels, the parser that turns a model's
//! output into a [`Verdict`], and the official scorer's label extraction (with its quirks) kept
//! separately in [`official`].
//!
//! This crate has no tensor, I/O or network code; everything above it (engine pipeline,
//! evaluation, service, synthesis) imports its parser instead of writing its own regexes.

pub mod label;
pub mod official;
pub mod parse;
pub mod prompt;
mod text;
pub mod verdict;

pub use label::{HarmLabel, Label, RefusalLabel, Task};
pub use parse::{answer_label_offsets, parse_answers, parse_verdict, Answers};
pub use prompt::{prompt_prefix, GuardInput, PromptFormat, INSTRUCTION};
pub use verdict::{ParseIssue, ReasoningStep, TaskReasoning, Verdict};
