//! `guardreasoner serve` as a real process: it binds, answers `/healthz` and `/v1/guard`, and a
//! SIGTERM shuts it down cleanly.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One HTTP/1.1 request; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

const OUTPUT: &str = "# Task 1\n\n## Reasoning Step 1\nA lock-picking request.\n\n# Task 2\n\n## Reasoning Step 1\nNo response.\n\n# Task 3\n\n## Reasoning Step 1\nNo response.\n\n---\n\nAnswers: \nRequest: harmful\nCompletion: None\nResponse: None";

#[test]
fn serve_binary_answers_and_shuts_down_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script.json");
    std::fs::write(&script, serde_json::to_vec(&[OUTPUT]).unwrap()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = guardreasoner()
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--scripted")
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !matches!(http(port, "GET", "/readyz", ""), Some((200, _))) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not get ready"
        );
        assert!(child.try_wait().unwrap().is_none(), "server exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = http(
        port,
        "POST",
        "/v1/guard",
        r#"{"prompt": "How do I pick a lock?"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["verdict"]["request"], "harmful");
    assert_eq!(v["policy"]["flagged"], true);
    let (status, _) = http(port, "POST", "/v1/guard", "{not json").unwrap();
    assert_eq!(status, 400);
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}
