//! Model configuration in two stages: mirrors of what is on disk, then one validated struct.
//!
//! - [`HfConfig`] / [`HfGenerationConfig`] mirror Hugging Face `config.json` /
//!   `generation_config.json` for `LlamaForCausalLM` (every field optional, as in the files).
//! - [`GgufLlamaMetadata`] mirrors the `llama.*` and `tokenizer.ggml.*_token_id` keys of a GGUF
//!   file (filled by `load::gguf`).
//! - Both convert once into [`LlamaConfig`], which has no `Option`s and has been checked
//!   (head counts divide, sizes non-zero, rope scaling parameters sane). A rejected value is
//!   reported as [`EngineError::InvalidConfig`] naming the file and the field.
//!
//! Defaults follow `transformers.LlamaConfig` (rms_norm_eps 1e-6, rope_theta 10000,
//! num_key_value_heads = num_attention_heads, tie_word_embeddings false) and llama.cpp's
//! `llama_model_loader` for GGUF (freq_base 10000, head_count_kv = head_count).

use std::path::Path;

use serde::Deserialize;

use crate::error::{EngineError, Result};

/// `config.json` of a Hugging Face `LlamaForCausalLM` checkpoint, as written on disk.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfConfig {
    pub architectures: Option<Vec<String>>,
    pub model_type: Option<String>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<HfRopeScaling>,
    pub tie_word_embeddings: Option<bool>,
    pub vocab_size: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    pub torch_dtype: Option<String>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub hidden_act: Option<String>,
}

/// `rope_scaling` block of `config.json` (`rope_type` in new files, `type` in older ones).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfRopeScaling {
    pub rope_type: Option<String>,
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
}

/// A token id field that may be a single integer or a list (`eos_token_id`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `generation_config.json`, as written on disk (only the fields the engine uses).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfGenerationConfig {
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
}

/// The `llama.*` metadata of a GGUF file (and its special token ids), as read from the file.
#[derive(Debug, Clone, Default)]
pub struct GgufLlamaMetadata {
    /// `general.architecture`
    pub architecture: Option<String>,
    /// `llama.embedding_length`
    pub embedding_length: Option<usize>,
    /// `llama.feed_forward_length`
    pub feed_forward_length: Option<usize>,
    /// `llama.block_count`
    pub block_count: Option<usize>,
    /// `llama.attention.head_count`
    pub head_count: Option<usize>,
    /// `llama.attention.head_count_kv`
    pub head_count_kv: Option<usize>,
    /// `llama.attention.key_length` (head dim); falls back to `llama.rope.dimension_count`
    pub key_length: Option<usize>,
    /// `llama.rope.dimension_count`
    pub rope_dimension_count: Option<usize>,
    /// `llama.attention.layer_norm_rms_epsilon`
    pub layer_norm_rms_epsilon: Option<f64>,
    /// `llama.rope.freq_base`
    pub rope_freq_base: Option<f64>,
    /// `llama.rope.scaling.type` (only absent / "none" is accepted; llama3 scaling comes as the
    /// `rope_freqs` tensor)
    pub rope_scaling_type: Option<String>,
    /// `llama.context_length`
    pub context_length: Option<usize>,
    /// `llama.vocab_size`, else the length of `tokenizer.ggml.tokens`
    pub vocab_size: Option<usize>,
    /// `tokenizer.ggml.bos_token_id`
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id` followed by `tokenizer.ggml.eot_token_id` /
    /// `tokenizer.ggml.eom_token_id` when present and different
    pub eos_token_ids: Vec<u32>,
}

/// How rotary position embeddings scale their frequencies.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: `inv_freq[i] = theta^(-2i/head_dim)`.
    None,
    /// Llama 3.1/3.2 scaling (`rope_scaling.rope_type = "llama3"`), computed as transformers'
    /// `_compute_llama3_parameters`.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors from GGUF's `rope_freqs` tensor (llama.cpp's `freq_factors`):
    /// `inv_freq[i] = theta^(-2i/head_dim) / factors[i]`; one factor per rotated pair.
    Factors(Vec<f32>),
}

/// The validated architecture of a LLaMA 3.x model. Built only through
/// [`LlamaConfig::from_hf`] or [`LlamaConfig::from_gguf`] (or by hand in tests), then passed to
/// the model; no `Option`s.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

/// Special token ids a model declares: BOS and every id that ends generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: u32,
    /// Non-empty, deduplicated, in declaration order.
    pub eos: Vec<u32>,
}

fn required<T>(path: &Path, field: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| EngineError::config(path, field, "missing"))
}

impl LlamaConfig {
    /// Validate a `config.json` mirror. `path` is only used in error messages.
    pub fn from_hf(hf: &HfConfig, path: &Path) -> Result<Self> {
        if let Some(model_type) = &hf.model_type {
            if model_type != "llama" {
                return Err(EngineError::config(
                    path,
                    "model_type",
                    format!("{model_type:?} is not supported (expected \"llama\")"),
                ));
            }
        }
        if hf.attention_bias == Some(true) {
            return Err(EngineError::config(
                path,
                "attention_bias",
                "true is not supported",
            ));
        }
        if hf.mlp_bias == Some(true) {
            return Err(EngineError::config(
                path,
                "mlp_bias",
                "true is not supported",
            ));
        }
        if let Some(act) = &hf.hidden_act {
            if act != "silu" {
                return Err(EngineError::config(
                    path,
                    "hidden_act",
                    format!("{act:?} is not supported (expected \"silu\")"),
                ));
            }
        }
        let hidden_size = required(path, "hidden_size", hf.hidden_size)?;
        let num_heads = required(path, "num_attention_heads", hf.num_attention_heads)?;
        let rope_scaling = match &hf.rope_scaling {
            None => RopeScaling::None,
            Some(s) => rope_scaling_from_hf(s, path)?,
        };
        let config = LlamaConfig {
            vocab_size: required(path, "vocab_size", hf.vocab_size)?,
            hidden_size,
            intermediate_size: required(path, "intermediate_size", hf.intermediate_size)?,
            num_layers: required(path, "num_hidden_layers", hf.num_hidden_layers)?,
            num_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(num_heads),
            head_dim: hf
                .head_dim
                .unwrap_or(hidden_size.checked_div(num_heads).unwrap_or(0)),
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
        };
        config.validate(path, &HF_FIELDS)?;
        Ok(config)
    }

    /// Validate GGUF metadata. `tie_word_embeddings` is whether the file lacks `output.weight`;
    /// `rope_freqs` is the file's `rope_freqs.weight` tensor, when present. `path` is only used
    /// in error messages.
    pub fn from_gguf(
        meta: &GgufLlamaMetadata,
        tie_word_embeddings: bool,
        rope_freqs: Option<Vec<f32>>,
        path: &Path,
    ) -> Result<Self> {
        match meta.architecture.as_deref() {
            Some("llama") => {}
            Some(other) => {
                return Err(EngineError::config(
                    path,
                    "general.architecture",
                    format!("{other:?} is not supported (expected \"llama\")"),
                ))
            }
            None => return Err(EngineError::config(path, "general.architecture", "missing")),
        }
        if let Some(kind) = meta.rope_scaling_type.as_deref() {
            if kind != "none" {
                return Err(EngineError::config(
                    path,
                    "llama.rope.scaling.type",
                    format!("{kind:?} is not supported (llama3 scaling is read from rope_freqs)"),
                ));
            }
        }
        let hidden_size = required(path, "llama.embedding_length", meta.embedding_length)?;
        let num_heads = required(path, "llama.attention.head_count", meta.head_count)?;
        let head_dim = meta
            .key_length
            .or(meta.rope_dimension_count)
            .unwrap_or(hidden_size.checked_div(num_heads).unwrap_or(0));
        if let Some(rope_dims) = meta.rope_dimension_count {
            if rope_dims != head_dim {
                return Err(EngineError::config(
                    path,
                    "llama.rope.dimension_count",
                    format!("{rope_dims} differs from head dim {head_dim} (partial rotary is not supported)"),
                ));
            }
        }
        let rope_scaling = match rope_freqs {
            Some(factors) => RopeScaling::Factors(factors),
            None => RopeScaling::None,
        };
        let config = LlamaConfig {
            vocab_size: required(path, "llama.vocab_size", meta.vocab_size)?,
            hidden_size,
            intermediate_size: required(
                path,
                "llama.feed_forward_length",
                meta.feed_forward_length,
            )?,
            num_layers: required(path, "llama.block_count", meta.block_count)?,
            num_heads,
            num_kv_heads: meta.head_count_kv.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: required(
                path,
                "llama.attention.layer_norm_rms_epsilon",
                meta.layer_norm_rms_epsilon,
            )?,
            rope_theta: meta.rope_freq_base.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: meta.context_length.unwrap_or(2048),
            tie_word_embeddings,
        };
        config.validate(path, &GGUF_FIELDS)?;
        Ok(config)
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    fn validate(&self, path: &Path, names: &FieldNames) -> Result<()> {
        let positive = [
            (names.vocab_size, self.vocab_size),
            (names.hidden_size, self.hidden_size),
            (names.intermediate_size, self.intermediate_size),
            (names.num_layers, self.num_layers),
            (names.num_heads, self.num_heads),
            (names.num_kv_heads, self.num_kv_heads),
            (names.head_dim, self.head_dim),
            (names.max_position_embeddings, self.max_position_embeddings),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(EngineError::config(path, field, "must be > 0"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(EngineError::config(
                path,
                names.num_kv_heads,
                format!(
                    "{} does not divide the number of attention heads {}",
                    self.num_kv_heads, self.num_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(EngineError::config(
                path,
                names.head_dim,
                format!("{} must be even for rotary embeddings", self.head_dim),
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(EngineError::config(
                path,
                names.rms_norm_eps,
                format!("{} must be a positive number", self.rms_norm_eps),
            ));
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return Err(EngineError::config(
                path,
                names.rope_theta,
                format!("{} must be a positive number", self.rope_theta),
            ));
        }
        if let RopeScaling::Factors(factors) = &self.rope_scaling {
            if factors.len() != self.head_dim / 2 {
                return Err(EngineError::config(
                    path,
                    "rope_freqs.weight",
                    format!(
                        "has {} factors, expected head_dim / 2 = {}",
                        factors.len(),
                        self.head_dim / 2
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn rope_scaling_from_hf(s: &HfRopeScaling, path: &Path) -> Result<RopeScaling> {
    let kind = s.rope_type.as_deref().or(s.legacy_type.as_deref());
    match kind {
        Some("llama3") => {}
        Some("default") => return Ok(RopeScaling::None),
        Some(other) => {
            return Err(EngineError::config(
                path,
                "rope_scaling.rope_type",
                format!("{other:?} is not supported (expected \"llama3\")"),
            ))
        }
        None => {
            return Err(EngineError::config(
                path,
                "rope_scaling.rope_type",
                "missing",
            ))
        }
    }
    let factor = required(path, "rope_scaling.factor", s.factor)?;
    let low_freq_factor = required(path, "rope_scaling.low_freq_factor", s.low_freq_factor)?;
    let high_freq_factor = required(path, "rope_scaling.high_freq_factor", s.high_freq_factor)?;
    let original_max_position_embeddings = required(
        path,
        "rope_scaling.original_max_position_embeddings",
        s.original_max_position_embeddings,
    )?;
    if !(factor > 0.0 && factor.is_finite()) {
        return Err(EngineError::config(
            path,
            "rope_scaling.factor",
            format!("{factor} must be > 0"),
        ));
    }
    if !(low_freq_factor > 0.0 && high_freq_factor > low_freq_factor) {
        return Err(EngineError::config(
            path,
            "rope_scaling.high_freq_factor",
            format!(
                "{high_freq_factor} must be greater than low_freq_factor {low_freq_factor} > 0"
            ),
        ));
    }
    if original_max_position_embeddings == 0 {
        return Err(EngineError::config(
            path,
            "rope_scaling.original_max_position_embeddings",
            "must be > 0",
        ));
    }
    Ok(RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    })
}

/// Resolve BOS and EOS ids: `generation_config.json` wins over `config.json` (it lists all
/// three Llama 3 end ids, 128001/128008/128009, where config.json may list one).
pub fn special_tokens_from_hf(
    config: &HfConfig,
    generation: Option<&HfGenerationConfig>,
    path: &Path,
) -> Result<SpecialTokens> {
    let bos = generation
        .and_then(|g| g.bos_token_id)
        .or(config.bos_token_id);
    let eos = generation
        .and_then(|g| g.eos_token_id.as_ref())
        .or(config.eos_token_id.as_ref())
        .map(TokenIds::to_vec)
        .unwrap_or_default();
    special_tokens(
        required(path, "bos_token_id", bos)?,
        eos,
        path,
        "eos_token_id",
    )
}

/// Resolve BOS and EOS ids from GGUF metadata.
pub fn special_tokens_from_gguf(meta: &GgufLlamaMetadata, path: &Path) -> Result<SpecialTokens> {
    let bos = required(path, "tokenizer.ggml.bos_token_id", meta.bos_token_id)?;
    special_tokens(
        bos,
        meta.eos_token_ids.clone(),
        path,
        "tokenizer.ggml.eos_token_id",
    )
}

fn special_tokens(bos: u32, eos: Vec<u32>, path: &Path, eos_field: &str) -> Result<SpecialTokens> {
    let mut unique = Vec::with_capacity(eos.len());
    for id in eos {
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    if unique.is_empty() {
        return Err(EngineError::config(path, eos_field, "missing"));
    }
    Ok(SpecialTokens { bos, eos: unique })
}

/// The on-disk names of the validated fields, for error messages.
struct FieldNames {
    vocab_size: &'static str,
    hidden_size: &'static str,
    intermediate_size: &'static str,
    num_layers: &'static str,
    num_heads: &'static str,
    num_kv_heads: &'static str,
    head_dim: &'static str,
    rms_norm_eps: &'static str,
    rope_theta: &'static str,
    max_position_embeddings: &'static str,
}

const HF_FIELDS: FieldNames = FieldNames {
    vocab_size: "vocab_size",
    hidden_size: "hidden_size",
    intermediate_size: "intermediate_size",
    num_layers: "num_hidden_layers",
    num_heads: "num_attention_heads",
    num_kv_heads: "num_key_value_heads",
    head_dim: "head_dim",
    rms_norm_eps: "rms_norm_eps",
    rope_theta: "rope_theta",
    max_position_embeddings: "max_position_embeddings",
};

const GGUF_FIELDS: FieldNames = FieldNames {
    vocab_size: "llama.vocab_size",
    hidden_size: "llama.embedding_length",
    intermediate_size: "llama.feed_forward_length",
    num_layers: "llama.block_count",
    num_heads: "llama.attention.head_count",
    num_kv_heads: "llama.attention.head_count_kv",
    head_dim: "llama.attention.key_length",
    rms_norm_eps: "llama.attention.layer_norm_rms_epsilon",
    rope_theta: "llama.rope.freq_base",
    max_position_embeddings: "llama.context_length",
};

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_3_2_1b() -> HfConfig {
        serde_json::from_str(
            r#"{
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
            "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "tie_word_embeddings": true, "vocab_size": 128256,
            "max_position_embeddings": 131072, "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16",
            "attention_bias": false, "mlp_bias": false, "hidden_act": "silu"
        }"#,
        )
        .unwrap()
    }

    #[test]
    fn llama_3_2_1b_config_validates() {
        let c = LlamaConfig::from_hf(&llama_3_2_1b(), Path::new("config.json")).unwrap();
        assert_eq!(c.num_kv_heads, 8);
        assert_eq!(c.kv_group_size(), 4);
        assert!(c.tie_word_embeddings);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 32.0));
        let special = special_tokens_from_hf(&llama_3_2_1b(), None, Path::new("x")).unwrap();
        assert_eq!(special.eos, vec![128001, 128008, 128009]);
    }

    #[test]
    fn eos_may_be_an_integer_and_generation_config_wins() {
        let mut hf = llama_3_2_1b();
        hf.eos_token_id = Some(TokenIds::One(128001));
        let generation: HfGenerationConfig =
            serde_json::from_str(r#"{"bos_token_id": 128000, "eos_token_id": [128001, 128009]}"#)
                .unwrap();
        let special = special_tokens_from_hf(&hf, Some(&generation), Path::new("x")).unwrap();
        assert_eq!(special.eos, vec![128001, 128009]);
        let special = special_tokens_from_hf(&hf, None, Path::new("x")).unwrap();
        assert_eq!(special.eos, vec![128001]);
    }

    #[test]
    fn errors_name_the_field() {
        let mut hf = llama_3_2_1b();
        hf.num_key_value_heads = Some(5);
        let err = LlamaConfig::from_hf(&hf, Path::new("m/config.json")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m/config.json: field num_key_value_heads: 5 does not divide the number of attention heads 32"
        );
        let mut hf = llama_3_2_1b();
        hf.hidden_size = None;
        let err = LlamaConfig::from_hf(&hf, Path::new("c.json")).unwrap_err();
        assert_eq!(err.to_string(), "c.json: field hidden_size: missing");
        let mut hf = llama_3_2_1b();
        hf.rope_scaling.as_mut().unwrap().rope_type = Some("yarn".into());
        let err = LlamaConfig::from_hf(&hf, Path::new("c.json")).unwrap_err();
        assert!(
            err.to_string().contains("field rope_scaling.rope_type"),
            "{err}"
        );
    }

    #[test]
    fn legacy_rope_scaling_type_key_is_accepted() {
        let mut hf = llama_3_2_1b();
        let s = hf.rope_scaling.as_mut().unwrap();
        s.legacy_type = s.rope_type.take();
        let c = LlamaConfig::from_hf(&hf, Path::new("c.json")).unwrap();
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { .. }));
    }
}
