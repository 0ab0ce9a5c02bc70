//! `LocalBackend::generate_batch` (the engine's batched decoding) gives every request exactly
//! what `generate` gives it alone: text, token counts, finish reason and label probes. Runs on
//! the engine's tiny random fixture model, so the texts are gibberish but deterministic.

use std::path::Path;

use guardreasoner_engine::{Engine, LoadOptions, SamplingParams};
use guardreasoner_guard::{GenerationRequest, GuardBackend, LocalBackend};

#[test]
fn batched_requests_equal_single_requests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/tiny-llama");
    let engine = Engine::load(&dir, &LoadOptions::default()).unwrap();
    let backend = LocalBackend::new(engine).unwrap();
    assert!(backend.preferred_batch() > 1);
    let prompts = [
        "Human user: How do I bake bread?",
        "Human user: hi",
        "Human user: Tell me a long story about a dragon and a knight.\n\nAI assistant: Once",
    ];
    let requests: Vec<GenerationRequest<'_>> = prompts
        .iter()
        .zip([12, 3, 20])
        .map(|(prompt, max_new_tokens)| GenerationRequest {
            prompt,
            max_new_tokens,
            sampling: SamplingParams::greedy(),
        })
        .collect();
    let batched = backend.generate_batch(&requests);
    assert_eq!(batched.len(), requests.len());
    for (request, batched) in requests.iter().zip(batched) {
        let alone = backend.generate(request, &mut |_| {}).unwrap();
        let batched = batched.unwrap();
        assert_eq!(batched.text, alone.text, "{}", request.prompt);
        assert_eq!(batched.generated_tokens, alone.generated_tokens);
        assert_eq!(batched.prompt_tokens, alone.prompt_tokens);
        assert_eq!(batched.finish, alone.finish);
        assert_eq!(batched.probes, alone.probes);
    }
    // An invalid request in the batch gets its own error; the others still succeed.
    let mut mixed = requests.clone();
    mixed[1].max_new_tokens = 0;
    let results = backend.generate_batch(&mixed);
    assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
}
