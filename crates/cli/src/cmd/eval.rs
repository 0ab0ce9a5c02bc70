//! `guardreasoner eval score`: F1 tables from prediction files in the official layout.

use crate::cmd::data::DataArgs;
use crate::cmd::model::{load_backend, DecodeArgs, ModelArgs};
use clap::{Args, Subcommand};
use guardreasoner_eval::run::{self as eval_run, RunEvent, RunOptions};
use guardreasoner_eval::score::{score_dir, PairOutcome};
use guardreasoner_eval::Benchmark;
use guardreasoner_eval::{table, ScoreMode};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Generate predictions for the benchmarks with a guard model (resumable).
    Run(Box<RunArgs>),
    /// Score prediction files (`DIR/<Benchmark>/generated_predictions.jsonl`).
    Score(ScoreArgs),
    /// Write report.md and a self-contained report.html for a run directory.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run directory (holding `<Benchmark>/generated_predictions.jsonl`).
    pub run: PathBuf,
    /// Other run directories to show beside it.
    #[arg(long, value_name = "DIR")]
    pub compare: Vec<PathBuf>,
    /// Where to write report.md and report.html (default: the run directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Benchmarks to run: `all` or a comma-separated list of names (e.g. HarmBenchPrompt,ToxicChat).
    #[arg(long, default_value = "all")]
    pub benchmarks: String,
    /// Run directory; predictions go to OUT/<Benchmark>/generated_predictions.jsonl.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Only the first N items of each benchmark.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Requests in flight at once (useful with a remote server).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Directory with one `<Benchmark>/generated_predictions.jsonl` per benchmark.
    #[arg(long, value_name = "DIR")]
    pub predictions: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// `official` reproduces evaluate.py exactly (quirks included); `strict` counts each
    /// unparseable prediction once as wrong and adds precision, recall, accuracy and counts.
    #[arg(long, default_value = "strict", value_parser = ["official", "strict"])]
    pub mode: String,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: EvalCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvalCommand::Score(args) => score(args),
        EvalCommand::Run(args) => run_benchmarks(*args),
        EvalCommand::Report(args) => report(args),
    }
}

fn score(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let mode: ScoreMode = args.mode.parse().map_err(anyhow::Error::msg)?;
    if !args.predictions.is_dir() {
        anyhow::bail!("{}: not a directory", args.predictions.display());
    }
    let data = args.data.data_dir();
    let card = score_dir(&args.predictions, Some(&data), mode);
    if card
        .results
        .iter()
        .all(|r| r.outcome == PairOutcome::Missing)
    {
        anyhow::bail!(
            "no prediction files under {} (expected {}/<Benchmark>/generated_predictions.jsonl, e.g. HarmBenchPrompt)",
            args.predictions.display(),
            args.predictions.display()
        );
    }
    if args.json {
        crate::output::print(&format!("{:#}\n", card.to_json()))?;
    } else {
        crate::output::print(&table::render(&card))?;
    }
    let errors: Vec<_> = card.errors().collect();
    for (pair, e) in &errors {
        eprintln!("error: {} ({}): {e}", pair.benchmark, pair.task);
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn parse_benchmarks(list: &str) -> anyhow::Result<Vec<Benchmark>> {
    if list == "all" {
        return Ok(Benchmark::ALL.to_vec());
    }
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let b: Benchmark = name.parse()?;
        if !out.contains(&b) {
            out.push(b);
        }
    }
    if out.is_empty() {
        anyhow::bail!("--benchmarks: no benchmark named");
    }
    Ok(out)
}

fn run_benchmarks(args: RunArgs) -> anyhow::Result<ExitCode> {
    let benchmarks = parse_benchmarks(&args.benchmarks)?;
    let data = args.data.data_dir();
    for b in &benchmarks {
        data.benchmark_file(*b)?;
    }
    let options = RunOptions {
        out: args.out.clone(),
        benchmarks,
        limit: args.limit,
        concurrency: args.concurrency,
        guard: args.decode.guard_options()?,
    };
    let backend = load_backend(&args.model)?;
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:22} {pos:>5}/{len:5} [{bar:30}] {msg} ETA {eta}")?
            .progress_chars("=> ");
    let overall = bars.add(ProgressBar::new(0).with_style(style.clone()));
    overall.set_prefix("all benchmarks");
    let state = Mutex::new((HashMap::<Benchmark, ProgressBar>::new(), 0usize, 0f64));
    let on_event = |event: RunEvent| {
        let Ok(mut state) = state.lock() else { return };
        match event {
            RunEvent::Benchmark {
                benchmark,
                total,
                done,
            } => {
                let bar = bars.add(ProgressBar::new(total as u64).with_style(style.clone()));
                bar.set_prefix(benchmark.name());
                bar.set_position(done as u64);
                overall.inc_length(total as u64);
                overall.inc(done as u64);
                state.0.insert(benchmark, bar);
            }
            RunEvent::Item {
                benchmark,
                generated_tokens,
                latency_ms,
            } => {
                state.1 += generated_tokens;
                state.2 += latency_ms / 1000.0;
                let rate = format!("{:.1} tokens/s", state.1 as f64 / state.2.max(1e-9));
                if let Some(bar) = state.0.get(&benchmark) {
                    bar.inc(1);
                    bar.set_message(rate.clone());
                }
                overall.inc(1);
                overall.set_message(rate);
            }
            RunEvent::Finished { benchmark } => {
                if let Some(bar) = state.0.get(&benchmark) {
                    bar.finish();
                }
            }
        }
    };
    let summaries = eval_run::run(backend.as_ref(), &data, &options, &on_event)?;
    overall.finish();
    for s in summaries {
        eprintln!(
            "{}: {} items ({} generated now, {} already there)",
            s.benchmark, s.total, s.generated, s.resumed_from
        );
    }
    eprintln!(
        "predictions in {}; score them with `guardreasoner eval score --predictions {}`",
        args.out.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    use guardreasoner_eval::report::{self, Report, RunData};
    let data = args.data.data_dir();
    let mut runs = Vec::new();
    for dir in std::iter::once(&args.run).chain(&args.compare) {
        if !dir.is_dir() {
            anyhow::bail!("{}: not a directory", dir.display());
        }
        runs.push(RunData::load(dir, Some(&data)));
    }
    let report = Report { runs };
    for run in &report.runs {
        for (pair, e) in run.strict.errors() {
            eprintln!(
                "warning: {} {} ({}): {e}",
                run.name, pair.benchmark, pair.task
            );
        }
    }
    let out = args.out.unwrap_or_else(|| args.run.clone());
    std::fs::create_dir_all(&out)?;
    let (md, html) = report::write(&report, &out)?;
    eprintln!("wrote {} and {}", md.display(), html.display());
    Ok(ExitCode::SUCCESS)
}
