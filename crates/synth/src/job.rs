//! The synthesis job: every input row ends up accepted (in the output) or rejected (in the
//! rejects file) exactly once, across interruptions.
//!
//! Output: LLaMA-Factory alpaca items, one JSON object per line (`instruction` = the guard
//! instruction, `input` = the input block, `output` = reasoning + answers), plus `source_line`
//! (the input line, the key for resuming) and `usage`. Rejects: `{source_line, reason, kind,
//! attempts, last_output}`. Both are appended and flushed per item by one writer thread; on
//! start, a line cut off by a crash is removed and rows already in either file are skipped. An
//! answer that fails validation is asked for again up to `max_attempts` times; an API failure
//! that survives the HTTP retries stops the job (the rows not done are picked up next time).

use crate::client::ChatClient;
use crate::error::{Result, SynthError};
use crate::prompt::user_message;
use crate::sample::LabeledSample;
use crate::validate::validate;
use guardreasoner_protocol::{parse_verdict, Task, INSTRUCTION};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// What to do.
pub struct JobOptions {
    pub out: PathBuf,
    pub rejects: PathBuf,
    pub concurrency: usize,
    /// Answers asked for per row before it is rejected.
    pub max_attempts: u32,
    pub system_prompt: String,
}

/// Progress, for a caller's progress bar and log.
#[derive(Debug, Clone)]
pub enum JobEvent {
    Start {
        total: usize,
        done: usize,
    },
    Accepted,
    Rejected {
        line: usize,
        reason: String,
    },
    /// An answer failed validation and is asked for again.
    Invalid {
        line: usize,
        reason: String,
    },
    /// An HTTP request is retried.
    HttpRetry {
        reason: String,
    },
}

/// Rows done according to an output or rejects file; a cut-off last line is truncated away.
pub fn done_lines(path: &Path) -> Result<HashSet<usize>> {
    let mut done = HashSet::new();
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(done);
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| SynthError::io(path, e))?;
        file.set_len(complete as u64)
            .map_err(|e| SynthError::io(path, e))?;
    }
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line_no = i + 1;
        let value: Value = serde_json::from_slice(line).map_err(|e| SynthError::Input {
            path: path.to_path_buf(),
            line: line_no,
            message: format!("invalid JSON in existing file: {e}"),
        })?;
        let n = value["source_line"]
            .as_u64()
            .ok_or_else(|| SynthError::Input {
                path: path.to_path_buf(),
                line: line_no,
                message: "no `source_line` in existing file".into(),
            })?;
        done.insert(n as usize);
    }
    Ok(done)
}

/// The outcome of one row, sent to the writer.
enum Outcome {
    Accepted(Value),
    Rejected(Value),
    Failed(String),
}

/// Runs the job over `samples`; returns how many rows were accepted and rejected now.
pub fn run(
    client: &ChatClient,
    samples: &[LabeledSample],
    opts: &JobOptions,
    progress: &(dyn Fn(JobEvent) + Sync),
) -> Result<(usize, usize)> {
    let mut done = done_lines(&opts.out)?;
    done.extend(done_lines(&opts.rejects)?);
    let todo: Vec<&LabeledSample> = samples.iter().filter(|s| !done.contains(&s.line)).collect();
    progress(JobEvent::Start {
        total: samples.len(),
        done: samples.len() - todo.len(),
    });
    let open = |p: &Path| {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| SynthError::io(dir, e))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| SynthError::io(p, e))
    };
    let mut out = open(&opts.out)?;
    let mut rejects = open(&opts.rejects)?;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Outcome>();
    let (mut accepted, mut rejected) = (0, 0);
    let mut failure: Option<SynthError> = None;
    std::thread::scope(|scope| {
        for _ in 0..opts.concurrency.max(1).min(todo.len().max(1)) {
            let tx = tx.clone();
            let (next, stop, todo) = (&next, &stop, &todo);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(sample) = todo.get(i) else { break };
                let outcome = synthesize(client, sample, opts, progress);
                if matches!(outcome, Outcome::Failed(_)) {
                    stop.store(true, Ordering::SeqCst);
                }
                if tx.send(outcome).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for outcome in rx {
            let (file, path, value) = match outcome {
                Outcome::Accepted(v) => (&mut out, &opts.out, v),
                Outcome::Rejected(v) => (&mut rejects, &opts.rejects, v),
                Outcome::Failed(e) => {
                    failure.get_or_insert(SynthError::Api(e));
                    continue;
                }
            };
            let mut line = value.to_string();
            line.push('\n');
            if let Err(e) = file.write_all(line.as_bytes()).and_then(|_| file.flush()) {
                failure.get_or_insert(SynthError::io(path.clone(), e));
                stop.store(true, Ordering::SeqCst);
                continue;
            }
            if path == &opts.out {
                accepted += 1;
                progress(JobEvent::Accepted);
            } else {
                rejected += 1;
                progress(JobEvent::Rejected {
                    line: value["source_line"].as_u64().unwrap_or(0) as usize,
                    reason: value["reason"].as_str().unwrap_or("").to_string(),
                });
            }
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok((accepted, rejected)),
    }
}

fn synthesize(
    client: &ChatClient,
    sample: &LabeledSample,
    opts: &JobOptions,
    progress: &(dyn Fn(JobEvent) + Sync),
) -> Outcome {
    let user = user_message(sample);
    let has_response = sample.input.response.is_some();
    let (mut prompt_tokens, mut completion_tokens) = (0u64, 0u64);
    let mut last = None;
    for attempt in 1..=opts.max_attempts.max(1) {
        let mut on_retry = |n: &guardreasoner_guard::http::RetryNotice<'_>| {
            progress(JobEvent::HttpRetry {
                reason: format!("{} ({}/{})", n.reason, n.attempt, n.max_retries),
            })
        };
        let answer = match client.complete(&opts.system_prompt, &user, &mut on_retry) {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(format!("input line {}: {e}", sample.line)),
        };
        prompt_tokens += answer.prompt_tokens;
        completion_tokens += answer.completion_tokens;
        let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "attempts": attempt});
        match validate(&answer.text, &sample.truth, has_response) {
            Ok(ok) => {
                return Outcome::Accepted(json!({
                    "instruction": INSTRUCTION,
                    "input": sample.input.input_block(),
                    "output": ok.output,
                    "source_line": sample.line,
                    "usage": usage,
                }))
            }
            Err(reason) => {
                if attempt < opts.max_attempts {
                    progress(JobEvent::Invalid {
                        line: sample.line,
                        reason: reason.to_string(),
                    });
                }
                last = Some((reason, answer.text, usage));
            }
        }
    }
    let Some((reason, text, usage)) = last else {
        return Outcome::Failed(format!("input line {}: no attempt made", sample.line));
    };
    Outcome::Rejected(json!({
        "source_line": sample.line,
        "reason": reason.to_string(),
        "kind": reason.kind(),
        "attempts": opts.max_attempts,
        "last_output": text,
        "usage": usage,
    }))
}

/// Totals over the output and rejects files (all runs, not only this one).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub accepted: usize,
    pub rejected: usize,
    pub steps: usize,
    pub steps_per_task: [usize; 3],
    pub rejection_kinds: BTreeMap<String, usize>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Summary {
    pub fn read(out: &Path, rejects: &Path) -> Result<Summary> {
        let mut s = Summary::default();
        let lines = |p: &Path| -> Result<Vec<Value>> {
            let text = match std::fs::read_to_string(p) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(SynthError::io(p, e)),
            };
            Ok(text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect())
        };
        for item in lines(out)? {
            s.accepted += 1;
            let verdict = parse_verdict(item["output"].as_str().unwrap_or(""));
            for (i, task) in Task::ALL.into_iter().enumerate() {
                let n = verdict.task_reasoning(task).map_or(0, |r| r.steps.len());
                s.steps_per_task[i] += n;
                s.steps += n;
            }
            s.add_usage(&item["usage"]);
        }
        for item in lines(rejects)? {
            s.rejected += 1;
            *s.rejection_kinds
                .entry(item["kind"].as_str().unwrap_or("unknown").to_string())
                .or_default() += 1;
            s.add_usage(&item["usage"]);
        }
        Ok(s)
    }

    fn add_usage(&mut self, usage: &Value) {
        self.prompt_tokens += usage["prompt_tokens"].as_u64().unwrap_or(0);
        self.completion_tokens += usage["completion_tokens"].as_u64().unwrap_or(0);
    }

    /// Cost in the currency of the prices, given per million input and output tokens.
    pub fn cost(&self, input_per_million: f64, output_per_million: f64) -> f64 {
        (self.prompt_tokens as f64 * input_per_million
            + self.completion_tokens as f64 * output_per_million)
            / 1e6
    }

    /// The paper-style summary text.
    pub fn render(&self, input_per_million: f64, output_per_million: f64) -> String {
        let per = |n: usize| {
            if self.accepted == 0 {
                0.0
            } else {
                n as f64 / self.accepted as f64
            }
        };
        let mut s = format!(
            "samples: {} accepted, {} rejected\nreasoning steps: {} in all, {:.2} per sample (task 1: {:.2}, task 2: {:.2}, task 3: {:.2})\ntokens: {} prompt, {} completion",
            self.accepted,
            self.rejected,
            self.steps,
            per(self.steps),
            per(self.steps_per_task[0]),
            per(self.steps_per_task[1]),
            per(self.steps_per_task[2]),
            self.prompt_tokens,
            self.completion_tokens,
        );
        let done = self.accepted + self.rejected;
        if done > 0 {
            s += &format!(
                "; cost {:.4} ({:.4} per 1K samples) at {input_per_million}/{output_per_million} per 1M input/output tokens",
                self.cost(input_per_million, output_per_million),
                self.cost(input_per_million, output_per_million) * 1000.0 / done as f64
            );
        }
        s.push('\n');
        for (kind, n) in &self.rejection_kinds {
            s += &format!("rejected because {kind}: {n}\n");
        }
        s
    }
}
