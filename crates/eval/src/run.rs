//! `eval run`: generate predictions for the benchmarks with any guard backend, in the official
//! layout (`<out>/<Benchmark>/generated_predictions.jsonl` with `prompt`, `label`, `predict`),
//! so the official evaluate.py could read the result.
//!
//! Invariants: item `i` of a benchmark is always line `i` of its file; lines are appended in
//! order and flushed one by one; on start, a cut-off last line (a crash mid-write) is removed and
//! the run resumes after the last complete line, so every item appears exactly once. A run
//! directory remembers its settings in `run.json`; resuming with different decoding settings is
//! refused rather than mixing outputs. Prompts are rendered exactly as the reference
//! (instruction + `\n` + input) and decoded greedily with 2048 new tokens unless told otherwise.

use crate::benchmark::Benchmark;
use crate::data::{sha256_file, DataDir};
use crate::dataset::{load_benchmark, BenchmarkItem};
use crate::error::{EvalError, Result};
use crate::predictions::{parse_line, prediction_path};
use guardreasoner_guard::{GenerationRequest, GuardBackend, GuardOptions};
use guardreasoner_protocol::PromptFormat;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    pub benchmarks: Vec<Benchmark>,
    /// Only the first N items of each benchmark.
    pub limit: Option<usize>,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub guard: GuardOptions,
}

/// Progress events for a caller's progress bars.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// A benchmark starts: `done` of `total` items were already there.
    Benchmark {
        benchmark: Benchmark,
        total: usize,
        done: usize,
    },
    /// One item finished and was written.
    Item {
        benchmark: Benchmark,
        generated_tokens: usize,
        latency_ms: f64,
    },
    /// A benchmark is complete.
    Finished { benchmark: Benchmark },
}

/// Per-benchmark counts of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub benchmark: Benchmark,
    pub total: usize,
    pub resumed_from: usize,
    pub generated: usize,
}

/// The settings recorded in `run.json` that must match to resume.
fn settings(backend: &dyn GuardBackend, opts: &RunOptions) -> Value {
    let s = &opts.guard.sampling;
    json!({
        "backend": backend.describe(),
        "prompt_format": opts.guard.format.to_string(),
        "max_new_tokens": opts.guard.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "seed": s.seed,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> EvalError + '_ {
    move |e| EvalError::io(path, e)
}

/// Writes `run.json`, refusing to resume a run made with other settings.
fn record_run(
    backend: &dyn GuardBackend,
    data: &DataDir,
    opts: &RunOptions,
    status: &str,
) -> Result<()> {
    let path = opts.out.join("run.json");
    let current = settings(backend, opts);
    let mut started = unix_now();
    if let Ok(bytes) = std::fs::read(&path) {
        let old: Value = serde_json::from_slice(&bytes).map_err(|e| EvalError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let old_settings = &old["settings"];
        for key in [
            "prompt_format",
            "max_new_tokens",
            "temperature",
            "top_p",
            "top_k",
            "seed",
        ] {
            if old_settings[key] != current[key] {
                return Err(EvalError::Json {
                    path: path.clone(),
                    message: format!(
                        "this run was made with {key} = {}, now {}: use another --out directory to change settings",
                        old_settings[key], current[key]
                    ),
                });
            }
        }
        started = old["started_unix"].as_u64().unwrap_or(started);
    }
    let mut checksums = serde_json::Map::new();
    for b in &opts.benchmarks {
        if let Ok(file) = data.benchmark_file(*b) {
            checksums.insert(b.file_name().into(), json!(sha256_file(&file)?));
        }
    }
    let doc = json!({
        "settings": current,
        "benchmarks": opts.benchmarks.iter().map(|b| b.name()).collect::<Vec<_>>(),
        "limit": opts.limit,
        "concurrency": opts.concurrency,
        "data": {"dir": data.root().display().to_string(), "sha256": checksums},
        "version": env!("CARGO_PKG_VERSION"),
        "started_unix": started,
        "updated_unix": unix_now(),
        "status": status,
    });
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{doc:#}\n")).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// The prompt of an item in the requested format.
fn prompt_of(
    item: &BenchmarkItem,
    format: PromptFormat,
    path: &Path,
    index: usize,
) -> Result<String> {
    match format {
        PromptFormat::Raw => Ok(item.official_prompt()),
        other => item
            .guard_input()
            .map(|input| input.render(other))
            .map_err(|e| EvalError::BadItem {
                path: path.to_path_buf(),
                index,
                message: e.to_string(),
            }),
    }
}

/// Counts the complete lines already in a prediction file, checking they belong to these items,
/// and truncates a cut-off last line.
fn resume_point(path: &Path, prompts: &[String]) -> Result<usize> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(0);
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        file.set_len(complete as u64).map_err(io(path))?;
    }
    let text = std::str::from_utf8(&bytes[..complete]).map_err(|e| EvalError::JsonLine {
        path: path.to_path_buf(),
        line: 0,
        message: format!("invalid UTF-8: {e}"),
    })?;
    let mut done = 0;
    for (i, line) in text.lines().enumerate() {
        let Some(record) = parse_line(path, i + 1, line)? else {
            continue;
        };
        match prompts.get(done) {
            Some(p) if *p == record.prompt => done += 1,
            _ => {
                return Err(EvalError::Misaligned {
                    path: path.to_path_buf(),
                    line: i + 1,
                    benchmark: "this run's",
                    reason: "the existing line is for another prompt; use another --out directory"
                        .into(),
                })
            }
        }
    }
    Ok(done)
}

/// Runs the benchmarks. Stops at the first item that fails (after the backend's own retries);
/// everything written before stays.
pub fn run(
    backend: &dyn GuardBackend,
    data: &DataDir,
    opts: &RunOptions,
    progress: &(dyn Fn(RunEvent) + Sync),
) -> Result<Vec<RunSummary>> {
    record_run(backend, data, opts, "running")?;
    let mut summaries = Vec::new();
    for &benchmark in &opts.benchmarks {
        summaries.push(run_benchmark(backend, data, opts, benchmark, progress)?);
    }
    record_run(backend, data, opts, "complete")?;
    Ok(summaries)
}

fn run_benchmark(
    backend: &dyn GuardBackend,
    data: &DataDir,
    opts: &RunOptions,
    benchmark: Benchmark,
    progress: &(dyn Fn(RunEvent) + Sync),
) -> Result<RunSummary> {
    let source = data.benchmark_file(benchmark)?;
    let mut items = load_benchmark(&source)?.items;
    if let Some(limit) = opts.limit {
        items.truncate(limit);
    }
    let prompts = items
        .iter()
        .enumerate()
        .map(|(i, item)| prompt_of(item, opts.guard.format, &source, i))
        .collect::<Result<Vec<_>>>()?;
    let path = prediction_path(&opts.out, benchmark);
    let dir = path.parent().unwrap_or(&opts.out);
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let done = resume_point(&path, &prompts)?;
    progress(RunEvent::Benchmark {
        benchmark,
        total: items.len(),
        done,
    });
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    let next = AtomicUsize::new(done);
    let failed = AtomicBool::new(false);
    let workers = opts
        .concurrency
        .max(1)
        .min(items.len().saturating_sub(done).max(1));
    let (tx, rx) = mpsc::channel::<(usize, std::result::Result<Value, String>)>();
    let mut written = done;
    let mut error = None;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, failed, prompts, items) = (&next, &failed, &prompts, &items);
            scope.spawn(move || loop {
                if failed.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= prompts.len() {
                    break;
                }
                let started = Instant::now();
                let request = GenerationRequest {
                    prompt: &prompts[i],
                    max_new_tokens: opts.guard.max_new_tokens,
                    sampling: opts.guard.sampling.clone(),
                };
                let result = backend
                    .generate(&request, &mut |_| {})
                    .map(|o| {
                        json!({
                            "prompt": prompts[i],
                            "label": items[i].output,
                            "predict": o.text,
                            "prompt_tokens": o.prompt_tokens,
                            "generated_tokens": o.generated_tokens,
                            "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
                            "finish_reason": o.finish,
                        })
                    })
                    .map_err(|e| format!("{} item {i}: {e}", benchmark.name()));
                if result.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                if tx.send((i, result)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // the writer: lines strictly in item order
        let mut pending: BTreeMap<usize, Value> = BTreeMap::new();
        for (i, result) in rx {
            match result {
                Ok(line) => {
                    pending.insert(i, line);
                }
                Err(e) => {
                    error.get_or_insert(e);
                    continue;
                }
            }
            while let Some(line) = pending.remove(&written) {
                let mut text = line.to_string();
                text.push('\n');
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                    error.get_or_insert(format!("{}: {e}", path.display()));
                    failed.store(true, Ordering::SeqCst);
                    break;
                }
                progress(RunEvent::Item {
                    benchmark,
                    generated_tokens: line["generated_tokens"].as_u64().unwrap_or(0) as usize,
                    latency_ms: line["latency_ms"].as_f64().unwrap_or(0.0),
                });
                written += 1;
            }
        }
    });
    if let Some(message) = error {
        return Err(EvalError::Run(message));
    }
    progress(RunEvent::Finished { benchmark });
    Ok(RunSummary {
        benchmark,
        total: items.len(),
        resumed_from: done,
        generated: written - done,
    })
}
