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
//! Dynamic batching: a worker takes up to [`MAX_BATCH`] waiting jobs at once through
//! [`Queue::next_batch`], the hook where a batched engine call would go. The engine has no
//! batched generation API yet, so [`run_batch`] runs a batch's jobs one after another and
//! `MAX_BATCH` is 1 (a larger batch would only delay jobs another worker could start).

use crate::error::{Result, ServerError};
use crate::metrics::Metrics;
use guardreasoner_engine::SamplingParams;
use guardreasoner_guard::GuardResult;
use guardreasoner_guard::{BackendOutput, GenerationRequest, Guard, GuardBackend, GuardOptions};
use guardreasoner_protocol::GuardInput;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// How many waiting jobs a worker takes at once (see the module doc).
pub const MAX_BATCH: usize = 1;

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
    while let Some(batch) = queue.next_batch(MAX_BATCH) {
        run_batch(queue, backend, options, batch);
    }
}

/// Runs a batch of jobs (one after another until the engine has a batched API).
fn run_batch(
    queue: &Queue,
    backend: &Arc<dyn GuardBackend>,
    options: &GuardOptions,
    batch: Vec<Job>,
) {
    for job in batch {
        run_job(&queue.metrics, backend, options, job);
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
    match &result {
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
    drop(text);
    let _ = job.reply.send(result);
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
