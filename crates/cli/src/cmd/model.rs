//! The model and decoding options shared by every command that runs a guard model.

use anyhow::Context;
use clap::Args;
use guardreasoner_engine::{DeviceChoice, Engine, KvType, LoadOptions, SamplingParams};
use guardreasoner_eval::predictions::{load_predictions, PREDICTIONS_FILE};
use guardreasoner_guard::hub::{HubConfig, HubEvent};
use guardreasoner_guard::{
    GuardBackend, GuardOptions, LocalBackend, ModelSpec, RemoteBackend, RemoteConfig,
    ScriptedBackend, DEFAULT_MODEL,
};
use guardreasoner_protocol::PromptFormat;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A Hugging Face model directory, a .gguf file, or a hub id `org/name[@revision]`
    /// (downloaded into the Hugging Face cache on first use; honours HF_HOME, HF_TOKEN,
    /// HF_HUB_OFFLINE, HF_ENDPOINT).
    #[arg(long, env = "GUARDREASONER_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Device to run on: `cpu`, or `cuda[:N]` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// What the KV cache holds (local backend, CPU): `f32`, or `f16` (half the cache's
    /// memory and the bytes decode's attention reads, as llama.cpp's default; the logits
    /// differ slightly from f32's). Without it: GUARDREASONER_KV_CACHE if set, else f32.
    #[arg(long, value_parser = ["f32", "f16"])]
    pub kv_cache: Option<String>,
    /// `local` runs the model in this process; `openai` sends the prompts to an
    /// OpenAI-compatible completions server at --base-url (vLLM, TGI, llama.cpp server,
    /// `guardreasoner serve`), with --model as the served model name.
    #[arg(long, default_value = "local", value_parser = ["local", "openai"])]
    pub backend: String,
    /// Base URL of the OpenAI-compatible server (with `--backend openai`).
    #[arg(
        long,
        env = "GUARDREASONER_BASE_URL",
        required_if_eq("backend", "openai")
    )]
    pub base_url: Option<String>,
    /// Bearer API key for the server.
    #[arg(long, env = "GUARDREASONER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Retries per request on 429/5xx/connection errors (with `--backend openai`).
    #[arg(long, default_value_t = 6)]
    pub max_retries: u32,
    /// Instead of a model, replay the outputs in this JSON file (a list of strings, in turn),
    /// for tests and demos of the output handling.
    #[arg(long, value_name = "FILE", hide = true)]
    pub scripted: Option<PathBuf>,
    /// Earlier outputs of a guard model to draft from (speculative decoding, local backend):
    /// a prediction file in the official layout (JSONL with `predict`), or a directory searched
    /// for `generated_predictions.jsonl` files, e.g. `predictions/1B` of the official data
    /// (`guardreasoner data fetch`) or an `eval` run. Outputs stay exactly those of greedy
    /// decoding; decoding is faster the more the new reasoning follows the earlier outputs.
    /// Repeatable.
    #[arg(long, value_name = "PATH")]
    pub draft_corpus: Vec<PathBuf>,
    /// Delay per scripted output, in milliseconds.
    #[arg(long, default_value_t = 0, hide = true)]
    pub scripted_delay_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct DecodeArgs {
    /// Maximum tokens to generate (the reference setting is 2048).
    #[arg(long, default_value_t = 2048)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding (the reference setting).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold (with --temperature > 0).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 = all; with --temperature > 0).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Prompt rendering: `raw` (the evaluation setting) or `llama3-chat` (the training template).
    #[arg(long, default_value = "raw")]
    pub format: PromptFormat,
}

impl DecodeArgs {
    pub fn guard_options(&self) -> anyhow::Result<GuardOptions> {
        if self.max_new_tokens == 0 {
            anyhow::bail!("--max-new-tokens must be at least 1");
        }
        let temperature_ok = self.temperature.is_finite() && self.temperature >= 0.0;
        let top_p_ok = self.top_p > 0.0 && self.top_p <= 1.0;
        if !temperature_ok || !top_p_ok {
            anyhow::bail!("--temperature must be >= 0 and --top-p in (0, 1]");
        }
        let sampling = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
        };
        Ok(GuardOptions {
            format: self.format,
            max_new_tokens: self.max_new_tokens,
            sampling,
        })
    }
}

fn parse_device(s: &str) -> anyhow::Result<DeviceChoice> {
    match s {
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        other => match other.strip_prefix("cuda:").map(str::parse) {
            Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
            _ => anyhow::bail!("--device `{other}`: expected cpu, cuda or cuda:N"),
        },
    }
}

/// Loads the backend the arguments describe, with a progress bar for hub downloads.
pub fn load_backend(args: &ModelArgs) -> anyhow::Result<Box<dyn GuardBackend>> {
    if !args.draft_corpus.is_empty() && (args.scripted.is_some() || args.backend != "local") {
        anyhow::bail!("--draft-corpus applies to the local backend only");
    }
    let kv_cache: Option<KvType> = args.kv_cache.as_deref().map(str::parse).transpose()?;
    if let Some(path) = &args.scripted {
        let text = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        let outputs: Vec<String> = serde_json::from_slice(&text)
            .with_context(|| format!("{}: expected a JSON list of strings", path.display()))?;
        let delay = std::time::Duration::from_millis(args.scripted_delay_ms);
        return Ok(Box::new(ScriptedBackend::new(outputs).with_delay(delay)));
    }
    if args.backend == "openai" {
        let base_url = args
            .base_url
            .clone()
            .context("--backend openai needs --base-url")?;
        let mut config = RemoteConfig::new(base_url, args.model.clone());
        config.api_key = args.api_key.clone();
        config.max_retries = args.max_retries;
        return Ok(Box::new(RemoteBackend::new(config)));
    }
    let device = parse_device(&args.device)?;
    let (corpus, corpus_files) = read_draft_corpus(&args.draft_corpus)?;
    let spec = ModelSpec::parse(&args.model)?;
    let style = ProgressStyle::with_template(
        "{msg:40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )?
    .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    let path = spec.resolve(&HubConfig::from_env(), &mut |event| match event {
        HubEvent::Start { file, total } => {
            let b = ProgressBar::new(total.unwrap_or(0)).with_style(style.clone());
            b.set_message(format!("downloading {file}"));
            bar = Some(b);
        }
        HubEvent::Bytes(n) => {
            if let Some(b) = &bar {
                b.inc(n)
            }
        }
        HubEvent::Done { .. } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear()
            }
        }
    })?;
    let engine = Engine::load(
        &path,
        &LoadOptions {
            device,
            kv_cache,
            ..LoadOptions::default()
        },
    )?;
    if !corpus.is_empty() {
        learn_draft_corpus(&engine, &corpus, corpus_files)?;
    }
    Ok(Box::new(LocalBackend::new(engine)?))
}

/// The outputs (`predict`) of the prediction files at `paths`, with the number of files. A path
/// that is missing, a directory without prediction files or a malformed line is an error
/// naming it.
fn read_draft_corpus(paths: &[PathBuf]) -> anyhow::Result<(Vec<String>, usize)> {
    let mut files = Vec::new();
    for path in paths {
        let found = prediction_files(path)?;
        if found.is_empty() {
            anyhow::bail!(
                "--draft-corpus {}: no {PREDICTIONS_FILE} in this directory or below",
                path.display()
            );
        }
        files.extend(found);
    }
    let mut outputs = Vec::new();
    for file in &files {
        let predictions =
            load_predictions(file).with_context(|| format!("--draft-corpus {}", file.display()))?;
        outputs.extend(predictions.records.into_iter().map(|(_, r)| r.predict));
    }
    Ok((outputs, files.len()))
}

/// Teaches the engine's draft corpus `outputs`, reporting what it learned on stderr.
fn learn_draft_corpus(engine: &Engine, outputs: &[String], files: usize) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let mut tokens = 0;
    for output in outputs {
        tokens += engine.learn_text(output)?;
    }
    eprintln!(
        "draft corpus: {} outputs ({tokens} tokens) from {files} file(s), {} contexts, {:.1} s",
        outputs.len(),
        engine.draft_corpus().contexts(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `path` itself if it is a file; the prediction files under it, sorted, if a directory.
fn prediction_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("--draft-corpus {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("--draft-corpus {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("--draft-corpus {}", dir.display()))?;
            let child = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(child);
            } else if entry.file_name() == PREDICTIONS_FILE {
                found.push(child);
            }
        }
    }
    found.sort();
    Ok(found)
}
