//! The LLaMA 3.x decoder: one implementation for dense and quantized weights.
//!
//! Follows transformers' `modeling_llama.py` (`LlamaForCausalLM`): token embedding, then per
//! layer `x += o_proj(attn(rope(q_proj(n(x))), rope(k_proj(n(x))), v_proj(n(x))))` and
//! `x += down_proj(silu(gate_proj(n(x))) * up_proj(n(x)))` with RMSNorm `n`, grouped-query
//! causal attention, a final RMSNorm and `lm_head` (tied to the embedding table when the
//! checkpoint has none).
//!
//! The model is pure: [`Llama::forward`] takes token ids, an explicit [`KvCache`] and the
//! position of the first token, and returns f32 logits for every position;
//! [`Llama::forward_batch`] takes one next token for each of several sequences, each with its
//! own cache and position, and returns one logits row per sequence. No file paths,
//! environment or logging here; loaders (`crate::load`) build [`LlamaWeights`] and the
//! validated [`LlamaConfig`]. Weights are [`Linear`] so quantized and dense checkpoints share
//! this code; [`RopeLayout`] records how the checkpoint ordered the rotated pairs.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};

use crate::activation::silu_mul;
use crate::attention::{attend_rows, AttentionShape, SequenceRows};
use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::generate::StepLogits;
use crate::kv_cache::{KvCache, KvType};
use crate::linear::Linear;
use crate::rope::{RopeLayout, RotaryEmbedding};
use crate::screen::GreedyScreen;

/// RMSNorm weight `(hidden)` and epsilon.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// `(hidden)` f32
    pub weight: Tensor,
    pub eps: f32,
}

impl RmsNorm {
    /// `x / sqrt(mean(x^2) + eps) * weight` over the last dim of `(seq, hidden)` (candle's
    /// arithmetic, [`crate::norm`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::norm::rms_norm(x, &self.weight, self.eps)
    }
}

/// Weights of one decoder layer (`model.layers.{i}` / `blk.{i}`).
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// `input_layernorm` / `attn_norm`: `(hidden)`
    pub input_layernorm: Tensor,
    /// `self_attn.q_proj` / `attn_q`: `(num_heads * head_dim, hidden)`
    pub q_proj: Linear,
    /// `self_attn.k_proj` / `attn_k`: `(num_kv_heads * head_dim, hidden)`
    pub k_proj: Linear,
    /// `self_attn.v_proj` / `attn_v`: `(num_kv_heads * head_dim, hidden)`
    pub v_proj: Linear,
    /// `self_attn.o_proj` / `attn_output`: `(hidden, num_heads * head_dim)`
    pub o_proj: Linear,
    /// `post_attention_layernorm` / `ffn_norm`: `(hidden)`
    pub post_attention_layernorm: Tensor,
    /// `mlp.gate_proj` / `ffn_gate`: `(intermediate, hidden)`
    pub gate_proj: Linear,
    /// `mlp.up_proj` / `ffn_up`: `(intermediate, hidden)`
    pub up_proj: Linear,
    /// `mlp.down_proj` / `ffn_down`: `(hidden, intermediate)`
    pub down_proj: Linear,
}

/// All weights of the model, as a loader produces them (shapes already checked by the loader).
#[derive(Debug, Clone)]
pub struct LlamaWeights {
    /// `model.embed_tokens` / `token_embd`: `(vocab, hidden)`
    pub embed_tokens: Linear,
    pub layers: Vec<LayerWeights>,
    /// `model.norm` / `output_norm`: `(hidden)`
    pub norm: Tensor,
    /// `lm_head` / `output`: `(vocab, hidden)`; a clone of `embed_tokens` when tied.
    pub lm_head: Linear,
    /// How the rows of `q_proj` / `k_proj` order the rotated pairs.
    pub rope_layout: RopeLayout,
}

impl LlamaWeights {
    /// Every Q4_1 weight dequantized to f32 (see [`Linear::dequantize_q4_1`]).
    pub fn dequantize_q4_1(self) -> Result<Self> {
        let layers = self
            .layers
            .into_iter()
            .map(|l| {
                Ok(LayerWeights {
                    q_proj: l.q_proj.dequantize_q4_1()?,
                    k_proj: l.k_proj.dequantize_q4_1()?,
                    v_proj: l.v_proj.dequantize_q4_1()?,
                    o_proj: l.o_proj.dequantize_q4_1()?,
                    gate_proj: l.gate_proj.dequantize_q4_1()?,
                    up_proj: l.up_proj.dequantize_q4_1()?,
                    down_proj: l.down_proj.dequantize_q4_1()?,
                    ..l
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: self.embed_tokens.dequantize_q4_1()?,
            lm_head: self.lm_head.dequantize_q4_1()?,
            layers,
            ..self
        })
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    post_attention_layernorm: RmsNorm,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

/// A LLaMA 3.x causal language model ready to run.
#[derive(Debug, Clone)]
pub struct Llama {
    config: LlamaConfig,
    embed_tokens: Linear,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    /// The greedy screen of a dense `lm_head` on the CPU ([`Self::with_greedy_screen`]).
    screen: Option<Arc<GreedyScreen>>,
    /// What [`Self::new_cache`]'s caches hold ([`Self::with_kv_type`]).
    kv_type: KvType,
    rotary: RotaryEmbedding,
    device: Device,
}

/// What the model gives a sequence for its next position.
#[derive(Debug, Clone)]
pub(crate) enum NextToken {
    /// Every logit `(vocab)`, to sample from.
    Logits(Vec<f32>),
    /// The greedy choice, found by `screen` without every logit; `hidden` (the final-normed
    /// row) gives any logit on demand.
    Greedy {
        token: u32,
        hidden: Vec<f32>,
        screen: Arc<GreedyScreen>,
    },
}

impl NextToken {
    /// The logits an observer of the step sees: the computed ones, or any of them on demand.
    pub(crate) fn logits(&self) -> StepLogits<'_> {
        match self {
            NextToken::Logits(logits) => StepLogits::from(&logits[..]),
            NextToken::Greedy { hidden, screen, .. } => StepLogits::on_demand(screen, hidden),
        }
    }
}

impl Llama {
    /// Assemble a model from a validated config and weights on `device`.
    pub fn new(config: LlamaConfig, weights: LlamaWeights, device: &Device) -> Result<Self> {
        if weights.layers.len() != config.num_layers {
            return Err(EngineError::InvalidRequest {
                field: "weights.layers".into(),
                problem: format!(
                    "{} layers given, config declares {}",
                    weights.layers.len(),
                    config.num_layers
                ),
            });
        }
        let eps = config.rms_norm_eps as f32;
        let norm = |w: Tensor| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: w.to_dtype(DType::F32)?,
                eps,
            })
        };
        let layers = weights
            .layers
            .into_iter()
            .map(|l| {
                Ok(DecoderLayer {
                    input_layernorm: norm(l.input_layernorm)?,
                    q_proj: l.q_proj,
                    k_proj: l.k_proj,
                    v_proj: l.v_proj,
                    o_proj: l.o_proj,
                    post_attention_layernorm: norm(l.post_attention_layernorm)?,
                    gate_proj: l.gate_proj,
                    up_proj: l.up_proj,
                    down_proj: l.down_proj,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rotary = RotaryEmbedding::new(&config, weights.rope_layout);
        Ok(Self {
            embed_tokens: weights.embed_tokens,
            layers,
            norm: norm(weights.norm)?,
            lm_head: weights.lm_head,
            screen: None,
            kv_type: KvType::F32,
            rotary,
            device: device.clone(),
            config,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn rope_layout(&self) -> RopeLayout {
        self.rotary.layout()
    }

    /// A cache for this model holding up to `capacity` positions, on the model's device.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        KvCache::with_type(&self.config, capacity, &self.device, self.kv_type)
    }

    /// Make [`Self::new_cache`] allocate caches of `kind` (f32 by default; [`KvType::F16`]
    /// halves their memory and the bytes decode's attention reads, on the CPU only).
    pub fn with_kv_type(mut self, kind: KvType) -> Self {
        self.kv_type = kind;
        self
    }

    /// Run `tokens` at positions `start_pos..start_pos + tokens.len()`, reading earlier positions
    /// from `cache` and writing these ones into it. Returns logits `(seq, vocab)` f32 for every
    /// position.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, start_pos: usize) -> Result<Tensor> {
        let hidden = self.forward_hidden(tokens, cache, start_pos)?;
        self.logits(&hidden)
    }

    /// Output projection: final hidden states `(seq, hidden)` -> logits `(seq, vocab)` f32.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Build (`on`) or drop the greedy screen of `lm_head` ([`crate::screen`]): with it, greedy
    /// steps find the largest logit exactly without computing every logit, reading an 8-bit
    /// copy of the matrix instead (half the bytes of f16). Only a dense matrix on a CPU with
    /// AVX-512F, or AVX2 and FMA, gets one; elsewhere this changes nothing. Costs the copy's
    /// memory (vocab x hidden bytes) and one pass over the matrix to build it.
    pub fn with_greedy_screen(mut self, on: bool) -> Self {
        self.screen = match (&self.lm_head, on) {
            (Linear::Dense(w), true) => GreedyScreen::build(w).map(Arc::new),
            _ => None,
        };
        self
    }

    /// Whether greedy steps use the screen ([`Self::with_greedy_screen`]).
    pub fn has_greedy_screen(&self) -> bool {
        self.screen.is_some()
    }

    /// With the screen: the bytes of the dense output matrix and of the screen's copy, which a
    /// greedy step reads instead (plus a few exact rows).
    pub fn greedy_screen_bytes(&self) -> Option<(usize, usize)> {
        self.screen.as_ref().map(|screen| screen.bytes())
    }

    /// The greedy choice ([`crate::argmax`] of the logits) for each row of final hidden
    /// states `(rows, hidden)`: with the screen when there is one, else from every logit.
    pub fn greedy_tokens(&self, hidden: &Tensor) -> Result<Vec<u32>> {
        Ok(self
            .next_tokens(hidden, true)?
            .into_iter()
            .map(|next| match next {
                NextToken::Logits(logits) => crate::argmax(&logits),
                NextToken::Greedy { token, .. } => token,
            })
            .collect())
    }

    /// For each row of final hidden states `(rows, hidden)`: its greedy choice when `greedy`
    /// and the screen can make it, else its logits.
    pub(crate) fn next_tokens(&self, hidden: &Tensor, greedy: bool) -> Result<Vec<NextToken>> {
        if let (true, Some(screen)) = (greedy, &self.screen) {
            let rows = hidden.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            let flat = rows.concat();
            if let Some(tokens) = screen.argmax(&flat) {
                return Ok(tokens
                    .into_iter()
                    .zip(rows)
                    .map(|(token, hidden)| NextToken::Greedy {
                        token,
                        hidden,
                        screen: Arc::clone(screen),
                    })
                    .collect());
            }
        }
        let logits = self.logits(hidden)?.to_vec2::<f32>()?;
        Ok(logits.into_iter().map(NextToken::Logits).collect())
    }

    /// Logits `(vocab)` of the last row of final hidden states `(seq, hidden)`.
    pub fn last_position_logits(&self, hidden: &Tensor) -> Result<Vec<f32>> {
        let seq_len = hidden.dim(0)?;
        let last = hidden.narrow(0, seq_len.saturating_sub(1), 1)?; // (1, hidden)
        Ok(self.logits(&last)?.squeeze(0)?.to_vec1::<f32>()?)
    }

    /// Like [`Self::forward`] but stops before `lm_head`: final-normed hidden states
    /// `(seq, hidden)` f32 for every position.
    pub fn forward_hidden(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        start_pos: usize,
    ) -> Result<Tensor> {
        let seq_len = tokens.len();
        if seq_len == 0 {
            return Err(EngineError::InvalidRequest {
                field: "tokens".into(),
                problem: "empty".into(),
            });
        }
        self.check_vocab(tokens)?;
        cache.check_room(start_pos, seq_len)?;
        let ids = Tensor::new(tokens, &self.device)?; // (seq)
        let mut x = self.embed_tokens.embed(&ids)?; // (seq, hidden)
        let (cos, sin) = self.rotary.cos_sin(start_pos, seq_len, &self.device)?; // (seq, head_dim/2)
        let mask = match self.device.is_cpu() {
            true => None, // the CPU's fused causal kernel needs no mask
            false => causal_mask(seq_len, start_pos, &self.device)?, // (seq, start_pos + seq)
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(&x)?;
            let attn = self.attention(layer, i, &h, &cos, &sin, mask.as_ref(), cache, start_pos)?;
            x = (x + attn)?;
            let h = layer.post_attention_layernorm.forward(&x)?;
            let gate = layer.gate_proj.forward(&h)?; // (seq, intermediate)
            let up = layer.up_proj.forward(&h)?; // (seq, intermediate)
            x = (x + layer.down_proj.forward(&silu_mul(&gate, &up)?)?)?; // (seq, hidden)
        }
        cache.set_len(start_pos + seq_len);
        self.norm.forward(&x) // (seq, hidden)
    }

    /// Grouped-query causal self-attention of one layer: `h (seq, hidden)` -> `(seq, hidden)`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &DecoderLayer,
        layer_idx: usize,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        start_pos: usize,
    ) -> Result<Tensor> {
        let q = layer.q_proj.forward(h)?; // (seq, n_heads * hd)
        let k = layer.k_proj.forward(h)?; // (seq, n_kv * hd)
        let v = layer.v_proj.forward(h)?; // (seq, n_kv * hd)
        let out = self.attend(layer_idx, &q, &k, &v, cos, sin, mask, cache, start_pos)?;
        layer.o_proj.forward(&out) // (seq, hidden)
    }

    /// RoPE, cache append and attention of one sequence, from its projections `q (seq, n_heads *
    /// hd)`, `k`, `v (seq, n_kv * hd)` at `start_pos` -> `(seq, n_heads * hd)` before `o_proj`.
    /// [`Self::forward_batch`] rotates each sequence's row in place with the same arithmetic
    /// ([`RotaryEmbedding::apply_in_place`]) and attends for all of them in one call of the same
    /// fused kernel, so both paths give a sequence the same values.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        layer_idx: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        start_pos: usize,
    ) -> Result<Tensor> {
        let c = &self.config;
        let seq_len = q.dim(0)?;
        // (seq, heads * hd) -> (1, heads, seq, hd)
        let q = self.split_heads(q, (1, seq_len), c.num_heads)?;
        let k = self.split_heads(k, (1, seq_len), c.num_kv_heads)?;
        let v = self.split_heads(v, (1, seq_len), c.num_kv_heads)?;
        let q = self.rotary.apply(&q, cos, sin)?; // (1, n_heads, seq, hd)
        let k = self.rotary.apply(&k, cos, sin)?; // (1, n_kv, seq, hd)

        // Keys and values up to the end of the write: (n_kv, start_pos + seq, hd) each.
        let (k_all, v_all) = cache.append(layer_idx, start_pos, &k.squeeze(0)?, &v.squeeze(0)?)?;
        let fused = self.fused_attention(layer_idx, &q, &[seq_len], &[&*cache], &[start_pos])?;
        match fused {
            Some(out) => Ok(out),
            None => {
                let made = match mask {
                    None => causal_mask(seq_len, start_pos, &self.device)?,
                    Some(_) => None,
                };
                self.matmul_attention(&q, &k_all, &v_all, mask.or(made.as_ref()))
            }
        }
    }

    /// Projections `(batch * seq, heads * hd)` as `(batch, heads, seq, hd)`, contiguous, for
    /// `(batch, seq)` = `shape`: one sequence's rows, or one row of each of several sequences.
    fn split_heads(&self, t: &Tensor, shape: (usize, usize), heads: usize) -> Result<Tensor> {
        let (batch, seq) = shape;
        Ok(t.reshape((batch, seq, heads, self.config.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// `1 / sqrt(head_dim)`, the attention scores' scale.
    fn attention_scale(&self) -> f64 {
        1.0 / (self.config.head_dim as f64).sqrt()
    }

    /// The fused CPU kernel ([`crate::attention`]) for the rows of one or more sequences
    /// (prefill, decode, batched decode, speculative verification): `q` holds the rotated queries of
    /// every sequence in turn, `(n_heads, seq_lens[b], hd)` for sequence `b` at `positions[b]`
    /// (a `(1, n_heads, seq, hd)` tensor for one sequence, `(batch, n_heads, 1, hd)` for a
    /// decode step of several), whose keys and values `caches[b]` already holds. Returns
    /// `(sum of seq_lens, n_heads * hd)`, or `None` when the kernel does not apply (another
    /// device).
    fn fused_attention(
        &self,
        layer_idx: usize,
        q: &Tensor,
        seq_lens: &[usize],
        caches: &[&KvCache],
        positions: &[usize],
    ) -> Result<Option<Tensor>> {
        if !self.device.is_cpu() {
            return Ok(None);
        }
        let q_rows = q.flatten_all()?.to_vec1::<f32>()?;
        self.fused_attention_rows(layer_idx, &q_rows, seq_lens, caches, positions)
    }

    /// [`Self::fused_attention`] with the rotated queries as values, in the same order.
    fn fused_attention_rows(
        &self,
        layer_idx: usize,
        q_rows: &[f32],
        seq_lens: &[usize],
        caches: &[&KvCache],
        positions: &[usize],
    ) -> Result<Option<Tensor>> {
        let c = &self.config;
        let Some(layers) = caches
            .iter()
            .map(|cache| cache.cpu_layer(layer_idx))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let width = c.num_heads * c.head_dim;
        let rows: usize = seq_lens.iter().sum();
        assert_eq!(
            q_rows.len(),
            rows * width,
            "queries are not the sequences' rows"
        );
        let mut at = 0;
        let mut seqs = Vec::with_capacity(seq_lens.len());
        for ((&n, layer), &start_pos) in seq_lens.iter().zip(&layers).zip(positions) {
            seqs.push(SequenceRows {
                q: &q_rows[at..at + n * width],
                k: layer.keys(),
                v: layer.values(),
                start_pos,
            });
            at += n * width;
        }
        let shape = AttentionShape {
            n_heads: c.num_heads,
            n_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        };
        let out = attend_rows(&seqs, shape, self.attention_scale() as f32);
        Ok(Some(Tensor::from_vec(
            out,
            (rows, c.num_heads * c.head_dim),
            &self.device,
        )?))
    }

    /// Attention of one sequence with candle's matrix products (devices other than the CPU):
    /// rotated queries `q (1, n_heads, seq, hd)`, keys and values `(n_kv, total, hd)`, `mask`
    /// `(seq, total)` or none -> `(seq, n_heads * hd)`.
    fn matmul_attention(
        &self,
        q: &Tensor,
        k_all: &Tensor,
        v_all: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (n_heads, n_kv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let group = c.kv_group_size();
        let seq_len = q.dim(2)?;
        let total = k_all.dim(1)?;
        let scale = self.attention_scale();
        // Query heads g*group..(g+1)*group share kv head g (transformers' repeat_kv order), so
        // fold the group into the rows: (n_kv, group * seq, hd).
        let q = q.reshape((n_kv, group * seq_len, hd))?;
        let scores = (q.matmul(&k_all.t()?)? * scale)?; // (n_kv, group * seq, total)
        let scores = scores.reshape((n_kv, group, seq_len, total))?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?; // (n_kv, group, seq, total)
        let probs = probs.reshape((n_kv, group * seq_len, total))?;
        let out = probs.matmul(&v_all.contiguous()?)?; // (n_kv, group * seq, hd)
        Ok(out
            .reshape((n_heads, seq_len, hd))?
            .transpose(0, 1)?
            .reshape((seq_len, n_heads * hd))?) // (seq, n_heads * hd)
    }

    /// One decode step for several independent sequences: `tokens[b]` is the next token of
    /// sequence `b`, at position `positions[b]` of its own cache `caches[b]`. Returns logits
    /// `(batch, vocab)` f32 ([`Self::forward_batch_hidden`], then `lm_head`).
    pub fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        positions: &[usize],
    ) -> Result<Tensor> {
        let hidden = self.forward_batch_hidden(tokens, caches, positions)?;
        self.logits(&hidden) // (batch, vocab)
    }

    /// [`Self::forward_batch`] up to the final-normed hidden states `(batch, hidden)`.
    ///
    /// Embeddings, norms, every projection, the MLP and `lm_head` run on the `(batch, hidden)`
    /// matrix at once (each weight is read once per step for all sequences); RoPE, the cache
    /// write and attention run per sequence at its own position over its own cache (on the CPU
    /// the keys and values go straight into each cache, [`KvCache::write_position`], and one
    /// call of the fused kernel attends for all sequences). Row `b` equals
    /// `forward(&[tokens[b]], caches[b], positions[b])` exactly for dense weights (see
    /// [`crate::rowwise`]) and for GGML-quantized ones (their kernel works row by row).
    pub fn forward_batch_hidden(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        positions: &[usize],
    ) -> Result<Tensor> {
        let batch = tokens.len();
        if batch == 0 {
            return Err(EngineError::InvalidRequest {
                field: "tokens".into(),
                problem: "empty batch".into(),
            });
        }
        if caches.len() != batch || positions.len() != batch {
            return Err(EngineError::InvalidRequest {
                field: "caches/positions".into(),
                problem: format!(
                    "{batch} tokens but {} caches and {} positions",
                    caches.len(),
                    positions.len()
                ),
            });
        }
        self.check_vocab(tokens)?;
        for (cache, &pos) in caches.iter().zip(positions) {
            cache.check_room(pos, 1)?;
        }
        let (n_heads, n_kv, hd) = (
            self.config.num_heads,
            self.config.num_kv_heads,
            self.config.head_dim,
        );
        let one_row_each = vec![1; batch]; // the rows of each sequence in a decode step
        let ids = Tensor::new(tokens, &self.device)?; // (batch)
        let mut x = self.embed_tokens.embed(&ids)?; // (batch, hidden)
        let on_cpu = self.device.is_cpu();
        // Each sequence's own position: rows of `head_dim / 2` values on the CPU; otherwise
        // (batch, 1, head_dim/2) tables, which candle's RoPE kernels apply row by row with the
        // same arithmetic as a single sequence's 2-D tables.
        let rows = on_cpu.then(|| self.rotary.table_rows(positions.iter().copied()));
        let tables = match on_cpu {
            true => None,
            false => Some(self.rotary.cos_sin_at(positions, &self.device)?),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(&x)?; // (batch, hidden)
            let q = layer.q_proj.forward(&h)?; // (batch, n_heads * hd)
            let k = layer.k_proj.forward(&h)?; // (batch, n_kv * hd)
            let v = layer.v_proj.forward(&h)?; // (batch, n_kv * hd)
            let attn = if let Some((cos, sin)) = &rows {
                // Each sequence's row rotated in place (candle's RoPE arithmetic), its keys and
                // values written straight into its cache, then every sequence's attention in one
                // call of the fused kernel (one pool dispatch for all sequences and heads).
                let mut q = q.flatten_all()?.to_vec1::<f32>()?;
                let mut k = k.flatten_all()?.to_vec1::<f32>()?;
                let v = v.flatten_all()?.to_vec1::<f32>()?;
                let half = hd / 2;
                let (qw, kw) = (n_heads * hd, n_kv * hd);
                for (b, cache) in caches.iter_mut().enumerate() {
                    let (cos, sin) = (&cos[b * half..][..half], &sin[b * half..][..half]);
                    self.rotary.apply_in_place(&mut q[b * qw..][..qw], cos, sin);
                    let k = &mut k[b * kw..][..kw];
                    self.rotary.apply_in_place(k, cos, sin);
                    cache.write_position(i, positions[b], k, &v[b * kw..][..kw])?;
                }
                let shared: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
                self.fused_attention_rows(i, &q, &one_row_each, &shared, positions)?
                    .expect("caches on the CPU hold f32 or f16 (write_position checked)")
            } else {
                // Per sequence with candle's products. (batch, heads * hd) -> (batch, heads, 1, hd)
                let (cos, sin) = tables.as_ref().expect("tables off the CPU");
                let q = self.split_heads(&q, (batch, 1), n_heads)?;
                let k = self.split_heads(&k, (batch, 1), n_kv)?;
                let v = self.split_heads(&v, (batch, 1), n_kv)?;
                let q = self.rotary.apply(&q, cos, sin)?; // (batch, n_heads, 1, hd)
                let k = self.rotary.apply(&k, cos, sin)?; // (batch, n_kv, 1, hd)
                let mut rows = Vec::with_capacity(batch);
                for (b, cache) in caches.iter_mut().enumerate() {
                    let (k_all, v_all) = cache.append(i, positions[b], &k.get(b)?, &v.get(b)?)?;
                    rows.push(self.matmul_attention(&q.narrow(0, b, 1)?, &k_all, &v_all, None)?);
                }
                Tensor::cat(&rows, 0)?
            }; // (batch, n_heads * hd)
            x = (x + layer.o_proj.forward(&attn)?)?; // (batch, hidden)
            let h = layer.post_attention_layernorm.forward(&x)?;
            let gate = layer.gate_proj.forward(&h)?; // (batch, intermediate)
            let up = layer.up_proj.forward(&h)?; // (batch, intermediate)
            x = (x + layer.down_proj.forward(&silu_mul(&gate, &up)?)?)?; // (batch, hidden)
        }
        for (cache, &pos) in caches.iter_mut().zip(positions) {
            cache.set_len(pos + 1);
        }
        self.norm.forward(&x) // (batch, hidden)
    }

    fn check_vocab(&self, tokens: &[u32]) -> Result<()> {
        match tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            Some(&bad) => Err(EngineError::InvalidRequest {
                field: "tokens".into(),
                problem: format!(
                    "id {bad} is outside the vocabulary of {}",
                    self.config.vocab_size
                ),
            }),
            None => Ok(()),
        }
    }
}

/// Additive causal mask `(seq, start_pos + seq)`: 0 where query `i` (at position
/// `start_pos + i`) may attend, -inf after it. `None` for a single token (it sees everything).
fn causal_mask(seq_len: usize, start_pos: usize, device: &Device) -> Result<Option<Tensor>> {
    if seq_len == 1 {
        return Ok(None);
    }
    let total = start_pos + seq_len;
    let mask: Vec<f32> = (0..seq_len)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > start_pos + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(mask, (seq_len, total), device)?))
}

/// Log-softmax over the vocabulary of `(seq, vocab)` logits.
pub fn log_probs(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?)
}
