//! The guarding chat proxy against a tiny fake upstream on loopback: a harmful request is
//! refused without calling the upstream, an allowed one is forwarded and its answer checked,
//! a harmful answer is replaced, and streaming passes through after the request check.

mod common;

use common::*;
use guardreasoner_server::{ServerConfig, UpstreamConfig};
use guardreasoner_testkit::{read_request, respond};
use serde_json::json;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ANSWER: &str = r#"{"id":"up-1","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Knead the dough."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}"#;
const STREAM: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Knead \"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"the dough.\"}}]}\n\ndata: [DONE]\n\n";

/// A fake OpenAI chat server; returns its URL and the bodies it received.
fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bodies = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Some(request) = read_request(&stream) else {
                continue;
            };
            let body = request.text();
            let streaming = body.contains("\"stream\":true");
            bodies.lock().unwrap().push(body);
            let (ct, text) = if streaming {
                ("Content-Type: text/event-stream", STREAM)
            } else {
                ("Content-Type: application/json", ANSWER)
            };
            respond(&stream, 200, &[ct], text.as_bytes(), true);
        }
    });
    (format!("http://{addr}/v1"), seen)
}

fn proxy(outputs: &[&str]) -> (TestServer, Arc<Mutex<Vec<String>>>) {
    let (url, seen) = upstream();
    let config = ServerConfig {
        upstream: Some(UpstreamConfig {
            base_url: url,
            api_key: None,
            timeout: Duration::from_secs(30),
        }),
        ..ServerConfig::default()
    };
    (TestServer::scripted(config, outputs), seen)
}

fn chat(stream: bool) -> serde_json::Value {
    json!({
        "model": "up",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "Be helpful."},
            {"role": "user", "content": [{"type": "text", "text": "How do I bake bread?"}]},
        ],
    })
}

#[test]
fn a_harmful_request_is_refused_without_calling_the_upstream() {
    let (server, seen) = proxy(&[HARMFUL]);
    let r = server.post("/v1/chat/completions", &chat(false));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "I can't help with that request."
    );
    assert_eq!(v["guardreasoner"]["blocked"], "request");
    assert_eq!(
        v["guardreasoner"]["request"]["verdict"]["request"],
        "harmful"
    );
    assert!(seen.lock().unwrap().is_empty());
    // Streaming clients get the refusal as one chunk.
    let r = server.post("/v1/chat/completions", &chat(true));
    let events = r.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert!(events[0].1.contains("content_filter"));
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn an_allowed_request_is_forwarded_and_its_answer_checked() {
    let (server, seen) = proxy(&[UNHARMFUL]);
    let r = server.post("/v1/chat/completions", &chat(false));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["id"], "up-1");
    assert_eq!(v["choices"][0]["message"]["content"], "Knead the dough.");
    assert_eq!(v["guardreasoner"]["blocked"], serde_json::Value::Null);
    assert_eq!(
        v["guardreasoner"]["response"]["verdict"]["response"],
        "unharmful"
    );
    let forwarded: serde_json::Value = serde_json::from_str(&seen.lock().unwrap()[0]).unwrap();
    assert_eq!(forwarded, chat(false));
}

#[test]
fn a_harmful_answer_is_replaced_by_the_refusal() {
    let (server, seen) = proxy(&[UNHARMFUL, HARMFUL_RESPONSE]);
    let v = server.post("/v1/chat/completions", &chat(false)).json();
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(v["guardreasoner"]["blocked"], "response");
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_ne!(v["choices"][0]["message"]["content"], "Knead the dough.");
}

#[test]
fn streaming_passes_the_upstream_through_after_the_request_check() {
    let (server, _seen) = proxy(&[UNHARMFUL]);
    let r = server.post("/v1/chat/completions", &chat(true));
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/event-stream"));
    assert_eq!(r.body, STREAM);
    assert_eq!(r.header_request_verdict.as_deref(), Some("unharmful"));
}

#[test]
fn an_unreachable_upstream_is_a_502() {
    let config = ServerConfig {
        upstream: Some(UpstreamConfig {
            base_url: "http://127.0.0.1:1".into(),
            api_key: None,
            timeout: Duration::from_secs(5),
        }),
        ..ServerConfig::default()
    };
    let server = TestServer::scripted(config, &[UNHARMFUL]);
    let r = server.post("/v1/chat/completions", &chat(false));
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "upstream_error");
    assert_eq!(server.get("/healthz").status, 200);
}
