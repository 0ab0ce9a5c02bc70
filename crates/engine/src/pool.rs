//! The engine's CPU threads: rayon's global pool, entered once per forward pass.
//!
//! Every quantized product and attention step splits its work over the pool. Called from a
//! thread outside the pool, each such split is a job handed to the pool and a wait for its
//! completion (a wake-up and a sleep, tens of microseconds each time on a small machine, a
//! hundred times per token). A forward pass therefore moves onto a pool thread once, and
//! the splits inside it start at once on that thread while the other threads steal work.
//! Threads: `RAYON_NUM_THREADS` (default: one per core).

/// Run `f` on a thread of rayon's global pool: inline when the caller is already one,
/// otherwise handed to the pool while the caller waits.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
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
