//! Downloads from the Hugging Face Hub into the standard cache, and reads it offline.
//!
//! Cache layout (shared with `huggingface_hub` in Python): `$HF_HUB_CACHE` or `$HF_HOME/hub` or
//! `~/.cache/huggingface/hub`, then `models--{org}--{name}/` with `refs/{revision}` (the commit),
//! `blobs/{etag}` and `snapshots/{commit}/{file}` (a relative symlink to the blob). Honours
//! `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`. Downloads go to `blobs/{etag}.incomplete` and
//! are renamed when complete, so an interrupted download never looks finished.

use crate::error::{GuardError, Result};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Files a GuardReasoner (LLaMA) checkpoint needs, besides the weights.
pub const REQUIRED_FILES: [&str; 2] = ["config.json", "tokenizer.json"];
/// Files used when present.
pub const OPTIONAL_FILES: [&str; 1] = ["generation_config.json"];
const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_WEIGHTS: &str = "model.safetensors";

/// Where and how to reach the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    pub endpoint: String,
    pub cache: PathBuf,
    pub token: Option<String>,
    pub offline: bool,
}

impl HubConfig {
    /// From `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN`, `HF_HUB_OFFLINE`.
    pub fn from_env() -> HubConfig {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            var("HF_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface")))
                .unwrap_or_else(|| PathBuf::from(".cache/huggingface"))
                .join("hub")
        });
        HubConfig {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            cache,
            token: var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")),
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
            }),
        }
    }
}

/// Download progress, for a caller's progress bar.
#[derive(Debug, Clone)]
pub enum HubEvent<'a> {
    Start { file: &'a str, total: Option<u64> },
    Bytes(u64),
    Done { file: &'a str },
}

/// A client for one cache and endpoint.
pub struct HubClient {
    config: HubConfig,
    agent: ureq::Agent,
    no_redirect: ureq::Agent,
}

/// What the hub says about a file before it is downloaded.
struct FileInfo {
    commit: String,
    etag: String,
    size: Option<u64>,
}

impl HubClient {
    pub fn new(config: HubConfig) -> HubClient {
        let builder = || {
            ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .timeout_read(Duration::from_secs(120))
        };
        HubClient {
            config,
            agent: builder().build(),
            no_redirect: builder().redirects(0).build(),
        }
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.config
            .cache
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// The local snapshot directory of `repo@revision` with every file the model needs,
    /// downloading what is missing (unless offline).
    pub fn snapshot(
        &self,
        repo: &str,
        revision: &str,
        progress: &mut dyn FnMut(HubEvent<'_>),
    ) -> Result<PathBuf> {
        if let Some(dir) = self.cached_snapshot(repo, revision) {
            return Ok(dir);
        }
        if self.config.offline {
            return Err(self.unavailable(
                repo,
                revision,
                "HF_HUB_OFFLINE is set and the cache has no complete copy",
            ));
        }
        for file in REQUIRED_FILES {
            self.download(repo, revision, file, progress)
                .map_err(|e| self.fetch_error(repo, revision, e))?;
        }
        for file in OPTIONAL_FILES {
            match self.download(repo, revision, file, progress) {
                Ok(_) | Err(Fetch::NotFound) => {}
                Err(e) => return Err(self.fetch_error(repo, revision, e)),
            }
        }
        let dir = match self.download(repo, revision, INDEX_FILE, progress) {
            Ok(dir) => {
                for shard in shards(&dir.join(INDEX_FILE))? {
                    self.download(repo, revision, &shard, progress)
                        .map_err(|e| self.fetch_error(repo, revision, e))?;
                }
                dir
            }
            Err(Fetch::NotFound) => self
                .download(repo, revision, SINGLE_WEIGHTS, progress)
                .map_err(|e| self.fetch_error(repo, revision, e))?,
            Err(e) => return Err(self.fetch_error(repo, revision, e)),
        };
        Ok(dir)
    }

    /// A complete cached snapshot, if there is one.
    pub fn cached_snapshot(&self, repo: &str, revision: &str) -> Option<PathBuf> {
        let repo_dir = self.repo_dir(repo);
        let commit = if is_commit(revision) {
            revision.to_string()
        } else {
            std::fs::read_to_string(repo_dir.join("refs").join(revision))
                .ok()?
                .trim()
                .to_string()
        };
        let dir = repo_dir.join("snapshots").join(commit);
        if !REQUIRED_FILES.iter().all(|f| dir.join(f).is_file()) {
            return None;
        }
        if dir.join(INDEX_FILE).is_file() {
            let shards = shards(&dir.join(INDEX_FILE)).ok()?;
            shards.iter().all(|s| dir.join(s).is_file()).then_some(dir)
        } else {
            dir.join(SINGLE_WEIGHTS).is_file().then_some(dir)
        }
    }

    fn unavailable(&self, repo: &str, revision: &str, why: &str) -> GuardError {
        GuardError::Hub(format!(
            "cannot get {repo}@{revision} from the Hugging Face Hub ({}): {why}. The model needs {}, {} (or {} and its shards), optionally {}. Download them on a machine with access (e.g. `huggingface-cli download {repo} --local-dir DIR`) and pass `--model DIR`, or pass a local .gguf file",
            self.config.endpoint,
            REQUIRED_FILES.join(", "),
            SINGLE_WEIGHTS,
            INDEX_FILE,
            OPTIONAL_FILES.join(", "),
        ))
    }

    fn fetch_error(&self, repo: &str, revision: &str, e: Fetch) -> GuardError {
        match e {
            Fetch::NotFound => self.unavailable(repo, revision, "a required file is not in the repository"),
            Fetch::Denied(code) => self.unavailable(
                repo,
                revision,
                &format!("HTTP {code}: the repository is gated or private; set HF_TOKEN to a token with access"),
            ),
            Fetch::Failed(msg) => self.unavailable(repo, revision, &msg),
            Fetch::Local(e) => e,
        }
    }

    /// Downloads one file into the cache (if not there yet); returns the snapshot directory.
    fn download(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        progress: &mut dyn FnMut(HubEvent<'_>),
    ) -> std::result::Result<PathBuf, Fetch> {
        let url = format!(
            "{}/{repo}/resolve/{revision}/{file}",
            self.config.endpoint.trim_end_matches('/')
        );
        let info = self.head(&url)?;
        let repo_dir = self.repo_dir(repo);
        let snapshot = repo_dir.join("snapshots").join(&info.commit);
        let target = snapshot.join(file);
        let blob = repo_dir.join("blobs").join(&info.etag);
        if !blob.is_file() {
            self.get(&url, &blob, file, info.size, progress)?;
        }
        let io = |path: &Path, e: std::io::Error| {
            Fetch::Local(GuardError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        if !target.exists() {
            link_or_copy(&blob, &target).map_err(|e| io(&target, e))?;
        }
        if !is_commit(revision) || revision != info.commit {
            let refs = repo_dir.join("refs");
            std::fs::create_dir_all(&refs).map_err(|e| io(&refs, e))?;
            std::fs::write(refs.join(revision), &info.commit).map_err(|e| io(&refs, e))?;
        }
        Ok(snapshot)
    }

    fn request(&self, agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
        let mut req = agent
            .request(method, url)
            .set("User-Agent", "guardreasoner");
        if let Some(token) = &self.config.token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        req
    }

    fn head(&self, url: &str) -> std::result::Result<FileInfo, Fetch> {
        let response = match self.request(&self.no_redirect, "HEAD", url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) if (300..400).contains(&code) => r,
            Err(e) => return Err(Fetch::from(e)),
        };
        let header = |k: &str| response.header(k).map(|v| v.trim_matches('"').to_string());
        let commit = header("X-Repo-Commit")
            .ok_or_else(|| Fetch::Failed(format!("{url}: the hub sent no X-Repo-Commit header")))?;
        let etag = header("X-Linked-Etag")
            .or_else(|| header("ETag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
            .filter(|e| !e.is_empty() && !e.contains('/') && !e.contains(".."))
            .ok_or_else(|| Fetch::Failed(format!("{url}: the hub sent no usable ETag")))?;
        let size = header("X-Linked-Size")
            .or_else(|| header("Content-Length"))
            .and_then(|s| s.parse().ok());
        if !is_commit(&commit) {
            return Err(Fetch::Failed(format!("{url}: malformed commit `{commit}`")));
        }
        Ok(FileInfo { commit, etag, size })
    }

    fn get(
        &self,
        url: &str,
        blob: &Path,
        file: &str,
        size: Option<u64>,
        progress: &mut dyn FnMut(HubEvent<'_>),
    ) -> std::result::Result<(), Fetch> {
        let response = self
            .request(&self.agent, "GET", url)
            .call()
            .map_err(Fetch::from)?;
        let local = |path: &Path, e: std::io::Error| {
            Fetch::Local(GuardError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        };
        let dir = blob.parent().unwrap_or(blob);
        std::fs::create_dir_all(dir).map_err(|e| local(dir, e))?;
        let partial = blob.with_extension("incomplete");
        let mut out = std::fs::File::create(&partial).map_err(|e| local(&partial, e))?;
        progress(HubEvent::Start { file, total: size });
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| {
                Fetch::Failed(format!(
                    "{url}: connection broke after {written} bytes: {e}"
                ))
            })?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(|e| local(&partial, e))?;
            written += n as u64;
            progress(HubEvent::Bytes(n as u64));
        }
        if let Some(size) = size {
            if written != size {
                return Err(Fetch::Failed(format!(
                    "{url}: got {written} of {size} bytes"
                )));
            }
        }
        out.sync_all().map_err(|e| local(&partial, e))?;
        std::fs::rename(&partial, blob).map_err(|e| local(blob, e))?;
        progress(HubEvent::Done { file });
        Ok(())
    }
}

/// Why one file could not be fetched.
enum Fetch {
    NotFound,
    Denied(u16),
    Failed(String),
    Local(GuardError),
}

impl From<ureq::Error> for Fetch {
    fn from(e: ureq::Error) -> Self {
        match e {
            ureq::Error::Status(404, _) => Fetch::NotFound,
            ureq::Error::Status(code @ (401 | 403), _) => Fetch::Denied(code),
            ureq::Error::Status(code, _) => Fetch::Failed(format!("HTTP {code}")),
            ureq::Error::Transport(t) => Fetch::Failed(format!("cannot reach the hub: {t}")),
        }
    }
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The shard file names listed in a `model.safetensors.index.json`.
fn shards(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read(index).map_err(|e| GuardError::Io {
        path: index.to_path_buf(),
        source: e,
    })?;
    let value: Value = serde_json::from_slice(&text)
        .map_err(|e| GuardError::Hub(format!("{}: invalid JSON: {e}", index.display())))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| GuardError::Hub(format!("{}: no `weight_map` object", index.display())))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(Value::as_str)
        .filter(|f| !f.contains('/') && !f.contains(".."))
        .map(str::to_string)
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

#[cfg(unix)]
fn link_or_copy(blob: &Path, target: &Path) -> std::io::Result<()> {
    // snapshots/<commit>/<file> -> ../../blobs/<etag>
    let name = blob.file_name().unwrap_or_default();
    std::os::unix::fs::symlink(Path::new("../../blobs").join(name), target)
}

#[cfg(not(unix))]
fn link_or_copy(blob: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::copy(blob, target).map(|_| ())
}
