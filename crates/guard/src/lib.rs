//! The guard: what eval, the service and the data tools talk to.
//!
//! - [`backend`]: the [`GuardBackend`] trait (text in, text out, with usage, timing and the
//!   label probabilities needed for confidences) and its implementations: [`LocalBackend`] over
//!   our engine and [`ScriptedBackend`] returning fixed outputs for tests.
//! - [`pipeline`]: [`Guard::classify`]: render the prompt (REFERENCE.md "Prompt"), generate with
//!   the reference decoding, parse the verdict with the protocol parser, attach confidences.
//! - [`source`] and [`hub`]: `--model` resolution (local directory, `.gguf` file, or a Hugging
//!   Face Hub id downloaded into the standard cache).

pub mod backend;
pub mod error;
pub mod http;
pub mod hub;
pub mod pipeline;
pub mod remote;
pub mod source;

pub use backend::{
    BackendOutput, FinishReason, GenerationRequest, GuardBackend, LabelProbe, LocalBackend,
    ScriptedBackend,
};
pub use error::GuardError;
pub use pipeline::{assemble, Confidences, Guard, GuardOptions, GuardResult, Timing, Usage};
pub use remote::{RemoteBackend, RemoteConfig};
pub use source::{ModelSpec, DEFAULT_MODEL};
