//! Export: a Hugging Face safetensors LLaMA checkpoint -> a GGUF v3 file that this engine and
//! llama.cpp both load (`guardreasoner quantize`).
//!
//! Follows llama.cpp `convert_hf_to_gguf.py` (`LlamaModel`) for what goes into the file and
//! `llama-quant.cpp` for the per-tensor types ([`mix`]):
//! - tensor names `token_embd`, `blk.{i}.attn_norm|attn_q|attn_k|attn_v|attn_output|ffn_norm|
//!   ffn_gate|ffn_up|ffn_down`, `output_norm`, `output` (no `output` when the embeddings are
//!   tied), each `.weight`;
//! - the rows of `q_proj`/`k_proj` permuted from Hugging Face's rotate-half order to llama.cpp's
//!   interleaved pairs ([`permute_for_interleaved_rope`]);
//! - `rope_freqs.weight` (F32, one divisor per rotated pair) for `rope_type = "llama3"`;
//! - `llama.*` hyperparameters and the `tokenizer.ggml.*` vocabulary ([`metadata`]).
//!
//! The file is written tensor by tensor ([`gguf_writer`]) to `OUT.partial` and renamed when
//! complete, so a failed run leaves no half-written `OUT`. Quantization itself is candle's
//! (`QTensor::quantize`, ggml's reference quantizers), run on row chunks in parallel threads.

pub mod gguf_writer;
pub mod metadata;
pub mod mix;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{EngineError, Result};
use crate::load::read_json;
use crate::load::safetensors::{read_model_config, Shards, TensorSource};
use gguf_writer::{GgufWriter, MetaValue, TensorDecl, WriteError};
pub use mix::{tensor_type, use_more_bits, QuantType, TensorRole};

/// Where one GGUF tensor comes from.
#[derive(Debug, Clone)]
enum Source {
    /// A safetensors tensor; `permute_heads` = Some(n) for Q/K rows of n heads.
    Checkpoint {
        name: String,
        permute_heads: Option<usize>,
    },
    /// Computed values (`rope_freqs`).
    Values(Vec<f32>),
}

#[derive(Debug, Clone)]
struct PlannedTensor {
    decl: TensorDecl,
    source: Source,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct QuantizeSummary {
    pub out: PathBuf,
    pub qtype: QuantType,
    /// `(gguf name, shape (out, in), type)` in file order.
    pub tensors: Vec<(String, Vec<usize>, GgmlDType)>,
    pub bytes: u64,
    pub seconds: f64,
}

/// Progress callback: `(tensors done, tensors total, name of the tensor just written)`.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &str);

/// Convert the Hugging Face LLaMA checkpoint in `dir` (config.json, safetensors,
/// tokenizer.json, optional generation_config.json / tokenizer_config.json) into the GGUF file
/// `out` with weights of `qtype`.
pub fn quantize_hf_dir(
    dir: &Path,
    out: &Path,
    qtype: QuantType,
    progress: Progress<'_>,
) -> Result<QuantizeSummary> {
    let start = Instant::now();
    let (config, special) = read_model_config(dir)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer: Value = read_json(&tokenizer_path)?;
    let tokenizer_config_path = dir.join("tokenizer_config.json");
    let tokenizer_config: Option<Value> = if tokenizer_config_path.exists() {
        Some(read_json(&tokenizer_config_path)?)
    } else {
        None
    };
    let shards = Shards::open(dir)?;

    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "llama".to_string());
    let mut metadata = metadata::model_metadata(&config, &name, qtype);
    metadata.extend(metadata::tokenizer_metadata(
        &tokenizer,
        &tokenizer_path,
        tokenizer_config.as_ref(),
        &special,
        config.vocab_size,
    )?);
    let has_output = !config.tie_word_embeddings && shards.contains("lm_head.weight");
    let plan = plan(&config, qtype, has_output);

    let partial = partial_path(out);
    let result = write_file(&partial, &metadata, &plan, &shards, progress);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, out).map_err(|e| EngineError::io(out, e))?;
    let bytes = std::fs::metadata(out)
        .map_err(|e| EngineError::io(out, e))?
        .len();
    Ok(QuantizeSummary {
        out: out.to_path_buf(),
        qtype,
        tensors: plan
            .iter()
            .map(|p| (p.decl.name.clone(), p.decl.shape.clone(), p.decl.dtype))
            .collect(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// Every GGUF tensor in file order, with its source and type.
fn plan(config: &LlamaConfig, qtype: QuantType, has_output: bool) -> Vec<PlannedTensor> {
    let hidden = config.hidden_size;
    let q_out = config.num_heads * config.head_dim;
    let kv_out = config.num_kv_heads * config.head_dim;
    let inter = config.intermediate_size;
    let n_layers = config.num_layers;
    let mut plan = Vec::new();
    let mut push = |gguf: String, hf: String, shape: Vec<usize>, role, permute_heads| {
        let row_len = shape.last().copied().unwrap_or(0);
        let dtype = tensor_type(qtype, role, row_len, n_layers, has_output);
        plan.push(PlannedTensor {
            decl: TensorDecl {
                name: gguf,
                shape,
                dtype,
            },
            source: Source::Checkpoint {
                name: hf,
                permute_heads,
            },
        });
    };
    push(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        vec![config.vocab_size, hidden],
        TensorRole::TokenEmbedding,
        None,
    );
    for i in 0..n_layers {
        let p = format!("model.layers.{i}");
        let b = format!("blk.{i}");
        let layer = [
            (
                "attn_norm",
                format!("{p}.input_layernorm"),
                vec![hidden],
                TensorRole::Vector,
                None,
            ),
            (
                "attn_q",
                format!("{p}.self_attn.q_proj"),
                vec![q_out, hidden],
                TensorRole::OtherMatrix,
                Some(config.num_heads),
            ),
            (
                "attn_k",
                format!("{p}.self_attn.k_proj"),
                vec![kv_out, hidden],
                TensorRole::OtherMatrix,
                Some(config.num_kv_heads),
            ),
            (
                "attn_v",
                format!("{p}.self_attn.v_proj"),
                vec![kv_out, hidden],
                TensorRole::AttnV { layer: i },
                None,
            ),
            (
                "attn_output",
                format!("{p}.self_attn.o_proj"),
                vec![hidden, q_out],
                TensorRole::OtherMatrix,
                None,
            ),
            (
                "ffn_norm",
                format!("{p}.post_attention_layernorm"),
                vec![hidden],
                TensorRole::Vector,
                None,
            ),
            (
                "ffn_gate",
                format!("{p}.mlp.gate_proj"),
                vec![inter, hidden],
                TensorRole::OtherMatrix,
                None,
            ),
            (
                "ffn_up",
                format!("{p}.mlp.up_proj"),
                vec![inter, hidden],
                TensorRole::OtherMatrix,
                None,
            ),
            (
                "ffn_down",
                format!("{p}.mlp.down_proj"),
                vec![hidden, inter],
                TensorRole::FfnDown { layer: i },
                None,
            ),
        ];
        for (gguf, hf, shape, role, permute) in layer {
            push(
                format!("{b}.{gguf}.weight"),
                format!("{hf}.weight"),
                shape,
                role,
                permute,
            );
        }
    }
    push(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        vec![hidden],
        TensorRole::Vector,
        None,
    );
    if has_output {
        push(
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![config.vocab_size, hidden],
            TensorRole::Output,
            None,
        );
    }
    if let Some(factors) = rope_freqs(config) {
        // convert_hf_to_gguf.py emits it first (generate_extra_tensors).
        plan.insert(
            0,
            PlannedTensor {
                decl: TensorDecl {
                    name: "rope_freqs.weight".into(),
                    shape: vec![factors.len()],
                    dtype: GgmlDType::F32,
                },
                source: Source::Values(factors),
            },
        );
    }
    plan
}

/// llama.cpp's `rope_freqs` for Llama 3 scaling: per rotated pair, the divisor of the plain
/// inverse frequency (1 for high frequencies, `factor` for low ones, smooth in between), as
/// `LlamaModel.generate_extra_tensors` computes it.
pub fn rope_freqs(config: &LlamaConfig) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    } = config.rope_scaling
    else {
        return None;
    };
    // All in f32, as the converter's torch scalars are.
    let dim = config.head_dim;
    let base = config.rope_theta as f32;
    let (factor, low, high) = (
        factor as f32,
        low_freq_factor as f32,
        high_freq_factor as f32,
    );
    let old_context = original_max_position_embeddings as f32;
    let low_wavelen = old_context / low;
    let high_wavelen = old_context / high;
    let factors = (0..dim / 2)
        .map(|i| {
            // freqs = 1 / base ** (arange(0, dim, 2) / dim)
            let freq = 1.0 / base.powf((2 * i) as f32 / dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_context / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect();
    Some(factors)
}

/// Hugging Face rotate-half rows -> llama.cpp interleaved rows (`LlamaModel.permute`):
/// `(heads * head_dim, in)` viewed as `(heads, 2, head_dim / 2, in)`, axes 1 and 2 swapped.
pub fn permute_for_interleaved_rope(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / heads / 2;
    Ok(w.reshape((heads, 2, half, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

fn write_file(
    partial: &Path,
    metadata: &[(String, MetaValue)],
    plan: &[PlannedTensor],
    shards: &Shards,
    progress: Progress<'_>,
) -> Result<()> {
    let write_err = |e: WriteError| match e {
        WriteError::Io(e) => EngineError::io(partial, e),
        WriteError::Order(detail) => EngineError::Export {
            path: partial.to_path_buf(),
            detail,
        },
    };
    let file = File::create(partial).map_err(|e| EngineError::io(partial, e))?;
    let decls = plan.iter().map(|p| p.decl.clone()).collect();
    let mut writer = GgufWriter::start(BufWriter::new(file), metadata, decls).map_err(write_err)?;
    let device = Device::Cpu;
    let mut source = TensorSource {
        shards,
        device: &device,
    };
    for (done, planned) in plan.iter().enumerate() {
        let decl = &planned.decl;
        let values: Vec<f32> = match &planned.source {
            Source::Values(v) => v.clone(),
            Source::Checkpoint {
                name,
                permute_heads,
            } => {
                let mut t = source.get(name, &decl.shape)?;
                if let Some(heads) = permute_heads {
                    t = permute_for_interleaved_rope(&t, *heads)?;
                }
                t.flatten_all()?.to_vec1::<f32>()?
            }
        };
        let bytes =
            quantize_rows(&values, &decl.shape, decl.dtype).map_err(|e| EngineError::Export {
                path: partial.to_path_buf(),
                detail: format!("quantizing {} to {:?}: {e}", decl.name, decl.dtype),
            })?;
        writer.write_tensor(&decl.name, &bytes).map_err(write_err)?;
        progress(done + 1, plan.len(), &decl.name);
    }
    writer.finish().map_err(write_err)?;
    Ok(())
}

/// The GGML bytes of `values` (row-major, `shape`) as `dtype`. Blocks never straddle rows, so
/// row chunks are quantized independently on all cores and concatenated.
fn quantize_rows(
    values: &[f32],
    shape: &[usize],
    dtype: GgmlDType,
) -> candle_core::Result<Vec<u8>> {
    if dtype == GgmlDType::F32 {
        return Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let cols = shape.last().copied().unwrap_or(1).max(1);
    let rows = values.len() / cols;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, rows.max(1));
    let rows_per_chunk = rows.div_ceil(threads).max(1);
    let chunks: Vec<&[f32]> = values.chunks(rows_per_chunk * cols).collect();
    let quantize = |chunk: &[f32]| -> candle_core::Result<Vec<u8>> {
        let t = Tensor::from_slice(chunk, (chunk.len() / cols, cols), &Device::Cpu)?;
        Ok(QTensor::quantize(&t, dtype)?.data()?.into_owned())
    };
    let parts: Vec<candle_core::Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| s.spawn(move || quantize(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(candle_core::Error::Msg(
                        "quantization thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend_from_slice(&part?);
    }
    Ok(bytes)
}
