//! Broken inputs give one-line errors that name the file and the problem, never a panic.
//! Built from the tiny fixtures (`scripts/engine/make_tiny_llama.py`) copied into a temporary
//! directory and damaged there.

mod common;

use std::path::{Path, PathBuf};

use guardreasoner_engine::{Engine, EngineError, LoadOptions};

fn load_err(path: &Path) -> EngineError {
    match Engine::load(path, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded, expected an error", path.display()),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "error is not one line: {msg:?}");
            e
        }
    }
}

/// A copy of the tiny HF checkpoint in a temporary directory.
fn hf_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-llama");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(common::fixtures().join("tiny-llama")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

fn truncate(path: &Path, keep: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(keep).unwrap();
}

#[test]
fn missing_model_path() {
    let path = Path::new("/nonexistent/guard-model.gguf");
    let err = load_err(path);
    assert!(matches!(err, EngineError::MissingFile { .. }));
    assert_eq!(
        err.to_string(),
        "/nonexistent/guard-model.gguf: file not found"
    );
}

#[test]
fn directory_without_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_err(tmp.path());
    let msg = err.to_string();
    assert!(
        msg.starts_with(&tmp.path().join("config.json").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("file not found"), "{msg}");
}

#[test]
fn missing_weights_file() {
    let (_tmp, dir) = hf_copy();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(msg.contains("model.safetensors: file not found"), "{msg}");
    assert!(msg.contains("model.safetensors.index.json"), "{msg}");
}

#[test]
fn missing_tokenizer_json() {
    let (_tmp, dir) = hf_copy();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(msg.ends_with("tokenizer.json: file not found"), "{msg}");
}

#[test]
fn truncated_safetensors() {
    let (_tmp, dir) = hf_copy();
    let file = dir.join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    truncate(&file, len / 2);
    let err = load_err(&dir);
    assert!(
        matches!(err, EngineError::TruncatedSafetensors { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with(&file.display().to_string()), "{msg}");
    assert!(
        msg.contains("truncated safetensors: header declares"),
        "{msg}"
    );
    // Cut inside the header too.
    truncate(&file, 20);
    let msg = load_err(&dir).to_string();
    assert!(msg.contains("truncated safetensors"), "{msg}");
}

#[test]
fn truncated_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tiny.gguf");
    std::fs::copy(common::fixtures().join("tiny-llama.gguf"), &file).unwrap();
    let len = std::fs::metadata(&file).unwrap().len();
    truncate(&file, len - 1000);
    let err = load_err(&file);
    assert!(matches!(err, EngineError::TruncatedGguf { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with(&file.display().to_string()), "{msg}");
    assert!(msg.contains("truncated GGUF: tensor "), "{msg}");
    // Cut inside the metadata.
    truncate(&file, 100);
    let msg = load_err(&file).to_string();
    assert!(msg.contains("truncated GGUF: metadata"), "{msg}");
}

#[test]
fn not_a_gguf_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, "just some text, not a model").unwrap();
    let msg = load_err(&file).to_string();
    assert!(msg.contains("invalid GGUF: bad magic"), "{msg}");
}

#[test]
fn unsupported_gguf_tensor_type() {
    let file = common::fixtures().join("unsupported-i8.gguf");
    let err = load_err(&file);
    assert!(
        matches!(err, EngineError::UnsupportedTensorType { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with(&file.display().to_string()), "{msg}");
    assert!(
        msg.contains("tensor token_embd.weight has unsupported type I8"),
        "{msg}"
    );
    assert!(msg.contains("supported: F32, F16, BF16"), "{msg}");
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let (_tmp, dir) = hf_copy();
    let mut config = common::read_json(&dir.join("config.json"));
    config["intermediate_size"] = 96.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = load_err(&dir);
    assert_eq!(
        err.to_string(),
        format!(
            "{}: tensor model.layers.0.mlp.gate_proj.weight has shape [128, 64], expected [96, 64]",
            dir.join("model.safetensors").display()
        )
    );
}

#[test]
fn invalid_config_names_the_field() {
    let (_tmp, dir) = hf_copy();
    let mut config = common::read_json(&dir.join("config.json"));
    config["num_key_value_heads"] = 3.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let msg = load_err(&dir).to_string();
    assert_eq!(
        msg,
        format!(
            "{}: field num_key_value_heads: 3 does not divide the number of attention heads 4",
            dir.join("config.json").display()
        )
    );
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let msg = load_err(&dir).to_string();
    assert!(msg.contains("config.json: invalid JSON: "), "{msg}");
}
