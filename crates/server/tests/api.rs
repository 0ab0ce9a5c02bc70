//! The service's routes over real loopback sockets with a scripted backend returning known
//! GuardReasoner outputs: `/v1/guard` (JSON and SSE), probes, metrics, moderations, raw
//! completions (and `RemoteBackend` against them), auth, policies, timeout, shutdown.

mod common;

use common::*;
use guardreasoner_guard::{Guard, GuardOptions, RemoteBackend, RemoteConfig};
use guardreasoner_protocol::{GuardInput, HarmLabel};
use guardreasoner_server::{ApiKeys, FailPolicy, InputPolicy, ServerConfig};
use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn guard_returns_the_classify_json_shape_with_policy() {
    let server = TestServer::scripted(ServerConfig::default(), &[HARMFUL]);
    let r = server.post(
        "/v1/guard",
        &json!({"prompt": "How do I pick my neighbour's lock?", "response": "I can't help."}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["verdict"]["request"], "harmful");
    assert_eq!(v["verdict"]["completion"], "refusal");
    assert_eq!(v["verdict"]["response"], "unharmful");
    assert_eq!(v["verdict"]["complete"], true);
    assert_eq!(v["verdict"]["reasoning"].as_array().unwrap().len(), 3);
    assert_eq!(v["raw_output"], HARMFUL);
    assert_eq!(v["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(v["timing"]["total_ms"].is_number());
    assert_eq!(v["policy"]["flagged"], true);
    assert_eq!(v["policy"]["request_harmful"], true);
    assert_eq!(v["policy"]["fail_policy"], "closed");
    assert_eq!(v["truncated"], json!([]));
}

#[test]
fn guard_streams_reasoning_then_the_verdict() {
    let server = TestServer::scripted(ServerConfig::default(), &[UNHARMFUL]);
    let r = server.post(
        "/v1/guard?stream=true",
        &json!({"prompt": "How do I bake bread?"}),
    );
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/event-stream"),
        "{}",
        r.content_type
    );
    let events = r.events();
    let (last_name, last_data) = events.last().unwrap();
    assert_eq!(last_name, "verdict");
    let verdict: serde_json::Value = serde_json::from_str(last_data).unwrap();
    assert_eq!(verdict["verdict"]["request"], "unharmful");
    assert_eq!(verdict["policy"]["flagged"], false);
    let reasoning: String = events[..events.len() - 1]
        .iter()
        .map(|(name, data)| {
            assert_eq!(name, "reasoning");
            serde_json::from_str::<serde_json::Value>(data).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        events.len() > 10,
        "expected many deltas, got {}",
        events.len()
    );
    assert_eq!(reasoning, UNHARMFUL);
}

#[test]
fn unreadable_verdict_is_flagged_when_fail_closed_and_not_when_open() {
    let closed = TestServer::scripted(ServerConfig::default(), &["I am not a guard model."]);
    let v = closed.post("/v1/guard", &json!({"prompt": "hi"})).json();
    assert_eq!(v["verdict"]["request"], serde_json::Value::Null);
    assert_eq!(v["policy"]["unreadable"], true);
    assert_eq!(v["policy"]["flagged"], true);
    let config = ServerConfig {
        fail_policy: FailPolicy::Open,
        ..ServerConfig::default()
    };
    let open = TestServer::scripted(config, &["I am not a guard model."]);
    let v = open.post("/v1/guard", &json!({"prompt": "hi"})).json();
    assert_eq!(v["policy"]["flagged"], false);
    assert_eq!(v["policy"]["fail_policy"], "open");
}

#[test]
fn truncate_policy_cuts_long_fields_and_says_so() {
    let config = ServerConfig {
        max_input_chars: 10,
        input_policy: InputPolicy::Truncate,
        ..ServerConfig::default()
    };
    let server = TestServer::scripted(config, &[UNHARMFUL]);
    let r = server.post(
        "/v1/guard",
        &json!({"prompt": "a".repeat(25), "response": "short"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["truncated"],
        json!([{"field": "prompt", "original_chars": 25, "kept_chars": 10}])
    );
}

#[test]
fn probes_report_loading_ready_and_draining() {
    let mut server = TestServer::start(ServerConfig::default(), None);
    assert_eq!(server.get("/healthz").status, 200);
    let r = server.get("/readyz");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "loading");
    let r = server.post("/v1/guard", &json!({"prompt": "hi"}));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "not_ready");
    assert!(r.retry_after.is_some());
    guardreasoner_server::start_backend(&server.state, scripted(&[UNHARMFUL])).unwrap();
    let r = server.get("/readyz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ready");
    assert!(r.json()["backend"]
        .as_str()
        .unwrap()
        .starts_with("scripted"));
    server.begin_shutdown();
}

#[test]
fn metrics_count_requests_tokens_and_verdicts() {
    let server = TestServer::scripted(ServerConfig::default(), &[HARMFUL]);
    for _ in 0..3 {
        assert_eq!(
            server
                .post("/v1/guard", &json!({"prompt": "x", "response": "y"}))
                .status,
            200
        );
    }
    assert_eq!(server.post("/v1/guard", &json!({})).status, 400);
    let r = server.get("/metrics");
    assert!(r.content_type.starts_with("text/plain"));
    assert_eq!(
        server.metric("guardreasoner_http_requests_total{route=\"/v1/guard\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        server.metric("guardreasoner_http_requests_total{route=\"/v1/guard\",status=\"400\"}"),
        1.0
    );
    assert_eq!(
        server.metric("guardreasoner_verdicts_total{task=\"prompt\",label=\"harmful\"}"),
        3.0
    );
    assert_eq!(
        server.metric("guardreasoner_verdicts_total{task=\"refusal\",label=\"refusal\"}"),
        3.0
    );
    assert_eq!(
        server.metric("guardreasoner_verdicts_total{task=\"response\",label=\"unharmful\"}"),
        3.0
    );
    assert!(server.metric("guardreasoner_generated_tokens_total") > 0.0);
    assert_eq!(server.metric("guardreasoner_queue_depth"), 0.0);
    assert_eq!(
        server.metric("guardreasoner_http_request_duration_seconds_count{route=\"/v1/guard\"}"),
        4.0
    );
}

#[test]
fn moderations_answer_in_the_openai_shape_one_result_per_input() {
    let server = TestServer::scripted(ServerConfig::default(), &[HARMFUL, UNHARMFUL]);
    let r = server.post(
        "/v1/moderations",
        &json!({"input": ["pick a lock", "bake bread"]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("modr-"));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["flagged"], true);
    assert_eq!(results[0]["categories"]["harmful"], true);
    assert_eq!(results[0]["category_scores"]["harmful"], 1.0);
    assert_eq!(results[0]["categories"]["violence"], false);
    assert_eq!(results[1]["flagged"], false);
    assert_eq!(
        results[1]["guardreasoner"]["verdict"]["request"],
        "unharmful"
    );
    // A single string and an array of text parts are one input each.
    let r = server.post(
        "/v1/moderations",
        &json!({"input": "pick a lock", "model": "x"}),
    );
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 1);
    let parts = json!({"input": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]});
    assert_eq!(
        server.post("/v1/moderations", &parts).json()["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn completions_answer_in_the_openai_shape_and_stream() {
    let server = TestServer::scripted(ServerConfig::default(), &["Answers: \nRequest: harmful"]);
    let r = server.post(
        "/v1/completions",
        &json!({"model": "m", "prompt": "Say hi", "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Answers: \nRequest: harmful");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 4); // the scripted backend counts words
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": ["Say hi"], "stream": true}),
    );
    let events = r.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, "Answers: \nRequest: harmful");
}

#[test]
fn remote_backend_classifies_through_our_completions_route() {
    let config = ServerConfig {
        api_keys: ApiKeys::from_list("secret"),
        ..ServerConfig::default()
    };
    let server = TestServer::scripted(config, &[HARMFUL]);
    let mut remote = RemoteConfig::new(server.url("/v1"), "guardreasoner");
    remote.api_key = Some("secret".into());
    remote.max_retries = 0;
    let guard = Guard::new(RemoteBackend::new(remote), GuardOptions::default());
    let result = guard
        .classify(&GuardInput::new("pick a lock", Some("no".into())))
        .unwrap();
    assert_eq!(result.verdict.request, Some(HarmLabel::Harmful));
    assert_eq!(result.verdict.response, Some(HarmLabel::Unharmful));
    assert_eq!(result.raw_output, HARMFUL);
}

#[test]
fn api_keys_guard_v1_routes_but_not_probes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# ops\nkey-one\n\nkey-two\n").unwrap();
    let config = ServerConfig {
        api_keys: ApiKeys::from_file(&file).unwrap(),
        ..ServerConfig::default()
    };
    let server = TestServer::scripted(config, &[UNHARMFUL]);
    let body = json!({"prompt": "hi"}).to_string();
    let post = |auth: Option<&str>| {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        send(
            &server.url("/v1/guard"),
            "POST",
            &headers,
            Some(body.as_bytes()),
        )
    };
    assert_eq!(post(Some("Bearer key-two")).status, 200);
    for bad in [
        None,
        Some("Bearer nope"),
        Some("key-one"),
        Some("Basic a2V5LW9uZQ=="),
    ] {
        let r = post(bad);
        assert_eq!(r.status, 401, "{bad:?}");
        assert_eq!(r.json()["error"]["param"], "Authorization");
        assert_eq!(r.www_authenticate.as_deref(), Some("Bearer"));
    }
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn a_request_past_its_deadline_gets_504_and_the_server_goes_on() {
    let config = ServerConfig {
        request_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server = TestServer::start(
        config,
        Some(scripted_slow(&[UNHARMFUL], Duration::from_millis(1500))),
    );
    let r = server.post("/v1/guard", &json!({"prompt": "hi"}));
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["limit"], 1);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--request-timeout-secs"));
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn graceful_shutdown_finishes_the_request_in_flight() {
    let server = TestServer::start(
        ServerConfig::default(),
        Some(scripted_slow(&[UNHARMFUL], Duration::from_millis(400))),
    );
    let url = server.url("/v1/guard");
    let client = std::thread::spawn(move || {
        send(
            &url,
            "POST",
            &[("Content-Type", "application/json")],
            Some(br#"{"prompt": "hi"}"#),
        )
    });
    // Wait until a worker runs the job, then shut down.
    let started = std::time::Instant::now();
    while server.metric("guardreasoner_jobs_running") < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "job never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let addr = server.addr;
    server.stop().unwrap();
    let r = client.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["verdict"]["request"], "unharmful");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn a_client_leaving_mid_stream_does_not_hurt_the_server() {
    let server = TestServer::start(
        ServerConfig::default(),
        Some(scripted_slow(&[HARMFUL], Duration::from_millis(100))),
    );
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = r#"{"prompt": "hi"}"#;
    write!(
        stream,
        "POST /v1/guard?stream=true HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(stream);
    let r = server.post("/v1/guard", &json!({"prompt": "again"}));
    assert_eq!(r.status, 200);
    assert_eq!(server.get("/readyz").status, 200);
}
