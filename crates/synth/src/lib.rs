//! Reasoning-data synthesis (paper section 3.1; `REFERENCE.md`, "Training pipeline" step 1):
//! a strong LLM is given a labelled request/response and its ground-truth labels, and asked for
//! numbered reasoning steps per task ending in the unchanged `Answers:` block. Accepted answers
//! become LLaMA-Factory alpaca items for reasoning SFT.
//!
//! - [`sample`]: labelled input rows and importers for the common public formats;
//! - [`prompt`]: the synthesis prompt (overridable);
//! - [`client`]: an OpenAI chat-completions client with retries and usage accounting;
//! - [`validate`]: checks an answer with the protocol parser against the given labels;
//! - [`job`]: the resumable batch job and its summary.

pub mod client;
pub mod error;
pub mod job;
pub mod prompt;
pub mod sample;
pub mod validate;

pub use error::SynthError;
