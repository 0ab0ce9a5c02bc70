//! Which prompt-lookup setting pays on a machine: replays the released GuardReasoner outputs'
//! token streams through `lookup::draft` for several settings and prices the verification
//! passes with measured pass costs by row count (`examples/rows_cost.rs`).
//!
//! `cargo run --release -p guardreasoner-engine --example draft_sim -- TOKENIZER.json
//!  COSTS_MS PREDICTIONS.jsonl...` where COSTS_MS lists the ms of a pass of 1, 2, 3, ... rows
//! (e.g. `28.5,34.7,47,60`); settings needing more rows than listed are skipped. Prints, per
//! setting, the passes, the rows verified, and the decode time relative to plain decoding.

use std::io::BufRead;
use std::path::Path;

use guardreasoner_engine::lookup::draft;
use guardreasoner_engine::{PromptLookup, SpecialTokens, Tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: draft_sim TOKENIZER.json COSTS_MS PREDICTIONS.jsonl...".into());
    }
    let tokenizer = Tokenizer::from_file(
        Path::new(&args[0]),
        SpecialTokens {
            bos: 128_000,
            eos: vec![128_009],
        },
    )?; // Llama 3.2
    let costs: Vec<f64> = args[1]
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let mut items = Vec::new();
    for path in &args[2..] {
        let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        for line in std::io::BufReader::new(file).lines().take(40) {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            let prompt = tokenizer.encode(v["prompt"].as_str().ok_or("no prompt")?, true)?;
            let out = tokenizer.encode(v["predict"].as_str().ok_or("no predict")?, false)?;
            items.push((prompt, out));
        }
    }
    let tokens: usize = items.iter().map(|(_, o)| o.len()).sum();
    let plain = tokens as f64 * costs[0];
    println!("{} outputs, {tokens} generated tokens", items.len());
    for max_draft in 1..=4 {
        if max_draft + 1 > costs.len() {
            break;
        }
        for min_ngram in [2, 3, 4, 6, 8] {
            let opts = PromptLookup {
                max_draft,
                max_ngram: 8.max(min_ngram),
                min_ngram,
            };
            let (mut passes, mut rows, mut ms) = (0usize, 0usize, 0f64);
            for (prompt, out) in &items {
                let mut history = prompt.clone();
                history.push(out[0]);
                let mut i = 1;
                while i < out.len() {
                    let proposed = draft(&history, &opts, opts.draft_limit().min(out.len() - i));
                    let agreed = proposed
                        .iter()
                        .zip(&out[i..])
                        .take_while(|(a, b)| a == b)
                        .count();
                    passes += 1;
                    rows += 1 + proposed.len();
                    ms += costs[proposed.len()];
                    let gained = (agreed + 1).min(out.len() - i);
                    history.extend_from_slice(&out[i..i + gained]);
                    i += gained;
                }
            }
            println!(
                "max_draft {max_draft} min_ngram {min_ngram}: {passes} passes, {rows} rows, \
                 {:.2} tokens per pass, time {:.3}x plain",
                tokens as f64 / passes as f64,
                ms / plain
            );
        }
    }
    Ok(())
}
