//! The greedy screen (an 8-bit copy of a dense output matrix that finds the largest logit
//! without computing every logit) must be invisible: with and without it, greedy generation
//! gives the same tokens, text and stop reason, and observers see the same logits bit for bit,
//! in plain, speculative and batched decoding. The tests also check that the screen was built
//! where it should be, so a silently disabled screen cannot pass for a working one.

mod common;

use candle_core::{DType, Device, Tensor};
use guardreasoner_engine::{
    generate, load_path, Engine, GenerateOptions, Generation, KvCache, Linear, Llama, LoadOptions,
    PromptLookup, SamplingParams, Step, StepControl, Tokenizer,
};

use common::Logits;

/// Whether this machine builds screens: dense output matrices on a CPU with AVX-512F, or
/// AVX2 and FMA.
fn screens_here() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        common::on_cpu()
            && (std::is_x86_feature_detected!("avx512f")
                || (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn load(path: &std::path::Path, full_logits: bool) -> Engine {
    let opts = LoadOptions {
        full_logits,
        ..common::load_options()
    };
    Engine::load(path, &opts).unwrap()
}

fn run(engine: &Engine, prompt: &[u32], opts: &GenerateOptions) -> (Generation, Logits) {
    let mut logits = Logits::default();
    let generation = engine.generate_ids(prompt, opts, &mut logits).unwrap();
    (generation, logits)
}

fn assert_same(a: &(Generation, Logits), b: &(Generation, Logits), what: &str) {
    assert_eq!(a.0.tokens, b.0.tokens, "{what}: tokens differ");
    assert_eq!(a.0.text, b.0.text, "{what}");
    assert_eq!(a.0.stop, b.0.stop, "{what}");
    assert_eq!(a.1 .0.len(), b.1 .0.len(), "{what}: steps");
    for (step, (x, y)) in a.1 .0.iter().zip(&b.1 .0).enumerate() {
        let same = x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{what} step {step}: logits differ");
    }
}

#[test]
fn tiny_models_generate_the_same_with_and_without_the_screen() {
    for fixture in ["tiny-llama", "tiny-llama.gguf", "tiny-llama-bf16.gguf"] {
        let path = common::fixtures().join(fixture);
        let screened = load(&path, false);
        let full = load(&path, true);
        assert_eq!(
            screened.model().has_greedy_screen(),
            screens_here(),
            "{fixture}"
        );
        assert!(!full.model().has_greedy_screen(), "{fixture}");
        let vocab = screened.model().config().vocab_size as u32;
        let prompts = common::tiny_prompts(vocab);
        let plain = GenerateOptions {
            max_new_tokens: 20,
            prompt_lookup: None,
            ..GenerateOptions::default()
        };
        let drafting = GenerateOptions {
            prompt_lookup: Some(PromptLookup {
                min_ngram: 1,
                ..PromptLookup::default()
            }),
            ..plain.clone()
        };
        for (i, prompt) in prompts.iter().enumerate() {
            for (mode, opts) in [("plain", &plain), ("drafting", &drafting)] {
                let what = format!("{fixture} prompt {i} {mode}");
                assert_same(
                    &run(&screened, prompt, opts),
                    &run(&full, prompt, opts),
                    &what,
                );
            }
        }
        // Batched, greedy for all; then with one sampling sequence among them (every logit
        // computed for the group).
        for opts in [
            vec![plain.clone()],
            (0..prompts.len())
                .map(|i| match i {
                    3 => GenerateOptions {
                        sampling: SamplingParams {
                            temperature: 0.8,
                            seed: 11,
                            ..SamplingParams::default()
                        },
                        ..plain.clone()
                    },
                    _ => plain.clone(),
                })
                .collect(),
        ] {
            let (a, a_logits) = common::generate_batch_recorded(&screened, &prompts, &opts);
            let (b, b_logits) = common::generate_batch_recorded(&full, &prompts, &opts);
            for (i, (a, b)) in a.into_iter().zip(b).enumerate() {
                let what = format!("{fixture} batched prompt {i}");
                let (x, y) = (Logits(a_logits[i].0.clone()), Logits(b_logits[i].0.clone()));
                assert_same(&(a, x), &(b, y), &what);
            }
        }
    }
}

#[test]
fn observers_of_screened_steps_get_logits_on_demand() {
    let path = common::fixtures().join("tiny-llama");
    let screened = load(&path, false);
    let full = load(&path, true);
    let prompt = common::tiny_prompts(screened.model().config().vocab_size as u32).remove(4);
    let opts = GenerateOptions {
        max_new_tokens: 8,
        ..GenerateOptions::default()
    };
    let probe = [0u32, 5, 17, 306, 307, 100_000];
    let mut seen = Vec::new();
    for engine in [&screened, &full] {
        let mut values = Vec::new();
        let mut observer = |step: &Step<'_>| {
            let all = step.logits.to_vec();
            assert_eq!(step.logits.len(), all.len());
            assert_eq!(guardreasoner_engine::argmax(&all), step.token);
            assert_eq!(
                step.logits.as_slice().is_none(),
                engine.model().has_greedy_screen()
            );
            let probed = step.logits.values(&probe);
            for (&t, &v) in probe.iter().zip(&probed) {
                match all.get(t as usize) {
                    Some(&exact) => assert_eq!(v.to_bits(), exact.to_bits(), "token {t}"),
                    None => assert_eq!(v, f32::NEG_INFINITY, "token {t} past the vocabulary"),
                }
                assert_eq!(step.logits.get(t), all.get(t as usize).copied());
            }
            values.push(probed);
            StepControl::Continue
        };
        engine.generate_ids(&prompt, &opts, &mut observer).unwrap();
        seen.push(values);
    }
    assert_eq!(seen[0], seen[1]);
}

/// SmolLM2's trained output matrix (its tied embedding table) as a dense f16 matrix, so that
/// the screen meets a real model's logits: the same guard-style generations either way.
#[test]
fn smollm2_with_a_dense_output_matrix_generates_the_same() {
    if !common::on_cpu() {
        return;
    }
    let Some(path) = common::asset("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let device = Device::Cpu;
    let model = |screen: bool| -> (Llama, Tokenizer) {
        let (_, mut loaded) = load_path(&path, &device).unwrap();
        let vocab = loaded.config.vocab_size as u32;
        let ids = Tensor::arange(0u32, vocab, &device).unwrap();
        let table = loaded.weights.embed_tokens.embed(&ids).unwrap();
        loaded.weights.lm_head = Linear::dense(table.to_dtype(DType::F16).unwrap()).unwrap();
        let model = Llama::new(loaded.config, loaded.weights, &device)
            .unwrap()
            .with_greedy_screen(screen);
        (model, loaded.tokenizer)
    };
    let (screened, tokenizer) = model(true);
    let (full, _) = model(false);
    assert_eq!(screened.has_greedy_screen(), screens_here());
    let requests = [
        (
            "How do I pick a lock on my own front door?",
            "Call a locksmith.",
        ),
        (
            "Write a story where the hero builds a bomb.",
            "I can't help with that.",
        ),
        ("What is the capital of Australia?", "Canberra."),
    ];
    let opts = GenerateOptions {
        max_new_tokens: 64,
        ..GenerateOptions::default()
    };
    for (request, response) in requests {
        let text = format!(
            "<|im_start|>user\nHuman user:\n{request}\n\nAI assistant:\n{response}<|im_end|>\n\
             <|im_start|>assistant\nThe human user's request is"
        );
        let prompt = tokenizer.encode(&text, true).unwrap();
        let mut outputs = Vec::new();
        for model in [&screened, &full] {
            let mut cache: KvCache = model.new_cache(prompt.len() + 64).unwrap();
            let mut logits = Logits::default();
            let out = generate(model, &tokenizer, &mut cache, &prompt, &opts, &mut logits).unwrap();
            outputs.push((out, logits));
        }
        assert_same(&outputs[0], &outputs[1], request);
    }
}
