//! `guardreasoner synth` against a real chat-completions server on loopback that injects
//! faults (429 with Retry-After, 500, malformed JSON, slow answers past the timeout, invalid
//! reasoning) and is killed mid-run with SIGKILL: every input row ends up accepted or rejected
//! exactly once.

use guardreasoner_testkit::{read_request, respond};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests seen per row, and valid answers given per row.
type Seen = Arc<Mutex<HashMap<String, (usize, usize)>>>;

/// A teacher that answers with valid reasoning for the labels it is given, after misbehaving in
/// a way that depends on the row: the first request of a row gets a 429 with Retry-After, a 500,
/// a malformed body or a slow answer past the client's timeout; the first answer of every third
/// row contradicts its labels; rows marked `ALWAYS_BAD` always do.
fn teacher() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || answer(stream, seen));
        }
    });
    format!("http://{addr}/v1")
}

fn answer(stream: std::net::TcpStream, seen: Seen) {
    let Some(http) = read_request(&stream) else {
        return;
    };
    let request: Value = serde_json::from_slice(&http.body).unwrap_or(Value::Null);
    let user = request
        .pointer("/messages/1/content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let prompt = user.lines().nth(1).unwrap_or("").to_string();
    let row: usize = prompt
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let (requests, valid) = {
        let mut seen = seen.lock().unwrap();
        let entry = seen.entry(prompt.clone()).or_default();
        entry.0 += 1;
        *entry
    };
    let reply = |status: u16, extra: &str, text: &str| {
        let mut headers = vec!["Content-Type: application/json"];
        if !extra.is_empty() {
            headers.push(extra);
        }
        respond(&stream, status, &headers, text.as_bytes(), true);
    };
    if requests == 1 {
        match row % 5 {
            0 => return reply(429, "Retry-After: 0", "{\"error\": \"slow down\"}"),
            1 => return reply(500, "", "{\"error\": \"boom\"}"),
            2 => return reply(200, "", "{\"choices\": [{\"message\": {\"content\": "),
            3 if row < 8 => {
                std::thread::sleep(Duration::from_millis(1500)); // past the client's timeout
                return reply(200, "", "{}");
            }
            _ => {}
        }
    }
    seen.lock().unwrap().entry(prompt.clone()).or_default().1 += 1;
    let labels: HashMap<&str, &str> = user
        .rsplit("Labels:\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_once(": "))
        .collect();
    let pick = |key: &str, decide: &str| match labels.get(key).copied() {
        Some("decide") | None => decide.to_string(),
        Some(l) => l.to_string(),
    };
    let (mut req, comp, resp) = (
        pick("Request", "harmful"),
        pick("Completion", "refusal"),
        pick("Response", "unharmful"),
    );
    if prompt.contains("ALWAYS_BAD") || (row % 3 == 1 && valid == 0) {
        req = if req == "harmful" {
            "unharmful".into()
        } else {
            "harmful".into()
        };
    }
    let content = format!(
        "# Task 1\n\n## Reasoning Step 1\nThe user writes: {prompt}.\n\n# Task 2\n\n## Reasoning Step 1\nLooking at the response.\n\n## Reasoning Step 2\nIt is what it is.\n\n# Task 3\n\n## Reasoning Step 1\nJudging the response.\n\n---\n\nAnswers: \nRequest: {req}\nCompletion: {comp}\nResponse: {resp}"
    );
    let text = json!({"choices": [{"message": {"role": "assistant", "content": content}}], "usage": {"prompt_tokens": 400, "completion_tokens": 120}}).to_string();
    reply(200, "", &text);
}

fn write_input(path: &Path, rows: usize) {
    let mut text = String::new();
    for i in 0..rows {
        let row = match i % 4 {
            0 => {
                json!({"prompt": format!("question {i}"), "response": "answer", "prompt_harm_label": "harmful", "response_refusal_label": "compliance", "response_harm_label": "harmful"})
            }
            1 => json!({"prompt": format!("question {i}"), "prompt_harm_label": "unharmful"}),
            2 => {
                json!({"prompt": format!("question {i}"), "response": "answer", "response_harm_label": "unharmful"})
            }
            _ => {
                json!({"prompt": format!("ALWAYS_BAD question {i}"), "prompt_harm_label": "harmful"})
            }
        };
        text += &format!("{row}\n");
    }
    std::fs::write(path, text).unwrap();
}

fn synth(input: &Path, out: &Path, url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_guardreasoner"));
    c.args([
        "synth",
        "--model",
        "teacher",
        "--concurrency",
        "3",
        "--max-retries",
        "5",
        "--max-attempts",
        "2",
        "--timeout-s",
        "1",
        "--backoff-ms",
        "5",
        "--price-input",
        "2.5",
        "--price-output",
        "10",
    ])
    .arg("--input")
    .arg(input)
    .arg("--out")
    .arg(out)
    .arg("--base-url")
    .arg(url)
    .env("OPENAI_API_KEY", "k")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

fn source_lines(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["source_line"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn every_row_accepted_or_rejected_exactly_once_across_faults_and_a_kill() {
    let url = teacher();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("labeled.jsonl");
    let rows = 24;
    write_input(&input, rows);
    let out = tmp.path().join("train.json");
    let rejects = tmp.path().join("train.rejects.jsonl");
    let mut child = synth(&input, &out, &url).spawn().unwrap();
    let started = Instant::now();
    while source_lines(&out).len() + source_lines(&rejects).len() < 6 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill(); // SIGKILL mid-run
    child.wait().unwrap();
    assert!(
        source_lines(&out).len() + source_lines(&rejects).len() < rows,
        "killed too late"
    );
    let resumed = synth(&input, &out, &url).output().unwrap();
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{log}");
    let mut all: Vec<u64> = source_lines(&out);
    let rejected = source_lines(&rejects);
    all.extend(&rejected);
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=rows as u64).collect::<Vec<_>>(),
        "each row exactly once"
    );
    let mut bad: Vec<u64> = rejected.clone();
    bad.sort_unstable();
    assert_eq!(
        bad,
        (4..=rows as u64).step_by(4).collect::<Vec<_>>(),
        "exactly the ALWAYS_BAD rows are rejected"
    );
    // accepted items are alpaca items with the given labels unchanged
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let item: Value = serde_json::from_str(line).unwrap();
        assert!(item["instruction"]
            .as_str()
            .unwrap()
            .starts_with("You are a classifier"));
        assert!(item["input"]
            .as_str()
            .unwrap()
            .starts_with("Human user:\nquestion "));
        let output = item["output"].as_str().unwrap();
        let src = item["source_line"].as_u64().unwrap();
        // given labels come back unchanged; the teacher decides the others
        let want = match (src - 1) % 4 {
            0 => "---\n\nAnswers: \nRequest: harmful\nCompletion: compliance\nResponse: harmful",
            1 => "---\n\nAnswers: \nRequest: unharmful\nCompletion: None\nResponse: None",
            _ => "harmful\nCompletion: refusal\nResponse: unharmful",
        };
        assert!(output.ends_with(want), "{output}");
    }
    let first = std::fs::read_to_string(&rejects).unwrap();
    let r: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(r["kind"], "contradicts_given_label");
    assert_eq!(r["attempts"], 2);
    // faults were met and retried, and the summary adds up over both runs
    assert!(
        log.contains("retrying") || log.contains("asking again"),
        "{log}"
    );
    assert!(log.contains("samples: 18 accepted, 6 rejected"), "{log}");
    assert!(log.contains("reasoning steps: 72 in all, 4.00 per sample (task 1: 1.00, task 2: 2.00, task 3: 1.00)"), "{log}");
    assert!(
        log.contains("rejected because contradicts_given_label: 6"),
        "{log}"
    );
    assert!(log.contains("per 1K samples"), "{log}");
}

#[test]
fn malformed_input_fails_before_any_request() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("labeled.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"ok\"}\n{\"prompt\": \"x\", \"prompt_harm_label\": \"maybe\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("o.json");
    let res = synth(&input, &out, "http://127.0.0.1:9/v1")
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("labeled.jsonl:2: field `prompt_harm_label`: `maybe`"),
        "{err}"
    );
    assert!(!out.exists());
}
