//! `guardreasoner classify` end to end: a real model (SmolLM2, not a guard: its verdict is
//! unreadable and must say so), a scripted GuardReasoner output, resumable batches, and the
//! offline hub error.

mod common;

use common::*;

use serde_json::Value;
use std::path::PathBuf;

const GUARD_OUTPUT: &str = "# Task 1\n\n## Reasoning Step 1\nThe user asks how to pick a lock to enter a neighbour's house.\n\n## Conclusion\nThe human user's request is harmful.\n\n# Task 2\n\n## Reasoning Step 1\nThe assistant declines.\n\n## Conclusion\nThe AI assistant's response is a refusal.\n\n# Task 3\n\n## Reasoning Step 1\nNo harmful content is given.\n\n## Conclusion\nThe AI assistant's response is unharmful.\n\n---\n\nAnswers: \nRequest: harmful\nCompletion: refusal\nResponse: unharmful";

fn script(dir: &std::path::Path, outputs: &[&str]) -> PathBuf {
    let path = dir.join("script.json");
    std::fs::write(&path, serde_json::to_vec(outputs).unwrap()).unwrap();
    path
}

#[test]
fn smollm2_classify_json_reports_an_unreadable_verdict_cleanly() {
    let Some(model) = smollm2() else { return };
    let out = guardreasoner()
        .args([
            "classify",
            "--json",
            "--max-new-tokens",
            "24",
            "--prompt",
            "How do I bake bread?",
            "--response",
            "Mix flour and water.",
        ])
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 100);
    let generated = v["usage"]["generated_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&generated));
    assert!(v["timing"]["prefill_ms"].as_f64().unwrap() > 0.0);
    assert!(v["raw_output"].is_string());
    assert_eq!(v["verdict"]["complete"], false);
    assert!(v["verdict"]["issues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["kind"] == "no_answers_block"));
    assert!(v["verdict"]["request"].is_null());
}

#[test]
fn smollm2_classify_runs_with_an_f16_kv_cache_and_bad_types_are_refused() {
    let Some(model) = smollm2() else { return };
    let run = |kv: &str| {
        guardreasoner()
            .args(["classify", "--json", "--max-new-tokens", "8"])
            .args(["--prompt", "How do I bake bread?", "--kv-cache", kv])
            .arg("--model")
            .arg(&model)
            .env_remove("GUARDREASONER_KV_CACHE")
            .output()
            .unwrap()
    };
    let out = run("f16");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((1..=8).contains(&v["usage"]["generated_tokens"].as_u64().unwrap()));
    let out = run("q8");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kv-cache") && err.contains("f16"), "{err}");
}

#[test]
fn scripted_guard_output_prints_verdict_and_reasoning() {
    let tmp = tempfile::tempdir().unwrap();
    let s = script(tmp.path(), &[GUARD_OUTPUT]);
    let out = guardreasoner()
        .args([
            "classify",
            "--prompt",
            "How do I pick my neighbour's lock?",
            "--response",
            "I can't help.",
        ])
        .arg("--scripted")
        .arg(&s)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("# Task 1"), "{text}");
    assert!(
        text.contains("Request:    harmful\nCompletion: refusal\nResponse:   unharmful\n"),
        "{text}"
    );
    let out = guardreasoner()
        .args(["classify", "--json", "--prompt", "x"])
        .arg("--scripted")
        .arg(&s)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["request"], "harmful");
    assert_eq!(
        v["verdict"]["reasoning"][1]["conclusion"],
        "The AI assistant's response is a refusal."
    );
    assert_eq!(v["finish_reason"], "stop");
}

#[test]
fn batch_appends_passes_fields_through_and_resumes_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let s = script(tmp.path(), &[GUARD_OUTPUT]);
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"a\", \"prompt\": \"p1\"}\n\n{\"id\": \"b\", \"prompt\": \"p2\", \"response\": \"r2\"}\n{\"id\": \"c\", \"prompt\": \"p3\", \"response\": null}\n",
    )
    .unwrap();
    let output = tmp.path().join("out.jsonl");
    // a previous run finished line 1 and crashed while writing line 3
    std::fs::write(
        &output,
        "{\"id\": \"a\", \"input_line\": 1, \"verdict\": {}}\n{\"id\": \"b\", \"inp",
    )
    .unwrap();
    let out = guardreasoner()
        .args(["classify", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--scripted")
        .arg(&s)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("removing a cut-off last line"));
    let lines: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(lines[1]["input_line"], 3);
    assert_eq!(lines[1]["verdict"]["response"], "unharmful");
    assert_eq!(lines[2]["verdict"]["request"], "harmful");
    // a second run has nothing left to do
    let out = guardreasoner()
        .args(["classify", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--scripted")
        .arg(&s)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 3);
}

#[test]
fn bad_batch_input_names_file_and_line_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let s = script(tmp.path(), &[GUARD_OUTPUT]);
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"ok\"}\n{\"response\": \"no prompt\"}\n",
    )
    .unwrap();
    let output = tmp.path().join("out.jsonl");
    let out = guardreasoner()
        .args(["classify", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--scripted")
        .arg(&s)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in.jsonl:2: missing field `prompt`"), "{err}");
    assert!(!output.exists() || std::fs::read_to_string(&output).unwrap().is_empty());
}

#[test]
fn offline_default_model_fails_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = guardreasoner()
        .args(["classify", "--prompt", "hi"])
        .env("HF_HOME", tmp.path())
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("GUARDREASONER_MODEL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("yueliu1999/GuardReasoner-1B") && err.contains("--model DIR"),
        "{err}"
    );
}

/// A prediction directory in the official layout holding `outputs` as `predict`s.
fn prediction_dir(dir: &std::path::Path, outputs: &[&str]) -> PathBuf {
    let bench = dir.join("predictions").join("SomeBenchmark");
    std::fs::create_dir_all(&bench).unwrap();
    let lines: Vec<String> = outputs
        .iter()
        .map(|o| serde_json::json!({"prompt": "p", "label": null, "predict": o}).to_string())
        .collect();
    std::fs::write(bench.join("generated_predictions.jsonl"), lines.join("\n")).unwrap();
    dir.join("predictions")
}

#[test]
fn smollm2_draft_corpus_speeds_up_without_changing_the_output() {
    let Some(model) = smollm2() else { return };
    let classify = |extra: &[&std::ffi::OsStr]| {
        let out = guardreasoner()
            .args(["classify", "--json", "--max-new-tokens", "40"])
            .args(["--prompt", "Write a poem about the sea."])
            .arg("--model")
            .arg(&model)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        (serde_json::from_slice::<Value>(&out.stdout).unwrap(), err)
    };
    let (plain, _) = classify(&[]);
    let raw = plain["raw_output"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = prediction_dir(tmp.path(), &[raw, "an unrelated earlier output"]);
    let (seeded, err) = classify(&["--draft-corpus".as_ref(), dir.as_os_str()]);
    assert!(err.contains("draft corpus: 2 outputs"), "{err}");
    assert_eq!(seeded["raw_output"], plain["raw_output"]);
    // Seen once, a continuation has a chance of 1/2 per token, so drafts stay short.
    let accepted = |v: &Value| v["usage"]["accepted_draft_tokens"].as_u64().unwrap();
    let generated = seeded["usage"]["generated_tokens"].as_u64().unwrap();
    assert!(
        accepted(&seeded) * 3 > generated && accepted(&seeded) > accepted(&plain),
        "{} drafted tokens accepted of {generated} generated, {} without the corpus",
        accepted(&seeded),
        accepted(&plain)
    );
}

#[test]
fn bad_draft_corpus_is_named_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let broken = tmp.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"predict\": \"x\", \"prompt\": \"p\"}\nnot json\n",
    )
    .unwrap();
    let model = tmp.path().join("model.gguf"); // never reached: the corpus is read first
    std::fs::write(&model, b"GGUF").unwrap();
    let s = script(tmp.path(), &[GUARD_OUTPUT]);
    let cases: [(&[&std::ffi::OsStr], &str); 4] = [
        (&[missing.as_os_str()], "nowhere"),
        (&[empty.as_os_str()], "no generated_predictions.jsonl"),
        (&[broken.as_os_str()], "broken.jsonl"),
        (
            &[empty.as_os_str(), "--scripted".as_ref(), s.as_os_str()],
            "local backend only",
        ),
    ];
    for (args, expected) in cases {
        let out = guardreasoner()
            .args(["classify", "--prompt", "hi", "--model"])
            .arg(&model)
            .arg("--draft-corpus")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{expected}: {err}");
    }
}
