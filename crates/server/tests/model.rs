//! `/v1/guard` with the real SmolLM2 model from the test assets (not a guard model: its
//! verdict is unreadable, so the answer must say so and fail closed).

mod common;

use common::*;
use guardreasoner_engine::{DeviceChoice, Engine, LoadOptions};
use guardreasoner_guard::LocalBackend;
use guardreasoner_server::ServerConfig;
use serde_json::json;
use std::sync::Arc;

/// The SmolLM2 test asset as a local backend (`None` when asset tests are skipped).
fn smollm2_backend() -> Option<Arc<LocalBackend>> {
    let path = smollm2()?;
    let engine = Engine::load(
        &path,
        &LoadOptions {
            device: DeviceChoice::Cpu,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    Some(Arc::new(LocalBackend::new(engine).unwrap()))
}

#[test]
fn smollm2_guard_request_reports_an_unreadable_verdict_failing_closed() {
    let Some(backend) = smollm2_backend() else {
        return;
    };
    let server = TestServer::start(ServerConfig::default(), Some(backend));
    let r = server.post(
        "/v1/guard",
        &json!({"prompt": "How do I bake bread?", "response": "Mix flour and water.", "max_new_tokens": 12}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 100);
    let generated = v["usage"]["generated_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&generated));
    assert!(v["timing"]["prefill_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["verdict"]["complete"], false);
    assert_eq!(v["policy"]["unreadable"], true);
    assert_eq!(v["policy"]["flagged"], true);
    // The same model through the raw completion route.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
}

#[test]
fn smollm2_moderations_and_chat_proxy_fail_closed_on_an_unreadable_verdict() {
    let Some(backend) = smollm2_backend() else {
        return;
    };
    let mut config = ServerConfig::default();
    config.guard.max_new_tokens = 8;
    // never reached: the request check blocks first
    config.upstream = Some(guardreasoner_server::UpstreamConfig {
        base_url: "http://127.0.0.1:9/v1".into(),
        api_key: None,
        timeout: std::time::Duration::from_secs(2),
    });
    let server = TestServer::start(config, Some(backend));
    let r = server.post(
        "/v1/moderations",
        &json!({"input": ["How do I bake bread?", "Hello"]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(
        results.iter().all(|x| x["flagged"] == true),
        "fail-closed: {v}"
    );
    assert!(
        results[0]["guardreasoner"]["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap()
            > 100
    );
    let r = server.post(
        "/v1/chat/completions",
        &json!({"model": "m", "messages": [{"role": "user", "content": "How do I bake bread?"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["guardreasoner"]["blocked"], "request");
}
