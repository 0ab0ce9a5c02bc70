//! The load test: 200 requests from 32 concurrent clients against a queue of 4 and one worker
//! with a slightly slow scripted backend. Every request gets 200 or 429 (with Retry-After),
//! none hangs (client timeout), the server is healthy afterwards, and `/metrics` counts match
//! what the clients saw.

mod common;

use common::*;
use guardreasoner_server::ServerConfig;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn two_hundred_requests_from_32_clients_all_get_an_answer() {
    let config = ServerConfig {
        queue_capacity: 4,
        workers: 1,
        ..ServerConfig::default()
    };
    let server = TestServer::start(
        config,
        Some(scripted_slow(
            &[HARMFUL, UNHARMFUL],
            Duration::from_millis(3),
        )),
    );
    let url = server.url("/v1/guard");
    let next = Arc::new(AtomicUsize::new(0));
    let (ok, busy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (url, next, ok, busy) = (url.clone(), next.clone(), ok.clone(), busy.clone());
            std::thread::spawn(move || {
                let agent = agent();
                while next.fetch_add(1, Ordering::SeqCst) < 200 {
                    let r = send_with(
                        &agent,
                        &url,
                        "POST",
                        &[("Content-Type", "application/json")],
                        Some(br#"{"prompt": "hi", "response": "hello"}"#),
                    );
                    match r.status {
                        200 => {
                            assert!(r.json()["verdict"]["request"].is_string());
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        429 => {
                            assert_eq!(r.retry_after.as_deref(), Some("1"));
                            assert_eq!(r.json()["error"]["code"], "queue_full");
                            busy.fetch_add(1, Ordering::SeqCst);
                        }
                        other => panic!("unexpected {other}: {}", r.body),
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (ok, busy) = (ok.load(Ordering::SeqCst), busy.load(Ordering::SeqCst));
    assert_eq!(ok + busy, 200);
    assert!(ok >= 5, "only {ok} succeeded");
    assert!(busy > 0, "a queue of 4 never filled with 32 clients");
    assert_eq!(server.get("/readyz").status, 200);
    let m = |s: &str| server.metric(s) as usize;
    assert_eq!(
        m("guardreasoner_http_requests_total{route=\"/v1/guard\",status=\"200\"}"),
        ok
    );
    assert_eq!(
        m("guardreasoner_http_requests_total{route=\"/v1/guard\",status=\"429\"}"),
        busy
    );
    assert_eq!(m("guardreasoner_queue_rejected_total"), busy);
    assert_eq!(m("guardreasoner_jobs_total{outcome=\"ok\"}"), ok);
    let harmful = m("guardreasoner_verdicts_total{task=\"prompt\",label=\"harmful\"}");
    let unharmful = m("guardreasoner_verdicts_total{task=\"prompt\",label=\"unharmful\"}");
    assert_eq!(harmful + unharmful, ok);
    assert_eq!(m("guardreasoner_queue_depth"), 0);
    assert_eq!(m("guardreasoner_jobs_running"), 0);
    server.stop().unwrap();
}
