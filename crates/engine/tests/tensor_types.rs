//! GGUF tensor types on files other tools wrote, against llama.cpp's logits and greedy
//! continuation on the same files: the tiny fixture model converted to BF16, Q4_0 and Q4_1 by
//! gguf-py (`scripts/engine/make_tiny_types_golden.py`), and a small random model 256 wide
//! quantized by llama.cpp itself to Q4_K_M and Q5_K_M, so Q4_K, Q5_K and Q6_K tensors exactly as
//! llama.cpp writes them (`scripts/engine/make_kquant_golden.py`).
//!
//! Tolerance: llama.cpp rounds activations before these products (to BF16 for BF16 weights, to
//! 8 bits per block for Q4_0 and Q4_1), which moves its logits by `activation_noise` against
//! the same weights in F32 (measured by the script). BF16 (computed exactly in f32 here), Q4_0
//! (candle's kernel, its own 8-bit rounding) and Q4_1 (llama.cpp's rounding of the activations
//! and its integer sums, but each block's sum scaled in one step where llama.cpp's AVX2 code
//! scales eight partial sums: `crate::quant::q4_1`) must stay within that noise. Argmax must
//! agree wherever llama.cpp's top-2 margin exceeds twice the tolerance, and the continuation
//! until its first step with a smaller margin.

mod common;

use guardreasoner_engine::{argmax, Engine, GenerateOptions, NoObserver};

/// `tol` is the largest allowed max abs logit difference; `None` means llama.cpp's own
/// activation noise on this file.
fn check(name: &str, tol: Option<f32>) {
    check_file("tiny_llama_types_golden.json", "tiny-llama", name, tol);
}

fn check_file(golden: &str, model: &str, name: &str, tol: Option<f32>) {
    let golden = common::read_json(&common::fixtures().join(golden));
    let g = &golden["types"][name];
    let engine = Engine::load(
        &common::fixtures().join(format!("{model}-{name}.gguf")),
        &common::load_options(),
    )
    .unwrap();
    let ids = common::ids(&golden["ids"]);
    let mut cache = engine.model().new_cache(ids.len()).unwrap();
    let logits = engine
        .model()
        .forward(&ids, &mut cache, 0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();

    let mut max_diff = 0f32;
    for (k, p) in g["positions"].as_array().unwrap().iter().enumerate() {
        let p = p.as_u64().unwrap() as usize;
        for (ours, theirs) in logits[p].iter().zip(g["logits"][k].as_array().unwrap()) {
            max_diff = max_diff.max((ours - theirs.as_f64().unwrap() as f32).abs());
        }
    }
    let top1 = common::ids(&g["top1"]);
    let gaps: Vec<f32> = g["top2_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let agree = logits
        .iter()
        .zip(&top1)
        .filter(|(row, &t)| argmax(row) == t)
        .count();
    let noise = g["activation_noise"].as_f64().unwrap() as f32;
    // On a GPU candle's kernels round activations their own way (Q8_1, as llama.cpp's CUDA
    // backend), not as llama.cpp's CPU run did: allow twice that run's noise there.
    let tol = tol.unwrap_or(if common::on_cpu() { noise } else { 2.0 * noise });
    println!(
        "{name}: max abs logit diff vs llama.cpp {max_diff:.3e} (tolerance {tol:.3e}, llama.cpp's \
         activation noise {noise:.4}), top-1 {agree}/{}",
        ids.len()
    );
    assert!(max_diff < tol, "{name}: max abs diff {max_diff} >= {tol}");
    for (pos, ((row, &t), &gap)) in logits.iter().zip(&top1).zip(&gaps).enumerate() {
        if gap > 2.0 * tol {
            assert_eq!(
                argmax(row),
                t,
                "{name}: top-1 differs at {pos} (margin {gap})"
            );
        }
    }

    let want = common::ids(&g["continuation"]);
    let opts = GenerateOptions {
        max_new_tokens: want.len(),
        ..GenerateOptions::default()
    };
    let got = engine.generate_ids(&ids, &opts, &mut NoObserver).unwrap();
    let same = got
        .tokens
        .iter()
        .zip(&want)
        .take_while(|(a, b)| a == b)
        .count();
    let cgaps: Vec<f32> = g["continuation_top2_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let first_close = cgaps
        .iter()
        .position(|&gap| gap <= 2.0 * tol)
        .unwrap_or(want.len());
    println!(
        "{name}: greedy continuation equal to llama.cpp's for {same}/{} tokens \
         (its first top-2 margin within 2x tolerance: step {first_close})",
        want.len()
    );
    assert!(
        same >= first_close.min(got.tokens.len()),
        "{name}: continuation diverges at {same} before any close call ({first_close})"
    );
}

#[test]
fn bf16_matches_llama_cpp() {
    check("bf16", None);
}

#[test]
fn q4_0_matches_llama_cpp() {
    check("q4_0", None);
}

#[test]
fn q4_1_matches_llama_cpp() {
    check("q4_1", None);
}

/// The K-quant files hold the types they are meant to test.
fn assert_types(name: &str, wanted: &[&str]) {
    let golden = common::read_json(&common::fixtures().join("wide_llama_kquant_golden.json"));
    let types: Vec<&str> = golden["types"][name]["tensor_types"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    for w in wanted {
        assert!(types.contains(w), "{name}: no {w} tensor in {types:?}");
    }
}

#[test]
fn llama_cpp_q4_k_m_file_matches_llama_cpp() {
    assert_types("q4_k_m", &["Q4_K", "Q6_K"]);
    check_file(
        "wide_llama_kquant_golden.json",
        "wide-llama",
        "q4_k_m",
        None,
    );
}

#[test]
fn llama_cpp_q5_k_m_file_matches_llama_cpp() {
    assert_types("q5_k_m", &["Q5_K", "Q6_K"]);
    check_file(
        "wide_llama_kquant_golden.json",
        "wide-llama",
        "q5_k_m",
        None,
    );
}
