//! Throughput of the quantized matrix kernels alone (`crates/engine/src/quant`), on a random
//! `(ROWS, COLS)` matrix of each format, for 1 to 16 activation rows.
//!
//! `cargo run --release -p guardreasoner-engine --example kernels -- [ROWS=8192] [COLS=2048]
//!  [REPS=20]` (`PASSES=1,16,512`: the activation rows per product;
//! `FORMATS=Q4K,Q6K`: only those); threads: `RAYON_NUM_THREADS` (or `CANDLE_NUM_THREADS`). Prints the median ms per product and the weight
//! bytes read per second.

use std::time::Instant;

use candle_core::quantized::GgmlDType;
use guardreasoner_engine::quant::pack;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let rows = args.first().copied().unwrap_or(8192);
    let cols = args.get(1).copied().unwrap_or(2048);
    let reps = args.get(2).copied().unwrap_or(20);
    // Activation rows per product: `PASSES=1,16,512` (default 1 to 16); more than 16 rows is
    // a prefill pass (AMX for Q4_K where the CPU has it).
    let passes: Vec<usize> = std::env::var("PASSES")
        .map(|s| {
            s.split(',')
                .map(|v| v.parse().expect("PASSES: numbers"))
                .collect()
        })
        .unwrap_or_else(|_| vec![1, 2, 4, 8, 16]);
    let mut seed = 0x2545_f491_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for (dtype, block, bytes) in [
        (GgmlDType::Q4_1, 32, 20),
        (GgmlDType::Q8_0, 32, 34),
        (GgmlDType::Q4K, 256, 144),
        (GgmlDType::Q6K, 256, 210),
    ] {
        if let Ok(only) = std::env::var("FORMATS") {
            if !only.split(',').any(|f| f == format!("{dtype:?}")) {
                continue;
            }
        }
        // Random bytes with small positive f16 scales where each format keeps them.
        let mut data: Vec<u8> = (0..rows * cols / block * bytes)
            .map(|_| next() as u8)
            .collect();
        for b in data.chunks_exact_mut(bytes) {
            let scale = half::f16::from_f32(0.001).to_le_bytes();
            let at = if dtype == GgmlDType::Q6K {
                bytes - 2
            } else {
                0
            };
            b[at..at + 2].copy_from_slice(&scale);
            if dtype == GgmlDType::Q4K || dtype == GgmlDType::Q4_1 {
                b[2..4].copy_from_slice(&scale);
            }
        }
        let size = data.len();
        let m = pack(dtype, data, rows, cols).unwrap().unwrap();
        for &n in &passes {
            let x: Vec<f32> = (0..n * cols)
                .map(|_| next() as f32 / u32::MAX as f32 - 0.5)
                .collect();
            let mut times: Vec<f64> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(m.matmul_t(&x, n));
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let ms = times[reps / 2];
            println!(
                "{:>5} ({rows} x {cols}) n={n:>2}: {ms:7.3} ms, {:6.1} GB/s of weights, {:6.1} GMAC/s",
                m.format(),
                size as f64 / ms / 1e6,
                (rows * cols * n) as f64 / ms / 1e6
            );
        }
    }
}
