//! The registry of the paper's benchmarks and the 13 benchmark/task pairs
//! (`REFERENCE.md`, "Scoring"; paper tables 1-3).

use guardreasoner_protocol::Task;
use serde::{Serialize, Serializer};
use std::fmt;

/// One benchmark file of the official repository (`data/benchmark/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Benchmark {
    ToxicChat,
    HarmBenchPrompt,
    OpenAIModeration,
    AegisSafetyTest,
    SimpleSafetyTests,
    WildGuardTest,
    HarmBenchResponse,
    SafeRLHF,
    BeaverTails,
    /// Spelled `XSTestReponseHarmful` upstream (sic); the name is kept for file compatibility.
    XSTestResponseHarmful,
    XSTestResponseRefusal,
}

/// Where a benchmark's ground truth for a task comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruthSource {
    /// The prediction file's `label` field is the label word itself.
    Label,
    /// The label field is answers text (`Answers: \nRequest: None\n...Response: harmful`).
    LabelText,
    /// A label column of the benchmark file, aligned by row (WildGuardTest).
    Column(&'static str),
}

impl Benchmark {
    pub const ALL: [Benchmark; 11] = [
        Benchmark::ToxicChat,
        Benchmark::HarmBenchPrompt,
        Benchmark::OpenAIModeration,
        Benchmark::AegisSafetyTest,
        Benchmark::SimpleSafetyTests,
        Benchmark::WildGuardTest,
        Benchmark::HarmBenchResponse,
        Benchmark::SafeRLHF,
        Benchmark::BeaverTails,
        Benchmark::XSTestResponseHarmful,
        Benchmark::XSTestResponseRefusal,
    ];

    /// The directory name in the official prediction layout (`<dir>/<name>/generated_predictions.jsonl`).
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::ToxicChat => "ToxicChat",
            Benchmark::HarmBenchPrompt => "HarmBenchPrompt",
            Benchmark::OpenAIModeration => "OpenAIModeration",
            Benchmark::AegisSafetyTest => "AegisSafetyTest",
            Benchmark::SimpleSafetyTests => "SimpleSafetyTests",
            Benchmark::WildGuardTest => "WildGuardTest",
            Benchmark::HarmBenchResponse => "HarmBenchResponse",
            Benchmark::SafeRLHF => "SafeRLHF",
            Benchmark::BeaverTails => "BeaverTails",
            Benchmark::XSTestResponseHarmful => "XSTestReponseHarmful",
            Benchmark::XSTestResponseRefusal => "XSTestResponseRefusal",
        }
    }

    /// The benchmark file name under `data/benchmark/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Benchmark::SimpleSafetyTests => "0_0_SimpleSafetyTests.json",
            Benchmark::AegisSafetyTest => "0_1_AegisSafetyTest.json",
            Benchmark::OpenAIModeration => "0_2_OpenAIModeration.json",
            Benchmark::HarmBenchPrompt => "0_3_harmbench_prompt.json",
            Benchmark::WildGuardTest => "0_4_wild_guard_test.json",
            Benchmark::HarmBenchResponse => "0_5_harmbench_response.json",
            Benchmark::XSTestResponseHarmful => "0_6_xstest_response_harmful.json",
            Benchmark::XSTestResponseRefusal => "0_7_xstest_response_refusal.json",
            Benchmark::ToxicChat => "0_8_toxic_chat.json",
            Benchmark::SafeRLHF => "0_9_safe_rlhf.json",
            Benchmark::BeaverTails => "0_A_beaver_tails.json",
        }
    }

    /// The tasks this benchmark is scored on.
    pub fn tasks(self) -> &'static [Task] {
        match self {
            Benchmark::ToxicChat
            | Benchmark::HarmBenchPrompt
            | Benchmark::OpenAIModeration
            | Benchmark::AegisSafetyTest
            | Benchmark::SimpleSafetyTests => &[Task::Prompt],
            Benchmark::WildGuardTest => &[Task::Prompt, Task::Response, Task::Refusal],
            Benchmark::HarmBenchResponse
            | Benchmark::SafeRLHF
            | Benchmark::BeaverTails
            | Benchmark::XSTestResponseHarmful => &[Task::Response],
            Benchmark::XSTestResponseRefusal => &[Task::Refusal],
        }
    }

    /// Where the ground truth of `task` comes from (the official scorer's `process_label`).
    pub fn truth_source(self, task: Task) -> TruthSource {
        match self {
            Benchmark::WildGuardTest => TruthSource::Column(match task {
                Task::Prompt => "prompt_harm_label",
                Task::Response => "response_harm_label",
                Task::Refusal => "response_refusal_label",
            }),
            Benchmark::SafeRLHF | Benchmark::BeaverTails => TruthSource::LabelText,
            _ => TruthSource::Label,
        }
    }

    /// Looks a benchmark up by its prediction-directory name, case-insensitively; the corrected
    /// spelling `XSTestResponseHarmful` is accepted too.
    pub fn from_name(name: &str) -> Option<Benchmark> {
        let lower = name.to_ascii_lowercase();
        if lower == "xstestresponseharmful" {
            return Some(Benchmark::XSTestResponseHarmful);
        }
        Benchmark::ALL
            .into_iter()
            .find(|b| b.name().to_ascii_lowercase() == lower)
    }
}

impl fmt::Display for Benchmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Benchmark {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::str::FromStr for Benchmark {
    type Err = crate::EvalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Benchmark::from_name(s).ok_or_else(|| crate::EvalError::UnknownBenchmark(s.to_string()))
    }
}

pub(crate) fn known_names() -> String {
    Benchmark::ALL.map(Benchmark::name).join(", ")
}

/// A benchmark scored on one task: one cell of the paper's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BenchmarkTask {
    pub benchmark: Benchmark,
    pub task: Task,
}

const fn pair(benchmark: Benchmark, task: Task) -> BenchmarkTask {
    BenchmarkTask { benchmark, task }
}

/// The 13 pairs in the order of the paper's tables (prompt, response, refusal).
pub const PAIRS: [BenchmarkTask; 13] = [
    pair(Benchmark::ToxicChat, Task::Prompt),
    pair(Benchmark::HarmBenchPrompt, Task::Prompt),
    pair(Benchmark::OpenAIModeration, Task::Prompt),
    pair(Benchmark::AegisSafetyTest, Task::Prompt),
    pair(Benchmark::SimpleSafetyTests, Task::Prompt),
    pair(Benchmark::WildGuardTest, Task::Prompt),
    pair(Benchmark::HarmBenchResponse, Task::Response),
    pair(Benchmark::SafeRLHF, Task::Response),
    pair(Benchmark::BeaverTails, Task::Response),
    pair(Benchmark::XSTestResponseHarmful, Task::Response),
    pair(Benchmark::WildGuardTest, Task::Response),
    pair(Benchmark::XSTestResponseRefusal, Task::Refusal),
    pair(Benchmark::WildGuardTest, Task::Refusal),
];

/// The tasks in the order of the paper's tables.
pub const TABLE_ORDER: [Task; 3] = [Task::Prompt, Task::Response, Task::Refusal];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_cover_every_benchmark_task_once() {
        let mut from_registry: Vec<_> = Benchmark::ALL
            .iter()
            .flat_map(|b| b.tasks().iter().map(move |t| pair(*b, *t)))
            .collect();
        let mut pairs = PAIRS.to_vec();
        let key = |p: &BenchmarkTask| (p.benchmark, p.task);
        from_registry.sort_by_key(key);
        pairs.sort_by_key(key);
        assert_eq!(from_registry, pairs);
        assert_eq!(PAIRS.len(), 13);
    }

    #[test]
    fn names_round_trip_and_accept_the_corrected_spelling() {
        for b in Benchmark::ALL {
            assert_eq!(Benchmark::from_name(b.name()), Some(b));
        }
        assert_eq!(
            Benchmark::from_name("xstestresponseharmful"),
            Some(Benchmark::XSTestResponseHarmful)
        );
        assert!("Nope".parse::<Benchmark>().is_err());
    }
}
