//! The hub client against a fake hub on loopback: downloads into the standard cache layout,
//! works offline from the cache afterwards, and fails with a message naming the files and the
//! `--model DIR` alternative when the hub cannot help.

use guardreasoner_guard::hub::{HubClient, HubConfig};
use guardreasoner_guard::{GuardError, ModelSpec};
use guardreasoner_testkit::{read_request, respond};
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A fake hub serving `files` for repo `org/model` at `main`; `status` overrides every answer.
fn fake_hub(
    files: HashMap<&'static str, Vec<u8>>,
    status: Option<u16>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Some(request) = read_request(&stream) else {
                continue;
            };
            let auth = request
                .header("authorization")
                .map(|v| format!("Authorization: {v}"))
                .unwrap_or_default();
            seen.lock()
                .unwrap()
                .push(format!("{} {} {auth}", request.method, request.path));
            let file = request
                .path
                .strip_prefix("/org/model/resolve/main/")
                .unwrap_or("");
            let (code, body) = match (status, files.get(file)) {
                (Some(code), _) => (code, Vec::new()),
                (None, Some(body)) => (200, body.clone()),
                (None, None) => (404, Vec::new()),
            };
            let commit = format!("X-Repo-Commit: {COMMIT}");
            let etag = format!("ETag: \"etag-{}\"", file.replace('.', "-"));
            respond(
                &stream,
                code,
                &[&commit, &etag],
                &body,
                request.method == "GET",
            );
        }
    });
    (format!("http://{addr}"), log)
}

fn config(endpoint: &str, cache: &std::path::Path, offline: bool) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_string(),
        cache: cache.to_path_buf(),
        token: Some("secret".into()),
        offline,
    }
}

fn model_files(sharded: bool) -> HashMap<&'static str, Vec<u8>> {
    let mut files = HashMap::new();
    files.insert("config.json", b"{}".to_vec());
    files.insert("tokenizer.json", b"{\"tok\": 1}".to_vec());
    if sharded {
        files.insert(
            "model.safetensors.index.json",
            br#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#.to_vec(),
        );
        files.insert("model-00001-of-00002.safetensors", vec![1; 1000]);
        files.insert("model-00002-of-00002.safetensors", vec![2; 1000]);
    } else {
        files.insert(
            "generation_config.json",
            b"{\"eos_token_id\": [1, 2]}".to_vec(),
        );
        files.insert("model.safetensors", vec![7; 5000]);
    }
    files
}

#[test]
fn downloads_into_the_standard_cache_and_then_works_offline() {
    let (url, log) = fake_hub(model_files(false), None);
    let cache = tempfile::tempdir().unwrap();
    let mut bytes = 0;
    let dir = HubClient::new(config(&url, cache.path(), false))
        .snapshot("org/model", "main", &mut |e| {
            if let guardreasoner_guard::hub::HubEvent::Bytes(n) = e {
                bytes += n
            }
        })
        .unwrap();
    let repo = cache.path().join("models--org--model");
    assert_eq!(dir, repo.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        vec![7; 5000]
    );
    assert!(std::fs::symlink_metadata(dir.join("config.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(repo.join("blobs/etag-model-safetensors").is_file());
    assert_eq!(
        bytes,
        model_files(false)
            .values()
            .map(|v| v.len() as u64)
            .sum::<u64>()
    );
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .all(|l| l.ends_with("Authorization: Bearer secret")));
    // offline: served from the cache, the server is not asked
    let before = log.lock().unwrap().len();
    let spec = ModelSpec::parse("org/model").unwrap();
    let offline = spec
        .resolve(&config(&url, cache.path(), true), &mut |_| {})
        .unwrap();
    assert_eq!(offline, dir);
    // online again: complete cache, no request either
    spec.resolve(&config(&url, cache.path(), false), &mut |_| {})
        .unwrap();
    assert_eq!(log.lock().unwrap().len(), before);
}

#[test]
fn sharded_checkpoints_fetch_every_shard_once() {
    let (url, log) = fake_hub(model_files(true), None);
    let cache = tempfile::tempdir().unwrap();
    let dir = HubClient::new(config(&url, cache.path(), false))
        .snapshot("org/model", "main", &mut |_| {})
        .unwrap();
    assert!(dir.join("model-00001-of-00002.safetensors").is_file());
    assert!(dir.join("model-00002-of-00002.safetensors").is_file());
    assert!(
        !dir.join("generation_config.json").exists(),
        "optional file absent upstream"
    );
    let gets = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains("00001"))
        .count();
    assert_eq!(gets, 1);
}

fn error_text(e: GuardError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "one line: {s}");
    s
}

#[test]
fn offline_without_cache_names_files_and_the_local_alternative() {
    let cache = tempfile::tempdir().unwrap();
    let spec = ModelSpec::parse("yueliu1999/GuardReasoner-1B").unwrap();
    let err = error_text(
        spec.resolve(
            &config("http://127.0.0.1:9", cache.path(), true),
            &mut |_| {},
        )
        .unwrap_err(),
    );
    assert!(err.contains("yueliu1999/GuardReasoner-1B@main"), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(
        err.contains("config.json, tokenizer.json, model.safetensors"),
        "{err}"
    );
    assert!(err.contains("--model DIR"), "{err}");
    // unreachable hub
    let err = error_text(
        spec.resolve(
            &config("http://127.0.0.1:9", cache.path(), false),
            &mut |_| {},
        )
        .unwrap_err(),
    );
    assert!(err.contains("cannot reach the hub"), "{err}");
    assert!(err.contains("--model DIR"), "{err}");
}

#[test]
fn gated_repository_asks_for_a_token() {
    let (url, _) = fake_hub(HashMap::new(), Some(401));
    let cache = tempfile::tempdir().unwrap();
    let err = error_text(
        HubClient::new(config(&url, cache.path(), false))
            .snapshot("org/model", "main", &mut |_| {})
            .unwrap_err(),
    );
    assert!(
        err.contains("HTTP 401") && err.contains("HF_TOKEN"),
        "{err}"
    );
}

#[test]
fn missing_local_path_is_reported() {
    let err = ModelSpec::parse("./no/such/model.gguf")
        .unwrap()
        .resolve(
            &config("http://127.0.0.1:9", std::path::Path::new("/tmp"), true),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(error_text(err).contains("./no/such/model.gguf does not exist"));
}
