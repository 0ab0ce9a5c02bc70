//! Helpers shared by the CLI's end-to-end tests: the binary, the benchmark data, the assets.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// `$GUARDREASONER_DATA_DIR`, else `../shared/data/guardreasoner` beside the repository.
pub fn data_root() -> PathBuf {
    std::env::var_os("GUARDREASONER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/guardreasoner")
        })
}

/// The `guardreasoner` binary with the data directory set.
pub fn guardreasoner() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_guardreasoner"));
    c.env("GUARDREASONER_DATA_DIR", data_root());
    c
}

/// SmolLM2 from the test assets (scripts/fetch-test-assets.sh); `None` only when asset tests are
/// skipped on purpose (`GUARDREASONER_SKIP_ASSET_TESTS=1`).
pub fn smollm2() -> Option<PathBuf> {
    let dir = std::env::var_os("GUARDREASONER_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/test-assets")
        });
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("GUARDREASONER_SKIP_ASSET_TESTS").is_some(),
        "{} is missing: run scripts/fetch-test-assets.sh (or set GUARDREASONER_SKIP_ASSET_TESTS=1)",
        path.display()
    );
    None
}
