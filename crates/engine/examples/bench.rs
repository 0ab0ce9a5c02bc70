//! Prefill and decode throughput of the engine on one model, greedy, for docs/BENCHMARKS.md.
//!
//! `cargo run --release -p guardreasoner-engine --example bench -- MODEL [PROMPT_TOKENS] [NEW_TOKENS]`
//! MODEL is a `.gguf` file or a Hugging Face directory. The prompt is the GuardReasoner
//! instruction repeated to PROMPT_TOKENS tokens (default 357); generation ignores end-of-sequence
//! ids so exactly NEW_TOKENS (default 200) are decoded. Each greedy choice is the engine's
//! (`Llama::greedy_tokens`: the greedy screen where the output matrix is dense;
//! `GUARDREASONER_FULL_LOGITS=1` computes every logit instead). Threads: candle uses all cores
//! unless `RAYON_NUM_THREADS` is set.

use std::path::PathBuf;
use std::time::Instant;

use guardreasoner_engine::{Engine, LoadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = PathBuf::from(
        args.next()
            .ok_or("usage: bench MODEL [PROMPT_TOKENS] [NEW_TOKENS]")?,
    );
    let prompt_tokens: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(357);
    let new_tokens: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);

    let t = Instant::now();
    let engine = Engine::load(&model, &LoadOptions::default())?;
    println!("load: {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
    if let Some((dense, copy)) = engine.model().greedy_screen_bytes() {
        println!(
            "greedy screen: output matrix {:.1} MB, read as {:.1} MB",
            dense as f64 / 1e6,
            copy as f64 / 1e6
        );
    }
    let text = "You are a classifier for analyzing interactions between humans and AI. ".repeat(64);
    let mut prompt = engine.tokenizer().encode(&text, true)?;
    prompt.truncate(prompt_tokens);

    let model = engine.model();
    let mut cache = model.new_cache(prompt.len() + new_tokens)?;
    let t = Instant::now();
    let hidden = model.forward_hidden(&prompt, &mut cache, 0)?;
    let last = hidden.narrow(0, prompt.len() - 1, 1)?;
    let mut next = model.greedy_tokens(&last)?[0];
    let prefill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..new_tokens {
        let hidden = model.forward_hidden(&[next], &mut cache, prompt.len() + i)?;
        next = model.greedy_tokens(&hidden)?[0];
    }
    let decode = t.elapsed().as_secs_f64();
    println!(
        "prefill: {} tokens in {:.0} ms = {:.1} tok/s; decode: {new_tokens} tokens in {:.0} ms = {:.1} tok/s",
        prompt.len(),
        prefill * 1000.0,
        prompt.len() as f64 / prefill,
        decode * 1000.0,
        new_tokens as f64 / decode
    );
    Ok(())
}
