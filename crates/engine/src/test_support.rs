//! Helpers shared by the crate's unit tests.

/// `n` reproducible pseudo-random values in [-0.5, 0.5) (xorshift32 from `seed`).
pub(crate) fn random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}
