//! Per-benchmark statistics of a run beyond F1: parse and consistency failures, reasoning
//! length, latency and throughput, read from the prediction files.

use crate::benchmark::Benchmark;
use crate::predictions::{load_predictions, prediction_path};
use guardreasoner_protocol::{parse_verdict, ParseIssue};
use std::path::Path;

/// What one benchmark's prediction file says beyond its scores.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkStats {
    pub benchmark: Benchmark,
    pub lines: usize,
    /// Outputs without any `Answers:` block.
    pub no_answers: usize,
    /// Outputs whose conclusion contradicts their answer for some task.
    pub inconsistent: usize,
    /// Reasoning length per output: generated tokens when the file records them, else words.
    pub lengths: Vec<usize>,
    pub lengths_are_tokens: bool,
    /// Per-item latency in ms, when recorded.
    pub latencies_ms: Vec<f64>,
    pub generated_tokens: usize,
}

impl BenchmarkStats {
    pub fn rate(&self, count: usize) -> f64 {
        if self.lines == 0 {
            0.0
        } else {
            100.0 * count as f64 / self.lines as f64
        }
    }

    /// Generated tokens per second of latency, when both are recorded.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let seconds: f64 = self.latencies_ms.iter().sum::<f64>() / 1000.0;
        (self.lengths_are_tokens && seconds > 0.0).then(|| self.generated_tokens as f64 / seconds)
    }
}

/// `p`-quantile (0..=1) of sorted values, nearest rank.
pub fn quantile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Reads the statistics of every benchmark present under `dir` (unreadable files are skipped;
/// the scorecards report their errors).
pub fn collect(dir: &Path) -> Vec<BenchmarkStats> {
    let mut out = Vec::new();
    for benchmark in Benchmark::ALL {
        let path = prediction_path(dir, benchmark);
        let Ok(file) = load_predictions(&path) else {
            continue;
        };
        let raw = std::fs::read_to_string(&path).unwrap_or_default();
        let extras: Vec<serde_json::Value> = raw
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let lengths_are_tokens = !extras.is_empty()
            && extras
                .iter()
                .all(|v| v.get("generated_tokens").is_some_and(|t| t.is_u64()));
        let mut stats = BenchmarkStats {
            benchmark,
            lines: file.records.len(),
            no_answers: 0,
            inconsistent: 0,
            lengths: Vec::new(),
            lengths_are_tokens,
            latencies_ms: extras
                .iter()
                .filter_map(|v| v.get("latency_ms").and_then(|l| l.as_f64()))
                .collect(),
            generated_tokens: 0,
        };
        for (i, (_, record)) in file.records.iter().enumerate() {
            let verdict = parse_verdict(&record.predict);
            if verdict.issues.contains(&ParseIssue::NoAnswersBlock) {
                stats.no_answers += 1;
            }
            if verdict
                .issues
                .iter()
                .any(|i| matches!(i, ParseIssue::ConclusionContradicts { .. }))
            {
                stats.inconsistent += 1;
            }
            let length = if lengths_are_tokens {
                extras
                    .get(i)
                    .and_then(|v| v["generated_tokens"].as_u64())
                    .unwrap_or(0) as usize
            } else {
                record.predict.split_whitespace().count()
            };
            stats.generated_tokens += length;
            stats.lengths.push(length);
        }
        stats.lengths.sort_unstable();
        stats.latencies_ms.sort_by(f64::total_cmp);
        out.push(stats);
    }
    out
}
