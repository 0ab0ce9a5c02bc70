//! Cost of one decode-sized pass by row count: what a batched decode step or a speculative
//! verification pass of `rows` tokens costs against a single-token step (docs/BENCHMARKS.md).
//!
//! `cargo run --release -p guardreasoner-engine --example rows_cost -- MODEL [CONTEXT=300]
//!  [ROWS=1,2,4,8,16] [REPS=8]`: fills a cache with CONTEXT tokens, then times REPS passes of
//! each row count at that position, the counts taking turns (median, and as a multiple of the
//! first count's). Threads: `RAYON_NUM_THREADS`.
use std::path::PathBuf;
use std::time::Instant;

use guardreasoner_engine::{Engine, LoadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let engine = Engine::load(&PathBuf::from(&args[0]), &LoadOptions::default())?;
    let ctx: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(300);
    let rows: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![1, 2, 4, 8, 16]);
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let model = engine.model();
    let prompt: Vec<u32> = (0..ctx as u32).map(|i| 1000 + i % 500).collect();
    let mut cache = model.new_cache(ctx + 32)?;
    model.forward_hidden(&prompt, &mut cache, 0)?;
    // Row counts take turns rep by rep, so that a slow minute of a noisy machine falls on all
    // of them alike.
    let mut times = vec![Vec::new(); rows.len()];
    for _ in 0..reps {
        for (&r, times) in rows.iter().zip(&mut times) {
            let input: Vec<u32> = (0..r as u32).map(|i| 2000 + i).collect();
            let t = Instant::now();
            model.forward(&input, &mut cache, ctx)?.to_vec2::<f32>()?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let mut first = None;
    for (&r, times) in rows.iter().zip(&mut times) {
        times.sort_by(|a, b| a.total_cmp(b));
        let median = times[reps / 2];
        let base = *first.get_or_insert(median);
        println!(
            "rows {r:2}: median {median:.1} ms per pass, {:.2}x the first",
            median / base
        );
    }
    Ok(())
}
