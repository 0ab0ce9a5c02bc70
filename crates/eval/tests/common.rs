//! Shared helpers of the evaluation tests: where the benchmark data is.

use std::path::PathBuf;

/// `$GUARDREASONER_DATA_DIR`, else `../shared/data/guardreasoner` beside the repository.
pub fn data_root() -> PathBuf {
    let root = guardreasoner_testkit::data_root();
    assert!(
        root.join("benchmark").is_dir(),
        "benchmark data not found at {} (set GUARDREASONER_DATA_DIR to a directory holding benchmark/ and predictions/)",
        root.display()
    );
    root
}

#[allow(dead_code)]
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}
