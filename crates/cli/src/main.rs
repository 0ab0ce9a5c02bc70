//! `guardreasoner`: the command-line front of the GuardReasoner guard.
//!
//! Each subcommand lives in its own file under `cmd/`; this file only parses arguments,
//! dispatches, and turns errors into a one-line message and a non-zero exit code.

mod cmd;
mod output;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// GuardReasoner: a reasoning-based safeguard for LLM applications.
#[derive(Debug, Parser)]
#[command(name = "guardreasoner", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify a request (and optionally a response) with a GuardReasoner model.
    Classify(Box<cmd::classify::ClassifyArgs>),
    /// Evaluate guards on the paper's benchmarks.
    #[command(subcommand)]
    Eval(cmd::eval::EvalCommand),
    /// Synthesize reasoning training data with a teacher model behind an OpenAI-compatible API.
    Synth(Box<cmd::synth::SynthArgs>),
    /// Manage the benchmark data files.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Convert a Hugging Face LLaMA checkpoint to GGUF (q8_0, q4_k_m or f16) for this engine and llama.cpp.
    Quantize(cmd::quantize::QuantizeArgs),
    /// Serve the guard over HTTP (/v1/guard, OpenAI-compatible moderations, completions, chat proxy).
    Serve(Box<cmd::serve::ServeArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify(args) => cmd::classify::run(*args),
        Command::Eval(c) => cmd::eval::run(c),
        Command::Data(c) => cmd::data::run(c),
        Command::Synth(args) => cmd::synth::run(*args),
        Command::Quantize(args) => cmd::quantize::run(args),
        Command::Serve(args) => cmd::serve::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
