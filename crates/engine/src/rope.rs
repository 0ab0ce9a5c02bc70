//! Rotary position embeddings (RoPE) with Llama 3 frequency scaling.
//!
//! Frequencies follow transformers' `_compute_default_rope_parameters` and
//! `_compute_llama3_parameters` (modeling_rope_utils.py), in f32 as torch computes them; GGUF
//! files carry the same scaling as llama.cpp's `rope_freqs` tensor (per-pair divisors of the
//! plain frequencies), see [`RopeScaling::Factors`].
//!
//! Two layouts of the rotated pairs exist for the same model: Hugging Face checkpoints rotate
//! pairs `(i, i + head_dim/2)` ("rotate half"); llama.cpp's `convert_hf_to_gguf.py` permutes the
//! rows of `q_proj`/`k_proj` so that its interleaved kernel, which rotates pairs `(2i, 2i+1)`,
//! computes the same function. The loader records which layout its weights use
//! ([`RopeLayout`]); the attention code applies the matching kernel.

use candle_core::{Device, Tensor};

use crate::config::{LlamaConfig, RopeScaling};
use crate::error::Result;

/// Which dimensions of a head form the rotated pairs, fixed by the checkpoint format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(i, i + head_dim/2)`: Hugging Face safetensors (`rotate_half`).
    HalfSplit,
    /// Pairs `(2i, 2i+1)`: GGUF from llama.cpp (Q/K rows permuted at conversion).
    Interleaved,
}

/// Inverse frequencies `(head_dim / 2)` for a config, in f32 as transformers computes them.
pub fn inv_freq(config: &LlamaConfig) -> Vec<f32> {
    let dim = config.head_dim;
    let base = config.rope_theta as f32;
    // inv_freq = 1 / (base ** (arange(0, dim, 2) / dim))
    let plain: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32))
        .collect();
    match &config.rope_scaling {
        RopeScaling::None => plain,
        RopeScaling::Factors(factors) => plain.iter().zip(factors).map(|(f, d)| f / d).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let factor = *factor as f32;
            let low = *low_freq_factor as f32;
            let high = *high_freq_factor as f32;
            let old_context_len = *original_max_position_embeddings as f32;
            let low_freq_wavelen = old_context_len / low;
            let high_freq_wavelen = old_context_len / high;
            plain
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    // inv_freq_llama = where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
                    let scaled = if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        f
                    };
                    // is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
                    // (wavelengths are finite and positive, so this is the closed interval)
                    let is_medium = (high_freq_wavelen..=low_freq_wavelen).contains(&wavelen);
                    if is_medium {
                        let smooth = (old_context_len / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    }
                })
                .collect()
        }
    }
}

/// Precomputed inverse frequencies plus the pair layout of the weights they rotate.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// `(head_dim / 2)`
    inv_freq: Vec<f32>,
    layout: RopeLayout,
}

impl RotaryEmbedding {
    pub fn new(config: &LlamaConfig, layout: RopeLayout) -> Self {
        Self {
            inv_freq: inv_freq(config),
            layout,
        }
    }

    pub fn layout(&self) -> RopeLayout {
        self.layout
    }

    /// `cos` and `sin` tables for positions `start_pos..start_pos + seq_len`, each
    /// `(seq_len, head_dim / 2)` f32.
    pub fn cos_sin(
        &self,
        start_pos: usize,
        seq_len: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        self.tables(start_pos..start_pos + seq_len, &[seq_len], device)
    }

    /// `cos` and `sin` tables `(n, 1, head_dim / 2)` f32 for one position per sequence of a
    /// batch (candle's RoPE kernels take such 3-D tables row by row): row `b` holds the values
    /// [`Self::cos_sin`] gives for `positions[b]`.
    pub fn cos_sin_at(&self, positions: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        self.tables(positions.iter().copied(), &[positions.len(), 1], device)
    }

    /// The tables of `positions`, one row of `head_dim / 2` values each, shaped `rows` plus
    /// that last dimension.
    fn tables(
        &self,
        positions: impl ExactSizeIterator<Item = usize>,
        rows: &[usize],
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (cos, sin) = self.table_rows(positions);
        let shape: Vec<usize> = rows.iter().copied().chain([half]).collect();
        Ok((
            Tensor::from_vec(cos, shape.as_slice(), device)?,
            Tensor::from_vec(sin, shape, device)?,
        ))
    }

    /// `cos` and `sin` of `positions`, `head_dim / 2` values per position, one after the other.
    pub(crate) fn table_rows(
        &self,
        positions: impl ExactSizeIterator<Item = usize>,
    ) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for pos in positions {
            for &f in &self.inv_freq {
                // freqs = position (f32) * inv_freq (f32), as transformers' rotary forward
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }

    /// Rotate one position's heads in place: `x` holds whole heads of `head_dim` values, `cos`
    /// and `sin` that position's `head_dim / 2` values ([`Self::table_rows`]). Each pair gets
    /// candle's kernels' operations (`a cos - b sin`, `a sin + b cos`, unfused), so the values
    /// are [`Self::apply`]'s bit for bit, without building tensors (a batched decode step rotates
    /// one row per sequence).
    pub(crate) fn apply_in_place(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = self.inv_freq.len();
        assert!(
            cos.len() == half && sin.len() == half,
            "not one position's tables"
        );
        for head in x.chunks_exact_mut(2 * half) {
            for (i, (&c, &s)) in cos.iter().zip(sin).enumerate() {
                let (j, k) = match self.layout {
                    RopeLayout::HalfSplit => (i, i + half),
                    RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                };
                let (a, b) = (head[j], head[k]);
                head[j] = a * c - b * s;
                head[k] = a * s + b * c;
            }
        }
    }

    /// Rotate `x`: `(1, heads, seq, head_dim)` contiguous with tables from [`Self::cos_sin`], or
    /// `(batch, heads, 1, head_dim)` with tables from [`Self::cos_sin_at`].
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let out = match self.layout {
            RopeLayout::HalfSplit => candle_nn::rotary_emb::rope(x, cos, sin)?,
            RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin)?,
        };
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scaling: RopeScaling) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 8,
            hidden_size: 2048,
            intermediate_size: 8,
            num_layers: 1,
            num_heads: 32,
            num_kv_heads: 8,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: scaling,
            max_position_embeddings: 131072,
            tie_word_embeddings: true,
        }
    }

    #[test]
    fn rotating_in_place_gives_the_tensor_kernels_bits() {
        let dev = Device::Cpu;
        let cfg = config(RopeScaling::None);
        let (heads, hd) = (3, cfg.head_dim);
        let positions = [0usize, 7, 300, 4095];
        let x = crate::test_support::random(positions.len() * heads * hd, 9);
        for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
            let rope = RotaryEmbedding::new(&cfg, layout);
            let (cos, sin) = rope.cos_sin_at(&positions, &dev).unwrap();
            let t = Tensor::from_vec(x.clone(), (positions.len(), heads, 1, hd), &dev).unwrap();
            let want = rope.apply(&t, &cos, &sin).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (cos, sin) = rope.table_rows(positions.iter().copied());
            let mut got = x.clone();
            let half = hd / 2;
            for (b, row) in got.chunks_exact_mut(heads * hd).enumerate() {
                rope.apply_in_place(row, &cos[b * half..][..half], &sin[b * half..][..half]);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{layout:?}");
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = inv_freq(&config(RopeScaling::None));
        let scaled = inv_freq(&config(RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }));
        // Highest frequency (wavelength 2*pi < 2048): unchanged.
        assert_eq!(plain[0], scaled[0]);
        // Lowest frequency (wavelength > 8192): divided by the factor.
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 32.0).abs() <= f32::EPSILON * plain[last]);
        // Medium frequencies lie between the two.
        for (p, s) in plain.iter().zip(&scaled) {
            assert!(*s <= *p && *s >= p / 32.0 * (1.0 - 1e-6));
        }
        // Reference values of `_compute_llama3_parameters` for Llama-3.2-1B (computed in f64):
        // index 16 is a medium frequency (smoothed), 20 a low one (divided by 32).
        for (i, expected) in [
            (16, 4.295_567_965_593_681_5e-4),
            (20, 8.570_255_489_881_478e-6),
        ] {
            let rel = (scaled[i] as f64 - expected).abs() / expected;
            assert!(
                rel < 1e-5,
                "inv_freq[{i}] = {}, expected {expected}",
                scaled[i]
            );
        }
    }

    #[test]
    fn rope_freqs_factors_divide_plain_frequencies() {
        let plain = inv_freq(&config(RopeScaling::None));
        let factors: Vec<f32> = (0..32).map(|i| 1.0 + i as f32).collect();
        let scaled = inv_freq(&config(RopeScaling::Factors(factors.clone())));
        for i in 0..32 {
            assert_eq!(scaled[i], plain[i] / factors[i]);
        }
    }
}
