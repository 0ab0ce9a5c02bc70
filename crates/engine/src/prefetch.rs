//! Software prefetching of weights for the decode products.
//!
//! A decode step reads every weight once, from memory, in long sequential runs per thread.
//! The hardware prefetchers of the 2-core machines of docs/BENCHMARKS.md keep too few lines in
//! flight for that: one pass over 1 GiB with two threads reads ~30 GB/s, and 37-48 GB/s when
//! each thread also asks for the line 8-16 KiB ahead of the one it reads. With our kernels
//! asking 8 KiB ahead into L1 (`prefetcht0`), decode (median of 5, 2 threads) went
//! 32.8 -> 42.4 tokens/s on the 1B Q4_K_M file, 12.5 -> 18.0 on F16 and 130 -> 153 on
//! SmolLM2 Q4_1 on a Zen 5 (4 KiB and 16 KiB did as well or worse).
//!
//! The lines are asked for into L2 (`prefetcht1`), not L1. On a Zen 4 (AVX-512 on 256-bit
//! units, 32 KiB L1) the L1 requests starved the kernels with the most arithmetic per byte:
//! the Q6_K product of the 1B output matrix (215 MB, `examples/kernels 128256 2048`) read
//! 10-12 GB/s from memory with them and 21-30 GB/s with L2 requests, and the 1B Q4_K_M
//! decode (whose Q6_K matrices are 40% of its bytes) went 16.7-19.0 -> 28-34 tokens/s in
//! alternating runs; F16 and Q8_0 decode gained 5-30%, prefill did not move. Distances of
//! 4-32 KiB were alike within the noise there, so 8 KiB stays. Every kernel that streams
//! weights asks with [`ahead`] for the bytes it will read next, a fixed distance on.

/// Whether decode-sized products read several runs of weights side by side (the default;
/// `GUARDREASONER_STREAMS=0` reads one run per thread, for measuring what it gives).
///
/// One thread's sequential read is bound by the lines it has in flight more than by the
/// memory: on the 2-core Xeon of docs/BENCHMARKS.md, `examples/membw` read 16-22 GB/s with one
/// run per thread and 19-28 GB/s with four side by side (`STREAMS=4`), and a product of the
/// 1B output matrix (`examples/kernels 131072 2048`, one activation row) went 14-18 ->
/// 17-20 GB/s on Q4_K and 14-19 -> 21-26 on Q4_1. So the interleaved quantized kernels take
/// four groups of rows a quarter of the matrix apart at once
/// (`quant::interleaved::STREAM_PAIRS`), and the half-precision decode kernel four rows.
pub(crate) fn side_by_side() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("GUARDREASONER_STREAMS").as_deref() != Ok("0"))
}

/// How far ahead of the bytes being read the kernels ask for weights.
pub(crate) const DISTANCE: usize = 8 * 1024;

/// Ask for the `len` bytes that start [`DISTANCE`] bytes after `at` to be brought into L2, one
/// request per 64-byte line. A hint only: the addresses are never dereferenced, and may lie
/// past the weights.
#[inline(always)]
pub(crate) fn ahead<T>(at: *const T, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let from = (at as *const u8).wrapping_add(DISTANCE);
        for line in (0..len).step_by(64) {
            // SAFETY: a prefetch never faults nor reads into the program, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(from.wrapping_add(line) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, len);
}
