//! Aggregate decode throughput of batched decoding for 1, 4 and 8 (or given) concurrent
//! sequences, greedy, for docs/BENCHMARKS.md.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p guardreasoner-engine --example bench_batch -- MODEL [NEW_TOKENS] [BATCHES] [REPS]`
//! MODEL is a `.gguf` file or a Hugging Face directory; NEW_TOKENS (default 64) decode steps per
//! sequence; BATCHES a comma-separated list (default `1,4,8`). Each sequence gets a different
//! prompt (the GuardReasoner instruction cut to 100 + 13 * i tokens), is prefilled alone, then all
//! advance together one `Llama::forward_batch_hidden` step at a time, ignoring end-of-sequence
//! ids, each choosing its next token with `Llama::greedy_tokens` (the greedy screen where the
//! output matrix is dense; `GUARDREASONER_FULL_LOGITS=1` computes every logit instead).
//! Prints sequences x steps / decode seconds, the median of REPS (default 5) runs, the batch
//! sizes alternating run by run (this machine's speed drifts by tens of percent).

use std::path::PathBuf;
use std::time::Instant;

use guardreasoner_engine::model::Llama;
use guardreasoner_engine::{Engine, KvCache, LoadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = PathBuf::from(
        args.next()
            .ok_or("usage: bench_batch MODEL [NEW_TOKENS] [BATCHES]")?,
    );
    let new_tokens: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let batches: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "1,4,8".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;

    let engine = Engine::load(&model, &LoadOptions::default())?;
    let text = "You are a classifier for analyzing interactions between humans and AI. ".repeat(64);
    let full = engine.tokenizer().encode(&text, true)?;
    let model = engine.model();
    let reps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); batches.len()];
    for _ in 0..reps {
        for (k, &batch) in batches.iter().enumerate() {
            times[k].push(decode_seconds(model, &full, batch, new_tokens)?);
        }
    }
    let mut single_rate = None;
    for (&batch, mut t) in batches.iter().zip(times) {
        t.sort_by(f64::total_cmp);
        let secs = t[t.len() / 2];
        let rate = (batch * new_tokens) as f64 / secs;
        let base = *single_rate.get_or_insert(rate);
        println!(
            "batch {batch:>2}: {new_tokens} steps in {:.0} ms = {rate:.1} tok/s aggregate ({:.2}x the first row), {:.1} tok/s per sequence",
            secs * 1000.0,
            rate / base,
            rate / batch as f64
        );
    }
    Ok(())
}

/// Seconds for `new_tokens` batched decode steps of `batch` sequences (prefill not counted).
fn decode_seconds(
    model: &Llama,
    full: &[u32],
    batch: usize,
    new_tokens: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut caches = Vec::with_capacity(batch);
    let mut next = Vec::with_capacity(batch);
    let mut positions = Vec::with_capacity(batch);
    for i in 0..batch {
        let prompt = &full[..(100 + 13 * i).min(full.len())];
        let mut cache = model.new_cache(prompt.len() + new_tokens)?;
        let hidden = model.forward_hidden(prompt, &mut cache, 0)?;
        let last = hidden.narrow(0, prompt.len() - 1, 1)?;
        next.push(model.greedy_tokens(&last)?[0]);
        positions.push(prompt.len());
        caches.push(cache);
    }
    let t = Instant::now();
    for _ in 0..new_tokens {
        let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let hidden = model.forward_batch_hidden(&next, &mut refs, &positions)?; // (batch, hidden)
        next = model.greedy_tokens(&hidden)?;
        for p in &mut positions {
            *p += 1;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}
