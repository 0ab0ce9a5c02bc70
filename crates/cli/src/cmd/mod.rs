//! Subcommands, one module each; `model` holds the `--model` options they share.

pub mod classify;
pub mod data;
pub mod eval;
pub mod model;
pub mod quantize;
pub mod serve;
pub mod synth;
