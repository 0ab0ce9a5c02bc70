//! Subcommands, one module each; `model` holds the `--model` options they share.

pub mod classify;
pub mod data;
pub mod eval;
pub mod model;
