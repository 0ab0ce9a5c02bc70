//! GuardReasoner evaluation: the paper's 13 benchmark/task pairs, their data files, prediction
//! files in the official layout, and scoring in two modes.
//!
//! - [`benchmark`]: the registry (names, files, tasks, where ground truth comes from).
//! - [`data`]: locating, downloading and verifying the benchmark files.
//! - [`dataset`] / [`predictions`]: loaders that report malformed input by file and line.
//! - [`score`]: `official` (evaluate.py with its quirks) and `strict` (honest metrics).
//! - [`run`]: `eval run`, generating prediction files with any guard backend, resumably.
//! - [`table`]: the paper-style text tables.

pub mod benchmark;
pub mod data;
pub mod dataset;
pub mod error;
pub mod predictions;
pub mod report;
pub mod run;
pub mod score;
pub mod table;

pub use benchmark::{Benchmark, BenchmarkTask, TruthSource, PAIRS};
pub use error::EvalError;
pub use score::{ScoreMode, Scorecard};
