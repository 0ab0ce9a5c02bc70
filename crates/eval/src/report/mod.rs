//! `eval report`: a run's results as `report.md` and a self-contained `report.html`.
//!
//! Contents: the three tables in both scoring modes with the paper's published rows beside
//! them (and any `--compare` runs), per-benchmark confusion counts, parse- and
//! consistency-failure rates, the reasoning-length distribution, and latency/throughput. Charts
//! are inline SVG; the HTML needs no network and no scripts.

pub mod paper;
pub mod stats;
pub mod svg;

use crate::benchmark::{BenchmarkTask, PAIRS, TABLE_ORDER};
use crate::data::DataDir;
use crate::score::{score_dir, PairOutcome, ScoreMode, Scorecard};
use crate::table::{markdown_table, task_title};
use guardreasoner_protocol::Task;
use paper::PAPER;
use stats::{quantile, BenchmarkStats};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use svg::escape;

/// One run as the report sees it.
pub struct RunData {
    pub name: String,
    pub dir: PathBuf,
    pub strict: Scorecard,
    pub official: Scorecard,
    pub stats: Vec<BenchmarkStats>,
    pub settings: Option<serde_json::Value>,
}

impl RunData {
    pub fn load(dir: &Path, data: Option<&DataDir>) -> RunData {
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().to_string(),
        );
        let settings = std::fs::read(dir.join("run.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        RunData {
            name,
            dir: dir.to_path_buf(),
            strict: score_dir(dir, data, ScoreMode::Strict),
            official: score_dir(dir, data, ScoreMode::Official),
            stats: stats::collect(dir),
            settings,
        }
    }

    fn card(&self, mode: ScoreMode) -> &Scorecard {
        match mode {
            ScoreMode::Strict => &self.strict,
            ScoreMode::Official => &self.official,
        }
    }
}

/// The report of a main run and the runs it is compared with.
pub struct Report {
    pub runs: Vec<RunData>,
}

fn cell(outcome: Option<&PairOutcome>) -> String {
    match outcome {
        Some(PairOutcome::Scored(s)) => format!("{:.2}", s.f1),
        Some(PairOutcome::Error(_)) => "error".into(),
        _ => "–".into(),
    }
}

fn avg_cell(card: &Scorecard, task: Task) -> String {
    match card.average(task) {
        Some(a) => match a.f1 {
            Some(f) if a.partial() => format!("{f:.2} ({}/{})", a.scored, a.total),
            Some(f) => format!("{f:.2}"),
            None => "–".into(),
        },
        None => "–".into(),
    }
}

impl Report {
    /// The rows (header, body) of one task's F1 table in one mode.
    fn f1_table(&self, task: Task, mode: ScoreMode) -> (Vec<String>, Vec<Vec<String>>) {
        let pairs: Vec<&BenchmarkTask> = PAIRS.iter().filter(|p| p.task == task).collect();
        let mut header = vec!["Model".to_string()];
        header.extend(pairs.iter().map(|p| p.benchmark.name().to_string()));
        header.push("Weighted Avg.".into());
        let mut rows = Vec::new();
        for run in &self.runs {
            let card = run.card(mode);
            let mut row = vec![run.name.clone()];
            row.extend(pairs.iter().map(|p| cell(card.get(p.benchmark, p.task))));
            row.push(avg_cell(card, task));
            rows.push(row);
        }
        for paper in &PAPER {
            let mut row = vec![paper.model.to_string()];
            row.extend(pairs.iter().map(|p| {
                paper
                    .f1(p.benchmark, p.task)
                    .map_or("–".into(), |f| format!("{f:.2}"))
            }));
            row.push(
                paper
                    .average(task)
                    .map_or("–".into(), |f| format!("{f:.2}")),
            );
            rows.push(row);
        }
        (header, rows)
    }

    fn confusion_rows(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let header = [
            "Benchmark",
            "Task",
            "TP",
            "FP",
            "FN",
            "TN",
            "Precision",
            "Recall",
            "Accuracy",
            "Parse failures",
            "Skipped",
        ]
        .map(String::from)
        .to_vec();
        let mut rows = Vec::new();
        let Some(run) = self.runs.first() else {
            return (header, rows);
        };
        for r in &run.strict.results {
            if let PairOutcome::Scored(s) = &r.outcome {
                if let Some(c) = s.confusion {
                    rows.push(vec![
                        r.pair.benchmark.name().into(),
                        r.pair.task.name().into(),
                        c.tp.to_string(),
                        c.fp.to_string(),
                        c.fn_.to_string(),
                        c.tn.to_string(),
                        format!("{:.2}", 100.0 * c.precision()),
                        format!("{:.2}", 100.0 * c.recall()),
                        format!("{:.2}", 100.0 * c.accuracy()),
                        s.parse_failures.to_string(),
                        s.skipped.to_string(),
                    ]);
                }
            }
        }
        (header, rows)
    }

    fn quality_rows(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let unit = self.runs.first().map_or("tokens", |r| {
            if r.stats.iter().all(|s| s.lengths_are_tokens) {
                "tokens"
            } else {
                "words"
            }
        });
        let header = vec![
            "Benchmark".into(),
            "Lines".into(),
            "No Answers block".into(),
            "Conclusion contradicts answer".into(),
            format!("Reasoning median ({unit})"),
            format!("p90 ({unit})"),
            format!("max ({unit})"),
            "Latency median (ms)".into(),
            "Latency p90 (ms)".into(),
            "Tokens/s".into(),
        ];
        let mut rows = Vec::new();
        if let Some(run) = self.runs.first() {
            for s in &run.stats {
                let q = |p| quantile(&s.lengths, p).map_or("–".into(), |v: usize| v.to_string());
                let l = |p| {
                    quantile(&s.latencies_ms, p).map_or("–".into(), |v: f64| format!("{v:.0}"))
                };
                rows.push(vec![
                    s.benchmark.name().into(),
                    s.lines.to_string(),
                    format!("{} ({:.1}%)", s.no_answers, s.rate(s.no_answers)),
                    format!("{} ({:.1}%)", s.inconsistent, s.rate(s.inconsistent)),
                    q(0.5),
                    q(0.9),
                    q(1.0),
                    l(0.5),
                    l(0.9),
                    s.tokens_per_second()
                        .map_or("–".into(), |t| format!("{t:.1}")),
                ]);
            }
        }
        (header, rows)
    }

    fn settings_text(&self) -> String {
        let mut s = String::new();
        for run in &self.runs {
            let _ = write!(s, "- `{}` ({})", run.name, run.dir.display());
            if let Some(v) = &run.settings {
                let _ = write!(s, ": {}", v["settings"]);
            }
            s.push('\n');
        }
        s
    }

    /// `report.md`.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let title = self.runs.first().map_or("", |r| r.name.as_str());
        let _ = writeln!(out, "# GuardReasoner evaluation report: {title}\n");
        let _ = writeln!(out, "Runs:\n\n{}", self.settings_text());
        out.push_str("F1 x100 with `harmful` (prompt, response) or `refusal` as the positive class; averages weighted by each file's line count, `(k/n)` when only k of the paper's n benchmarks were run. `–`: not run.\n\n");
        for (mode, name) in [
            (ScoreMode::Strict, "strict"),
            (ScoreMode::Official, "official evaluate.py"),
        ] {
            let _ = writeln!(out, "## Scores ({name} mode)\n");
            for task in TABLE_ORDER {
                let (h, rows) = self.f1_table(task, mode);
                let _ = writeln!(
                    out,
                    "### {}\n\n{}",
                    task_title(task),
                    markdown_table(&h, &rows)
                );
            }
        }
        let (h, rows) = self.confusion_rows();
        let _ = writeln!(
            out,
            "## Confusion counts (strict mode, {title})\n\n{}",
            markdown_table(&h, &rows)
        );
        let (h, rows) = self.quality_rows();
        let _ = writeln!(
            out,
            "## Output quality, reasoning length, latency ({title})\n\n{}",
            markdown_table(&h, &rows)
        );
        out
    }

    /// `report.html`: the same content, self-contained, with inline SVG charts.
    pub fn html(&self) -> String {
        let title = self.runs.first().map_or("", |r| r.name.as_str());
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>GuardReasoner report: {t}</title><style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}}th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}h2{{border-bottom:1px solid #ddd}}</style></head><body><h1>GuardReasoner evaluation report: {t}</h1>",
            t = escape(title)
        );
        let _ = write!(out, "<p>Runs:</p><ul>");
        for run in &self.runs {
            let _ = write!(
                out,
                "<li><code>{}</code> ({})</li>",
                escape(&run.name),
                escape(&run.dir.display().to_string())
            );
        }
        out.push_str("</ul><p>F1 x100; averages weighted by line count, (k/n) when only k of the paper's n benchmarks were run; – not run.</p>");
        for task in TABLE_ORDER {
            let pairs: Vec<&BenchmarkTask> = PAIRS.iter().filter(|p| p.task == task).collect();
            let categories: Vec<String> = pairs
                .iter()
                .map(|p| p.benchmark.name().to_string())
                .collect();
            let mut series: Vec<(String, Vec<Option<f64>>)> = self
                .runs
                .iter()
                .map(|r| {
                    let values = pairs
                        .iter()
                        .map(|p| match r.strict.get(p.benchmark, p.task) {
                            Some(PairOutcome::Scored(s)) => Some(s.f1),
                            _ => None,
                        })
                        .collect();
                    (format!("{} (strict)", r.name), values)
                })
                .collect();
            series.extend(PAPER.iter().map(|p| {
                (
                    p.model.to_string(),
                    pairs.iter().map(|q| p.f1(q.benchmark, q.task)).collect(),
                )
            }));
            out.push_str(&svg::grouped_bars(
                &format!("{}: F1", task_title(task)),
                &categories,
                &series,
            ));
        }
        for (mode, name) in [
            (ScoreMode::Strict, "strict"),
            (ScoreMode::Official, "official evaluate.py"),
        ] {
            let _ = write!(out, "<h2>Scores ({name} mode)</h2>");
            for task in TABLE_ORDER {
                let (h, rows) = self.f1_table(task, mode);
                let _ = write!(
                    out,
                    "<h3>{}</h3>{}",
                    task_title(task),
                    html_table(&h, &rows)
                );
            }
        }
        let (h, rows) = self.confusion_rows();
        let _ = write!(
            out,
            "<h2>Confusion counts (strict mode)</h2>{}",
            html_table(&h, &rows)
        );
        let (h, rows) = self.quality_rows();
        let _ = write!(
            out,
            "<h2>Output quality, reasoning length, latency</h2>{}",
            html_table(&h, &rows)
        );
        if let Some(run) = self.runs.first() {
            let mut all: Vec<usize> = run
                .stats
                .iter()
                .flat_map(|s| s.lengths.iter().copied())
                .collect();
            all.sort_unstable();
            let unit = if run.stats.iter().all(|s| s.lengths_are_tokens) {
                "tokens"
            } else {
                "words"
            };
            out.push_str(&svg::histogram(
                &format!(
                    "Reasoning length over all benchmarks ({} outputs)",
                    all.len()
                ),
                unit,
                &all,
                30,
            ));
        }
        out.push_str("</body></html>\n");
        out
    }
}

fn html_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr>");
    for row in rows {
        s.push_str("<tr>");
        for c in row {
            let _ = write!(s, "<td>{}</td>", escape(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

/// Writes `report.md` and `report.html` into `dir`; returns their paths.
pub fn write(report: &Report, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let md = dir.join("report.md");
    let html = dir.join("report.html");
    std::fs::write(&md, report.markdown())?;
    std::fs::write(&html, report.html())?;
    Ok((md, html))
}
