//! Binary classification counts and the metrics derived from them.

use serde::Serialize;

/// Confusion counts for one task, with the task's positive class (`harmful` / `refusal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub tn: usize,
}

/// `num / den`, or 0 when `den` is 0 (sklearn's `zero_division` default).
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Confusion {
    /// Counts one item.
    pub fn add(&mut self, truth_positive: bool, predicted_positive: bool) {
        match (truth_positive, predicted_positive) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.tp + self.fp + self.fn_ + self.tn
    }

    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// F1 of the positive class, in [0, 1]: `2tp / (2tp + fp + fn)`, 0 when undefined.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_metrics() {
        // 3 tp, 1 fp, 2 fn, 4 tn
        let c = Confusion {
            tp: 3,
            fp: 1,
            fn_: 2,
            tn: 4,
        };
        assert_eq!(c.precision(), 0.75);
        assert_eq!(c.recall(), 0.6);
        assert!((c.f1() - 6.0 / 9.0).abs() < 1e-15);
        assert_eq!(c.accuracy(), 0.7);
        assert_eq!(Confusion::default().f1(), 0.0);
    }
}
