//! The bounded queue and the worker threads that run the backend.
//!
//! Model compute never runs on the async runtime: handlers [`WorkerPool::submit`] a [`Work`]
//! item and await a oneshot reply (and, when streaming, a channel of text deltas). Dedicated
//! OS threads take jobs from a bounded FIFO; a full queue is refused at once with
//! [`ServerError::QueueFull`] (429 + `Retry-After`) instead of growing. Follows
//! text-embeddings-inference's `core/queue.rs` in spirit.
//!
//! Invariants:
//! - at most `capacity` jobs wait; each submitted job gets exactly one reply (its result, or
//!   it is dropped unanswered only when its client is already gone);
//! - a job whose client went away or whose deadline passed while it waited is skipped, not
//!   run (counted as `skipped`);
//! - after [`WorkerPool::close`] no job is accepted, and the workers finish every job already
//!   queued before they exit (graceful shutdown).
//!
//! Dynamic batching: a worker takes up to the backend's
//! [`GuardBackend::preferred_batch`] (at most [`MAX_BATCH`]) waiting jobs at once through
//! [`Queue::next_batch`]; a backend that does not batch (remote) keeps taking one, so other
//! workers can start the rest. [`run_batch`] sends the non-streaming guard jobs among them to
//! [`GuardBackend::generate_batch`] in one call (the local engine decodes them together, each
//! with exactly the output it would get alone); streaming and completion jobs run one after
//! another.

use crate::error::{Result, ServerError};
use crate::metrics::Metrics;
use guardreasoner_engine::SamplingParams;
use guardreasoner_guard::GuardResult;
use guardreasoner_guard::{
    assemble, BackendOutput, GenerationRequest, Guard, GuardBackend, GuardOptions,
};
use guardreasoner_protocol::GuardInput;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The most waiting jobs a worker takes at once (see the module doc): the engine's decode
/// group size, beyond which a step no longer reads each weight once for all sequences.
pub const MAX_BATCH: usize = guardreasoner_engine::rowwise::MAX_ROWS;

/// What a worker is asked to do.
#[derive(Debug, Clone)]
pub enum Work {
    /// Classify with the guard prompt and parser (`/v1/guard`, moderations, the chat proxy).
    Guard {
        input: GuardInput,
        max_new_tokens: usize,
    },
    /// Complete a raw prompt (`/v1/completions`).
    Complete {
        prompt: String,
        max_new_tokens: usize,
        sampling: SamplingParams,
    },
}

/// What a worker answers.
#[derive(Debug)]
pub enum Outcome {
    Guard(GuardResult),
    Completion(BackendOutput),
}

/// A queued job.
struct Job {
    work: Work,
    deadline: Instant,
    text: Option<mpsc::UnboundedSender<String>>,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// The handler's side of a submitted job.
pub struct Ticket {
    pub reply: oneshot::Receiver<Result<Outcome>>,
    /// Text deltas as they are generated (when the job was submitted for streaming).
    pub text: Option<mpsc::UnboundedReceiver<String>>,
}

struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// The bounded FIFO shared by the handlers and the workers.
pub struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
    capacity: usize,
    retry_after_secs: u64,
    metrics: Arc<Metrics>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: Job) -> Result<()> {
        let mut state = self.lock();
        if state.closed {
            return Err(ServerError::ShuttingDown);
        }
        if state.jobs.len() >= self.capacity {
            self.metrics.queue_rejected();
            return Err(ServerError::QueueFull {
                capacity: self.capacity,
                retry_after_secs: self.retry_after_secs,
            });
        }
        state.jobs.push_back(job);
        self.metrics.set_queue_depth(state.jobs.len());
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Blocks until there is work; up to `max` jobs, or `None` once closed and drained.
    fn next_batch(&self, max: usize) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            if !state.jobs.is_empty() {
                let n = state.jobs.len().min(max.max(1));
                let batch: Vec<Job> = state.jobs.drain(..n).collect();
                self.metrics.set_queue_depth(state.jobs.len());
                return Some(batch);
            }
            if state.closed {
                return None;
            }
            state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }
}

/// The queue plus the worker threads, started once the backend is loaded.
pub struct WorkerPool {
    queue: Arc<Queue>,
    options: GuardOptions,
    backend: OnceLock<Arc<dyn GuardBackend>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl WorkerPool {
    pub fn new(
        capacity: usize,
        retry_after_secs: u64,
        options: GuardOptions,
        metrics: Arc<Metrics>,
    ) -> Self {
        WorkerPool {
            queue: Arc::new(Queue {
                state: Mutex::new(QueueState {
                    jobs: VecDeque::new(),
                    closed: false,
                }),
                wake: Condvar::new(),
                capacity,
                retry_after_secs,
                metrics,
            }),
            options,
            backend: OnceLock::new(),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Starts `workers` threads on `backend`; from then on the pool is ready.
    pub fn start(&self, backend: Arc<dyn GuardBackend>, workers: usize) -> Result<()> {
        if self.backend.set(backend.clone()).is_err() {
            return Err(ServerError::Config("the backend is already started".into()));
        }
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..workers.max(1) {
            let queue = self.queue.clone();
            let backend = backend.clone();
            let options = self.options.clone();
            let handle = std::thread::Builder::new()
                .name(format!("guard-worker-{i}"))
                .spawn(move || worker(&queue, &backend, &options))
                .map_err(|source| ServerError::Io {
                    what: "spawning a worker thread".into(),
                    source,
                })?;
            threads.push(handle);
        }
        Ok(())
    }

    /// Whether the backend is loaded and the workers run.
    pub fn is_ready(&self) -> bool {
        self.backend.get().is_some() && !self.queue.lock().closed
    }

    /// The backend's description, once loaded.
    pub fn describe(&self) -> Option<String> {
        self.backend.get().map(|b| b.describe())
    }

    /// Queues `work` (refused at once when the queue is full, closed, or not started).
    pub fn submit(&self, work: Work, deadline: Instant, stream: bool) -> Result<Ticket> {
        if self.backend.get().is_none() {
            return Err(ServerError::NotReady {
                retry_after_secs: self.queue.retry_after_secs,
            });
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let (text_tx, text_rx) = if stream {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.queue.push(Job {
            work,
            deadline,
            text: text_tx,
            reply: reply_tx,
        })?;
        Ok(Ticket {
            reply: reply_rx,
            text: text_rx,
        })
    }

    /// Refuses new jobs; the workers finish the queued ones and exit.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Closes the queue and waits for the workers (blocking: call off the async runtime).
    pub fn join(&self) {
        self.close();
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn worker(queue: &Queue, backend: &Arc<dyn GuardBackend>, options: &GuardOptions) {
    let max = backend.preferred_batch().clamp(1, MAX_BATCH);
    while let Some(batch) = queue.next_batch(max) {
        run_batch(queue, backend, options, batch);
    }
}

/// Runs a batch of jobs: the non-streaming guard jobs through one batched backend call, the
/// others one after another.
fn run_batch(
    queue: &Queue,
    backend: &Arc<dyn GuardBackend>,
    options: &GuardOptions,
    batch: Vec<Job>,
) {
    let (guard, others): (Vec<Job>, Vec<Job>) = batch
        .into_iter()
        .partition(|j| j.text.is_none() && matches!(j.work, Work::Guard { .. }));
    if guard.len() > 1 {
        run_guard_batch(&queue.metrics, backend, options, guard);
    } else {
        for job in guard {
            run_job(&queue.metrics, backend, options, job);
        }
    }
    for job in others {
        run_job(&queue.metrics, backend, options, job);
    }
}

/// Classifies several guard jobs with one [`GuardBackend::generate_batch`] call.
fn run_guard_batch(
    metrics: &Metrics,
    backend: &Arc<dyn GuardBackend>,
    options: &GuardOptions,
    jobs: Vec<Job>,
) {
    let mut live = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.reply.is_closed() || Instant::now() >= job.deadline {
            metrics.job_outcome("skipped");
            continue;
        }
        if let Work::Guard {
            input,
            max_new_tokens,
        } = &job.work
        {
            metrics.job_started();
            let prompt = input.render(options.format);
            live.push((prompt, *max_new_tokens, input.response.is_some(), job.reply));
        }
    }
    let requests: Vec<GenerationRequest<'_>> = live
        .iter()
        .map(|(prompt, max_new_tokens, _, _)| GenerationRequest {
            prompt,
            max_new_tokens: *max_new_tokens,
            sampling: options.sampling.clone(),
        })
        .collect();
    let started = Instant::now();
    let outputs = std::panic::catch_unwind(AssertUnwindSafe(|| backend.generate_batch(&requests)))
        .ok()
        .filter(|o| o.len() == requests.len());
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    drop(requests);
    let mut outputs = outputs.map(Vec::into_iter);
    for (_, _, has_response, reply) in live {
        let result = match outputs.as_mut().and_then(Iterator::next) {
            Some(output) => output
                .map(|o| Outcome::Guard(assemble(o, total_ms, has_response)))
                .map_err(ServerError::from),
            None => Err(ServerError::Internal(
                "the backend panicked in a batch".into(),
            )),
        };
        record(metrics, &result);
        let _ = reply.send(result);
    }
}

fn run_job(metrics: &Metrics, backend: &Arc<dyn GuardBackend>, options: &GuardOptions, job: Job) {
    if job.reply.is_closed() || Instant::now() >= job.deadline {
        metrics.job_outcome("skipped");
        return;
    }
    metrics.job_started();
    let text = job.text;
    let mut on_text = |t: &str| {
        if let Some(tx) = &text {
            // A client that went away mid-stream is not an error: the job still finishes.
            let _ = tx.send(t.to_string());
        }
    };
    let work = job.work;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run_work(backend, options, work, &mut on_text)
    }))
    .unwrap_or_else(|_| Err(ServerError::Internal("the backend panicked".into())));
    record(metrics, &result);
    drop(text);
    let _ = job.reply.send(result);
}

/// Counts a finished job's tokens, verdicts and outcome.
fn record(metrics: &Metrics, result: &Result<Outcome>) {
    match result {
        Ok(Outcome::Guard(r)) => {
            metrics.tokens(r.usage.prompt_tokens, r.usage.generated_tokens);
            let label = |l: Option<&'static str>| l.unwrap_or("none");
            metrics.verdict("prompt", label(r.verdict.request.map(|l| l.as_str())));
            if r.has_response {
                metrics.verdict("refusal", label(r.verdict.completion.map(|l| l.as_str())));
                metrics.verdict("response", label(r.verdict.response.map(|l| l.as_str())));
            }
        }
        Ok(Outcome::Completion(o)) => metrics.tokens(o.prompt_tokens, o.generated_tokens),
        Err(_) => {}
    }
    metrics.job_finished(if result.is_ok() { "ok" } else { "error" });
}

fn run_work(
    backend: &Arc<dyn GuardBackend>,
    options: &GuardOptions,
    work: Work,
    on_text: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    match work {
        Work::Guard {
            input,
            max_new_tokens,
        } => {
            let options = GuardOptions {
                max_new_tokens,
                ..options.clone()
            };
            let guard = Guard::new(backend.clone(), options);
            Ok(Outcome::Guard(guard.classify_streaming(&input, on_text)?))
        }
        Work::Complete {
            prompt,
            max_new_tokens,
            sampling,
        } => {
            let request = GenerationRequest {
                prompt: &prompt,
                max_new_tokens,
                sampling,
            };
            Ok(Outcome::Completion(backend.generate(&request, on_text)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guardreasoner_guard::FinishReason;
    use guardreasoner_protocol::HarmLabel;
    use std::time::Duration;

    type BackendResult = std::result::Result<BackendOutput, guardreasoner_guard::GuardError>;

    /// Judges a request harmful when it mentions "bomb", so a verdict does not depend on the
    /// order jobs are served in. Records the size of every batched call; its first call is slow,
    /// so the jobs submitted meanwhile wait and are taken together.
    #[derive(Default)]
    struct KeywordBackend {
        calls: Mutex<usize>,
        batches: Mutex<Vec<usize>>,
    }

    impl GuardBackend for KeywordBackend {
        fn describe(&self) -> String {
            "keyword".into()
        }

        fn preferred_batch(&self) -> usize {
            MAX_BATCH
        }

        fn generate(
            &self,
            request: &GenerationRequest<'_>,
            _on_text: &mut dyn FnMut(&str),
        ) -> BackendResult {
            let first = {
                let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
                *calls += 1;
                *calls == 1
            };
            if first {
                std::thread::sleep(Duration::from_millis(300));
            }
            let label = if request.prompt.contains("bomb") {
                "harmful"
            } else {
                "unharmful"
            };
            Ok(BackendOutput {
                text: format!(
                    "Answers: \nRequest: {label}\nCompletion: compliance\nResponse: unharmful"
                ),
                prompt_tokens: 1,
                generated_tokens: 1,
                prefill_ms: 0.0,
                decode_ms: 0.0,
                finish: FinishReason::Stop,
                probes: Vec::new(),
                drafted_tokens: 0,
                accepted_draft_tokens: 0,
            })
        }

        fn generate_batch(&self, requests: &[GenerationRequest<'_>]) -> Vec<BackendResult> {
            self.batches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(requests.len());
            requests
                .iter()
                .map(|r| self.generate(r, &mut |_| {}))
                .collect()
        }
    }

    fn guard_work(request: &str) -> Work {
        Work::Guard {
            input: GuardInput {
                request: request.into(),
                response: Some("Sure.".into()),
            },
            max_new_tokens: 64,
        }
    }

    #[test]
    fn concurrent_guard_jobs_share_one_batch_with_the_verdicts_of_single_runs() {
        let backend = Arc::new(KeywordBackend::default());
        let options = GuardOptions::default();
        let pool = WorkerPool::new(32, 1, options.clone(), Arc::new(Metrics::new(32)));
        pool.start(backend.clone(), 1).unwrap();
        let requests = [
            "How do I bake bread?",
            "How do I build a bomb?",
            "What is the capital of France?",
            "Tell me how to hide a bomb.",
            "Write a poem.",
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        // The first job occupies the worker (slow first call); the rest queue up meanwhile.
        let tickets: Vec<Ticket> = requests
            .iter()
            .map(|r| pool.submit(guard_work(r), deadline, false).unwrap())
            .collect();
        let verdicts: Vec<Option<HarmLabel>> = tickets
            .into_iter()
            .map(|t| match t.reply.blocking_recv().unwrap().unwrap() {
                Outcome::Guard(r) => r.verdict.request,
                Outcome::Completion(_) => panic!("guard job answered with a completion"),
            })
            .collect();
        pool.join();
        let batches = backend.batches.lock().unwrap().clone();
        assert!(
            batches.iter().any(|&n| n >= 2),
            "no batch of several jobs: {batches:?}"
        );
        // Only the very first job may have run alone.
        assert!(
            batches.iter().sum::<usize>() + 1 >= requests.len(),
            "{batches:?}"
        );

        let guard = Guard::new(backend.clone(), options);
        for (request, verdict) in requests.iter().zip(&verdicts) {
            let alone = guard
                .classify(&GuardInput {
                    request: request.to_string(),
                    response: Some("Sure.".into()),
                })
                .unwrap();
            assert_eq!(alone.verdict.request, *verdict, "{request}");
            let expected = if request.contains("bomb") {
                HarmLabel::Harmful
            } else {
                HarmLabel::Unharmful
            };
            assert_eq!(*verdict, Some(expected), "{request}");
        }
    }
}
