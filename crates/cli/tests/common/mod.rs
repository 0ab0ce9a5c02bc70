//! Helpers shared by the CLI's end-to-end tests: the binary, the benchmark data, the assets.
#![allow(dead_code, unused_imports)]

use std::process::Command;

pub use guardreasoner_testkit::{data_root, smollm2};

/// The `guardreasoner` binary with the data directory set.
pub fn guardreasoner() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_guardreasoner"));
    c.env("GUARDREASONER_DATA_DIR", data_root());
    c
}
