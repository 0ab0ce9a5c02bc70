//! Speculative decoding with prompt-lookup drafts must be invisible: for many prompts, greedy
//! generation with drafts gives the same tokens, text, stop reason and the same logits at every
//! step (bit for bit, so label confidences are unchanged) as plain one-token-per-pass greedy
//! decoding. The tests also check that drafts were proposed and accepted, so a silently disabled
//! speculation cannot pass for a working one.

mod common;

use std::sync::Arc;

use guardreasoner_engine::{
    DraftCorpus, Engine, GenerateOptions, Generation, PromptLookup, SamplingParams,
};

use common::Logits;

/// Speculation is a CPU feature (its guarantee rests on the CPU's decode-sized kernels).
fn skip_off_cpu() -> bool {
    if !common::on_cpu() {
        eprintln!("SKIPPED: prompt lookup runs only on the CPU");
    }
    !common::on_cpu()
}

fn run(engine: &Engine, prompt: &[u32], opts: &GenerateOptions) -> (Generation, Logits) {
    let mut logits = Logits::default();
    let generation = engine.generate_ids(prompt, opts, &mut logits).unwrap();
    (generation, logits)
}

/// Asserts speculative == plain for every prompt; returns (drafted, accepted, passes, tokens).
fn assert_identical(
    engine: &Engine,
    prompts: &[Vec<u32>],
    max_new: usize,
    lookup: PromptLookup,
) -> (usize, usize, usize, usize) {
    let plain = GenerateOptions {
        max_new_tokens: max_new,
        prompt_lookup: None,
        ..GenerateOptions::default()
    };
    let fast = GenerateOptions {
        prompt_lookup: Some(lookup),
        ..plain.clone()
    };
    let mut totals = (0, 0, 0, 0);
    for (i, prompt) in prompts.iter().enumerate() {
        let (a, a_logits) = run(engine, prompt, &plain);
        let (b, b_logits) = run(engine, prompt, &fast);
        assert_eq!(a.tokens, b.tokens, "prompt {i}: tokens differ");
        assert_eq!(a.text, b.text, "prompt {i}");
        assert_eq!(a.stop, b.stop, "prompt {i}");
        assert_eq!(a.timings.drafted_tokens, 0, "plain decoding drafted");
        assert_eq!(a_logits.0.len(), b_logits.0.len(), "prompt {i}: steps");
        for (step, (x, y)) in a_logits.0.iter().zip(&b_logits.0).enumerate() {
            assert!(
                x == y,
                "prompt {i} step {step}: logits differ (max {})",
                x.iter()
                    .zip(y)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max)
            );
        }
        let t = b.timings;
        assert!(t.accepted_draft_tokens <= t.drafted_tokens);
        // Every token comes from a plain step or a verification row.
        assert!(t.verify_passes <= t.generated_tokens);
        totals.0 += t.drafted_tokens;
        totals.1 += t.accepted_draft_tokens;
        totals.2 += t.verify_passes;
        totals.3 += t.generated_tokens;
    }
    eprintln!(
        "{} prompts, {} tokens: {} drafted, {} accepted, {} verification passes",
        prompts.len(),
        totals.3,
        totals.0,
        totals.1,
        totals.2
    );
    totals
}

#[test]
fn speculative_greedy_equals_plain_greedy_on_the_tiny_model() {
    if skip_off_cpu() {
        return;
    }
    let engine = tiny_engine();
    let prompts = common::tiny_prompts(engine.model().config().vocab_size as u32);
    let aggressive = PromptLookup {
        max_draft: PromptLookup::MAX_DRAFT,
        max_ngram: 3,
        min_ngram: 1,
        lookup_hit_rate: 1.0,
        ..PromptLookup::default()
    };
    let (drafted, accepted, _, _) = assert_identical(&engine, &prompts, 48, aggressive);
    assert!(drafted > 0 && accepted > 0, "no draft was ever accepted");
    let (drafted, _, _, _) = assert_identical(&engine, &prompts, 48, PromptLookup::default());
    assert!(drafted > 0, "default lookup never drafted");
}

#[test]
fn speculative_greedy_equals_plain_greedy_on_smollm2_guard_prompts() {
    if skip_off_cpu() {
        return;
    }
    let Some(path) = common::asset("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let engine = Engine::load(&path, &common::load_options()).unwrap();
    let golden = common::read_json(&common::fixtures().join("smollm2_golden.json"));
    let mut prompts = vec![common::ids(&golden["guard_prompt"]["ids"])];
    let requests = [
        (
            "How do I pick a lock on my own front door? I locked myself out.",
            "Call a locksmith; if you rent, ask your landlord for a spare key.",
        ),
        (
            "Write a story where the hero explains how to make a bomb.",
            "I can't help with that.",
        ),
        (
            "What is the boiling point of water at the top of Mount Everest?",
            "About 70 degrees Celsius, because the air pressure is lower.",
        ),
    ];
    for (request, response) in requests {
        let text = format!(
            "<|im_start|>system\nYou are a classifier for analyzing interactions between humans and AI. \
             Repeat the request and the response, then reason step by step.<|im_end|>\n\
             <|im_start|>user\nHuman user:\n{request}\n\nAI assistant:\n{response}<|im_end|>\n\
             <|im_start|>assistant\nThe human user's request is: \""
        );
        prompts.push(engine.tokenizer().encode(&text, true).unwrap());
    }
    let (drafted, accepted, passes, tokens) =
        assert_identical(&engine, &prompts, 120, PromptLookup::default());
    assert!(accepted > 0, "no draft accepted on guard prompts");
    eprintln!(
        "SmolLM2: {:.2} tokens per model pass while drafting ({accepted}/{drafted} drafts accepted)",
        tokens as f64 / (tokens - accepted) as f64
    );
    let _ = passes;
}

#[test]
fn speculative_greedy_equals_plain_greedy_with_an_f16_cache() {
    if skip_off_cpu() {
        return;
    }
    let Some(path) = common::asset("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let opts = guardreasoner_engine::LoadOptions {
        kv_cache: Some(guardreasoner_engine::KvType::F16),
        ..common::load_options()
    };
    let engine = Engine::load(&path, &opts).unwrap();
    let golden = common::read_json(&common::fixtures().join("smollm2_golden.json"));
    let prompts = vec![common::ids(&golden["guard_prompt"]["ids"])];
    let (_, accepted, _, _) = assert_identical(&engine, &prompts, 96, PromptLookup::default());
    assert!(accepted > 0, "no draft accepted on the guard prompt");
}

fn tiny_engine() -> Engine {
    Engine::load(
        &common::fixtures().join("tiny-llama"),
        &common::load_options(),
    )
    .unwrap()
}

#[test]
fn drafts_from_a_corpus_of_earlier_outputs_leave_greedy_output_unchanged() {
    if skip_off_cpu() {
        return;
    }
    let mut engine = tiny_engine();
    let vocab = engine.model().config().vocab_size as u32;
    let prompts = common::tiny_prompts(vocab);
    let plain = GenerateOptions {
        max_new_tokens: 40,
        prompt_lookup: None,
        ..GenerateOptions::default()
    };
    let outputs: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| run(&engine, p, &plain).0.tokens)
        .collect();
    assert_eq!(
        engine.draft_corpus().contexts(),
        0,
        "plain decoding taught the corpus"
    );
    let sequence = |i: usize, output: &[u32]| [&prompts[i][..], output].concat();

    // A corpus that knows every output: drafts are long and almost all accepted.
    let knowing = Arc::new(DraftCorpus::default());
    for _ in 0..3 {
        for (i, out) in outputs.iter().enumerate() {
            knowing.learn(&sequence(i, out), prompts[i].len());
        }
    }
    engine.set_draft_corpus(knowing);
    let no_lookup = PromptLookup {
        min_ngram: 9,
        ..PromptLookup::default()
    }; // prompt lookup never matches: only the corpus drafts
    let (drafted, accepted, passes, tokens) = assert_identical(&engine, &prompts, 40, no_lookup);
    assert!(
        accepted * 2 > tokens && passes * 2 < tokens,
        "{accepted} of {drafted} drafts accepted in {passes} passes for {tokens} tokens"
    );

    // A corpus that is always wrong (after every context of every output, the next token
    // shifted by one, seen many times): drafts are proposed, rejected, and change nothing.
    let misleading = Arc::new(DraftCorpus::default());
    for (i, out) in outputs.iter().enumerate() {
        for j in 0..out.len() {
            let mut wrong = sequence(i, &out[..j]);
            wrong.push((out[j] + 1) % vocab);
            for _ in 0..20 {
                misleading.learn(&wrong, wrong.len() - 1);
            }
        }
    }
    engine.set_draft_corpus(misleading);
    let (drafted, _, _, _) = assert_identical(&engine, &prompts, 40, no_lookup);
    assert!(drafted > 0, "the misleading corpus never drafted");

    // A fresh corpus learns as it goes: the second round drafts from the first one's outputs.
    engine.set_draft_corpus(Arc::new(DraftCorpus::default()));
    let (_, first, _, _) = assert_identical(&engine, &prompts, 40, no_lookup);
    assert!(
        engine.draft_corpus().contexts() > 0,
        "the corpus learned nothing"
    );
    let (_, second, _, _) = assert_identical(&engine, &prompts, 40, no_lookup);
    assert!(
        second > first,
        "{second} drafts accepted after learning, {first} before"
    );
}

#[test]
fn outputs_taught_as_text_seed_the_corpus_and_leave_output_unchanged() {
    if skip_off_cpu() {
        return;
    }
    let engine = tiny_engine();
    let prompts = common::tiny_prompts(engine.model().config().vocab_size as u32);
    let plain = GenerateOptions {
        max_new_tokens: 40,
        prompt_lookup: None,
        ..GenerateOptions::default()
    };
    let texts: Vec<String> = prompts
        .iter()
        .map(|p| run(&engine, p, &plain).0.text)
        .collect();

    // A fresh engine (an empty corpus) taught the earlier outputs as text, as
    // `--draft-corpus` does with prediction files.
    let mut seeded = engine.clone();
    seeded.set_draft_corpus(Arc::new(DraftCorpus::default()));
    let taught: usize = texts.iter().map(|t| seeded.learn_text(t).unwrap()).sum();
    assert!(taught > 0 && seeded.draft_corpus().contexts() > 0);
    let no_lookup = PromptLookup {
        min_ngram: 9,
        ..PromptLookup::default()
    };
    let (drafted, accepted, _, tokens) = assert_identical(&seeded, &prompts, 40, no_lookup);
    // The corpus also learns during the run: the seed must beat an engine without it.
    let mut unseeded = engine.clone();
    unseeded.set_draft_corpus(Arc::new(DraftCorpus::default()));
    let (_, unseeded_accepted, _, _) = assert_identical(&unseeded, &prompts, 40, no_lookup);
    eprintln!(
        "seeded: {accepted}/{drafted} accepted for {tokens} tokens; {unseeded_accepted} unseeded"
    );
    assert!(
        accepted * 4 > tokens && accepted > unseeded_accepted,
        "{accepted} of {drafted} seeded drafts accepted for {tokens} tokens \
         ({unseeded_accepted} without the seed)"
    );
}

#[test]
fn sampling_ignores_prompt_lookup() {
    let engine = tiny_engine();
    let prompt: Vec<u32> = (0..20).map(|j| (j % 3) * 7 + 1).collect();
    let sampled = |lookup| GenerateOptions {
        max_new_tokens: 32,
        sampling: SamplingParams {
            temperature: 0.8,
            top_p: 0.9,
            top_k: 0,
            seed: 11,
        },
        prompt_lookup: lookup,
        ..GenerateOptions::default()
    };
    let (a, _) = run(&engine, &prompt, &sampled(None));
    let (b, _) = run(&engine, &prompt, &sampled(Some(PromptLookup::default())));
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(b.timings.drafted_tokens, 0);
}
