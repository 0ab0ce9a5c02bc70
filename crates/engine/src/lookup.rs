//! Drafting for speculative greedy decoding: prompt lookup and a corpus of earlier outputs.
//!
//! A guard's reasoning quotes the request and response and repeats fixed phrases
//! (`## Reasoning Step 2`, `The human user's request is ...`), so the tokens that follow the
//! latest few tokens have often been seen before: in the prompt or the output so far (quotes),
//! and in the reasoning the model wrote for earlier requests (the template).
//! - [`draft`] finds the most recent earlier occurrence of the history's last `n` tokens
//!   (longest `n` first) and proposes the tokens that followed it.
//! - [`DraftCorpus`] counts, over earlier outputs, which token followed each context of
//!   [`CORPUS_MIN_N`]`..=`[`CORPUS_MAX_N`] tokens, and chains the most frequent continuations,
//!   each with its observed frequency as the chance the model agrees.
//! - [`plan`] sizes the draft: with [`PromptLookup::pass_costs`] (what a verification pass of
//!   `1 + k` rows costs against one row) it keeps the length of either candidate that gives the
//!   most expected tokens per unit of pass cost.
//!
//! The generation loop ([`crate::generate::generate`]) feeds the draft to the model in one pass
//! and keeps the longest prefix the model itself would have chosen, so the output is exactly
//! plain greedy decoding; drafting only decides how many model passes it takes.

use std::collections::HashMap;
use std::sync::RwLock;

/// How drafts are looked up and sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptLookup {
    /// Most tokens proposed at once (the verification pass has one more row). At most
    /// [`crate::rowwise::MAX_ROWS`]` - 1`, so verification stays on the decode-sized kernels.
    pub max_draft: usize,
    /// Longest suffix matched in the history; shorter ones are tried down to `min_ngram`.
    pub max_ngram: usize,
    pub min_ngram: usize,
    /// Chance that a token drafted by prompt lookup is the model's own choice (the released
    /// GuardReasoner-1B outputs' rate was ~0.5-0.7 per token, `examples/draft_sim.rs`).
    pub lookup_hit_rate: f32,
    /// `pass_costs[k]`: the time of a pass of `1 + k` rows over a one-row pass (entry 0 is 1).
    /// Drafts are cut to the length with the most expected tokens per cost.
    pub pass_costs: [f32; crate::rowwise::MAX_ROWS],
}

/// Pass costs by rows, relative to one row: the 1B-shaped Q4_K_M file with 2 threads on the
/// 2-core benchmark machine (a Xeon with AVX-512 VNNI and AMX), `examples/rows_cost.rs` at
/// position 300 with the row counts taking turns, mean of two runs (docs/BENCHMARKS.md): 58.2,
/// 70.5, 82.3, 94.4, 103.1, 115.7, 132.2, 145.2 ms for 1-8 rows and 175-265 ms for 9-16, made
/// non-decreasing. Machines with more cores pay less per row (a Zen 4 with 2 cores: 1.05x for
/// 2 rows, 1.25x for 4); measure there and set [`PromptLookup::pass_costs`].
pub const DEFAULT_PASS_COSTS: [f32; crate::rowwise::MAX_ROWS] = [
    1.0, 1.21, 1.41, 1.62, 1.77, 1.99, 2.27, 2.5, 3.0, 3.21, 3.44, 3.57, 3.91, 3.91, 4.46, 4.56,
];

/// Drafts sized by expected gain, up to 7 tokens (8 rows), prompt-lookup matches of 2 tokens
/// or more. Pricing 240 of the released GuardReasoner-1B outputs (65k tokens) with
/// [`DEFAULT_PASS_COSTS`] (`examples/draft_sim.rs`): prompt lookup alone takes 0.85x the time of
/// plain decoding; with a corpus of the other 1,955 released outputs 0.58x; with a corpus that
/// starts empty and learns each of the 240 in turn 0.61x.
impl Default for PromptLookup {
    fn default() -> Self {
        Self {
            max_draft: 7,
            max_ngram: 8,
            min_ngram: 2,
            lookup_hit_rate: 0.6,
            pass_costs: DEFAULT_PASS_COSTS,
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

/// Shortest context a [`DraftCorpus`] counts continuations of.
pub const CORPUS_MIN_N: usize = 2;
/// Longest context a [`DraftCorpus`] counts continuations of; the longest one seen decides.
pub const CORPUS_MAX_N: usize = 6;
/// Contexts a [`DraftCorpus`] holds by default: what a hash table of 2^20 slots holds, ~50 MB.
/// The released GuardReasoner-1B's 2,195 outputs (620k tokens) make ~480k.
pub const DEFAULT_CORPUS_CONTEXTS: usize = 900_000;
/// Distinct next tokens remembered per context; later ones only count towards the total.
const NEXT_SLOTS: usize = 4;

/// What followed one context: up to [`NEXT_SLOTS`] tokens with their counts, and how often the
/// context occurred.
#[derive(Debug, Clone, Copy, Default)]
struct Continuations {
    tokens: [u32; NEXT_SLOTS],
    counts: [u32; NEXT_SLOTS],
    total: u32,
}

impl Continuations {
    fn add(&mut self, token: u32) {
        self.total = self.total.saturating_add(1);
        for (t, c) in self.tokens.iter_mut().zip(self.counts.iter_mut()) {
            if *c == 0 {
                (*t, *c) = (token, 1);
                return;
            }
            if *t == token {
                *c = c.saturating_add(1);
                return;
            }
        }
    }

    /// The most frequent next token (the first seen on ties) and its chance: its count over
    /// the context's occurrences plus one, so a continuation seen once is not a certainty.
    fn best(&self) -> Option<(u32, f32)> {
        let mut best = 0;
        for i in 1..NEXT_SLOTS {
            if self.counts[i] > self.counts[best] {
                best = i;
            }
        }
        (self.counts[best] > 0).then(|| {
            (
                self.tokens[best],
                self.counts[best] as f32 / (self.total as f32 + 1.0),
            )
        })
    }
}

/// Keys of the contexts ending `history`, for n = [`CORPUS_MIN_N`] up to [`CORPUS_MAX_N`] (or the
/// history's length), shortest first. A key is a 64-bit hash of the context's tokens; two
/// contexts sharing a key would only make a draft the model then rejects.
fn context_keys(history: &[u32]) -> impl DoubleEndedIterator<Item = u64> {
    let mut keys = [0u64; CORPUS_MAX_N - CORPUS_MIN_N + 1];
    let longest = history.len().min(CORPUS_MAX_N);
    let mut h = 0x243f_6a88_85a3_08d3_u64;
    for n in 1..=longest {
        h = (h.rotate_left(5) ^ u64::from(history[history.len() - n]))
            .wrapping_mul(0x517c_c1b7_2722_0a95);
        if n >= CORPUS_MIN_N {
            keys[n - CORPUS_MIN_N] = h;
        }
    }
    let count = (longest + 1).saturating_sub(CORPUS_MIN_N);
    keys.into_iter().take(count)
}

/// Continuations counted over earlier outputs, for drafting: the reasoning a guard writes
/// follows one template (`## Reasoning Step 1`, `The human user's request is`, the three
/// `Request:` / `Completion:` / `Response:` lines), so what the model wrote after a context
/// before is a good guess at what it writes after it now.
///
/// Shared by every request of an [`crate::Engine`] (and its clones); safe to use from several
/// threads. It learns each finished generation's output ([`DraftCorpus::learn`]) and holds at
/// most `max_contexts` contexts: once full, known contexts keep counting and new ones are not
/// added. Drafts are always verified, so what it holds changes only the speed, never the output.
/// It does hold fragments of earlier outputs, which quote requests: a process serving several
/// tenants that must not share even timing can turn drafting off
/// ([`crate::GenerateOptions::prompt_lookup`]) or give each tenant its own engine.
#[derive(Debug)]
pub struct DraftCorpus {
    table: RwLock<HashMap<u64, Continuations>>,
    max_contexts: usize,
}

impl Default for DraftCorpus {
    fn default() -> Self {
        Self::new(DEFAULT_CORPUS_CONTEXTS)
    }
}

impl DraftCorpus {
    /// An empty corpus holding at most `max_contexts` contexts.
    pub fn new(max_contexts: usize) -> Self {
        Self {
            table: RwLock::new(HashMap::new()),
            max_contexts,
        }
    }

    /// Count the continuations of `sequence[from..]` (a prompt and its output, say, with `from`
    /// the prompt's length): each token after the contexts that precede it, which may reach
    /// back before `from`.
    pub fn learn(&self, sequence: &[u32], from: usize) {
        let mut table = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for i in from.max(1)..sequence.len() {
            let next = sequence[i];
            for key in context_keys(&sequence[..i]) {
                if let Some(c) = table.get_mut(&key) {
                    c.add(next);
                } else if table.len() < self.max_contexts {
                    table.entry(key).or_default().add(next);
                }
            }
        }
    }

    /// Contexts held.
    pub fn contexts(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Forget everything learned.
    pub fn clear(&self) {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// The most frequent continuation of `history`, token after token (each one joins the
    /// context of the next), with each token's chance; at most `limit` tokens, fewer where a
    /// context was never seen.
    pub fn continuation(&self, history: &[u32], limit: usize) -> Vec<(u32, f32)> {
        let table = self
            .table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        if table.is_empty() {
            return out;
        }
        let mut context = history[history.len().saturating_sub(CORPUS_MAX_N)..].to_vec();
        while out.len() < limit {
            let next = context_keys(&context)
                .rev()
                .find_map(|key| table.get(&key).and_then(Continuations::best));
            let Some((token, chance)) = next else { break };
            out.push((token, chance));
            context.push(token);
        }
        out
    }
}

/// The draft length (0 to `chances.len()`) with the most expected tokens per unit of pass cost,
/// and that value. A pass verifying the first `k` drafted tokens yields
/// `1 + sum over j <= k of P(the first j all agree)` tokens and costs `pass_costs[k]`.
fn best_length(chances: &[f32], pass_costs: &[f32]) -> (usize, f32) {
    let mut best = (0, 1.0 / pass_costs[0]);
    let (mut reach, mut expected) = (1.0f32, 1.0f32);
    for (j, &p) in chances.iter().enumerate() {
        let Some(&cost) = pass_costs.get(j + 1) else {
            break;
        };
        reach *= p;
        expected += reach;
        let value = expected / cost;
        if value > best.1 {
            best = (j + 1, value);
        }
    }
    best
}

/// The draft for the next verification pass after `history` (prompt then generated tokens):
/// the prompt-lookup draft ([`draft`], each token given `opts.lookup_hit_rate`) or the
/// corpus's continuation, whichever cut to its best length promises more tokens per unit of
/// pass cost ([`PromptLookup::pass_costs`]); at most `limit` and [`PromptLookup::draft_limit`]
/// tokens. Empty when drafting is not expected to pay.
pub fn plan(
    history: &[u32],
    opts: &PromptLookup,
    corpus: Option<&DraftCorpus>,
    limit: usize,
) -> Vec<u32> {
    let limit = limit.min(opts.draft_limit());
    if limit == 0 {
        return Vec::new();
    }
    let mut quoted = draft(history, opts, limit);
    let (k, value) = best_length(&vec![opts.lookup_hit_rate; quoted.len()], &opts.pass_costs);
    quoted.truncate(k);
    if let Some(corpus) = corpus {
        let chain = corpus.continuation(history, limit);
        let chances: Vec<f32> = chain.iter().map(|c| c.1).collect();
        let (k, v) = best_length(&chances, &opts.pass_costs);
        if v > value {
            return chain[..k].iter().map(|c| c.0).collect();
        }
    }
    quoted
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
            ..PromptLookup::default()
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

    #[test]
    fn the_corpus_continues_with_what_most_often_followed_the_longest_known_context() {
        let corpus = DraftCorpus::default();
        assert!(corpus.continuation(&[1, 2], 4).is_empty());
        // After "1 2": 3 twice, 9 once. After "5 1 2": 9 once.
        corpus.learn(&[1, 2, 3, 4], 0);
        corpus.learn(&[7, 1, 2, 3, 4], 3);
        corpus.learn(&[5, 1, 2, 9], 0);
        let c = corpus.continuation(&[8, 1, 2], 3);
        let tokens: Vec<u32> = c.iter().map(|x| x.0).collect();
        assert_eq!(tokens, vec![3, 4]); // nothing ever followed "2 3 4"
        assert!((c[0].1 - 2.0 / 4.0).abs() < 1e-6, "{c:?}"); // 2 of 3, plus one unseen
        assert!((c[1].1 - 2.0 / 3.0).abs() < 1e-6, "{c:?}"); // "2 3" -> 4 twice
                                                             // The longer context "5 1 2" decides over "1 2".
        assert_eq!(corpus.continuation(&[5, 1, 2], 1)[0].0, 9);
        assert_eq!(corpus.continuation(&[5, 1, 2], 0), vec![]);
        // `from` skips the prompt's own continuations ("7 1" -> 2), not their contexts.
        assert!(corpus.continuation(&[7, 1], 1).is_empty());
        assert_eq!(corpus.continuation(&[7, 1, 2], 1)[0].0, 3);
        corpus.clear();
        assert_eq!(corpus.contexts(), 0);
        assert!(corpus.continuation(&[1, 2], 2).is_empty());
    }

    #[test]
    fn a_full_corpus_keeps_counting_known_contexts_only() {
        let corpus = DraftCorpus::new(3);
        corpus.learn(&[1, 2, 3], 0); // contexts "1 2" (-> 3)
        corpus.learn(&[4, 5, 6, 7], 0); // "4 5", "5 6", "4 5 6": the third does not fit
        assert_eq!(corpus.contexts(), 3);
        corpus.learn(&[1, 2, 8, 1, 2, 8], 0);
        assert_eq!(corpus.contexts(), 3);
        assert_eq!(corpus.continuation(&[1, 2], 1)[0].0, 8); // 8 twice, 3 once
        assert!(corpus.continuation(&[2, 8], 1).is_empty());
    }

    #[test]
    fn drafts_are_cut_where_another_row_no_longer_pays() {
        // Each extra row costs a tenth of a one-row pass.
        let costs: Vec<f32> = (0..16).map(|k| 1.0 + 0.1 * k as f32).collect();
        // Sure tokens: the whole draft, as long as every extra row still adds more than it costs.
        assert_eq!(best_length(&[1.0; 7], &costs).0, 7);
        // Unlikely tokens: none.
        assert_eq!(best_length(&[0.02; 7], &costs).0, 0);
        // A sure first token, then a coin flip, then hopeless ones.
        assert_eq!(best_length(&[1.0, 0.5, 0.01, 0.01], &costs).0, 2);
        // Rows priced like single passes (no batching gain): drafting never pays.
        let linear: Vec<f32> = (1..=16).map(|r| r as f32).collect();
        assert_eq!(best_length(&[0.9; 5], &linear).0, 0);
        // No more rows than costs are given for.
        assert_eq!(best_length(&[1.0; 7], &costs[..3]).0, 2);
    }

    #[test]
    fn plan_takes_the_candidate_that_promises_more() {
        // Each extra row costs a twentieth of a one-row pass; prompt lookup's hit rate is 0.6.
        let mut pass_costs = [0.0; crate::rowwise::MAX_ROWS];
        for (k, c) in pass_costs.iter_mut().enumerate() {
            *c = 1.0 + 0.05 * k as f32;
        }
        let opts = PromptLookup {
            pass_costs,
            ..PromptLookup::default()
        };
        // The history quotes "10 11 12 13" after "1 2"; the corpus says "1 2" -> 20 21 22 23.
        let history = [1, 2, 10, 11, 12, 13, 1, 2];
        assert_eq!(plan(&history, &opts, None, 8), vec![10, 11, 12, 13]);
        let corpus = DraftCorpus::default();
        for _ in 0..50 {
            corpus.learn(&[1, 2, 20, 21, 22, 23], 0);
        }
        assert_eq!(
            plan(&history, &opts, Some(&corpus), 8),
            vec![20, 21, 22, 23]
        );
        // A corpus seen once per context is less sure than the quote.
        let weak = DraftCorpus::default();
        weak.learn(&[1, 2, 20, 21], 0);
        assert_eq!(plan(&history, &opts, Some(&weak), 8), vec![10, 11, 12, 13]);
        // Limits: the caller's and max_draft's.
        assert_eq!(plan(&history, &opts, Some(&corpus), 2), vec![20, 21]);
        let one = PromptLookup {
            max_draft: 1,
            ..opts
        };
        assert_eq!(plan(&history, &one, Some(&corpus), 8), vec![20]);
        assert!(plan(&history, &opts, Some(&corpus), 0).is_empty());
    }
}
