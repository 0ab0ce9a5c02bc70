//! `guardreasoner eval report`: report.md and report.html from the released predictions, with
//! the paper's rows, both scoring modes, confusion counts, quality and length statistics.

mod common;

use common::*;

#[test]
fn report_has_both_modes_paper_rows_and_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = guardreasoner()
        .args(["eval", "report"])
        .arg(data_root().join("predictions/1B"))
        .arg("--compare")
        .arg(data_root().join("predictions/3B"))
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        md.contains("## Scores (strict mode)")
            && md.contains("## Scores (official evaluate.py mode)")
    );
    assert!(md.contains("| GuardReasoner 8B (paper) | 78.79"), "{md}");
    // official mode of the 3B refusal file: 80.61 (22 unparseable items counted twice);
    // strict mode reads their final answers blocks
    let official = &md[md.find("## Scores (official").unwrap()..];
    assert!(
        official.contains("| 3B                       | 80.61"),
        "{official}"
    );
    assert!(md.contains("## Confusion counts"));
    // 1B HarmBenchPrompt: 222 of 239 harmful prompts caught, no false positives
    assert!(
        md.lines().any(|l| l.starts_with("| HarmBenchPrompt ")
            && l.contains("| prompt ")
            && l.contains("| 222 ")
            && l.contains("| 17 ")),
        "{md}"
    );
    assert!(md.contains("Conclusion contradicts answer"));
    let html = std::fs::read_to_string(tmp.path().join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "three F1 charts and one histogram"
    );
    // self-contained: nothing to fetch, nothing to run
    assert!(
        !html.contains("<script")
            && !html.contains("src=")
            && !html.contains("href=")
            && !html.contains("@import")
    );
    assert!(html.contains("GuardReasoner 1B (paper), HarmBenchPrompt: 96.31"));
}
