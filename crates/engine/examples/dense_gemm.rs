//! Throughput of the dense products (`rowwise::forward_long` for prefill, `rowwise::forward`
//! for passes of at most `rowwise::MAX_ROWS` rows; the path of F16 GGUF files and of the
//! released bf16 checkpoints) on a random `(OUT, IN)` weight and ROWS activation rows, for
//! f32, bf16 and f16 weights.
//!
//! `cargo run --release -p guardreasoner-engine --example dense_gemm -- [OUT=8192] [IN=2048]
//!  [ROWS=512] [REPS=5]`; threads: `RAYON_NUM_THREADS`. Prints the median ms per product and
//! the best and median GFLOP/s (2 flops per multiply-add).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use guardreasoner_engine::rowwise::{forward, forward_long, MAX_ROWS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let out = args.first().copied().unwrap_or(8192);
    let inp = args.get(1).copied().unwrap_or(2048);
    let rows = args.get(2).copied().unwrap_or(512);
    let reps = args.get(3).copied().unwrap_or(5);
    let dev = Device::Cpu;
    let w32 = (Tensor::rand(-1f32, 1f32, (out, inp), &dev)? * 0.05)?;
    let x = Tensor::rand(-1f32, 1f32, (rows, inp), &dev)?;
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let w = w32.to_dtype(dtype)?;
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let y = if rows <= MAX_ROWS {
                forward(&x, &w)?.ok_or("not a CPU product")?
            } else {
                forward_long(&x, &w)?.ok_or("no AVX-512 long-pass kernel on this CPU")?
            };
            times.push(t.elapsed().as_secs_f64());
            std::hint::black_box(y);
        }
        times.sort_by(f64::total_cmp);
        let (best, median) = (times[0], times[times.len() / 2]);
        let flops = 2.0 * (out * inp * rows) as f64;
        println!(
            "{dtype:?} ({out}x{inp}) x {rows} rows: {:.2} ms, best {:.1} GFLOP/s, median {:.1} GFLOP/s",
            median * 1e3,
            flops / best / 1e9,
            flops / median / 1e9
        );
    }
    Ok(())
}
