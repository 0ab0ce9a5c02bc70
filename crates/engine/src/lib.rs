//! LLaMA 3.x inference for GuardReasoner checkpoints, on candle (CPU; CUDA behind a feature).
//!
//! Layers, bottom up:
//! - [`config`]: on-disk config mirrors -> validated [`LlamaConfig`].
//! - [`linear`], [`rope`], [`kv_cache`], [`model`]: the one LLaMA implementation (pure; dense
//!   and GGML-quantized weights behind [`Linear`]); [`rowwise`] is the decode-time product that
//!   makes a batched decode step give each sequence exactly its unbatched numbers, and
//!   `attention` its fused counterpart for the attention of a few rows over the cache;
//!   `screen` finds greedy tokens from an 8-bit copy of a dense output matrix without
//!   computing every logit (exactly the argmax's token).
//! - [`load`]: Hugging Face safetensors directories and GGUF files -> weights + tokenizer.
//! - [`tokenizer`]: `tokenizer.json` or GGUF metadata -> [`Tokenizer`], streaming decode.
//! - [`export`]: Hugging Face checkpoint -> GGUF (F16, Q8_0, llama.cpp's Q4_K_M mix).
//! - [`generate`]: sampling and the generation loop (speculative with [`lookup`] drafts when
//!   greedy); [`batch`]: several sequences decoded together; [`Engine`] ties them together.
//! - [`device`]: the single place where the compiled backends are chosen.
//!
//! Verified against llama.cpp (SmolLM2-135M Q4_1 logits, tokens and a greedy continuation)
//! and Python `tokenizers` (Llama 3.2 tokenizer on the GuardReasoner benchmarks); see the
//! crate's `tests/`.

pub mod activation;
mod attention;
pub mod batch;
pub mod config;
pub mod device;
pub mod engine;
pub mod error;
mod expf;
pub mod export;
pub mod generate;
mod hugepages;
pub mod kv_cache;
pub mod linear;
pub mod load;
pub mod lookup;
pub mod model;
mod norm;
pub mod pool;
mod prefetch;
pub mod prefix;
pub mod quant;
pub mod rope;
pub mod rowwise;
mod screen;
#[cfg(test)]
mod test_support;
pub mod tokenizer;

pub use batch::{generate_batch, generate_batch_with_prefix};
pub use config::{LlamaConfig, RopeScaling, SpecialTokens};
pub use device::{select_device, DeviceChoice};
pub use engine::{Engine, LoadOptions};
pub use error::{EngineError, Result};
pub use export::{quantize_hf_dir, QuantType, QuantizeSummary};
pub use generate::{
    argmax, candidate_probs, generate, generate_reusing, generate_with_prefix, log_softmax, sample,
    GenerateOptions, Generation, NoObserver, Reuse, SamplingParams, Step, StepControl, StepLogits,
    StepObserver, StopReason, Timings,
};
pub use kv_cache::{KvCache, KvType};
pub use linear::Linear;
pub use load::{load_path, LoadedModel, ModelFormat};
pub use lookup::{DraftCorpus, PromptLookup};
pub use model::{Llama, LlamaWeights};
pub use prefix::PrefixKv;
pub use rope::RopeLayout;
pub use tokenizer::{StreamDecoder, Tokenizer};
