//! `guardreasoner synth`: reasoning data from a teacher model behind any OpenAI-compatible chat
//! API (paper section 3.1), resumable, with a paper-style summary.

use anyhow::Context;
use clap::Args;
use guardreasoner_guard::http::RetryPolicy;
use guardreasoner_synth::client::{ChatClient, ChatConfig};
use guardreasoner_synth::job::{self, JobEvent, JobOptions, Summary};
use guardreasoner_synth::prompt::system_prompt;
use guardreasoner_synth::sample::{read_samples, Format};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Labelled rows (JSONL): `prompt`, optional `response`, optional `prompt_harm_label`,
    /// `response_refusal_label`, `response_harm_label` (or another --format).
    #[arg(long, value_name = "FILE.jsonl")]
    pub input: PathBuf,
    /// Accepted samples, appended as LLaMA-Factory alpaca items (one JSON object per line).
    #[arg(long, value_name = "OUT.json")]
    pub out: PathBuf,
    /// Rejected rows with the reason (default: OUT with `.rejects.jsonl`).
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// Field names of the input: generic (= wildguardmix), aegis, beavertails, toxicchat.
    #[arg(long, default_value = "generic")]
    pub format: Format,
    /// Base URL of the OpenAI-compatible API (e.g. https://api.openai.com/v1).
    #[arg(long, env = "GUARDREASONER_SYNTH_BASE_URL")]
    pub base_url: String,
    /// The teacher model name.
    #[arg(long)]
    pub model: String,
    /// Name of the environment variable holding the API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// HTTP retries per request (429 with Retry-After, 5xx, timeouts, malformed bodies).
    #[arg(long, default_value_t = 6)]
    pub max_retries: u32,
    /// Answers asked for per row before it is rejected for failing validation.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Teacher sampling temperature.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Maximum tokens per answer.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Replace the system prompt with this file's text.
    #[arg(long, value_name = "FILE")]
    pub system_prompt: Option<PathBuf>,
    /// Price per 1M input tokens, for the cost line of the summary.
    #[arg(long, default_value_t = 0.0)]
    pub price_input: f64,
    /// Price per 1M output tokens.
    #[arg(long, default_value_t = 0.0)]
    pub price_output: f64,
    /// First backoff delay in milliseconds (doubled per retry).
    #[arg(long, default_value_t = 500, hide = true)]
    pub backoff_ms: u64,
}

pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let samples = read_samples(&args.input, args.format)?;
    let rejects = args
        .rejects
        .clone()
        .unwrap_or_else(|| args.out.with_extension("rejects.jsonl"));
    let api_key = std::env::var(&args.api_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    let client = ChatClient::new(ChatConfig {
        base_url: args.base_url.clone(),
        model: args.model.clone(),
        api_key,
        temperature: args.temperature,
        max_tokens: args.max_tokens,
        timeout: Duration::from_secs(args.timeout_s),
        retry: RetryPolicy {
            max_retries: args.max_retries,
            initial_backoff: Duration::from_millis(args.backoff_ms),
        },
    });
    let opts = JobOptions {
        out: args.out.clone(),
        rejects: rejects.clone(),
        concurrency: args.concurrency,
        max_attempts: args.max_attempts,
        system_prompt: system_prompt(args.system_prompt.as_deref())?,
    };
    let bar = ProgressBar::new(samples.len() as u64).with_style(
        ProgressStyle::with_template("{pos}/{len} [{bar:30}] {msg} ETA {eta}")?
            .progress_chars("=> "),
    );
    let (accepted, rejected, retried) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let show = |bar: &ProgressBar| {
        bar.set_message(format!(
            "accepted {} rejected {} retried {}",
            accepted.load(Ordering::SeqCst),
            rejected.load(Ordering::SeqCst),
            retried.load(Ordering::SeqCst)
        ))
    };
    let on_event = |event: JobEvent| {
        match event {
            JobEvent::Start { done, .. } => {
                bar.set_position(done as u64);
                if done > 0 {
                    say(&bar, format!("resuming: {done} rows already done"));
                }
            }
            JobEvent::Accepted => {
                accepted.fetch_add(1, Ordering::SeqCst);
                bar.inc(1);
            }
            JobEvent::Rejected { line, reason } => {
                rejected.fetch_add(1, Ordering::SeqCst);
                bar.inc(1);
                say(&bar, format!("rejected input line {line}: {reason}"));
            }
            JobEvent::Invalid { line, reason } => {
                retried.fetch_add(1, Ordering::SeqCst);
                say(
                    &bar,
                    format!("asking again for input line {line}: {reason}"),
                );
            }
            JobEvent::HttpRetry { reason } => {
                retried.fetch_add(1, Ordering::SeqCst);
                say(&bar, format!("retrying {}: {reason}", client.url()));
            }
        }
        show(&bar);
    };
    let result = job::run(&client, &samples, &opts, &on_event);
    bar.finish();
    let summary = Summary::read(&args.out, &rejects)?;
    eprint!("{}", summary.render(args.price_input, args.price_output));
    result.with_context(|| "synthesis stopped; run the same command again to continue")?;
    Ok(ExitCode::SUCCESS)
}

/// A log line above the progress bar, or on stderr when there is no terminal to draw on.
fn say(bar: &ProgressBar, message: String) {
    if bar.is_hidden() {
        eprintln!("{message}");
    } else {
        bar.println(message);
    }
}
