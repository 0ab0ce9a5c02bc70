//! Token counts of a synthesis request and of a GuardReasonerTrain-length answer, measured with
//! the Llama 3.2 tokenizer (a stand-in for the teacher's; the README's cost estimate uses these).

use guardreasoner_engine::{SpecialTokens, Tokenizer};
use guardreasoner_protocol::GuardInput;
use guardreasoner_synth::prompt::{user_message, SYSTEM_PROMPT};
use guardreasoner_synth::sample::{GroundTruth, LabeledSample};

fn tokenizer() -> Option<Tokenizer> {
    let path = guardreasoner_testkit::test_asset("llama-3.2/tokenizer.json")?;
    Some(
        Tokenizer::from_file(
            &path,
            SpecialTokens {
                bos: 128000,
                eos: vec![128009],
            },
        )
        .unwrap(),
    )
}

#[test]
fn synthesis_token_counts() {
    let Some(tok) = tokenizer() else { return };
    let data = guardreasoner_testkit::data_root();
    let items: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(data.join("train-sample/GuardReasonerTrain-sample.json")).unwrap(),
    )
    .unwrap();
    let system = tok.encode(SYSTEM_PROMPT, false).unwrap().len();
    let (mut user, mut output) = (0, 0);
    for item in &items {
        let input = GuardInput::from_input_block(item["input"].as_str().unwrap()).unwrap();
        let sample = LabeledSample {
            line: 1,
            input,
            truth: GroundTruth::default(),
        };
        user += tok.encode(&user_message(&sample), false).unwrap().len();
        output += tok
            .encode(item["output"].as_str().unwrap(), false)
            .unwrap()
            .len();
    }
    let (user, output) = (user / items.len(), output / items.len());
    println!("system prompt {system} tokens, user message {user} tokens on average, answer {output} tokens on average");
    assert!((200..400).contains(&system), "{system}");
    assert!((30..400).contains(&user), "{user}");
    assert!((150..400).contains(&output), "{output}");
}
