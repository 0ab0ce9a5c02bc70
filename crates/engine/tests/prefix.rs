//! The prefix KV cache: a prompt that starts with the registered prefix reuses its cache
//! entries, and what it gets is exactly what computing the prefix and then the rest gives
//! (bit for bit); prompts it does not cover are untouched; batched generation uses it the same
//! way; and the result stays within float noise of a prefill with no split at all.

mod common;

use guardreasoner_engine::{argmax, Engine, GenerateOptions, Generation, PrefixKv};

use common::Logits;

fn tiny() -> Engine {
    Engine::load(
        &common::fixtures().join("tiny-llama"),
        &common::load_options(),
    )
    .unwrap()
}

fn run(engine: &Engine, prompt: &[u32], max_new: usize) -> (Generation, Logits) {
    let opts = GenerateOptions {
        max_new_tokens: max_new,
        ..GenerateOptions::default()
    };
    let mut logits = Logits::default();
    let g = engine.generate_ids(prompt, &opts, &mut logits).unwrap();
    (g, logits)
}

const PREFIX: &str = "Human user:\nHow do I bake a cake? Task 1: harmful or unharmful.\n\n";

#[test]
fn a_covered_prompt_gets_exactly_the_split_computation() {
    covered_prompt_gets_the_split_computation(tiny());
}

/// The same with f16 KV caches: the prefix's cache holds f16 too, and copies into them.
#[test]
fn a_covered_prompt_gets_exactly_the_split_computation_with_an_f16_cache() {
    let opts = guardreasoner_engine::LoadOptions {
        kv_cache: Some(guardreasoner_engine::KvType::F16),
        ..common::load_options()
    };
    let engine = Engine::load(&common::fixtures().join("tiny-llama"), &opts).unwrap();
    covered_prompt_gets_the_split_computation(engine);
}

fn covered_prompt_gets_the_split_computation(plain: Engine) {
    let mut cached = plain.clone();
    let n = cached.set_prefix(PREFIX).unwrap();
    let prefix: Vec<u32> = cached.prefix().unwrap().tokens().to_vec();
    assert_eq!(n, prefix.len());
    let text = format!("{PREFIX}AI assistant:\nNone\n\n");
    let prompt = cached.tokenizer().encode(&text, true).unwrap();
    assert_eq!(
        cached.prefix().unwrap().covers(&prompt),
        n,
        "prompt not covered"
    );

    // The reference: the prefix, then the rest, computed from scratch.
    let model = plain.model();
    let mut cache = model.new_cache(prompt.len()).unwrap();
    model.forward_hidden(&prompt[..n], &mut cache, 0).unwrap();
    let hidden = model.forward_hidden(&prompt[n..], &mut cache, n).unwrap();
    let want = model.last_position_logits(&hidden).unwrap();

    let (g, logits) = run(&cached, &prompt, 24);
    assert!(
        logits.0[0] == want,
        "first-step logits differ from the split computation"
    );
    assert_eq!(g.tokens[0], argmax(&want));

    // Against a prefill with no split: the same tokens, logits within float noise.
    let (p, plain_logits) = run(&plain, &prompt, 24);
    assert_eq!(g.tokens, p.tokens);
    let diff = logits
        .0
        .iter()
        .flatten()
        .zip(plain_logits.0.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("prefix-cached vs unsplit prefill: max abs logit diff {diff:e}");
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn prompts_the_prefix_does_not_cover_are_untouched() {
    let plain = tiny();
    let mut cached = plain.clone();
    cached.set_prefix(PREFIX).unwrap();
    let p = cached.prefix().unwrap();
    let other = cached
        .tokenizer()
        .encode("Something else entirely", true)
        .unwrap();
    let exact: Vec<u32> = p.tokens().to_vec();
    assert_eq!(p.covers(&other), 0);
    assert_eq!(
        p.covers(&exact),
        0,
        "a prompt equal to the prefix has nothing left to run"
    );
    for prompt in [other, exact] {
        let (a, la) = run(&plain, &prompt, 8);
        let (b, lb) = run(&cached, &prompt, 8);
        assert_eq!(a.tokens, b.tokens);
        assert!(la.0 == lb.0);
    }
}

#[test]
fn batched_generation_uses_the_prefix_like_single_generation() {
    let mut engine = tiny();
    engine.set_prefix(PREFIX).unwrap();
    let prompts: Vec<Vec<u32>> = ["AI assistant:\nNone\n\n", "AI assistant:\nSure, here", "x"]
        .iter()
        .map(|rest| {
            engine
                .tokenizer()
                .encode(&format!("{PREFIX}{rest}"), true)
                .unwrap()
        })
        .chain([vec![1u32, 2, 3]])
        .collect();
    let opts = vec![GenerateOptions {
        max_new_tokens: 12,
        prompt_lookup: None,
        ..GenerateOptions::default()
    }];
    let (batched, observers) = common::generate_batch_recorded(&engine, &prompts, &opts);
    for (i, prompt) in prompts.iter().enumerate() {
        let mut single = Logits::default();
        let g = engine.generate_ids(prompt, &opts[0], &mut single).unwrap();
        assert_eq!(g.tokens, batched[i].tokens, "prompt {i}");
        if common::on_cpu() {
            assert!(single.0 == observers[i].0, "prompt {i}: logits differ");
        }
    }
}

#[test]
fn an_empty_prefix_is_refused() {
    let engine = tiny();
    assert!(PrefixKv::compute(engine.model(), Vec::new(), 512).is_err());
}
