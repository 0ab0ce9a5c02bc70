//! The engine's CPU threads: candle's persistent pool, for our kernels and candle's alike.
//!
//! Our kernels (quantized and dense decode products, attention, widening) split their work
//! over candle's barrier pool, which candle's own CPU kernels use: one set of threads for
//! everything. The calling thread works too, and idle threads spin briefly before parking, so
//! a split costs microseconds (rayon, used before, handed each split from the calling thread
//! to its pool and waited, tens of microseconds a time, and its spinning threads competed
//! with candle's for a small machine's cores). Threads: `CANDLE_NUM_THREADS`, else
//! `RAYON_NUM_THREADS`, else one per physical core.

/// Threads of the pool, the calling thread included.
pub(crate) fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// `f(i, chunk)` for every `chunk_len`-element chunk of `out` (the last may be shorter),
/// spread over the pool's threads.
pub fn for_each_chunk_mut<T: Send>(
    out: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(chunk_len > 0, "empty chunks");
    let len = out.len();
    let chunks = len.div_ceil(chunk_len);
    let base = SendPtr(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(chunks, |range| {
        for i in range {
            let start = i * chunk_len;
            let n = chunk_len.min(len - start);
            // SAFETY: chunk `i` is `out[start..start + n]`, inside `out`, and every chunk goes
            // to exactly one call, so no two threads touch the same element; `out` is borrowed
            // mutably for the whole call.
            let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
            f(i, chunk);
        }
    });
}

/// `(rows, n)` row-major -> `(n, rows)` row-major, spread over the pool's threads: each task
/// writes eight whole output rows, reading runs of eight values of the input (a plain
/// single-threaded loop of scattered writes cost 9-10% of a batched decode step or a prefill).
/// A single row or column is already in both layouts and comes back as it is.
pub fn transpose(src: Vec<f32>, rows: usize, n: usize) -> Vec<f32> {
    assert_eq!(src.len(), rows * n, "not a (rows, n) matrix");
    if rows <= 1 || n <= 1 {
        return src;
    }
    let mut out = vec![0f32; n * rows];
    const T: usize = 8;
    for_each_chunk_mut(&mut out, T * rows, |t, block| {
        let i0 = t * T;
        let m = block.len() / rows;
        for (j, column) in src.chunks_exact(n).enumerate() {
            for (k, &v) in column[i0..i0 + m].iter().enumerate() {
                block[k * rows + j] = v;
            }
        }
    });
    out
}

/// `f(range)` for ranges of `0..count` that together cover it once, spread over the pool's
/// threads (a thread may get several).
pub(crate) fn for_each_range(count: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(count, f);
}

/// A pointer the pool's threads may share, each writing its own disjoint elements.
pub(crate) struct SendPtr<T>(*mut T);
// SAFETY: users write disjoint elements of memory that outlives the parallel call.
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    pub(crate) fn new(p: *mut T) -> Self {
        SendPtr(p)
    }
    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_every_element() {
        for (rows, n) in [
            (1usize, 1usize),
            (1, 7),
            (7, 1),
            (3, 5),
            (17, 9),
            (100, 16),
            (5, 0),
        ] {
            let src: Vec<f32> = (0..rows * n).map(|v| v as f32).collect();
            let out = transpose(src.clone(), rows, n);
            for r in 0..rows {
                for c in 0..n {
                    assert_eq!(
                        out[c * rows + r],
                        src[r * n + c],
                        "({r}, {c}) of ({rows}, {n})"
                    );
                }
            }
        }
    }

    #[test]
    fn every_chunk_is_visited_once_with_its_index() {
        for (len, chunk) in [(0usize, 3usize), (1, 3), (10, 3), (12, 4), (1000, 7)] {
            let mut out = vec![usize::MAX; len];
            for_each_chunk_mut(&mut out, chunk, |i, c| {
                assert!(c.len() <= chunk && !c.is_empty());
                for (k, v) in c.iter_mut().enumerate() {
                    assert_eq!(*v, usize::MAX, "visited twice");
                    *v = i * chunk + k;
                }
            });
            assert_eq!(out, (0..len).collect::<Vec<_>>());
        }
    }
}
