//! Time of one full guard verdict: a real GuardReasoner prompt and the reasoning the released
//! GuardReasoner-1B wrote for it (the official prediction files), replayed through a model of
//! the same shape, plain and with prompt-lookup speculation.
//!
//! `cargo run --release -p guardreasoner-engine --example verdict -- MODEL.gguf ITEMS IDS_OUT.json
//!  PREDICTIONS.jsonl...`
//!
//! The ITEMS lines of the PREDICTIONS.jsonl files closest to a 300-token prompt and 290 generated tokens
//! are tokenized with the model's tokenizer (the Llama 3.2 one in the 1B-shaped files). The
//! model (random weights with the 1B shape are fine: the arithmetic is the same) is fed exactly
//! the passes a real greedy generation of that output makes:
//! - plain: a prefill (chunks of 512, last row's logits), then one pass per generated token
//!   after the first;
//! - speculative: the same prefill, then the passes `generate` makes with the default
//!   [`PromptLookup`]: drafts from the prompt and the output so far, verified in one pass of
//!   `1 + draft` rows, advancing by the agreeing prefix plus one, as the released model's own
//!   greedy output (the prediction) decides.
//!
//! - speculative + prefix: the same, with the GuardReasoner instruction's cache entries (the
//!   prompt's first PREFIX_TOKENS tokens, 107 for the Llama 3.2 tokenizer, computed once before
//!   timing) copied instead of prefilled, as the guard backend does.
//! - with the corpus ("+ corpus"): the same, drafting also from a [`DraftCorpus`] that has
//!   learned every other output in the PREDICTIONS files (not the timed items, nor others with
//!   the same prompt), as an [`Engine`]'s corpus has after that many requests: what a guard
//!   that has been serving for a while does.
//!
//! Prints per item and in total the milliseconds of each, the passes, and the mean tokens per
//! pass. IDS_OUT gets the token ids so `scripts/engine/bench_verdict_llama_cpp.py` can time
//! llama.cpp on exactly the same prompt and tokens. Threads: `RAYON_NUM_THREADS`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use guardreasoner_engine::lookup::plan;
use guardreasoner_engine::prefix::prefill_range;
use guardreasoner_engine::{DraftCorpus, Engine, Llama, LoadOptions, PrefixKv, PromptLookup};

/// Tokens of the raw guard prompt's instruction part with the Llama 3.2 tokenizer (BOS
/// included): what `LocalBackend` registers as the engine's prefix.
const PREFIX_TOKENS: usize = 107;

const EOT: u32 = 128_009;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err("usage: verdict MODEL ITEMS IDS_OUT.json PREDICTIONS.jsonl...".into());
    }
    let engine = Engine::load(&PathBuf::from(&args[0]), &LoadOptions::default())?;
    let tokenizer = engine.tokenizer();
    let n_items: usize = args[1].parse()?;

    let mut items = Vec::new();
    for path in &args[3..] {
        let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        for line in std::io::BufReader::new(file).lines() {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            let prompt = v["prompt"].as_str().ok_or("line without prompt")?;
            let predict = v["predict"].as_str().ok_or("line without predict")?;
            let p = tokenizer.encode(prompt, true)?;
            let mut out = tokenizer.encode(predict, false)?;
            out.push(EOT);
            items.push((p, out));
        }
    }
    items.sort_by_key(|(p, o)| p.len().abs_diff(300) + o.len().abs_diff(290));
    let mut others = items.split_off(n_items.min(items.len()));
    // The same prompt in two files (XSTest's two tasks) got the same reasoning: keep the timed
    // items' twins out of the corpus.
    others.retain(|(p, _)| items.iter().all(|(q, _)| q != p));
    let corpus = DraftCorpus::default();
    for (p, o) in &others {
        corpus.learn(&[&p[..], &o[..]].concat(), p.len());
    }

    let model = engine.model();
    let lookup = PromptLookup::default();
    let (mut plain_ms, mut spec_ms, mut tokens, mut spec_passes) = (0.0, 0.0, 0, 0);
    let (mut prefix_ms, mut corpus_ms, mut corpus_passes) = (0.0, 0.0, 0);
    let prefix = PrefixKv::compute(model, items[0].0[..PREFIX_TOKENS].to_vec(), 512)?;
    for (i, (prompt, out)) in items.iter().enumerate() {
        if prefix.covers(prompt) == 0 {
            return Err(format!("item {i} does not start with the instruction's tokens").into());
        }
        let plain = replay_plain(model, prompt, out)?;
        let (spec, passes) = replay_speculative(model, prompt, out, &lookup, None, None)?;
        let (with_prefix, _) =
            replay_speculative(model, prompt, out, &lookup, Some(&prefix), None)?;
        let (with_corpus, c_passes) =
            replay_speculative(model, prompt, out, &lookup, Some(&prefix), Some(&corpus))?;
        println!(
            "item {i}: {} prompt + {} generated tokens: plain {plain:.0} ms, speculative {spec:.0} ms, \
             speculative + prefix {with_prefix:.0} ms ({passes} decode passes, {:.2} tokens per pass), \
             + corpus {with_corpus:.0} ms ({c_passes} passes, {:.2} tokens per pass)",
            prompt.len(),
            out.len(),
            (out.len() - 1) as f64 / passes as f64,
            (out.len() - 1) as f64 / c_passes as f64
        );
        plain_ms += plain;
        spec_ms += spec;
        prefix_ms += with_prefix;
        corpus_ms += with_corpus;
        tokens += out.len() - 1;
        spec_passes += passes;
        corpus_passes += c_passes;
    }
    println!(
        "total: plain {plain_ms:.0} ms, speculative {spec_ms:.0} ms, speculative + prefix {prefix_ms:.0} ms, \
         + corpus {corpus_ms:.0} ms ({:.2}x plain), {:.2} tokens per decode pass, {:.2} with the corpus \
         of {} other outputs",
        corpus_ms / plain_ms,
        tokens as f64 / spec_passes as f64,
        tokens as f64 / corpus_passes as f64,
        others.len()
    );
    {
        let json: Vec<serde_json::Value> = items
            .iter()
            .map(|(p, o)| serde_json::json!({"prompt": p, "output": o}))
            .collect();
        std::fs::write(&args[2], serde_json::to_string(&json)?)?;
    }
    Ok(())
}

/// Prefill, then one pass per generated token after the first. Milliseconds.
fn replay_plain(
    model: &Llama,
    prompt: &[u32],
    out: &[u32],
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut cache = model.new_cache(prompt.len() + out.len())?;
    let t = Instant::now();
    prefill_range(model, &mut cache, prompt, 0, 512)?;
    for (i, &token) in out[..out.len() - 1].iter().enumerate() {
        let hidden = model.forward_hidden(&[token], &mut cache, prompt.len() + i)?;
        model.last_position_logits(&hidden)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Prefill (from the end of `prefix` when given), then `generate`'s speculative schedule for
/// this output. (ms, decode passes).
fn replay_speculative(
    model: &Llama,
    prompt: &[u32],
    out: &[u32],
    lookup: &PromptLookup,
    prefix: Option<&PrefixKv>,
    corpus: Option<&DraftCorpus>,
) -> Result<(f64, usize), Box<dyn std::error::Error>> {
    let mut cache = model.new_cache(prompt.len() + out.len() + PromptLookup::MAX_DRAFT)?;
    let t = Instant::now();
    match prefix {
        Some(p) => {
            p.restore(&mut cache)?;
            prefill_range(model, &mut cache, prompt, p.len(), 512)?;
        }
        None => {
            prefill_range(model, &mut cache, prompt, 0, 512)?;
        }
    }
    let mut history = prompt.to_vec();
    history.push(out[0]);
    let mut i = 1; // next output index to produce
    let mut passes = 0;
    while i < out.len() {
        let pos = prompt.len() + i - 1;
        let proposed = plan(&history, lookup, corpus, out.len() - i);
        let mut input = vec![out[i - 1]];
        input.extend_from_slice(&proposed);
        if proposed.is_empty() {
            let hidden = model.forward_hidden(&input, &mut cache, pos)?;
            model.last_position_logits(&hidden)?;
        } else {
            model.forward(&input, &mut cache, pos)?.to_vec2::<f32>()?;
        }
        passes += 1;
        let agreed = proposed
            .iter()
            .zip(&out[i..])
            .take_while(|(a, b)| a == b)
            .count();
        let gained = (agreed + 1).min(out.len() - i);
        history.extend_from_slice(&out[i..i + gained]);
        i += gained;
    }
    Ok((t.elapsed().as_secs_f64() * 1000.0, passes))
}
