//! The local backend registers the raw guard prompt's instruction as the engine's prefix
//! (`LocalBackend::new`); this checks that the prefix's tokens really begin the prompts the
//! released models were evaluated on: every `prompt` field of the released 1B and 3B prediction
//! files, with the real Llama 3.2 tokenizer, so the cache is used for all of them.

use std::io::BufRead;

use guardreasoner_engine::{SpecialTokens, Tokenizer};
use guardreasoner_protocol::{prompt_prefix, PromptFormat};
use guardreasoner_testkit::{data_root, test_asset};

#[test]
fn the_instruction_prefix_covers_every_released_prompt() {
    let Some(path) = test_asset("llama-3.2/tokenizer.json") else {
        return;
    };
    let special = SpecialTokens {
        bos: 128_000,
        eos: vec![128_001, 128_008, 128_009],
    };
    let tokenizer = Tokenizer::from_file(&path, special).unwrap();
    let prefix = tokenizer
        .encode(&prompt_prefix(PromptFormat::Raw), true)
        .unwrap();
    let root = data_root().join("predictions");
    if !root.is_dir() {
        assert!(
            std::env::var("GUARDREASONER_SKIP_ASSET_TESTS").is_ok_and(|v| v == "1"),
            "{} is missing (set GUARDREASONER_DATA_DIR)",
            root.display()
        );
        return;
    }
    let (mut total, mut uncovered) = (0, Vec::new());
    for size in ["1B", "3B"] {
        for entry in std::fs::read_dir(root.join(size)).unwrap() {
            let file = entry.unwrap().path().join("generated_predictions.jsonl");
            let reader = std::io::BufReader::new(std::fs::File::open(&file).unwrap());
            for (n, line) in reader.lines().enumerate() {
                let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                let ids = tokenizer
                    .encode(v["prompt"].as_str().unwrap(), true)
                    .unwrap();
                total += 1;
                if !(ids.len() > prefix.len() && ids.starts_with(&prefix)) {
                    uncovered.push(format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    println!(
        "prefix of {} tokens covers {}/{total} released prompts",
        prefix.len(),
        total - uncovered.len()
    );
    assert!(total > 4000, "only {total} prompts read");
    assert!(uncovered.is_empty(), "not covered: {uncovered:?}");
}
