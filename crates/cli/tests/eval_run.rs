//! `guardreasoner eval run` end to end: killed mid-run with a real SIGKILL and resumed, every
//! item appears exactly once and in order; the scores of a scripted run are the ones counted by
//! hand from the benchmark labels; a real model (SmolLM2) runs and resumes too.

mod common;

use common::*;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ANSWERS: &str = "# Task 1\n\n## Reasoning Step 1\nScripted.\n\n---\n\nAnswers: \nRequest: harmful\nCompletion: refusal\nResponse: unharmful";
const BENCHMARKS: [(&str, &str); 3] = [
    ("SimpleSafetyTests", "0_0_SimpleSafetyTests.json"),
    ("XSTestResponseRefusal", "0_7_xstest_response_refusal.json"),
    ("HarmBenchResponse", "0_5_harmbench_response.json"),
];
const LIMIT: usize = 12;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count_lines(out: &Path) -> usize {
    BENCHMARKS
        .iter()
        .map(|(b, _)| {
            std::fs::read_to_string(out.join(b).join("generated_predictions.jsonl"))
                .map(|t| t.matches('\n').count())
                .unwrap_or(0)
        })
        .sum()
}

fn run_cmd(out: &Path, script: &Path, delay_ms: u64, limit: usize) -> Command {
    let mut c = guardreasoner();
    c.args([
        "eval",
        "run",
        "--benchmarks",
        "SimpleSafetyTests,XSTestResponseRefusal,HarmBenchResponse",
        "--limit",
    ])
    .arg(limit.to_string())
    .arg("--out")
    .arg(out)
    .arg("--scripted")
    .arg(script)
    .arg("--scripted-delay-ms")
    .arg(delay_ms.to_string())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

#[test]
fn killed_run_resumes_with_every_item_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script.json");
    std::fs::write(&script, serde_json::to_vec(&[ANSWERS]).unwrap()).unwrap();
    let out = tmp.path().join("run");
    let mut child = run_cmd(&out, &script, 60, LIMIT).spawn().unwrap();
    let started = Instant::now();
    while count_lines(&out) < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, mid-run
    child.wait().unwrap();
    let before = count_lines(&out);
    assert!(before < 3 * LIMIT, "killed too late to test resuming");
    // a write cut off by the crash: half a line at the end of the file being written
    let first = out.join("SimpleSafetyTests/generated_predictions.jsonl");
    if lines(&first).len() < LIMIT {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&first)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"prompt\": \"You are a cl").unwrap();
    }
    let resumed = run_cmd(&out, &script, 0, LIMIT).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    for (name, file) in BENCHMARKS {
        let items: Vec<Value> = serde_json::from_slice(
            &std::fs::read(data_root().join("benchmark").join(file)).unwrap(),
        )
        .unwrap();
        let got = lines(&out.join(name).join("generated_predictions.jsonl"));
        assert_eq!(got.len(), LIMIT, "{name}");
        for (line, item) in got.iter().zip(&items) {
            let prompt = format!(
                "{}\n{}",
                item["instruction"].as_str().unwrap(),
                item["input"].as_str().unwrap()
            );
            assert_eq!(
                line["prompt"],
                prompt.as_str(),
                "{name}: items out of order or duplicated"
            );
            assert_eq!(line["label"], item["output"], "{name}");
            assert_eq!(line["predict"], ANSWERS);
        }
    }
    let run: Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "complete");
    assert_eq!(run["settings"]["max_new_tokens"], 2048);

    // scores: the scripted guard always answers harmful / refusal / unharmful
    let score = guardreasoner()
        .args(["eval", "score", "--json", "--predictions"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(score.status.success());
    let doc: Value = serde_json::from_slice(&score.stdout).unwrap();
    let f1 = |b: &str| {
        doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["benchmark"] == b)
            .unwrap()["f1"]
            .as_f64()
            .unwrap()
    };
    let labels = |file: &str| -> Vec<String> {
        let items: Vec<Value> = serde_json::from_slice(
            &std::fs::read(data_root().join("benchmark").join(file)).unwrap(),
        )
        .unwrap();
        items[..LIMIT]
            .iter()
            .map(|i| i["output"].as_str().unwrap().to_string())
            .collect()
    };
    // always predicting the positive class: F1 = 2P / (2P + N)
    let always_positive = |labels: &[String], pos: &str| {
        let p = labels.iter().filter(|l| *l == pos).count() as f64;
        100.0 * 2.0 * p / (2.0 * p + (labels.len() as f64 - p))
    };
    assert!(
        (f1("SimpleSafetyTests") - always_positive(&labels(BENCHMARKS[0].1), "harmful")).abs()
            < 1e-9
    );
    assert!(
        (f1("XSTestResponseRefusal") - always_positive(&labels(BENCHMARKS[1].1), "refusal")).abs()
            < 1e-9
    );
    // never predicting the positive class: F1 = 0
    assert_eq!(f1("HarmBenchResponse"), 0.0);
}

#[test]
fn changed_decoding_settings_are_refused_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script.json");
    std::fs::write(&script, serde_json::to_vec(&[ANSWERS]).unwrap()).unwrap();
    let out = tmp.path().join("run");
    assert!(run_cmd(&out, &script, 0, 1)
        .output()
        .unwrap()
        .status
        .success());
    let mut second = run_cmd(&out, &script, 0, 1);
    second.args(["--max-new-tokens", "100"]);
    let res = second.output().unwrap();
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("max_new_tokens = 2048, now 100"));
}

#[test]
fn smollm2_runs_and_resumes() {
    let Some(model) = smollm2() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let cmd = |limit: &str| {
        guardreasoner()
            .args([
                "eval",
                "run",
                "--benchmarks",
                "SimpleSafetyTests,HarmBenchPrompt",
                "--max-new-tokens",
                "8",
                "--limit",
                limit,
            ])
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    assert!(cmd("1").status.success());
    let res = cmd("2");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(String::from_utf8_lossy(&res.stderr)
        .contains("SimpleSafetyTests: 2 items (1 generated now, 1 already there)"));
    for b in ["SimpleSafetyTests", "HarmBenchPrompt"] {
        let got = lines(&out.join(b).join("generated_predictions.jsonl"));
        assert_eq!(got.len(), 2);
        assert!(got
            .iter()
            .all(|l| l["generated_tokens"].as_u64().unwrap() <= 8));
    }
    // strict scoring reads them; SmolLM2 is no guard, so its answers are parse failures
    let score = guardreasoner()
        .args(["eval", "score", "--json", "--predictions"])
        .arg(&out)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&score.stdout).unwrap();
    let sst = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["benchmark"] == "SimpleSafetyTests")
        .unwrap();
    assert_eq!(sst["parse_failures"], 2);
}

/// A completions server on loopback that answers 429 (with Retry-After) or 500 to every third
/// request and a fixed guard output otherwise.
fn flaky_completions_server() -> String {
    use guardreasoner_testkit::{read_request, respond};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            if read_request(&stream).is_none() {
                continue;
            }
            let ok = serde_json::json!({"choices": [{"text": ANSWERS, "finish_reason": "stop"}], "usage": {"prompt_tokens": 300, "completion_tokens": 20}}).to_string();
            let json = "Content-Type: application/json";
            match n % 3 {
                1 => respond(
                    &stream,
                    429,
                    &[json, "Retry-After: 0"],
                    b"{\"error\": \"busy\"}",
                    true,
                ),
                2 if n % 2 == 0 => respond(&stream, 500, &[json], b"{\"error\": \"oops\"}", true),
                _ => respond(&stream, 200, &[json], ok.as_bytes(), true),
            }
        }
    });
    format!("http://{addr}/v1")
}

#[test]
fn remote_backend_run_survives_429_and_500_and_logs_retries() {
    let url = flaky_completions_server();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let res = guardreasoner()
        .args([
            "eval",
            "run",
            "--backend",
            "openai",
            "--model",
            "guard",
            "--concurrency",
            "3",
            "--limit",
            "5",
        ])
        .args(["--benchmarks", "SimpleSafetyTests,XSTestResponseRefusal"])
        .arg("--base-url")
        .arg(&url)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{log}");
    assert!(
        log.contains("answered HTTP 429") && log.contains("answered HTTP 500"),
        "{log}"
    );
    for b in ["SimpleSafetyTests", "XSTestResponseRefusal"] {
        let got = lines(&out.join(b).join("generated_predictions.jsonl"));
        assert_eq!(got.len(), 5, "{b}: nothing lost, nothing twice");
        assert!(got
            .iter()
            .all(|l| l["predict"] == ANSWERS && l["generated_tokens"] == 20));
    }
    let run: Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert!(run["settings"]["backend"]
        .as_str()
        .unwrap()
        .starts_with("openai:"));
}
