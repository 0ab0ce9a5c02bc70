//! `guardreasoner eval score` end to end: the exact official numbers, the JSON document, and a
//! bad prediction file failing loudly without hiding the good ones.

mod common;

use common::*;

#[test]
fn official_mode_prints_the_published_values() {
    for (model, values) in [
        ("1B", ["96.31", "89.34", "98.99", "84.69", "90.68", "91.05"]),
        (
            "3B",
            ["89.10", "91.39", "100.00", "86.06", "91.36", "80.61"],
        ),
    ] {
        let out = guardreasoner()
            .args(["eval", "score", "--mode", "official", "--predictions"])
            .arg(data_root().join("predictions").join(model))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let f1_rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| F1")).collect();
        assert_eq!(f1_rows.len(), 3, "{text}");
        let cells = |row: &str| -> Vec<String> {
            row.split('|')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect()
        };
        let prompt = cells(f1_rows[0]);
        let response = cells(f1_rows[1]);
        let refusal = cells(f1_rows[2]);
        // columns: F1, ToxicChat, HarmBenchPrompt, OpenAIModeration, Aegis, SST, WildGuard, avg
        assert_eq!(
            [&prompt[2], &prompt[4], &prompt[5]],
            [values[0], values[1], values[2]],
            "{model}"
        );
        // columns: F1, HarmBenchResponse, SafeRLHF, BeaverTails, XSTest, WildGuard, avg
        assert_eq!(
            [&response[1], &response[4]],
            [values[3], values[4]],
            "{model}"
        );
        assert_eq!(refusal[1], values[5], "{model}");
        assert_eq!(prompt[1], "missing");
        assert!(prompt[7].contains("partial 3/6"), "{}", prompt[7]);
    }
}

#[test]
fn json_has_one_object_per_pair() {
    let out = guardreasoner()
        .args(["eval", "score", "--json", "--predictions"])
        .arg(data_root().join("predictions/1B"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["mode"], "strict");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 13);
    let hb = results
        .iter()
        .find(|r| r["benchmark"] == "HarmBenchPrompt")
        .unwrap();
    assert_eq!(hb["task"], "prompt");
    assert_eq!(hb["status"], "scored");
    assert!(hb["f1"].as_f64().unwrap() > 90.0);
    assert_eq!(hb["n"], 239);
    assert!(hb["precision"].is_number() && hb["confusion"]["tp"].is_number());
    let tc = results
        .iter()
        .find(|r| r["benchmark"] == "ToxicChat")
        .unwrap();
    assert_eq!(tc["status"], "missing");
    assert!(tc["f1"].is_null());
    assert_eq!(doc["averages"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_prediction_file_fails_with_file_and_line_and_keeps_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = data_root().join("predictions/1B/HarmBenchPrompt");
    let good = tmp.path().join("HarmBenchPrompt");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::copy(
        src.join("generated_predictions.jsonl"),
        good.join("generated_predictions.jsonl"),
    )
    .unwrap();
    let bad = tmp.path().join("AegisSafetyTest");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("generated_predictions.jsonl"),
        "{\"prompt\": \"p\", \"label\": \"harmful\", \"predict\": \"x\"}\nnot json\n",
    )
    .unwrap();
    let out = guardreasoner()
        .args(["eval", "score", "--mode", "official", "--predictions"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AegisSafetyTest/generated_predictions.jsonl:2: invalid JSON"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("96.31"), "{stdout}");
}

#[test]
fn empty_or_missing_directory_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = guardreasoner()
        .args(["eval", "score", "--predictions"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no prediction files under"));
    let out = guardreasoner()
        .args(["eval", "score", "--predictions", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir: not a directory"));
}

#[test]
fn data_fetch_offline_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = guardreasoner()
        .args([
            "data",
            "fetch",
            "--base-url",
            "http://127.0.0.1:9/none",
            "--data",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "error: download of http://127.0.0.1:9/none/0_0_SimpleSafetyTests.json failed"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("GUARDREASONER_DATA_DIR"), "{stderr}");
}
