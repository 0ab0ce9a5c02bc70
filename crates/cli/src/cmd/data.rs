//! `guardreasoner data fetch|path`: the benchmark data files.

use anyhow::Context;
use clap::{Args, Subcommand};
use guardreasoner_eval::data::{self, DataDir, FetchEvent, FetchStatus, DATA_DIR_ENV};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the benchmark data lives.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Benchmark data directory (holding `benchmark/*.json`); default: the cache directory that
    /// `data fetch` fills (~/.cache/guardreasoner/data/GuardReasoner-bb7e686).
    #[arg(long = "data", env = DATA_DIR_ENV, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl DataArgs {
    pub fn data_dir(&self) -> DataDir {
        self.dir
            .clone()
            .map(DataDir::new)
            .unwrap_or_else(DataDir::default_location)
    }
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download the official benchmark files (pinned commit, SHA-256 verified).
    Fetch {
        #[command(flatten)]
        data: DataArgs,
        /// Base URL to download `<file>.json` from (a mirror of the repository's data/benchmark).
        #[arg(long, env = "GUARDREASONER_DATA_URL", default_value = data::DEFAULT_BASE_URL)]
        base_url: String,
    },
    /// Print the data directory the other commands use.
    Path {
        #[command(flatten)]
        data: DataArgs,
    },
}

pub fn run(command: DataCommand) -> anyhow::Result<ExitCode> {
    match command {
        DataCommand::Path { data } => {
            crate::output::print(&format!("{}\n", data.data_dir().root().display()))?;
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Fetch { data, base_url } => fetch(&data.data_dir(), &base_url),
    }
}

fn fetch(dir: &DataDir, base_url: &str) -> anyhow::Result<ExitCode> {
    eprintln!("benchmark data: {}", dir.root().display());
    let mut bar: Option<ProgressBar> = None;
    let style = ProgressStyle::with_template(
        "{msg:34} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .context("progress bar template")?
    .progress_chars("=> ");
    let mut on_event = |event: FetchEvent<'_>| match event {
        FetchEvent::Start { file, total } => {
            let b = ProgressBar::new(total.unwrap_or(0)).with_style(style.clone());
            b.set_message(file.to_string());
            bar = Some(b);
        }
        FetchEvent::Bytes(n) => {
            if let Some(b) = &bar {
                b.inc(n);
            }
        }
        FetchEvent::Done { file, status } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let what = match status {
                FetchStatus::UpToDate => "ok (already present, checksum verified)".to_string(),
                FetchStatus::Downloaded { bytes } => format!("downloaded {bytes} bytes, checksum verified"),
                FetchStatus::NotUpstream => "not in the upstream repository (WildGuardTest is gated): build it from the public WildGuardTest release in the same layout and put it here to score WildGuardTest".to_string(),
            };
            eprintln!("  {file}: {what}");
        }
    };
    let report = data::fetch(dir, base_url, &mut on_event)?;
    let missing = report
        .iter()
        .filter(|(_, s)| *s == FetchStatus::NotUpstream)
        .count();
    eprintln!(
        "{} of {} benchmark files ready in {}",
        report.len() - missing,
        report.len(),
        dir.benchmark_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}
