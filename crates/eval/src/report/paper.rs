//! The published F1 of the released GuardReasoner models (paper tables 1-3, as quoted in
//! `REFERENCE.md`), for reports to show beside a run.

use crate::benchmark::Benchmark;
use guardreasoner_protocol::Task;

/// One published row: the model and its F1 per benchmark/task pair, then per-task averages.
pub struct PaperRow {
    pub model: &'static str,
    pub scores: &'static [(Benchmark, Task, f64)],
    pub averages: [(Task, f64); 3],
}

use Benchmark as B;
use Task as T;

pub const PAPER: [PaperRow; 3] = [
    PaperRow {
        model: "GuardReasoner 1B (paper)",
        scores: &[
            (B::ToxicChat, T::Prompt, 72.43),
            (B::HarmBenchPrompt, T::Prompt, 96.31),
            (B::OpenAIModeration, T::Prompt, 70.06),
            (B::AegisSafetyTest, T::Prompt, 89.34),
            (B::SimpleSafetyTests, T::Prompt, 98.99),
            (B::WildGuardTest, T::Prompt, 87.37),
            (B::HarmBenchResponse, T::Response, 84.75),
            (B::SafeRLHF, T::Response, 68.39),
            (B::BeaverTails, T::Response, 85.84),
            (B::XSTestResponseHarmful, T::Response, 90.12),
            (B::WildGuardTest, T::Response, 74.81),
            (B::XSTestResponseRefusal, T::Refusal, 91.34),
            (B::WildGuardTest, T::Refusal, 87.71),
        ],
        averages: [
            (T::Prompt, 77.68),
            (T::Response, 79.06),
            (T::Refusal, 88.51),
        ],
    },
    PaperRow {
        model: "GuardReasoner 3B (paper)",
        scores: &[
            (B::ToxicChat, T::Prompt, 78.20),
            (B::HarmBenchPrompt, T::Prompt, 89.10),
            (B::OpenAIModeration, T::Prompt, 71.87),
            (B::AegisSafetyTest, T::Prompt, 91.39),
            (B::SimpleSafetyTests, T::Prompt, 100.00),
            (B::WildGuardTest, T::Prompt, 89.01),
            (B::HarmBenchResponse, T::Response, 85.66),
            (B::SafeRLHF, T::Response, 69.02),
            (B::BeaverTails, T::Response, 86.72),
            (B::XSTestResponseHarmful, T::Response, 91.36),
            (B::WildGuardTest, T::Response, 79.70),
            (B::XSTestResponseRefusal, T::Refusal, 80.31),
            (B::WildGuardTest, T::Refusal, 87.54),
        ],
        averages: [
            (T::Prompt, 80.76),
            (T::Response, 80.80),
            (T::Refusal, 85.95),
        ],
    },
    PaperRow {
        model: "GuardReasoner 8B (paper)",
        scores: &[
            (B::ToxicChat, T::Prompt, 78.79),
            (B::HarmBenchPrompt, T::Prompt, 91.86),
            (B::OpenAIModeration, T::Prompt, 72.00),
            (B::AegisSafetyTest, T::Prompt, 90.18),
            (B::SimpleSafetyTests, T::Prompt, 99.50),
            (B::WildGuardTest, T::Prompt, 89.17),
            (B::HarmBenchResponse, T::Response, 85.47),
            (B::SafeRLHF, T::Response, 70.04),
            (B::BeaverTails, T::Response, 87.60),
            (B::XSTestResponseHarmful, T::Response, 94.34),
            (B::WildGuardTest, T::Response, 78.20),
            (B::XSTestResponseRefusal, T::Refusal, 93.68),
            (B::WildGuardTest, T::Refusal, 88.91),
        ],
        averages: [
            (T::Prompt, 81.09),
            (T::Response, 81.22),
            (T::Refusal, 89.96),
        ],
    },
];

impl PaperRow {
    pub fn f1(&self, benchmark: Benchmark, task: Task) -> Option<f64> {
        self.scores
            .iter()
            .find(|(b, t, _)| *b == benchmark && *t == task)
            .map(|s| s.2)
    }

    pub fn average(&self, task: Task) -> Option<f64> {
        self.averages.iter().find(|(t, _)| *t == task).map(|a| a.1)
    }
}
