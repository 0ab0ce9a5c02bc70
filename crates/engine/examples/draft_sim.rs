//! Which drafting setting pays on a machine: replays the released GuardReasoner outputs' token
//! streams through `lookup::plan` for several settings and prices the verification passes with
//! measured pass costs by row count (`examples/rows_cost.rs`).
//!
//! `cargo run --release -p guardreasoner-engine --example draft_sim -- TOKENIZER.json
//!  COSTS_MS PREDICTIONS.jsonl...` where COSTS_MS lists the ms of a pass of 1, 2, 3, ... rows
//! (e.g. `28.5,34.7,47,60`); drafts never need more rows than listed. The first 40 outputs of
//! each file are replayed; the corpus settings draft also from a corpus of the file's other
//! outputs (none with a replayed prompt), or from one that starts empty and learns each replayed
//! output in turn. Prints, per setting, the passes, the rows verified, and the decode time
//! relative to plain decoding.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use guardreasoner_engine::lookup::plan;
use guardreasoner_engine::{DraftCorpus, PromptLookup, SpecialTokens, Tokenizer};

type Item = (Vec<u32>, Vec<u32>);

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
    let costs: Vec<f32> = args[1]
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let mut pass_costs = [f32::INFINITY; PromptLookup::MAX_DRAFT + 1];
    for (c, ms) in pass_costs.iter_mut().zip(&costs) {
        *c = ms / costs[0];
    }
    let (mut replayed, mut rest) = (Vec::new(), Vec::new());
    for path in &args[2..] {
        let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            let prompt = tokenizer.encode(v["prompt"].as_str().ok_or("no prompt")?, true)?;
            let mut out = tokenizer.encode(v["predict"].as_str().ok_or("no predict")?, false)?;
            out.push(128_009);
            if i < 40 { &mut replayed } else { &mut rest }.push((prompt, out));
        }
    }
    let seen: HashSet<&Vec<u32>> = replayed.iter().map(|(p, _)| p).collect();
    let warm = DraftCorpus::default();
    for (p, o) in rest.iter().filter(|(p, _)| !seen.contains(p)) {
        warm.learn(&[&p[..], &o[..]].concat(), p.len());
    }
    let tokens: usize = replayed.iter().map(|(_, o)| o.len() - 1).sum();
    println!(
        "{} outputs replayed, {tokens} generated tokens; corpus of {} other outputs, {} contexts",
        replayed.len(),
        rest.len(),
        warm.contexts()
    );
    for max_draft in [1, 3, 7, 15] {
        if max_draft + 1 > costs.len() {
            break;
        }
        for min_ngram in [2, 4] {
            let opts = PromptLookup {
                max_draft,
                min_ngram,
                pass_costs,
                ..PromptLookup::default()
            };
            let fresh = DraftCorpus::default();
            let settings = [
                ("prompt lookup only", None, false),
                ("+ corpus of the other outputs", Some(&warm), false),
                ("+ corpus learning as it goes", Some(&fresh), true),
            ];
            for (name, corpus, learn) in settings {
                let (passes, rows) = replay(&replayed, &opts, corpus, learn);
                let ms: f64 = rows.iter().map(|&r| f64::from(pass_costs[r - 1])).sum();
                println!(
                    "max_draft {max_draft:2} min_ngram {min_ngram}, {name}: {passes} passes, {} rows, \
                     {:.2} tokens per pass, time {:.3}x plain",
                    rows.iter().sum::<usize>(),
                    tokens as f64 / passes as f64,
                    ms / tokens as f64
                );
            }
        }
    }
    Ok(())
}

/// Replays every item's output as `generate` would with these settings; (passes, rows of each
/// pass). With `learn`, the corpus learns each output after it is replayed.
fn replay(
    items: &[Item],
    opts: &PromptLookup,
    corpus: Option<&DraftCorpus>,
    learn: bool,
) -> (usize, Vec<usize>) {
    let mut rows = Vec::new();
    for (prompt, out) in items {
        let mut history = prompt.clone();
        history.push(out[0]);
        let mut i = 1;
        while i < out.len() {
            let proposed = plan(&history, opts, corpus, out.len() - i);
            let agreed = proposed
                .iter()
                .zip(&out[i..])
                .take_while(|(a, b)| a == b)
                .count();
            rows.push(1 + proposed.len());
            let gained = (agreed + 1).min(out.len() - i);
            history.extend_from_slice(&out[i..i + gained]);
            i += gained;
        }
        if let (Some(c), true) = (corpus, learn) {
            c.learn(&history, prompt.len());
        }
    }
    (rows.len(), rows)
}
