//! `guardreasoner quantize`: a local Hugging Face LLaMA checkpoint -> a GGUF file that this
//! engine and llama.cpp both load (F16, Q8_0, or llama.cpp's Q4_K_M mix). The conversion is
//! `guardreasoner_engine::export`; this file only parses flags and shows progress.

use anyhow::bail;
use clap::{Args, ValueEnum};
use guardreasoner_engine::{quantize_hf_dir, QuantType};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Local Hugging Face model directory: config.json, model.safetensors (or shards with
    /// model.safetensors.index.json), tokenizer.json (Llama 3), optional
    /// generation_config.json and tokenizer_config.json.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The GGUF file to write.
    #[arg(long, value_name = "FILE.gguf")]
    pub out: PathBuf,
    /// Weight type: q8_0 (all matrices Q8_0), q4_k_m (llama.cpp's Q4_K_M mix: Q4_K, Q6_K for
    /// the output/tied embedding and some attn_v/ffn_down), or f16.
    #[arg(long = "type", value_enum, default_value = "q8_0")]
    pub qtype: TypeArg,
    /// Overwrite FILE.gguf if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `--type` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeArg {
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_k_m")]
    Q4KM,
    #[value(name = "f16")]
    F16,
}

impl From<TypeArg> for QuantType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::Q8_0 => QuantType::Q8_0,
            TypeArg::Q4KM => QuantType::Q4KM,
            TypeArg::F16 => QuantType::F16,
        }
    }
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<ExitCode> {
    if args.out.exists() && !args.force {
        bail!(
            "{}: already exists (pass --force to overwrite)",
            args.out.display()
        );
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} tensors {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = quantize_hf_dir(
        &args.model,
        &args.out,
        args.qtype.into(),
        &mut |done, total, name| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(name.to_string());
        },
    );
    bar.finish_and_clear();
    let summary = summary?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (_, _, dtype) in &summary.tensors {
        let name = format!("{dtype:?}");
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    let mix: Vec<String> = counts.iter().map(|(n, c)| format!("{c} {n}")).collect();
    crate::output::print(&format!(
        "wrote {} ({}, {:.1} MB, {} tensors: {}) in {:.1} s\n",
        summary.out.display(),
        summary.qtype,
        summary.bytes as f64 / 1e6,
        summary.tensors.len(),
        mix.join(", "),
        summary.seconds
    ))?;
    Ok(ExitCode::SUCCESS)
}
