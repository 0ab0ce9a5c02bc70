//! Subcommands, one module each.

pub mod data;
pub mod eval;
