//! Helpers for the workspace's integration tests: the few lines of HTTP/1.1 that the fake
//! servers on loopback (hub, OpenAI-compatible servers, upstreams, download mirrors) need.
//! Tests only; every server built on it answers one request per connection (`Connection: close`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One request as a fake server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one request (line, headers, `Content-Length` body); `None` if the client went away.
pub fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// Writes a response with `Content-Length` and `Connection: close`; `extra_headers` are whole
/// `Name: value` lines. With `with_body` false (a HEAD answer) only the head is sent.
pub fn respond(
    mut stream: &TcpStream,
    status: u16,
    extra_headers: &[&str],
    body: &[u8],
    with_body: bool,
) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in extra_headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    if with_body {
        let _ = stream.write_all(body);
    }
}

/// The repository root (this crate lives at `crates/testkit`).
fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The benchmark data: `$GUARDREASONER_DATA_DIR`, else `../shared/data/guardreasoner` beside
/// the repository.
pub fn data_root() -> std::path::PathBuf {
    std::env::var_os("GUARDREASONER_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data/guardreasoner"))
}

/// A fetched test asset (`scripts/fetch-test-assets.sh`), under `$GUARDREASONER_TEST_ASSETS`
/// or `<repo>/.cache/test-assets`. `None` only when asset tests are skipped on purpose
/// (`GUARDREASONER_SKIP_ASSET_TESTS=1`); otherwise a missing asset fails the test with a message
/// saying how to fetch it.
pub fn test_asset(relative: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("GUARDREASONER_TEST_ASSETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/test-assets"));
    let path = dir.join(relative);
    if path.is_file() {
        return Some(path);
    }
    let skip = std::env::var("GUARDREASONER_SKIP_ASSET_TESTS").is_ok_and(|v| v == "1");
    assert!(
        skip,
        "{} is missing: run scripts/fetch-test-assets.sh (or set GUARDREASONER_SKIP_ASSET_TESTS=1)",
        path.display()
    );
    None
}

/// SmolLM2-135M-Instruct Q4_1, the real model of the end-to-end tests.
pub fn smollm2() -> Option<std::path::PathBuf> {
    test_asset("SmolLM2-135M-Instruct.Q4_1.gguf")
}
