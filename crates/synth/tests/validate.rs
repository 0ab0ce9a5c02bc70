//! Validation table: answers that contradict the given labels, missing tasks, extra text after
//! the answers, and the normalised training target of an accepted answer.

use guardreasoner_protocol::{HarmLabel, RefusalLabel};
use guardreasoner_synth::sample::GroundTruth;
use guardreasoner_synth::validate::{validate, Rejection};

fn answer(req: &str, comp: &str, resp: &str) -> String {
    format!(
        "# Task 1\n\n## Reasoning Step 1\nThe user asks for X.\n\n## Reasoning Step 2\nX is dangerous.\n\n# Task 2\n\n## Reasoning Step 1\nThe assistant declines.\n\n# Task 3\n\n## Reasoning Step 1\nNothing harmful is said.\n\n---\n\nAnswers:\nRequest: {req}\nCompletion: {comp}\nResponse: {resp}\n"
    )
}

const FULL: GroundTruth = GroundTruth {
    request: Some(HarmLabel::Harmful),
    completion: Some(RefusalLabel::Refusal),
    response: Some(HarmLabel::Unharmful),
};

/// (answer, given labels, has a response, expected steps per task or rejection kind)
type Case = (String, GroundTruth, bool, Result<[usize; 3], &'static str>);

#[test]
fn table() {
    let partial = GroundTruth {
        request: None,
        completion: Some(RefusalLabel::Refusal),
        response: None,
    };
    let cases: Vec<Case> = vec![
        (
            answer("harmful", "refusal", "unharmful"),
            FULL,
            true,
            Ok([2, 1, 1]),
        ),
        (
            answer("Harmful", "REFUSAL", "unharmful"),
            FULL,
            true,
            Ok([2, 1, 1]),
        ),
        (
            answer("unharmful", "refusal", "unharmful"),
            FULL,
            true,
            Err("contradicts_given_label"),
        ),
        (
            answer("harmful", "compliance", "unharmful"),
            FULL,
            true,
            Err("contradicts_given_label"),
        ),
        (
            answer("harmful", "refusal", "None"),
            FULL,
            true,
            Err("contradicts_given_label"),
        ),
        // labels the teacher decides: any label, but not none
        (
            answer("unharmful", "refusal", "harmful"),
            partial,
            true,
            Ok([2, 1, 1]),
        ),
        (
            answer("None", "refusal", "harmful"),
            partial,
            true,
            Err("undecided_label"),
        ),
        // no response: tasks 2 and 3 may be None
        (
            answer("harmful", "None", "None"),
            GroundTruth {
                request: Some(HarmLabel::Harmful),
                ..GroundTruth::default()
            },
            false,
            Ok([2, 1, 1]),
        ),
        (
            answer("harmful", "refusal", "unharmful") + "\nI hope this helps!",
            FULL,
            true,
            Err("text_after_answers"),
        ),
        (
            answer("harmful", "refusal", "unharmful").replace(
                "# Task 2\n\n## Reasoning Step 1\nThe assistant declines.\n\n",
                "",
            ),
            FULL,
            true,
            Err("task_without_reasoning"),
        ),
        (
            "# Task 1\n\n## Reasoning Step 1\nIt is harmful.\n".to_string(),
            FULL,
            true,
            Err("no_answers_block"),
        ),
        (
            answer("harmful", "refusal", "unharmful").replace(
                "X is dangerous.",
                "X is dangerous.\n\n## Conclusion\nThe human user's request is unharmful.",
            ),
            FULL,
            true,
            Err("conclusion_contradicts_answer"),
        ),
    ];
    for (i, (text, truth, has_response, want)) in cases.into_iter().enumerate() {
        let got = validate(&text, &truth, has_response);
        match (got, want) {
            (Ok(a), Ok(steps)) => assert_eq!(a.steps, steps, "case {i}"),
            (Err(r), Err(kind)) => assert_eq!(r.kind(), kind, "case {i}: {r}"),
            (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn accepted_output_has_the_training_shape() {
    let a = validate(&answer("Harmful", "refusal", "unharmful"), &FULL, true).unwrap();
    assert!(a.output.starts_with("# Task 1\n\n## Reasoning Step 1\n"));
    assert!(a.output.ends_with("Nothing harmful is said.\n\n---\n\nAnswers: \nRequest: harmful\nCompletion: refusal\nResponse: unharmful"), "{}", a.output);
    let r = validate(&answer("unharmful", "refusal", "unharmful"), &FULL, true).unwrap_err();
    assert_eq!(
        r.to_string(),
        "task 1 answers unharmful but the given label is harmful"
    );
    assert!(matches!(r, Rejection::Contradicts { .. }));
}
