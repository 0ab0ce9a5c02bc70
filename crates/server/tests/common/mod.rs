//! Shared test harness: a real server on a loopback port (its own runtime thread), a blocking
//! HTTP client, scripted GuardReasoner outputs, and the SmolLM2 test asset.
#![allow(dead_code, unused_imports)]

use guardreasoner_guard::{GuardBackend, ScriptedBackend};
use guardreasoner_server::{Server, ServerConfig};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A GuardReasoner output judging a harmful request refused harmlessly.
pub const HARMFUL: &str = "# Task 1\n\n## Reasoning Step 1\nThe user asks how to pick a lock to enter a neighbour's house.\n\n## Conclusion\nThe human user's request is harmful.\n\n# Task 2\n\n## Reasoning Step 1\nThe assistant declines.\n\n## Conclusion\nThe AI assistant's response is a refusal.\n\n# Task 3\n\n## Reasoning Step 1\nNo harmful content is given.\n\n## Conclusion\nThe AI assistant's response is unharmful.\n\n---\n\nAnswers: \nRequest: harmful\nCompletion: refusal\nResponse: unharmful";

/// A GuardReasoner output judging everything harmless.
pub const UNHARMFUL: &str = "# Task 1\n\n## Reasoning Step 1\nThe user asks how to bake bread.\n\n## Conclusion\nThe human user's request is unharmful.\n\n# Task 2\n\n## Reasoning Step 1\nThe assistant explains.\n\n## Conclusion\nThe AI assistant's response is compliance.\n\n# Task 3\n\n## Reasoning Step 1\nBaking advice is harmless.\n\n## Conclusion\nThe AI assistant's response is unharmful.\n\n---\n\nAnswers: \nRequest: unharmful\nCompletion: compliance\nResponse: unharmful";

/// Request unharmful, but the response harmful.
pub const HARMFUL_RESPONSE: &str = "# Task 1\n\n## Reasoning Step 1\nA chemistry question.\n\n## Conclusion\nThe human user's request is unharmful.\n\n---\n\nAnswers: \nRequest: unharmful\nCompletion: compliance\nResponse: harmful";

pub fn scripted(outputs: &[&str]) -> Arc<dyn GuardBackend> {
    Arc::new(ScriptedBackend::new(
        outputs.iter().map(|s| s.to_string()).collect(),
    ))
}

pub fn scripted_slow(outputs: &[&str], delay: Duration) -> Arc<dyn GuardBackend> {
    Arc::new(
        ScriptedBackend::new(outputs.iter().map(|s| s.to_string()).collect()).with_delay(delay),
    )
}

/// A server on `127.0.0.1:0`, shut down gracefully on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<guardreasoner_server::Result<()>>>,
    pub state: guardreasoner_server::AppState,
}

impl TestServer {
    /// Starts with `backend` attached (or none: the server stays `loading`).
    pub fn start(config: ServerConfig, backend: Option<Arc<dyn GuardBackend>>) -> TestServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = Server::bind("127.0.0.1:0", config).await.unwrap();
                if let Some(b) = backend {
                    server.start_backend(b).unwrap();
                }
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                tx.send((
                    server.local_addr().unwrap(),
                    stop_tx,
                    server.state().clone(),
                ))
                .unwrap();
                server
                    .run(async move {
                        let _ = stop_rx.await;
                    })
                    .await
            })
        });
        let (addr, stop, state) = rx.recv().unwrap();
        TestServer {
            addr,
            shutdown: Some(stop),
            thread: Some(thread),
            state,
        }
    }

    pub fn scripted(config: ServerConfig, outputs: &[&str]) -> TestServer {
        TestServer::start(config, Some(scripted(outputs)))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Begins graceful shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits (bounded) for the server to stop.
    pub fn stop(mut self) -> guardreasoner_server::Result<()> {
        self.begin_shutdown();
        let thread = self.thread.take().unwrap();
        let started = std::time::Instant::now();
        while !thread.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not shut down"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap()
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        send(
            &self.url(path),
            "POST",
            &[("Content-Type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    }

    pub fn get(&self, path: &str) -> Reply {
        send(&self.url(path), "GET", &[], None)
    }

    /// The value of one metric line (`name{labels}` exactly), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub www_authenticate: Option<String>,
    pub header_request_verdict: Option<String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `data:` payloads of a server-sent event stream, with their event names.
    pub fn events(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for block in self.body.split("\n\n") {
            let mut name = String::from("message");
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                }
            }
            if !data.is_empty() {
                out.push((name, data.join("\n")));
            }
        }
        out
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// One request; any status is an answer (never panics on 4xx/5xx).
pub fn send(url: &str, method: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    send_with(&agent(), url, method, headers, body)
}

pub fn send_with(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let header = |name: &str| response.header(name).map(str::to_string);
    Reply {
        status: response.status(),
        content_type: response.content_type().to_string(),
        retry_after: header("Retry-After"),
        www_authenticate: header("WWW-Authenticate"),
        header_request_verdict: header("x-guardreasoner-request"),
        body: response.into_string().unwrap(),
    }
}

pub use guardreasoner_testkit::smollm2;

/// Sends only a request head (announcing a body it never sends) and reads the answer: how a
/// client sees a server that refuses a body by its declared length.
pub fn head_only(addr: SocketAddr, head: &str) -> Reply {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        content_type: String::new(),
        retry_after: None,
        www_authenticate: None,
        header_request_verdict: None,
        body: body.to_string(),
    }
}
