//! `guardreasoner quantize` end to end: the tiny fixture checkpoint becomes a GGUF file that
//! `classify` loads, an existing file is not overwritten without `--force`, errors name the file.

mod common;

use common::*;
use std::path::PathBuf;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/tiny-llama")
}

#[test]
fn quantized_checkpoint_loads_and_classifies() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny-q8_0.gguf");
    let run = guardreasoner()
        .args(["quantize", "--type", "q8_0", "--model"])
        .arg(tiny())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(std::fs::read(&out).unwrap().starts_with(b"GGUF"));
    let classify = guardreasoner()
        .args([
            "classify",
            "--json",
            "--max-new-tokens",
            "4",
            "--prompt",
            "hello",
        ])
        .arg("--model")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        classify.status.success(),
        "{}",
        String::from_utf8_lossy(&classify.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&classify.stdout).unwrap();
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 100);
    // an existing file stays unless --force
    let again = guardreasoner()
        .args(["quantize", "--model"])
        .arg(tiny())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn missing_checkpoint_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let run = guardreasoner()
        .args(["quantize", "--model"])
        .arg(tmp.path().join("nothing"))
        .arg("--out")
        .arg(tmp.path().join("x.gguf"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nothing"), "{err}");
}
