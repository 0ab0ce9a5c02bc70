//! The OpenAI-compatible remote backend against a real HTTP server on loopback that fails
//! some requests: 429 with Retry-After and 500 are retried, a 400 is not, the result is read.

use guardreasoner_engine::SamplingParams;
use guardreasoner_guard::{
    FinishReason, GenerationRequest, GuardBackend, RemoteBackend, RemoteConfig,
};
use guardreasoner_testkit::{read_request, respond};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers requests with the scripted `(status, body)` list in turn, recording request bodies.
fn server(script: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Some(request) = read_request(&stream) else {
                continue;
            };
            seen.lock().unwrap().push(request.text());
            let (code, text) = script.next().unwrap_or((500, "{}"));
            let extra: &[&str] = if code == 429 {
                &["Retry-After: 0"]
            } else {
                &[]
            };
            let mut headers = vec!["Content-Type: application/json"];
            headers.extend_from_slice(extra);
            respond(&stream, code, &headers, text.as_bytes(), true);
        }
    });
    (format!("http://{addr}/v1"), bodies)
}

fn backend(url: &str) -> RemoteBackend {
    let mut c = RemoteConfig::new(url, "guard");
    c.api_key = Some("k".into());
    c.initial_backoff = Duration::from_millis(10);
    c.max_retries = 3;
    RemoteBackend::new(c)
}

fn request(prompt: &str) -> GenerationRequest<'_> {
    GenerationRequest {
        prompt,
        max_new_tokens: 64,
        sampling: SamplingParams::greedy(),
    }
}

const OK: &str = r#"{"choices": [{"text": "Answers: \nRequest: harmful", "finish_reason": "length"}], "usage": {"prompt_tokens": 300, "completion_tokens": 64}}"#;

#[test]
fn retries_429_and_500_then_reads_the_completion() {
    let (url, bodies) = server(vec![
        (429, "{}"),
        (500, "oops"),
        (200, "not json"),
        (200, OK),
    ]);
    let mut streamed = String::new();
    let out = backend(&url)
        .generate(&request("the prompt"), &mut |t| streamed.push_str(t))
        .unwrap();
    assert_eq!(out.text, "Answers: \nRequest: harmful");
    assert_eq!(streamed, out.text);
    assert_eq!((out.prompt_tokens, out.generated_tokens), (300, 64));
    assert_eq!(out.finish, FinishReason::Length);
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 4);
    let sent: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(sent["prompt"], "the prompt");
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["temperature"], 0.0);
    assert_eq!(sent["model"], "guard");
}

#[test]
fn client_errors_are_not_retried_and_exhaustion_is_reported() {
    let (url, bodies) = server(vec![(400, r#"{"error": "bad"}"#)]);
    let err = backend(&url)
        .generate(&request("p"), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 400") && err.contains("after 1 attempts"),
        "{err}"
    );
    assert_eq!(bodies.lock().unwrap().len(), 1);
    let (url, bodies) = server(vec![(503, "{}"); 10]);
    let err = backend(&url)
        .generate(&request("p"), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 503") && err.contains("after 4 attempts"),
        "{err}"
    );
    assert_eq!(bodies.lock().unwrap().len(), 4);
    let (url, _) = server(vec![(200, r#"{"choices": []}"#)]);
    let err = backend(&url)
        .generate(&request("p"), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("malformed completion response: no choices[0]"),
        "{err}"
    );
}
