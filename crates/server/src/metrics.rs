//! Prometheus metrics of the service, rendered as the text exposition format (version 0.0.4).
//!
//! Counters and gauges are plain atomics or small maps behind a mutex; nothing here blocks for
//! long or allocates per sample beyond a map entry per new label set. Names:
//! - `guardreasoner_http_requests_total{route,status}` and
//!   `guardreasoner_http_request_duration_seconds{route}` (histogram; time to the response
//!   head, so a streamed response counts until its headers are sent);
//! - `guardreasoner_queue_depth`, `guardreasoner_queue_capacity`, `guardreasoner_jobs_running`,
//!   `guardreasoner_queue_rejected_total`;
//! - `guardreasoner_jobs_total{outcome}` (`ok`, `error`, `skipped`: the client was gone or the
//!   deadline had passed before a worker took the job);
//! - `guardreasoner_prompt_tokens_total`, `guardreasoner_generated_tokens_total`;
//! - `guardreasoner_verdicts_total{task,label}` (`task` is `prompt`, `refusal` or `response`;
//!   `label` is the answer or `none` when the model gave none).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// All metrics of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    queue_depth: AtomicUsize,
    queue_capacity: AtomicUsize,
    jobs_running: AtomicUsize,
    queue_rejected: AtomicU64,
    jobs: Mutex<BTreeMap<&'static str, u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    verdicts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    pub fn new(queue_capacity: usize) -> Self {
        let m = Metrics::default();
        m.queue_capacity.store(queue_capacity, Ordering::Relaxed);
        m
    }

    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((route.to_string(), status))
            .or_default() += 1;
        lock(&self.latency)
            .entry(route.to_string())
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.store(depth, Ordering::Relaxed);
    }

    pub fn queue_rejected(&self) {
        self.queue_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn job_started(&self) {
        self.jobs_running.fetch_add(1, Ordering::Relaxed);
    }

    pub fn job_finished(&self, outcome: &'static str) {
        self.jobs_running.fetch_sub(1, Ordering::Relaxed);
        self.job_outcome(outcome);
    }

    pub fn job_outcome(&self, outcome: &'static str) {
        *lock(&self.jobs).entry(outcome).or_default() += 1;
    }

    pub fn tokens(&self, prompt: usize, generated: usize) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
    }

    pub fn verdict(&self, task: &'static str, label: &'static str) {
        *lock(&self.verdicts).entry((task, label)).or_default() += 1;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP guardreasoner_http_requests_total HTTP requests by route and status."
        )?;
        writeln!(out, "# TYPE guardreasoner_http_requests_total counter")?;
        for ((route, status), n) in lock(&self.requests).iter() {
            writeln!(
                out,
                "guardreasoner_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            )?;
        }
        writeln!(
            out,
            "# HELP guardreasoner_http_request_duration_seconds Time from request to response head."
        )?;
        writeln!(
            out,
            "# TYPE guardreasoner_http_request_duration_seconds histogram"
        )?;
        for (route, h) in lock(&self.latency).iter() {
            let route = escape(route);
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                writeln!(
                    out,
                    "guardreasoner_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                )?;
            }
            writeln!(
                out,
                "guardreasoner_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            )?;
            writeln!(
                out,
                "guardreasoner_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            )?;
            writeln!(
                out,
                "guardreasoner_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            )?;
        }
        let gauges = [
            (
                "guardreasoner_queue_depth",
                "Requests waiting for a worker.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "guardreasoner_queue_capacity",
                "Most requests that may wait for a worker.",
                self.queue_capacity.load(Ordering::Relaxed),
            ),
            (
                "guardreasoner_jobs_running",
                "Requests a worker is running now.",
                self.jobs_running.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} gauge")?;
            writeln!(out, "{name} {value}")?;
        }
        let counters = [
            (
                "guardreasoner_queue_rejected_total",
                "Requests answered 429 because the queue was full.",
                self.queue_rejected.load(Ordering::Relaxed),
            ),
            (
                "guardreasoner_prompt_tokens_total",
                "Prompt tokens processed by the backend.",
                self.prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "guardreasoner_generated_tokens_total",
                "Tokens generated by the backend.",
                self.generated_tokens.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} counter")?;
            writeln!(out, "{name} {value}")?;
        }
        writeln!(
            out,
            "# HELP guardreasoner_jobs_total Backend jobs by outcome."
        )?;
        writeln!(out, "# TYPE guardreasoner_jobs_total counter")?;
        for (outcome, n) in lock(&self.jobs).iter() {
            writeln!(out, "guardreasoner_jobs_total{{outcome=\"{outcome}\"}} {n}")?;
        }
        writeln!(
            out,
            "# HELP guardreasoner_verdicts_total Guard answers by task and label."
        )?;
        writeln!(out, "# TYPE guardreasoner_verdicts_total counter")?;
        for ((task, label), n) in lock(&self.verdicts).iter() {
            writeln!(
                out,
                "guardreasoner_verdicts_total{{task=\"{task}\",label=\"{label}\"}} {n}"
            )?;
        }
        Ok(())
    }
}

/// Escapes a label value (`\`, `"` and newlines).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new(4);
        m.record_request("/v1/guard", 200, Duration::from_millis(30));
        m.record_request("/v1/guard", 200, Duration::from_secs(2));
        let text = m.render();
        assert!(text.contains(
            "guardreasoner_http_request_duration_seconds_bucket{route=\"/v1/guard\",le=\"0.025\"} 0"
        ));
        assert!(text.contains(
            "guardreasoner_http_request_duration_seconds_bucket{route=\"/v1/guard\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "guardreasoner_http_request_duration_seconds_bucket{route=\"/v1/guard\",le=\"+Inf\"} 2"
        ));
        assert!(text
            .contains("guardreasoner_http_requests_total{route=\"/v1/guard\",status=\"200\"} 2"));
        assert!(text.contains("guardreasoner_queue_capacity 4"));
    }
}
