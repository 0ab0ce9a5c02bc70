//! `guardreasoner eval score`: F1 tables from prediction files in the official layout.

use crate::cmd::data::DataArgs;
use clap::{Args, Subcommand};
use guardreasoner_eval::score::{score_dir, PairOutcome};
use guardreasoner_eval::{table, ScoreMode};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Score prediction files (`DIR/<Benchmark>/generated_predictions.jsonl`).
    Score(ScoreArgs),
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
