//! `guardreasoner classify`: one request from flags, or many from a JSONL file.
//!
//! Batch mode appends one result line per input line as it goes (flushed), records the input
//! line in `input_line`, and on restart skips every input line already in the output; a line
//! cut off by a crash is removed first. Nothing finished is ever lost or written twice.

use crate::cmd::model::{load_backend, DecodeArgs, ModelArgs};
use anyhow::{bail, Context};
use clap::Args;
use guardreasoner_guard::{Guard, GuardBackend, GuardResult};
use guardreasoner_protocol::GuardInput;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The human user's request.
    #[arg(long, required_unless_present = "input", conflicts_with = "input")]
    pub prompt: Option<String>,
    /// The AI assistant's response (omit to judge the request alone).
    #[arg(long, requires = "prompt")]
    pub response: Option<String>,
    /// Classify every line of this JSONL file (`prompt`, optional `response`, other fields
    /// passed through).
    #[arg(long, value_name = "FILE.jsonl", requires = "output")]
    pub input: Option<PathBuf>,
    /// Where batch results are appended (one JSON line per input line; resumable).
    #[arg(long, value_name = "FILE.jsonl")]
    pub output: Option<PathBuf>,
    /// Print one JSON object (verdict, raw_output, usage, timing) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

pub fn run(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    let options = args.decode.guard_options()?;
    if let (Some(input), Some(output)) = (&args.input, &args.output) {
        let todo = read_batch(input, output)?;
        let guard = Guard::new(load_backend(&args.model)?, options);
        return batch(&guard, todo, output);
    }
    let request = args.prompt.clone().unwrap_or_default();
    let input = GuardInput::new(request, args.response.clone());
    let guard = Guard::new(load_backend(&args.model)?, options);
    let result = if args.json {
        guard.classify(&input)?
    } else {
        let mut out = std::io::stdout().lock();
        let mut broken = false;
        let result = guard.classify_streaming(&input, &mut |text| {
            if !broken && (out.write_all(text.as_bytes()).is_err() || out.flush().is_err()) {
                broken = true; // closed pipe: keep classifying, stop printing
            }
        })?;
        let _ = writeln!(out);
        result
    };
    if args.json {
        crate::output::print(&format!("{:#}\n", result.to_json()))?;
    } else {
        crate::output::print(&summary(&result))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_answer<T: std::fmt::Display>(answer: Option<T>, confidence: Option<f32>) -> String {
    match (answer, confidence) {
        (Some(a), Some(c)) => format!("{a} (confidence {c:.2})"),
        (Some(a), None) => a.to_string(),
        (None, _) => "none".to_string(),
    }
}

fn summary(r: &GuardResult) -> String {
    let mut s = String::from("\n--- verdict ---\n");
    s += &format!(
        "Request:    {}\n",
        fmt_answer(r.verdict.request, r.confidence.request)
    );
    if r.has_response {
        s += &format!(
            "Completion: {}\nResponse:   {}\n",
            fmt_answer(r.verdict.completion, r.confidence.completion),
            fmt_answer(r.verdict.response, r.confidence.response)
        );
    }
    if !r.complete() {
        s += "The verdict is incomplete: the model's output could not be read fully.\n";
    }
    for issue in &r.verdict.issues {
        s += &format!("note: {issue}\n");
    }
    s += &format!(
        "{} prompt tokens, {} generated, prefill {:.0} ms, decode {:.0} ms ({:.1} tokens/s)\n",
        r.usage.prompt_tokens,
        r.usage.generated_tokens,
        r.timing.prefill_ms,
        r.timing.decode_ms,
        if r.timing.decode_ms > 0.0 {
            r.usage.generated_tokens as f64 * 1000.0 / r.timing.decode_ms
        } else {
            0.0
        }
    );
    s
}

/// One input line still to classify.
struct Pending {
    line: usize,
    fields: Map<String, Value>,
    input: GuardInput,
}

/// Reads the input file (all of it is validated before any work), and the input lines already
/// done according to `output` (repairing a cut-off last line).
fn read_batch(input: &Path, output: &Path) -> anyhow::Result<Vec<Pending>> {
    let done = done_lines(output)?;
    let file = std::fs::File::open(input).with_context(|| format!("{}", input.display()))?;
    let mut todo = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{}:{n}", input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{n}: invalid JSON", input.display()))?;
        let Value::Object(fields) = value else {
            bail!("{}:{n}: expected a JSON object", input.display());
        };
        let request = match fields.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => bail!("{}:{n}: field `prompt` must be a string", input.display()),
            None => bail!("{}:{n}: missing field `prompt`", input.display()),
        };
        let response = match fields.get("response") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => bail!(
                "{}:{n}: field `response` must be a string or null",
                input.display()
            ),
        };
        if !done.contains(&n) {
            todo.push(Pending {
                line: n,
                fields,
                input: GuardInput::new(request, response),
            });
        }
    }
    if !done.is_empty() {
        eprintln!(
            "resuming: {} lines already in {}, {} to go",
            done.len(),
            output.display(),
            todo.len()
        );
    }
    Ok(todo)
}

/// The `input_line`s present in an existing output file. A last line without its newline (a
/// write cut off by a crash) is truncated away.
fn done_lines(output: &Path) -> anyhow::Result<HashSet<usize>> {
    let mut done = HashSet::new();
    let Ok(bytes) = std::fs::read(output) else {
        return Ok(done);
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        eprintln!(
            "{}: removing a cut-off last line ({} bytes)",
            output.display(),
            bytes.len() - complete
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(output)
            .with_context(|| format!("{}", output.display()))?;
        file.set_len(complete as u64)?;
    }
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = serde_json::from_slice(line).with_context(|| {
            format!(
                "{}:{}: invalid JSON in existing output",
                output.display(),
                i + 1
            )
        })?;
        let n = value
            .get("input_line")
            .and_then(Value::as_u64)
            .with_context(|| {
                format!(
                    "{}:{}: no `input_line` in existing output",
                    output.display(),
                    i + 1
                )
            })?;
        done.insert(n as usize);
    }
    Ok(done)
}

fn batch<B: GuardBackend>(
    guard: &Guard<B>,
    todo: Vec<Pending>,
    output: &Path,
) -> anyhow::Result<ExitCode> {
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)
        .with_context(|| format!("{}", output.display()))?;
    let bar = ProgressBar::new(todo.len() as u64).with_style(
        ProgressStyle::with_template("{pos}/{len} [{bar:30}] {msg} ETA {eta}")?
            .progress_chars("=> "),
    );
    let (mut tokens, mut seconds) = (0usize, 0f64);
    for item in todo {
        let result = guard.classify(&item.input)?;
        let mut fields = item.fields;
        if let Value::Object(extra) = result.to_json() {
            fields.extend(extra);
        }
        fields.insert("input_line".into(), Value::from(item.line));
        let mut line = serde_json::to_string(&fields)?;
        line.push('\n');
        out.write_all(line.as_bytes())
            .and_then(|_| out.flush())
            .with_context(|| format!("{}", output.display()))?;
        tokens += result.usage.generated_tokens;
        seconds += result.timing.total_ms / 1000.0;
        bar.set_message(format!("{:.1} tokens/s", tokens as f64 / seconds.max(1e-9)));
        bar.inc(1);
    }
    bar.finish();
    Ok(ExitCode::SUCCESS)
}
