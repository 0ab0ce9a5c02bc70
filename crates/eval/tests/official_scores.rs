//! `--mode official` must give the official evaluate.py's numbers: on the released models'
//! prediction files (values published with the acceptance of the foundation issue) and on
//! synthetic prediction files scored by an independent pandas/scikit-learn re-implementation
//! (`scripts/eval/make_official_fixtures.py`).

mod common;

use guardreasoner_eval::data::DataDir;
use guardreasoner_eval::score::{score_dir, PairOutcome};
use guardreasoner_eval::{Benchmark, ScoreMode};
use guardreasoner_protocol::Task;

fn f1(card: &guardreasoner_eval::Scorecard, b: Benchmark, t: Task) -> String {
    match card.get(b, t) {
        Some(PairOutcome::Scored(s)) => format!("{:.2}", s.f1),
        other => panic!("{b} {t}: {other:?}"),
    }
}

#[test]
fn released_1b_and_3b_predictions_score_as_published() {
    let root = common::data_root();
    let data = DataDir::new(&root);
    let expected = [
        ("1B", ["96.31", "89.34", "98.99", "84.69", "90.68", "91.05"]),
        (
            "3B",
            ["89.10", "91.39", "100.00", "86.06", "91.36", "80.61"],
        ),
    ];
    for (model, values) in expected {
        let card = score_dir(
            &root.join("predictions").join(model),
            Some(&data),
            ScoreMode::Official,
        );
        let got = [
            f1(&card, Benchmark::HarmBenchPrompt, Task::Prompt),
            f1(&card, Benchmark::AegisSafetyTest, Task::Prompt),
            f1(&card, Benchmark::SimpleSafetyTests, Task::Prompt),
            f1(&card, Benchmark::HarmBenchResponse, Task::Response),
            f1(&card, Benchmark::XSTestResponseHarmful, Task::Response),
            f1(&card, Benchmark::XSTestResponseRefusal, Task::Refusal),
        ];
        assert_eq!(got, values, "{model}");
        assert_eq!(
            card.get(Benchmark::ToxicChat, Task::Prompt),
            Some(&PairOutcome::Missing)
        );
        assert!(card.average(Task::Prompt).unwrap().partial());
    }
}

#[test]
fn synthetic_predictions_match_independent_reimplementation() {
    let root = common::data_root();
    let data = DataDir::new(&root);
    let dir = common::fixtures().join("official");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let mut checked = 0;
    let mut errors = 0;
    for (run, rows) in expected.as_object().unwrap() {
        let card = score_dir(&dir.join(run), Some(&data), ScoreMode::Official);
        for row in rows.as_array().unwrap() {
            let b = Benchmark::from_name(row["benchmark"].as_str().unwrap()).unwrap();
            let t: Task = row["task"].as_str().unwrap().parse().unwrap();
            let outcome = card.get(b, t).unwrap();
            match (row.get("f1"), outcome) {
                (Some(want), PairOutcome::Scored(s)) => {
                    let want = want.as_f64().unwrap();
                    assert!(
                        (s.f1 - want).abs() < 1e-9,
                        "{run} {b} {t}: {} != {want}",
                        s.f1
                    );
                    assert_eq!(
                        s.lines as u64,
                        row["lines"].as_u64().unwrap(),
                        "{run} {b} {t}"
                    );
                }
                (None, PairOutcome::Error(e)) => {
                    let python = row["error"].as_str().unwrap();
                    let same_kind = (python.contains("multiclass") && e.contains("multiclass"))
                        || (python.contains("UnboundLocalError")
                            && e.contains("UnboundLocalError"))
                        || (python.contains("pos_label") && e.contains("pos_label"));
                    assert!(same_kind, "{run} {b} {t}: python `{python}` vs ours `{e}`");
                    errors += 1;
                }
                (want, got) => panic!("{run} {b} {t}: expected {want:?}, got {got:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 39);
    assert!(errors > 0 && errors < checked);
}
