//! The tiny random LLaMA 3 (2 layers, GQA 4/2, llama3 rope scaling, tied embeddings) written by
//! `scripts/engine/make_tiny_llama.py` as a Hugging Face directory (BF16 safetensors) and as
//! GGUF (F16, llama.cpp's permuted Q/K and `rope_freqs`), with llama.cpp's logits from
//! `scripts/engine/make_golden.py`.

mod common;

use candle_core::Tensor;
use guardreasoner_engine::{
    Engine, GenerateOptions, ModelFormat, NoObserver, RopeLayout, StepControl, StopReason,
};

fn load(relative: &str) -> Engine {
    Engine::load(&common::fixtures().join(relative), &common::load_options()).unwrap()
}

fn golden_ids() -> Vec<u32> {
    common::ids(&common::read_json(&common::fixtures().join("tiny_llama_golden.json"))["ids"])
}

/// Logits of every position, on the CPU (where the references are).
fn logits(engine: &Engine, ids: &[u32]) -> Tensor {
    let mut cache = engine.model().new_cache(ids.len()).unwrap();
    engine
        .model()
        .forward(ids, &mut cache, 0)
        .unwrap()
        .to_device(&candle_core::Device::Cpu)
        .unwrap()
}

/// Largest absolute difference, compared on the CPU (either side may live on a GPU).
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let cpu = candle_core::Device::Cpu;
    let (a, b) = (a.to_device(&cpu).unwrap(), b.to_device(&cpu).unwrap());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn both_loaders_read_the_same_model() {
    let hf = load("tiny-llama");
    let gguf = load("tiny-llama.gguf");
    assert_eq!(hf.format(), ModelFormat::HfSafetensors);
    assert_eq!(gguf.format(), ModelFormat::Gguf);
    assert_eq!(hf.model().rope_layout(), RopeLayout::HalfSplit);
    assert_eq!(gguf.model().rope_layout(), RopeLayout::Interleaved);
    let (a, b) = (hf.model().config(), gguf.model().config());
    assert_eq!(
        (
            a.vocab_size,
            a.hidden_size,
            a.num_layers,
            a.num_heads,
            a.num_kv_heads,
            a.head_dim
        ),
        (
            b.vocab_size,
            b.hidden_size,
            b.num_layers,
            b.num_heads,
            b.num_kv_heads,
            b.head_dim
        )
    );
    assert!(a.tie_word_embeddings && b.tie_word_embeddings);
    // Same BOS; generation_config.json lists end_of_text and eot_id, the GGUF eos (eot_id)
    // plus the control tokens llama.cpp treats as end of generation.
    assert_eq!(hf.tokenizer().bos_id(), gguf.tokenizer().bos_id());
    let mut hf_eos = hf.tokenizer().eos_ids().to_vec();
    let mut gguf_eos = gguf.tokenizer().eos_ids().to_vec();
    hf_eos.sort();
    gguf_eos.sort();
    assert_eq!(hf_eos, gguf_eos);
}

#[test]
fn hf_and_gguf_loaders_give_the_same_logits() {
    let ids = golden_ids();
    let hf = logits(&load("tiny-llama"), &ids);
    let gguf = logits(&load("tiny-llama.gguf"), &ids);
    assert_eq!(hf.dims(), &[ids.len(), 307]);
    let diff = max_abs_diff(&hf, &gguf);
    println!(
        "tiny model, HF dir vs GGUF: max abs logit diff {diff:e} over {} positions",
        ids.len()
    );
    assert!(diff < 1e-4, "HF and GGUF logits differ by {diff}");
}

#[test]
fn gguf_logits_match_llama_cpp() {
    let ids = golden_ids();
    let golden = common::read_npy_f32(&common::fixtures().join("tiny_llama_logits.npy"));
    let expected = Tensor::from_vec(
        golden.data,
        (golden.shape[0], golden.shape[1]),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for source in ["tiny-llama.gguf", "tiny-llama"] {
        let ours = logits(&load(source), &ids);
        let diff = max_abs_diff(&ours, &expected);
        println!("tiny model {source} vs llama.cpp: max abs logit diff {diff:e}");
        // The golden comes from an F32 copy of the (f16-exact) weights; logits are O(10).
        assert!(
            diff < 1e-3,
            "{source}: logits differ from llama.cpp by {diff}"
        );
    }
}

#[test]
fn greedy_continuation_matches_llama_cpp_for_200_tokens() {
    let golden = common::read_json(&common::fixtures().join("tiny_llama_golden.json"));
    let prompt = common::ids(&golden["ids"]);
    let expected = common::ids(&golden["continuation"]);
    assert_eq!(expected.len(), 200);
    for source in ["tiny-llama.gguf", "tiny-llama"] {
        let engine = load(source);
        let model = engine.model();
        let mut cache = model.new_cache(prompt.len() + expected.len()).unwrap();
        let hidden = model.forward_hidden(&prompt, &mut cache, 0).unwrap();
        let mut next = guardreasoner_engine::argmax(&model.last_position_logits(&hidden).unwrap());
        let mut ours = Vec::new();
        for i in 0..expected.len() {
            ours.push(next);
            let hidden = model
                .forward_hidden(&[next], &mut cache, prompt.len() + i)
                .unwrap();
            next = guardreasoner_engine::argmax(&model.last_position_logits(&hidden).unwrap());
        }
        assert_eq!(ours, expected, "{source}");
    }
}

#[test]
fn llama3_rope_scaling_changes_the_logits() {
    // The same checkpoint without rope_scaling must not match llama.cpp (whose rope_freqs carry
    // the scaling): guards against the scaling being silently ignored.
    let dir = tempfile::tempdir().unwrap();
    let src = common::fixtures().join("tiny-llama");
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut config = common::read_json(&src.join("config.json"));
    config.as_object_mut().unwrap().remove("rope_scaling");
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let ids = golden_ids();
    let unscaled = logits(
        &Engine::load(dir.path(), &common::load_options()).unwrap(),
        &ids,
    );
    let scaled = logits(&load("tiny-llama"), &ids);
    let diff = max_abs_diff(&unscaled, &scaled);
    assert!(diff > 0.05, "rope scaling made no difference ({diff})");
}

#[test]
fn incremental_decoding_equals_one_full_pass() {
    let engine = load("tiny-llama.gguf");
    let ids = golden_ids();
    let full = logits(&engine, &ids);
    let model = engine.model();
    let mut cache = model.new_cache(ids.len()).unwrap();
    let split = ids.len() / 2;
    let mut rows = vec![model.forward(&ids[..split], &mut cache, 0).unwrap()];
    for (i, &id) in ids[split..].iter().enumerate() {
        rows.push(model.forward(&[id], &mut cache, split + i).unwrap());
    }
    let stepped = Tensor::cat(&rows, 0).unwrap();
    let diff = max_abs_diff(&full, &stepped);
    assert!(
        diff < 1e-4,
        "cached decoding differs from a full pass by {diff}"
    );
    // Rewinding the cache and re-running the tail gives the same again.
    let again = model.forward(&ids[split..], &mut cache, split).unwrap();
    assert!(max_abs_diff(&again, &full.narrow(0, split, ids.len() - split).unwrap()) < 1e-4);
}

#[test]
fn cache_overflow_is_an_error_not_a_panic() {
    let engine = load("tiny-llama.gguf");
    let mut cache = engine.model().new_cache(4).unwrap();
    let err = engine
        .model()
        .forward(&[1, 2, 3, 4, 5], &mut cache, 0)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "KV cache full: capacity 4 tokens, needed 5"
    );
    let err = engine.model().forward(&[1], &mut cache, 2).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot start a forward pass at position 2"),
        "{err}"
    );
}

#[test]
fn tokenizers_from_json_and_gguf_agree_with_llama_cpp() {
    let golden = common::read_json(&common::fixtures().join("tiny_llama_golden.json"));
    let text = golden["text"].as_str().unwrap();
    let expected = common::ids(&golden["ids"]);
    for source in ["tiny-llama", "tiny-llama.gguf"] {
        let engine = load(source);
        assert_eq!(
            engine.tokenizer().encode(text, true).unwrap(),
            expected,
            "{source}"
        );
        assert_eq!(
            engine.tokenizer().decode(&expected[1..]).unwrap(),
            text,
            "{source}"
        );
    }
}

#[test]
fn greedy_generation_is_stable_and_reports_timings() {
    let engine = load("tiny-llama");
    let opts = GenerateOptions {
        max_new_tokens: 24,
        ..GenerateOptions::default()
    };
    let prompt = "Human user:\nHow do I bake a cake?";
    let first = engine
        .generate_text(prompt, &opts, &mut NoObserver)
        .unwrap();
    let second = engine
        .generate_text(prompt, &opts, &mut NoObserver)
        .unwrap();
    assert_eq!(first.tokens, second.tokens);
    assert_eq!(
        first.timings.prompt_tokens,
        engine.tokenizer().encode(prompt, true).unwrap().len()
    );
    assert_eq!(first.timings.generated_tokens, first.tokens.len());
    match first.stop {
        StopReason::Eos(id) => assert_eq!(Some(&id), first.tokens.last()),
        StopReason::MaxTokens => assert_eq!(first.tokens.len(), 24),
        StopReason::Observer => unreachable!(),
    }
    // Greedy generation = argmax of a full forward pass over prompt + generated tokens.
    let mut ids = engine.tokenizer().encode(prompt, true).unwrap();
    let n_prompt = ids.len();
    ids.extend_from_slice(&first.tokens[..first.tokens.len() - 1]);
    let all = logits(&engine, &ids);
    let argmax: Vec<u32> = all.argmax(1).unwrap().to_vec1().unwrap();
    assert_eq!(&argmax[n_prompt - 1..], &first.tokens[..]);
}

#[test]
fn observer_sees_every_step_and_can_stop() {
    let engine = load("tiny-llama");
    let mut seen = Vec::new();
    let mut streamed = String::new();
    let opts = GenerateOptions {
        max_new_tokens: 10,
        ..GenerateOptions::default()
    };
    let out = engine
        .generate_text(
            "Task 1:",
            &opts,
            &mut |step: &guardreasoner_engine::Step<'_>| {
                assert_eq!(step.logits.len(), 307);
                assert_eq!(
                    guardreasoner_engine::argmax(&step.logits.to_vec()),
                    step.token
                );
                seen.push(step.token);
                streamed.push_str(step.text);
                if step.index == 4 {
                    StepControl::Stop
                } else {
                    StepControl::Continue
                }
            },
        )
        .unwrap();
    if out.stop == StopReason::Observer {
        assert_eq!(seen.len(), 5);
    }
    assert_eq!(seen, out.tokens);
    assert!(
        out.text.starts_with(&streamed),
        "{streamed:?} vs {:?}",
        out.text
    );
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let engine = load("tiny-llama.gguf");
    let opts = GenerateOptions {
        max_new_tokens: 16,
        sampling: guardreasoner_engine::SamplingParams {
            temperature: 1.5,
            top_p: 0.95,
            top_k: 50,
            seed: 42,
        },
        ..GenerateOptions::default()
    };
    let a = engine
        .generate_text("Task 2:", &opts, &mut NoObserver)
        .unwrap();
    let b = engine
        .generate_text("Task 2:", &opts, &mut NoObserver)
        .unwrap();
    assert_eq!(a.tokens, b.tokens);
}
