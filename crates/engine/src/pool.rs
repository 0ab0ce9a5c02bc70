//! The engine's CPU threads.
//!
//! Two pools run our kernels. The quantized products ([`crate::quant`]) split their rows
//! over candle's persistent pool ([`parallel_for`]), which candle's own quantized kernels
//! use too: one set of threads for all of them (two pools that both spin while waiting for
//! work fight over a small machine's cores). The dense decode products and the attention
//! split theirs over rayon's global pool. Called from a thread outside that pool, each split
//! is a job handed to the pool and a wait for its completion (a wake-up and a sleep, tens of
//! microseconds each time on a small machine, many times per token); a forward pass
//! therefore moves onto a rayon thread once ([`on_pool`]), and the splits inside it start at
//! once on that thread. Threads: `RAYON_NUM_THREADS` for both (default: one per core).

/// Run `f` on a thread of rayon's global pool: inline when the caller is already one,
/// otherwise handed to the pool while the caller waits.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

/// `f(range)` over `0..n_items` split in chunks over candle's persistent CPU pool (the
/// caller works too; idle threads spin briefly, then park), so that our kernels and candle's
/// share one set of threads. Threads: `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`.
pub fn parallel_for(n_items: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(n_items, f);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_pool_thread_and_returns_the_value() {
        assert_eq!(rayon::current_thread_index(), None);
        let (index, value) = on_pool(|| (rayon::current_thread_index(), 41 + 1));
        assert!(index.is_some());
        assert_eq!(value, 42);
        // Nested: stays on the same thread.
        let nested = on_pool(|| {
            let outer = rayon::current_thread_index();
            on_pool(|| rayon::current_thread_index() == outer)
        });
        assert!(nested);
    }
}
