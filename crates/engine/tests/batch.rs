//! Batched decoding must equal unbatched decoding: for prompts of different lengths and
//! different `max_new_tokens`, `generate_batch` gives the same greedy tokens and the same logits
//! rows, bit for bit, as `generate` run on each prompt alone, on the tiny dense fixture and on
//! SmolLM2-135M Q4_1 (dequantized to f32 at load).

mod common;

use guardreasoner_engine::{
    Engine, GenerateOptions, Generation, KvType, LoadOptions, StepObserver,
};

use common::Logits;

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        ..GenerateOptions::default()
    }
}

/// Run `prompts` one at a time and all together; assert identical tokens, text, stop reason and
/// logits. Returns the largest absolute logits difference seen (asserted 0).
fn assert_batch_equals_single(engine: &Engine, prompts: &[Vec<u32>], max_new: &[usize]) -> f32 {
    let opts: Vec<GenerateOptions> = max_new.iter().map(|&m| greedy(m)).collect();
    let mut single: Vec<(Generation, Logits)> = Vec::new();
    for (prompt, o) in prompts.iter().zip(&opts) {
        let mut obs = Logits::default();
        let generation = engine.generate_ids(prompt, o, &mut obs).unwrap();
        single.push((generation, obs));
    }
    let (batched, observers) = common::generate_batch_recorded(engine, prompts, &opts);
    assert_eq!(batched.len(), prompts.len());
    let mut max_diff = 0f32;
    for (i, ((one, one_logits), (many, many_logits))) in single
        .iter()
        .zip(batched.iter().zip(&observers))
        .enumerate()
    {
        assert_eq!(one.tokens, many.tokens, "sequence {i}: tokens differ");
        assert_eq!(one.text, many.text, "sequence {i}");
        assert_eq!(one.stop, many.stop, "sequence {i}");
        assert_eq!(many.timings.generated_tokens, many.tokens.len());
        assert_eq!(many.timings.prompt_tokens, prompts[i].len());
        assert_eq!(
            one_logits.0.len(),
            many_logits.0.len(),
            "sequence {i}: steps"
        );
        for (a, b) in one_logits.0.iter().zip(&many_logits.0) {
            for (x, y) in a.iter().zip(b) {
                max_diff = max_diff.max((x - y).abs());
            }
        }
    }
    eprintln!("max |logits(batched) - logits(single)| = {max_diff:e}");
    if common::on_cpu() {
        assert_eq!(
            max_diff, 0.0,
            "batched logits must equal unbatched ones exactly"
        );
    } else {
        assert!(max_diff < 1e-3, "batched logits differ by {max_diff}");
    }
    max_diff
}

#[test]
fn batched_greedy_equals_unbatched_on_the_tiny_model() {
    let engine = Engine::load(
        &common::fixtures().join("tiny-llama"),
        &common::load_options(),
    )
    .unwrap();
    let vocab = engine.model().config().vocab_size as u32;
    // 18 prompts (more than one decode group of 16), lengths 1..=35, budgets 1..=24.
    let prompts: Vec<Vec<u32>> = (0..18u32)
        .map(|i| {
            (0..1 + 2 * i)
                .map(|j| (i * 131 + j * 17 + 5) % vocab)
                .collect()
        })
        .collect();
    let max_new: Vec<usize> = (0..18).map(|i| 1 + (i * 7) % 24).collect();
    assert_batch_equals_single(&engine, &prompts, &max_new);
}

#[test]
fn batched_greedy_equals_unbatched_on_llama_cpp_s_q4_k_m_file() {
    // Q4_K and Q6_K weights: the engine's own K-quant kernels (`quant::q4_k`, `quant::q6_k`).
    let engine = Engine::load(
        &common::fixtures().join("wide-llama-q4_k_m.gguf"),
        &common::load_options(),
    )
    .unwrap();
    let vocab = engine.model().config().vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..9u32)
        .map(|i| {
            (0..1 + 3 * i)
                .map(|j| (i * 71 + j * 13 + 3) % vocab)
                .collect()
        })
        .collect();
    let max_new: Vec<usize> = (0..9).map(|i| 2 + (i * 5) % 17).collect();
    assert_batch_equals_single(&engine, &prompts, &max_new);
}

#[test]
fn batched_greedy_equals_unbatched_on_smollm2_q4_1() {
    let Some(path) = common::asset("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let engine = Engine::load(&path, &common::load_options()).unwrap();
    let texts = [
        "The capital of France is",
        "Write a short poem about the sea. The waves",
        "Human user: How do I bake bread at home?\nAI assistant:",
        "1, 2, 3, 4,",
        "Is it safe to mix bleach and ammonia when cleaning? Answer with reasons.",
    ];
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| engine.tokenizer().encode(t, true).unwrap())
        .collect();
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(
        lengths.iter().any(|&l| l != lengths[0]),
        "prompts should differ in length: {lengths:?}"
    );
    assert_batch_equals_single(&engine, &prompts, &[24, 9, 30, 16, 1]);
}

/// With an f16 KV cache (`LoadOptions::kv_cache`) batched decoding still equals unbatched
/// decoding bit for bit, and the cache really is f16: the logits move from the f32 cache's.
#[test]
fn batched_greedy_equals_unbatched_with_an_f16_cache() {
    let Some(path) = common::asset("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let load = |kv_cache| {
        let opts = LoadOptions {
            kv_cache: Some(kv_cache),
            ..common::load_options()
        };
        Engine::load(&path, &opts).unwrap()
    };
    let (half, full) = (load(KvType::F16), load(KvType::F32));
    let prompts: Vec<Vec<u32>> = [
        "Human user: How do I bake bread at home?\nAI assistant:",
        "The capital of France is",
        "Is it safe to mix bleach and ammonia when cleaning? Answer with reasons.",
    ]
    .iter()
    .map(|t| half.tokenizer().encode(t, true).unwrap())
    .collect();
    assert_batch_equals_single(&half, &prompts, &[20, 12, 16]);
    if !common::on_cpu() {
        return; // f16 caches are CPU only: other devices keep f32.
    }
    assert_eq!(half.model().new_cache(4).unwrap().kv_type(), KvType::F16);
    let logits = |engine: &Engine| {
        let mut cache = engine.model().new_cache(prompts[2].len()).unwrap();
        let all = engine.model().forward(&prompts[2], &mut cache, 0).unwrap();
        all.to_vec2::<f32>().unwrap().concat()
    };
    let (a, b) = (logits(&half), logits(&full));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    eprintln!("max |logits(f16 cache) - logits(f32 cache)| = {diff:e}");
    // How close to llama.cpp's own f16 cache: `tests/smollm2_parity.rs`. (On this Q4_1 model the
    // cache type moves logits by tenths, in llama.cpp too.)
    assert!(diff > 0.0, "an f16 cache must round the keys and values");
}

#[test]
fn mismatched_batch_arguments_are_rejected() {
    let engine = Engine::load(
        &common::fixtures().join("tiny-llama"),
        &common::load_options(),
    )
    .unwrap();
    let prompts = vec![vec![1u32, 2], vec![3u32]];
    let mut a = guardreasoner_engine::NoObserver;
    let mut refs: Vec<&mut dyn StepObserver> = vec![&mut a];
    let err = engine
        .generate_batch_ids(&prompts, &[greedy(4)], &mut refs)
        .unwrap_err();
    assert!(err.to_string().contains("observers"), "{err}");
    let mut model_caches = [
        engine.model().new_cache(4).unwrap(),
        engine.model().new_cache(4).unwrap(),
    ];
    let [c0, c1] = &mut model_caches;
    let mut caches = vec![c0, c1];
    let err = engine
        .model()
        .forward_batch(&[1], &mut caches, &[0, 0])
        .unwrap_err();
    assert!(err.to_string().contains("caches"), "{err}");
}
