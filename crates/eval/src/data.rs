//! The benchmark data directory: where it is, which files it must hold, and `data fetch`.
//!
//! Layout: `<root>/benchmark/<file>` (the official repository's `data/benchmark/`), as in
//! `../shared/data/guardreasoner`. A root that holds the files directly is accepted too.
//! Files come from the official repository at commit [`UPSTREAM_COMMIT`], each checked against
//! its pinned SHA-256; a download goes to `<file>.part` and is renamed only once verified, so an
//! interrupted or corrupted fetch never leaves a bad file behind.

use crate::benchmark::Benchmark;
use crate::error::{EvalError, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commit of github.com/yueliu1999/GuardReasoner the benchmark files are pinned to.
pub const UPSTREAM_COMMIT: &str = "bb7e686";

/// Where `data fetch` downloads from by default (`<base>/<file name>`).
pub const DEFAULT_BASE_URL: &str =
    "https://raw.githubusercontent.com/yueliu1999/GuardReasoner/bb7e686/data/benchmark";

/// Environment variable that points every command at an existing data directory.
pub const DATA_DIR_ENV: &str = "GUARDREASONER_DATA_DIR";

/// A pinned benchmark file.
#[derive(Debug, Clone, Copy)]
pub struct DataFile {
    pub benchmark: Benchmark,
    /// SHA-256 of the file (hex).
    pub sha256: &'static str,
    /// Whether the upstream repository has it (WildGuardTest is gated and absent there).
    pub upstream: bool,
}

/// The benchmark files, pinned.
pub const MANIFEST: [DataFile; 11] = [
    pinned(
        Benchmark::SimpleSafetyTests,
        "e06d7653a304d716c75ae7f64efeb2285a689695d3cceffd299a4dcae2c8d315",
    ),
    pinned(
        Benchmark::AegisSafetyTest,
        "29b77db427a683103aa58b633b9118314debd96be2659cbac9234f2352e85bd1",
    ),
    pinned(
        Benchmark::OpenAIModeration,
        "e8360f628bb46d4090647868daa6d5f4227ba68c822bc5e4d0c8bc5fcd62853a",
    ),
    pinned(
        Benchmark::HarmBenchPrompt,
        "754c22fb0a7c1e28844a09b22c3f4ba0c7fde5add2f6940237766c3f5c18b65c",
    ),
    DataFile {
        benchmark: Benchmark::WildGuardTest,
        sha256: "7b3f45bbba1d99b8be9ac374f7a74a14303b61c0abebb8938ecbd14085dd9447",
        upstream: false,
    },
    pinned(
        Benchmark::HarmBenchResponse,
        "a54573438606b19e7d4183e71c303412bc0f0143b704c393e0ffa3b9ab75d972",
    ),
    pinned(
        Benchmark::XSTestResponseHarmful,
        "c374802e7211650252d0ff71c518823e7d3ebbb0990b9093fa619e46c9709a5b",
    ),
    pinned(
        Benchmark::XSTestResponseRefusal,
        "e78ab75ee04f2e3d5b82b863569f3812be7db9594a06cfc3e52436fd838c9bd1",
    ),
    pinned(
        Benchmark::ToxicChat,
        "e386e4b202f9471e184c78ee24dd88b8700549b31b0f39aeeb9a60a9894d42de",
    ),
    pinned(
        Benchmark::SafeRLHF,
        "c57b79bbe3c38f6b48a8d776bd86c3b0c0ced7072ad4e19859c17cb5880ea47e",
    ),
    pinned(
        Benchmark::BeaverTails,
        "34f1e315cfeb348c63b6082dea93db67a8fd67e4fded8ccd2087cabe0a81169b",
    ),
];

const fn pinned(benchmark: Benchmark, sha256: &'static str) -> DataFile {
    DataFile {
        benchmark,
        sha256,
        upstream: true,
    }
}

/// A benchmark data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The default cache location: `$GUARDREASONER_CACHE`, else `$XDG_CACHE_HOME/guardreasoner`,
    /// else `~/.cache/guardreasoner`; then `data/GuardReasoner-<commit>`.
    pub fn default_location() -> DataDir {
        let cache = std::env::var_os("GUARDREASONER_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("guardreasoner"))
            })
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache").join("guardreasoner"))
            })
            .unwrap_or_else(|| PathBuf::from(".cache").join("guardreasoner"));
        DataDir::new(
            cache
                .join("data")
                .join(format!("GuardReasoner-{UPSTREAM_COMMIT}")),
        )
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the benchmark files (`<root>/benchmark`, or the root itself if it
    /// holds them directly).
    pub fn benchmark_dir(&self) -> PathBuf {
        let sub = self.root.join("benchmark");
        if sub.is_dir()
            || !self
                .root
                .join(Benchmark::SimpleSafetyTests.file_name())
                .exists()
        {
            sub
        } else {
            self.root.clone()
        }
    }

    /// The path of a benchmark file, which must exist.
    pub fn benchmark_file(&self, benchmark: Benchmark) -> Result<PathBuf> {
        let path = self.benchmark_dir().join(benchmark.file_name());
        if path.is_file() {
            Ok(path)
        } else {
            Err(EvalError::DataMissing {
                path,
                file: benchmark.file_name(),
            })
        }
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| EvalError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What happened to one file during a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchStatus {
    /// Present with the right checksum; not downloaded again.
    UpToDate,
    /// Downloaded and verified.
    Downloaded { bytes: u64 },
    /// Not in the upstream repository and not present locally.
    NotUpstream,
}

/// Progress events for a caller's progress bar.
#[derive(Debug, Clone)]
pub enum FetchEvent<'a> {
    Start {
        file: &'a str,
        total: Option<u64>,
    },
    Bytes(u64),
    Done {
        file: &'a str,
        status: &'a FetchStatus,
    },
}

/// Downloads every missing or outdated benchmark file into `dest`'s benchmark directory.
///
/// Files already present with the pinned checksum are kept. Stops at the first failure with an
/// error naming the URL or file; files fetched before it stay.
pub fn fetch(
    dest: &DataDir,
    base_url: &str,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<Vec<(DataFile, FetchStatus)>> {
    let dir = dest.root().join("benchmark");
    std::fs::create_dir_all(&dir).map_err(|e| EvalError::io(&dir, e))?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .build();
    let mut report = Vec::new();
    for entry in MANIFEST {
        let name = entry.benchmark.file_name();
        let path = dir.join(name);
        let status = if path.is_file() && sha256_file(&path)? == entry.sha256 {
            FetchStatus::UpToDate
        } else if !entry.upstream {
            if path.is_file() {
                // a locally built copy: its text may differ from ours; only the label columns matter
                FetchStatus::UpToDate
            } else {
                FetchStatus::NotUpstream
            }
        } else {
            let url = format!("{}/{name}", base_url.trim_end_matches('/'));
            let bytes = download(&agent, &url, &path, entry.sha256, name, progress)?;
            FetchStatus::Downloaded { bytes }
        };
        progress(FetchEvent::Done {
            file: name,
            status: &status,
        });
        report.push((entry, status));
    }
    Ok(report)
}

fn download(
    agent: &ureq::Agent,
    url: &str,
    path: &Path,
    sha256: &str,
    name: &str,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<u64> {
    let failed = |message: String| EvalError::Download {
        url: url.to_string(),
        message,
    };
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Status(code, _) => failed(format!("HTTP {code}")),
        ureq::Error::Transport(t) => failed(format!(
            "{t} (offline? copy the benchmark files into {} or set {DATA_DIR_ENV} to a directory that has them)",
            path.parent().map_or_else(|| path.display().to_string(), |p| p.display().to_string())
        )),
    })?;
    let total = response
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok());
    progress(FetchEvent::Start { file: name, total });
    let part = path.with_extension("json.part");
    let mut out = std::fs::File::create(&part).map_err(|e| EvalError::io(&part, e))?;
    let mut reader = response.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(failed(format!("connection broke after {bytes} bytes: {e}")));
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| EvalError::io(&part, e))?;
        bytes += n as u64;
        progress(FetchEvent::Bytes(n as u64));
    }
    out.sync_all().map_err(|e| EvalError::io(&part, e))?;
    drop(out);
    let actual = hex(&hasher.finalize());
    if actual != sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(EvalError::Checksum {
            path: path.to_path_buf(),
            expected: sha256.to_string(),
            actual,
        });
    }
    std::fs::rename(&part, path).map_err(|e| EvalError::io(path, e))?;
    Ok(bytes)
}
