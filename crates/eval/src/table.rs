//! Paper-style text tables of a [`Scorecard`]: one table per task (prompt, response, refusal),
//! benchmarks as columns, the line-weighted average last. Rendered as Markdown pipe tables,
//! which read well in a terminal and paste into reports.

use crate::benchmark::{PAIRS, TABLE_ORDER};
use crate::score::{PairOutcome, PairScore, ScoreMode, Scorecard};
use guardreasoner_protocol::Task;
use std::fmt::Write;

/// The table title of a task.
pub fn task_title(task: Task) -> &'static str {
    match task {
        Task::Prompt => "Prompt harmfulness detection",
        Task::Response => "Response harmfulness detection",
        Task::Refusal => "Refusal detection",
    }
}

type Row = (&'static str, fn(&PairScore) -> String);

fn pct(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

const STRICT_ROWS: [Row; 6] = [
    ("Precision", |s| {
        s.confusion.map_or(String::new(), |c| pct(c.precision()))
    }),
    ("Recall", |s| {
        s.confusion.map_or(String::new(), |c| pct(c.recall()))
    }),
    ("Accuracy", |s| {
        s.confusion.map_or(String::new(), |c| pct(c.accuracy()))
    }),
    ("TP/FP/FN/TN", |s| {
        s.confusion.map_or(String::new(), |c| {
            format!("{}/{}/{}/{}", c.tp, c.fp, c.fn_, c.tn)
        })
    }),
    ("Parse failures", |s| s.parse_failures.to_string()),
    ("Scored / lines", |s| format!("{}/{}", s.n, s.lines)),
];

const OFFICIAL_ROWS: [Row; 2] = [
    ("Unparseable", |s| s.parse_failures.to_string()),
    ("Labels / lines", |s| format!("{}/{}", s.n, s.lines)),
];

/// Renders the three tables, then the errors.
pub fn render(card: &Scorecard) -> String {
    let mut out = String::new();
    let mode = match card.mode {
        ScoreMode::Official => "official evaluate.py",
        ScoreMode::Strict => "strict",
    };
    for task in TABLE_ORDER {
        let pairs: Vec<_> = PAIRS.iter().filter(|p| p.task == task).collect();
        let mut header = vec!["".to_string()];
        header.extend(pairs.iter().map(|p| p.benchmark.name().to_string()));
        header.push("Weighted Avg.".into());
        let mut rows: Vec<Vec<String>> = Vec::new();
        let cell =
            |p: &&crate::benchmark::BenchmarkTask, f: &dyn Fn(&PairScore) -> String| match card
                .get(p.benchmark, p.task)
            {
                Some(PairOutcome::Scored(s)) => f(s),
                Some(PairOutcome::Error(_)) => "error".to_string(),
                Some(PairOutcome::Missing) | None => "missing".to_string(),
            };
        let mut f1_row = vec!["F1".to_string()];
        f1_row.extend(pairs.iter().map(|p| cell(p, &|s| format!("{:.2}", s.f1))));
        f1_row.push(match card.average(task) {
            Some(a) => match a.f1 {
                Some(f) if a.partial() => format!("{f:.2} (partial {}/{})", a.scored, a.total),
                Some(f) => format!("{f:.2}"),
                None => "missing".into(),
            },
            None => "missing".into(),
        });
        rows.push(f1_row);
        let extra: &[Row] = match card.mode {
            ScoreMode::Strict => &STRICT_ROWS,
            ScoreMode::Official => &OFFICIAL_ROWS,
        };
        for (name, f) in extra {
            let mut row = vec![name.to_string()];
            row.extend(pairs.iter().map(|p| cell(p, f)));
            row.push(String::new());
            rows.push(row);
        }
        let _ = writeln!(out, "{} (F1 x100, {mode} mode)\n", task_title(task));
        out.push_str(&markdown_table(&header, &rows));
        out.push('\n');
    }
    let errors: Vec<_> = card.errors().collect();
    if !errors.is_empty() {
        out.push_str("Errors:\n");
        for (pair, e) in errors {
            let _ = writeln!(out, "- {} ({}): {e}", pair.benchmark, pair.task);
        }
    }
    out
}

/// A Markdown pipe table with padded columns.
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count().max(3)).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, w) in widths.iter().enumerate() {
            let c = cells.get(i).map_or("", String::as_str);
            let pad = w - c.chars().count();
            let _ = write!(s, " {c}{} |", " ".repeat(pad));
        }
        s.push('\n');
        s
    };
    let mut out = line(header);
    out.push('|');
    for w in &widths {
        out.push_str(&format!("{}|", "-".repeat(w + 2)));
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
    }
    out
}
