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
    /// Manage the benchmark data files.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify(args) => cmd::classify::run(*args),
        Command::Eval(c) => cmd::eval::run(c),
        Command::Data(c) => cmd::data::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
