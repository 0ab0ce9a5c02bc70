//! The prompt renderer reproduces, byte for byte, the `prompt` field of every line of every
//! released prediction file from the matching benchmark item.

mod common;

use guardreasoner_eval::data::DataDir;
use guardreasoner_eval::dataset::load_benchmark;
use guardreasoner_eval::predictions::{load_predictions, prediction_path};
use guardreasoner_eval::Benchmark;
use guardreasoner_protocol::{PromptFormat, INSTRUCTION};

#[test]
fn renderer_reproduces_every_released_prompt() {
    let root = common::data_root();
    let data = DataDir::new(&root);
    let mut lines = 0;
    let mut files = 0;
    for model_dir in std::fs::read_dir(root.join("predictions")).unwrap() {
        let model_dir = model_dir.unwrap().path();
        for benchmark in Benchmark::ALL {
            let path = prediction_path(&model_dir, benchmark);
            if !path.exists() {
                continue;
            }
            files += 1;
            let preds = load_predictions(&path).unwrap();
            let bench = load_benchmark(&data.benchmark_file(benchmark).unwrap()).unwrap();
            assert_eq!(preds.records.len(), bench.items.len(), "{}", path.display());
            for ((line, record), item) in preds.records.iter().zip(&bench.items) {
                assert_eq!(item.instruction, INSTRUCTION, "{benchmark} instruction");
                let input = item.guard_input().unwrap();
                let rendered = input.render(PromptFormat::Raw);
                assert!(
                    rendered == record.prompt,
                    "{}:{line}: rendered prompt differs",
                    path.display()
                );
                lines += 1;
            }
        }
    }
    assert!(
        files >= 12,
        "expected the 1B and 3B prediction files, found {files}"
    );
    assert!(lines > 4000);
}

#[test]
fn every_benchmark_item_has_a_well_formed_input_block() {
    let data = DataDir::new(common::data_root());
    for benchmark in Benchmark::ALL {
        let bench = load_benchmark(&data.benchmark_file(benchmark).unwrap()).unwrap();
        for (i, item) in bench.items.iter().enumerate() {
            let input = item
                .guard_input()
                .unwrap_or_else(|e| panic!("{benchmark} item {i}: {e}"));
            assert_eq!(input.input_block(), item.input);
            assert_eq!(item.official_prompt(), input.render(PromptFormat::Raw));
        }
    }
}
