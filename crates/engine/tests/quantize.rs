//! `quantize` (Hugging Face checkpoint -> GGUF): the files load in this engine with logits close
//! to the f32 model, carry llama.cpp's tensor-type mix, and agree with llama.cpp's logits on
//! the same files (`tiny_llama_quantized_golden.json`, written by
//! `scripts/engine/check_quantized_with_llama_cpp.py`).
//!
//! Tolerances against the f32 model (the tiny model's logits reach 11.9, std 2.9; its large
//! random weights make it deliberately sensitive, and llama.cpp on the same files moves by as
//! much: 0.43 for q8_0, 2.05 for q4_k_m, see the golden's `vs_reference`):
//! - f16: the fixture's weights are exact in f16 -> same logits (< 1e-4), same top-1 everywhere.
//! - q8_0: within 0.6, top-1 at >= 95% of positions (measured 0.45, 96.6%).
//! - q4_k_m (rows of 64 fall back to Q5_0/Q8_0 as in llama.cpp): within 2.5, top-1 at >= 85%
//!   (measured 1.99, 89.7%).
//! - 256-wide random model (real Q4_K/Q6_K): within 2% (q8_0) / 10% (q4_k_m) of the largest
//!   |logit| (measured ~0.8% / ~4.6%).
//! - Against llama.cpp on the same file: logits within llama.cpp's own activation-rounding
//!   noise + 1e-3 (the golden's `activation_noise`: llama.cpp on the file vs on its F32 twin;
//!   0.014 for f16, 0.38 for q8_0, 0.34 for q4_k_m on this deliberately sensitive model, whose
//!   weight rounding alone moves logits by up to 2.0), and the same top-1 wherever llama.cpp's
//!   top-2 gap exceeds twice that noise.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use guardreasoner_engine::{quantize_hf_dir, Engine, QuantType};

fn tiny_dir() -> PathBuf {
    common::fixtures().join("tiny-llama")
}

fn quantize(dir: &Path, out_dir: &Path, qtype: QuantType) -> PathBuf {
    let out = out_dir.join(format!("model-{qtype}.gguf"));
    quantize_hf_dir(dir, &out, qtype, &mut |_, _, _| {}).unwrap();
    out
}

fn load(path: &Path) -> Engine {
    Engine::load(path, &common::load_options()).unwrap()
}

/// Logits `(seq, vocab)` of every position.
fn logits(engine: &Engine, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = engine.model().new_cache(ids.len()).unwrap();
    engine
        .model()
        .forward(ids, &mut cache, 0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

fn top1_agreement(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let same = a
        .iter()
        .zip(b)
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    same as f64 / a.len() as f64
}

fn tensor_types(path: &Path) -> HashMap<String, GgmlDType> {
    let mut file = std::fs::File::open(path).unwrap();
    let content = Content::read(&mut file).unwrap();
    assert_eq!(
        content.magic,
        candle_core::quantized::gguf_file::VersionedMagic::GgufV3
    );
    content
        .tensor_infos
        .iter()
        .map(|(name, info)| (name.clone(), info.ggml_dtype))
        .collect()
}

fn golden_ids() -> Vec<u32> {
    common::ids(&common::read_json(&common::fixtures().join("tiny_llama_golden.json"))["ids"])
}

#[test]
fn every_type_loads_and_stays_close_to_the_f32_model() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = load(&tiny_dir());
    let ids = golden_ids();
    let expected = logits(&reference, &ids);
    let text =
        "Task 2: determine whether the AI assistant's response is a refusal. 42\n\n<|eot_id|>";
    for (qtype, tolerance, min_agreement) in [
        (QuantType::F16, 1e-4, 1.0),
        (QuantType::Q8_0, 0.6, 0.95),
        (QuantType::Q4KM, 2.5, 0.85),
    ] {
        let path = quantize(&tiny_dir(), tmp.path(), qtype);
        let engine = load(&path);
        let ours = logits(&engine, &ids);
        let diff = max_abs_diff(&ours, &expected);
        let agree = top1_agreement(&ours, &expected);
        println!("tiny {qtype}: max abs logit diff vs f32 {diff:.3e}, top-1 agreement {agree:.3}");
        assert!(diff < tolerance, "{qtype}: logits differ by {diff}");
        // candle's CUDA kernels round activations differently (Q8_1 per 32, as llama.cpp's
        // CUDA backend) from its CPU ones, which moves a few near-ties of this random model.
        let min_agreement = if common::on_cpu() {
            min_agreement
        } else {
            min_agreement - 0.05
        };
        assert!(agree >= min_agreement, "{qtype}: top-1 agreement {agree}");
        // The embedded tokenizer is the checkpoint's: same ids, same BOS and end ids.
        let (hf_tok, gguf_tok) = (reference.tokenizer(), engine.tokenizer());
        assert_eq!(
            gguf_tok.encode(text, true).unwrap(),
            hf_tok.encode(text, true).unwrap()
        );
        assert_eq!(gguf_tok.bos_id(), hf_tok.bos_id());
        let (mut a, mut b) = (gguf_tok.eos_ids().to_vec(), hf_tok.eos_ids().to_vec());
        a.sort();
        b.sort();
        assert_eq!(a, b, "{qtype}: end-of-generation ids");
        assert!(engine.model().config().tie_word_embeddings);
        assert_eq!(
            engine.model().config(),
            load(&common::fixtures().join("tiny-llama.gguf"))
                .model()
                .config()
        );
    }
}

#[test]
fn tiny_q4_k_m_falls_back_where_rows_are_not_multiples_of_256() {
    let tmp = tempfile::tempdir().unwrap();
    let types = tensor_types(&quantize(&tiny_dir(), tmp.path(), QuantType::Q4KM));
    assert!(!types.contains_key("output.weight"), "tied embeddings");
    // Rows of 64 / 128: Q6_K -> Q8_0 (tied token_embd, attn_v / ffn_down of layer 1),
    // Q4_K -> Q5_0 (the rest).
    assert_eq!(types["token_embd.weight"], GgmlDType::Q8_0);
    assert_eq!(types["blk.0.attn_v.weight"], GgmlDType::Q5_0);
    assert_eq!(types["blk.1.attn_v.weight"], GgmlDType::Q8_0);
    assert_eq!(types["blk.1.ffn_down.weight"], GgmlDType::Q8_0);
    assert_eq!(types["blk.0.attn_q.weight"], GgmlDType::Q5_0);
    assert_eq!(types["blk.0.attn_norm.weight"], GgmlDType::F32);
    assert_eq!(types["rope_freqs.weight"], GgmlDType::F32);
}

/// A random LLaMA whose rows are multiples of 256 (hidden 256, intermediate 512), written as a
/// Hugging Face directory with the tiny model's tokenizer: exercises the real Q4_K / Q6_K path.
fn write_wide_model(dir: &Path) {
    let (hidden, inter, layers, heads, kv_heads, vocab) = (256usize, 512usize, 2, 4, 2, 307);
    let head_dim = hidden / heads;
    let dev = Device::Cpu;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut mat = |name: String, rows: usize, cols: usize, scale: f64| {
        let t = (Tensor::randn(0f32, 1.0, (rows, cols), &dev).unwrap() * scale).unwrap();
        tensors.push((name, t));
    };
    mat("model.embed_tokens.weight".into(), vocab, hidden, 1.0);
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        mat(format!("{p}.self_attn.q_proj.weight"), hidden, hidden, 0.08);
        mat(
            format!("{p}.self_attn.k_proj.weight"),
            kv_heads * head_dim,
            hidden,
            0.08,
        );
        mat(
            format!("{p}.self_attn.v_proj.weight"),
            kv_heads * head_dim,
            hidden,
            0.08,
        );
        mat(format!("{p}.self_attn.o_proj.weight"), hidden, hidden, 0.06);
        mat(format!("{p}.mlp.gate_proj.weight"), inter, hidden, 0.06);
        mat(format!("{p}.mlp.up_proj.weight"), inter, hidden, 0.06);
        mat(format!("{p}.mlp.down_proj.weight"), hidden, inter, 0.04);
    }
    let ones = Tensor::ones(hidden, DType::F32, &dev).unwrap();
    for i in 0..layers {
        tensors.push((
            format!("model.layers.{i}.input_layernorm.weight"),
            ones.clone(),
        ));
        tensors.push((
            format!("model.layers.{i}.post_attention_layernorm.weight"),
            ones.clone(),
        ));
    }
    tensors.push(("model.norm.weight".into(), ones));
    candle_core::safetensors::save(
        &tensors.into_iter().collect::<HashMap<_, _>>(),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let mut config = common::read_json(&tiny_dir().join("config.json"));
    let c = config.as_object_mut().unwrap();
    c.insert("hidden_size".into(), hidden.into());
    c.insert("intermediate_size".into(), inter.into());
    c.insert("head_dim".into(), head_dim.into());
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for f in ["tokenizer.json", "generation_config.json"] {
        std::fs::copy(tiny_dir().join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn q4_k_m_uses_q4_k_and_q6_k_and_stays_close_on_256_wide_rows() {
    let src = tempfile::tempdir().unwrap();
    write_wide_model(src.path());
    let tmp = tempfile::tempdir().unwrap();
    let path = quantize(src.path(), tmp.path(), QuantType::Q4KM);
    let types = tensor_types(&path);
    // llama.cpp's Q4_K_M for a tied 2-layer model: use_more_bits picks layer 1 only.
    assert_eq!(types["token_embd.weight"], GgmlDType::Q6K);
    assert_eq!(types["blk.0.attn_v.weight"], GgmlDType::Q4K);
    assert_eq!(types["blk.1.attn_v.weight"], GgmlDType::Q6K);
    assert_eq!(types["blk.0.ffn_down.weight"], GgmlDType::Q4K);
    assert_eq!(types["blk.1.ffn_down.weight"], GgmlDType::Q6K);
    assert_eq!(types["blk.0.ffn_gate.weight"], GgmlDType::Q4K);
    assert_eq!(types["blk.1.attn_k.weight"], GgmlDType::Q4K);

    let ids = golden_ids();
    let expected = logits(&load(src.path()), &ids);
    let scale = expected.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    for (qtype, ours) in [
        (QuantType::Q4KM, logits(&load(&path), &ids)),
        (
            QuantType::Q8_0,
            logits(
                &load(&quantize(src.path(), tmp.path(), QuantType::Q8_0)),
                &ids,
            ),
        ),
    ] {
        let diff = max_abs_diff(&ours, &expected);
        let agree = top1_agreement(&ours, &expected);
        println!("256-wide {qtype}: max abs logit diff {diff:.3e} (max |logit| {scale:.2}), top-1 agreement {agree:.3}");
        let tolerance = if qtype == QuantType::Q8_0 { 0.02 } else { 0.1 };
        assert!(
            diff < tolerance * scale,
            "{qtype}: logits differ by {diff} (scale {scale})"
        );
    }
}

#[test]
fn quantized_tiny_model_matches_llama_cpp() {
    let golden = common::read_json(&common::fixtures().join("tiny_llama_quantized_golden.json"));
    let ids = common::ids(&golden["ids"]);
    let tmp = tempfile::tempdir().unwrap();
    for qtype in QuantType::ALL {
        let g = &golden["types"][qtype.name()];
        let path = quantize(&tiny_dir(), tmp.path(), qtype);
        // The fixture was made from a file with the same tensor types (gguf-py's names).
        let types = tensor_types(&path);
        for (name, expected) in g["tensor_types"].as_object().unwrap() {
            let ours = format!("{:?}", types[name])
                .to_uppercase()
                .replace("K", "_K");
            assert_eq!(&ours, expected.as_str().unwrap(), "{qtype}: {name}");
        }
        let ours = logits(&load(&path), &ids);
        let top1 = common::ids(&g["top1"]);
        let gaps: Vec<f64> = g["top2_gaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        // llama.cpp's own activation rounding moves its logits by `noise` (file vs its F32
        // twin); ours must be at least that close to llama.cpp's on the same file.
        let noise = g["activation_noise"].as_f64().unwrap() as f32;
        let tolerance = noise + 1e-3;
        let mut same = 0;
        for (pos, row) in ours.iter().enumerate() {
            if argmax(row) as u32 == top1[pos] {
                same += 1;
            } else {
                assert!(
                    gaps[pos] < 2.0 * f64::from(noise),
                    "{qtype}: top-1 differs from llama.cpp at position {pos} (llama.cpp's top-2 gap {})",
                    gaps[pos]
                );
            }
        }
        let mut worst = 0f32;
        for (pos, row) in g["positions"]
            .as_array()
            .unwrap()
            .iter()
            .zip(g["logits"].as_array().unwrap())
        {
            let pos = pos.as_u64().unwrap() as usize;
            let expected: Vec<f32> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let diff = max_abs_diff(&ours[pos..=pos], &[expected]);
            worst = worst.max(diff);
        }
        println!(
            "tiny {qtype} vs llama.cpp on the same file: max abs logit diff {worst:.3e} \
             (llama.cpp's activation rounding: {noise:.3e}), top-1 agreement {same}/{}",
            ours.len()
        );
        assert!(
            worst < tolerance,
            "{qtype}: logits differ from llama.cpp by {worst}"
        );
    }
}

#[test]
fn quantize_errors_name_the_file() {
    let src = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(tiny_dir().join(f), src.path().join(f)).unwrap();
    }
    let out = src.path().join("out.gguf");
    let err = quantize_hf_dir(src.path(), &out, QuantType::Q8_0, &mut |_, _, _| {}).unwrap_err();
    let tokenizer = src.path().join("tokenizer.json");
    assert_eq!(
        err.to_string(),
        format!("{}: file not found", tokenizer.display())
    );
    assert!(!out.exists());

    // A tokenizer that is not Llama 3's is refused, not written with the wrong pre-tokenizer.
    let mut tok = common::read_json(&tiny_dir().join("tokenizer.json"));
    tok["pre_tokenizer"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    std::fs::write(&tokenizer, tok.to_string()).unwrap();
    let err = quantize_hf_dir(src.path(), &out, QuantType::Q8_0, &mut |_, _, _| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: tokenizer: pre_tokenizer",
            tokenizer.display()
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(!out.exists() && !src.path().join("out.gguf.partial").exists());
}

/// Logits of every position of `ids`, fed one token at a time.
fn decoded_logits(engine: &Engine, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = engine.model().new_cache(ids.len()).unwrap();
    (0..ids.len())
        .map(|i| {
            let out = engine.model().forward(&ids[i..=i], &mut cache, i).unwrap();
            out.to_vec2::<f32>().unwrap().remove(0)
        })
        .collect()
}

#[test]
fn prefill_gives_every_position_the_logits_of_decoding_it() {
    // A prompt pass longer than 16 rows takes the prefill paths (our AMX kernels for Q4_K and
    // Q6_K where the CPU has AMX, the fused causal attention on the CPU); fed one token at a
    // time, the same positions take the decode kernels. With AMX both are the same arithmetic.
    let src = tempfile::tempdir().unwrap();
    write_wide_model(src.path());
    let tmp = tempfile::tempdir().unwrap();
    let path = quantize(src.path(), tmp.path(), QuantType::Q4KM);
    let engine = load(&path);
    let ids: Vec<u32> = golden_ids().into_iter().cycle().take(40).collect();
    let (prefilled, decoded) = (logits(&engine, &ids), decoded_logits(&engine, &ids));
    if guardreasoner_engine::quant::amx_prefill() && common::on_cpu() {
        for (i, (p, d)) in prefilled.iter().zip(&decoded).enumerate() {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(p), bits(d), "position {i}");
        }
    } else {
        eprintln!("no AMX: prefill and decode differ by float rounding only");
        let diff = max_abs_diff(&prefilled, &decoded);
        assert!(diff < 1e-2, "prefill and decode logits differ by {diff}");
    }
}
