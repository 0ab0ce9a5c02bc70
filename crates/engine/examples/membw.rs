//! Memory read bandwidth of this machine with the engine's threads: the ceiling of a decode
//! step, which reads every weight once (docs/BENCHMARKS.md compares each model's decode with it).
//!
//! `cargo run --release -p guardreasoner-engine --example membw -- [MIB=1024] [REPS=5]`;
//! threads: `RAYON_NUM_THREADS`. Sums a buffer of MIB MiB of u64 (written first, so it is
//! backed by memory; far larger than any cache) split over the pool's threads, once with the
//! hardware prefetchers alone and once also asking for the line 8 KiB ahead into L2 as our
//! kernels do; each of those reading a thread's share as one sequential run, and as four runs
//! side by side (as the decode kernels do, `prefetch::side_by_side`). Prints the median GB/s
//! of REPS passes of each.

use std::time::Instant;

use guardreasoner_engine::pool::for_each_chunk_mut;

/// Sum of `words` read as `runs` equal parts side by side, 512 bytes of each in turn (one part:
/// a plain sequential read), asking for the bytes `ahead` bytes on first when `ahead > 0`.
fn sum(words: &[u64], ahead: usize, runs: usize) -> u64 {
    let part = words.len() / runs / 64 * 64;
    let parts: Vec<&[u64]> = words.chunks_exact(part).take(runs).collect();
    let mut acc = [0u64; 8];
    for b in 0..part / 64 {
        for p in &parts {
            // One 512-byte block: eight cache lines.
            let block = &p[b * 64..(b + 1) * 64];
            #[cfg(target_arch = "x86_64")]
            if ahead > 0 {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                let at = (block.as_ptr() as *const i8).wrapping_add(ahead);
                for line in 0..8 {
                    // SAFETY: a prefetch never faults, whatever the address.
                    unsafe { _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(64 * line)) };
                }
            }
            for line in block.chunks_exact(8) {
                for (a, w) in acc.iter_mut().zip(line) {
                    *a = a.wrapping_add(*w);
                }
            }
        }
    }
    acc.iter().fold(0, |s, &a| s.wrapping_add(a))
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let mib = args.first().copied().unwrap_or(1024).max(1);
    let reps = args.get(1).copied().unwrap_or(5).max(1);
    let words: Vec<u64> = (0..mib as u64 * 1024 * 1024 / 8).collect();
    let bytes = words.len() * 8;
    // Per-thread runs of 4 MiB: long sequential streams, like a thread's share of a matrix.
    let run = 4 * 1024 * 1024 / 8;
    for (label, ahead, runs) in [
        ("the hardware prefetchers alone", 0, 1),
        ("8 KiB ahead asked for into L2", 8192, 1),
        ("four runs side by side, hardware prefetchers alone", 0, 4),
        ("four runs side by side, 8 KiB ahead into L2", 8192, 4),
    ] {
        let mut rates = Vec::new();
        for _ in 0..reps {
            let mut sums = vec![0u64; words.len().div_ceil(run)];
            let t = Instant::now();
            for_each_chunk_mut(&mut sums, 1, |i, s| {
                let end = ((i + 1) * run).min(words.len());
                s[0] = sum(&words[i * run..end], ahead, runs);
            });
            let secs = t.elapsed().as_secs_f64();
            std::hint::black_box(sums);
            rates.push(bytes as f64 / secs / 1e9);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "read {mib} MiB, {label}: {:.1} GB/s (median of {reps})",
            rates[reps / 2]
        );
    }
}
