//! Prompt-lookup drafting for speculative greedy decoding.
//!
//! A guard's reasoning quotes the request and response and repeats fixed phrases
//! (`## Reasoning Step 2`, `The human user's request is ...`), so the tokens that follow the
//! latest few tokens have often been seen before, in the prompt or in the output so far.
//! [`draft`] finds the most recent earlier occurrence of the last `n` tokens (longest `n`
//! first) and proposes the tokens that followed it. The generation loop
//! ([`crate::generate::generate`]) feeds the draft to the model in one pass and keeps the
//! longest prefix the model itself would have chosen, so the output is exactly plain greedy
//! decoding; drafting only decides how many model passes it takes.

/// How drafts are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptLookup {
    /// Most tokens proposed at once (the verification pass has one more row). At most
    /// [`crate::rowwise::MAX_ROWS`]` - 1`, so verification stays on the decode-sized kernels.
    pub max_draft: usize,
    /// Longest suffix matched; shorter ones are tried down to `min_ngram`.
    pub max_ngram: usize,
    pub min_ngram: usize,
}

/// One drafted token after a match of 2 or more. A verification row is not free on a small
/// CPU (a 1B Q4_K_M pass of 2 rows costs ~1.2x one row on 2 cores, 3 rows ~1.7x), so the
/// default proposes a single token: pricing the released GuardReasoner-1B outputs (240 of
/// them, 65k tokens) with those pass costs (`examples/draft_sim.rs`, docs/BENCHMARKS.md), it
/// gave the lowest decode time of the settings tried (0.87x plain; 3 tokens after a match
/// of 4, the earlier default, 0.97x). Machines with more cores pay less per row and gain from
/// longer drafts.
impl Default for PromptLookup {
    fn default() -> Self {
        Self {
            max_draft: 1,
            max_ngram: 8,
            min_ngram: 2,
        }
    }
}

impl PromptLookup {
    /// The largest draft the verification kernels accept.
    pub const MAX_DRAFT: usize = crate::rowwise::MAX_ROWS - 1;

    /// `max_draft` clamped to what verification supports.
    pub fn draft_limit(&self) -> usize {
        self.max_draft.min(Self::MAX_DRAFT)
    }
}

/// Tokens proposed to follow `history` (prompt then generated tokens): what followed the most
/// recent earlier occurrence of its last `n` tokens, for the longest `n` in
/// `max_ngram..=min_ngram` that occurs, at most `limit` tokens. Empty when nothing matches.
pub fn draft(history: &[u32], opts: &PromptLookup, limit: usize) -> Vec<u32> {
    let len = history.len();
    if limit == 0 {
        return Vec::new();
    }
    let min = opts.min_ngram.max(1);
    for n in (min..=opts.max_ngram).rev() {
        if n >= len {
            continue;
        }
        let suffix = &history[len - n..];
        // Occurrences starting at `start` with at least one token after them, latest first.
        for start in (0..len - n).rev() {
            if &history[start..start + n] == suffix {
                let from = start + n;
                let to = (from + limit).min(len);
                return history[from..to].to_vec();
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposes_what_followed_the_latest_longest_match() {
        let opts = PromptLookup {
            max_draft: 4,
            max_ngram: 3,
            min_ngram: 1,
        };
        // "1 2 3" occurred twice; the later one (followed by 7 8) wins.
        let history = [1, 2, 3, 4, 5, 1, 2, 3, 7, 8, 9, 1, 2, 3];
        assert_eq!(draft(&history, &opts, 4), vec![7, 8, 9, 1]);
        assert_eq!(draft(&history, &opts, 2), vec![7, 8]);
        // A longer n-gram beats a more recent shorter one.
        let history = [5, 6, 7, 40, 9, 7, 41, 5, 6, 7];
        assert_eq!(draft(&history, &opts, 3), vec![40, 9, 7]);
        // Only the suffix itself: nothing to propose.
        assert!(draft(&[1, 2, 3], &opts, 4).is_empty());
        assert!(draft(&[], &opts, 4).is_empty());
        assert!(draft(&[1, 1], &opts, 0).is_empty());
        // The draft may run into the suffix itself (repetition).
        assert_eq!(draft(&[9, 9, 9], &opts, 4), vec![9]);
        let strict = PromptLookup {
            min_ngram: 2,
            ..opts
        };
        assert!(draft(&[1, 2, 3, 4, 3], &strict, 4).is_empty());
        assert_eq!(draft(&[1, 2, 3, 4, 3], &opts, 4), vec![4, 3]);
    }

    #[test]
    fn draft_limit_stays_within_the_verification_kernels() {
        let opts = PromptLookup {
            max_draft: 100,
            ..PromptLookup::default()
        };
        assert_eq!(opts.draft_limit(), crate::rowwise::MAX_ROWS - 1);
    }
}
