//! [`Engine`]: a loaded model with its tokenizer, the entry point for callers.
//!
//! `Engine::load` takes a local path only (hub resolution belongs to the caller): a directory
//! is loaded as a Hugging Face checkpoint, a file as GGUF. Generation helpers allocate a
//! right-sized KV cache per request and encode the prompt with BOS first, as GuardReasoner's
//! evaluation feeds raw text (REFERENCE.md, "Prompt").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{generate_batch_with_prefix, options_for};
use crate::device::{select_device, DeviceChoice};
use crate::error::Result;
use crate::generate::{generate_reusing, GenerateOptions, Generation, Reuse, StepObserver};
use crate::kv_cache::KvType;
use crate::load::{load_path, ModelFormat};
use crate::lookup::DraftCorpus;
use crate::model::Llama;
use crate::prefix::PrefixKv;
use crate::tokenizer::Tokenizer;

/// How to load a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub device: DeviceChoice,
    /// Compute Q4_1 weights dequantized to f32 instead of as Q4_1 x Q8_1 products (activations
    /// rounded to 8 bits as llama.cpp does): the exact weights, without that rounding (a
    /// verification aid: it makes a Q4_1 file comparable with a dequantized reference; 7x the
    /// memory).
    pub dequantize_q4_1: bool,
    /// Compute every logit at greedy steps instead of finding the largest with the greedy
    /// screen of a dense output matrix ([`Llama::with_greedy_screen`]): the same tokens, and
    /// the same logits for observers; without the screen's 8-bit copy of the matrix in memory.
    /// `GUARDREASONER_FULL_LOGITS=1` in the environment does the same for every load.
    pub full_logits: bool,
    /// What the KV caches hold ([`KvType`]): f32 or f16 (half the memory and the bytes
    /// decode's attention reads; the logits differ slightly). CPU only. `None` (the default):
    /// `GUARDREASONER_KV_CACHE=f16` (or `f32`) in the environment if set, else f32.
    pub kv_cache: Option<KvType>,
}

/// A model ready to generate, with its tokenizer.
#[derive(Debug, Clone)]
pub struct Engine {
    model: Llama,
    tokenizer: Tokenizer,
    format: ModelFormat,
    path: PathBuf,
    /// Cache entries of a prompt prefix shared by every request (see [`Engine::set_prefix`]).
    prefix: Option<Arc<PrefixKv>>,
    /// Earlier outputs to draft from, learned from every generation (see [`DraftCorpus`]);
    /// shared by clones.
    corpus: Arc<DraftCorpus>,
}

impl Engine {
    /// Load a local Hugging Face model directory or `.gguf` file.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let device = select_device(opts.device)?;
        let (format, loaded) = load_path(path, &device)?;
        let weights = if opts.dequantize_q4_1 {
            loaded.weights.dequantize_q4_1()?
        } else {
            loaded.weights
        };
        let full_logits =
            opts.full_logits || std::env::var("GUARDREASONER_FULL_LOGITS").as_deref() == Ok("1");
        let kv_cache = match (opts.kv_cache, std::env::var("GUARDREASONER_KV_CACHE")) {
            (Some(kind), _) => kind,
            (None, Ok(v)) => v
                .parse()
                .map_err(|_| crate::error::EngineError::InvalidRequest {
                    field: "GUARDREASONER_KV_CACHE".into(),
                    problem: format!("{v:?} is neither f32 nor f16"),
                })?,
            (None, Err(_)) => KvType::default(),
        };
        let model = Llama::new(loaded.config, weights, &device)?
            .with_greedy_screen(!full_logits)
            .with_kv_type(kv_cache);
        Ok(Self {
            model,
            tokenizer: loaded.tokenizer,
            format,
            path: path.to_path_buf(),
            prefix: None,
            corpus: Arc::new(DraftCorpus::default()),
        })
    }

    /// Compute the cache entries of `text` (encoded with BOS, as prompts are) once; every later
    /// prompt whose tokens start with these and go on after them reuses them instead of
    /// recomputing them (e.g. GuardReasoner's instruction). Returns the prefix's token count.
    pub fn set_prefix(&mut self, text: &str) -> Result<usize> {
        let tokens = self.tokenizer.encode(text, true)?;
        let prefix = PrefixKv::compute(
            &self.model,
            tokens,
            GenerateOptions::default().prefill_chunk,
        )?;
        let len = prefix.len();
        self.prefix = Some(Arc::new(prefix));
        Ok(len)
    }

    /// The registered prefix, if any.
    pub fn prefix(&self) -> Option<&PrefixKv> {
        self.prefix.as_deref()
    }

    /// Forget the registered prefix.
    pub fn clear_prefix(&mut self) {
        self.prefix = None;
    }

    /// The corpus of earlier outputs that speculative decoding drafts from.
    pub fn draft_corpus(&self) -> &Arc<DraftCorpus> {
        &self.corpus
    }

    /// Draft from (and learn into) `corpus` from now on, e.g. one shared with other engines or
    /// a fresh one.
    pub fn set_draft_corpus(&mut self, corpus: Arc<DraftCorpus>) {
        self.corpus = corpus;
    }

    /// Teach the draft corpus an output written earlier (say, by this model on another run, or
    /// the released outputs of the same model), tokenized without BOS as generated text is.
    /// Returns its token count. Only the speed of later generations changes, never their output.
    pub fn learn_text(&self, text: &str) -> Result<usize> {
        let tokens = self.tokenizer.encode(text, false)?;
        self.corpus.learn(&tokens, 0);
        Ok(tokens.len())
    }

    /// What requests reuse: the prefix and the draft corpus.
    fn reuse(&self) -> Reuse<'_> {
        Reuse {
            prefix: self.prefix(),
            corpus: Some(&self.corpus),
        }
    }

    pub fn model(&self) -> &Llama {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn format(&self) -> ModelFormat {
        self.format
    }

    /// The path the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Generate from raw text (BOS added, special tokens in the text parsed).
    pub fn generate_text(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        observer: &mut dyn StepObserver,
    ) -> Result<Generation> {
        let ids = self.tokenizer.encode(prompt, true)?;
        self.generate_ids(&ids, opts, observer)
    }

    /// Generate from prompt ids, with a cache sized for this request.
    pub fn generate_ids(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        observer: &mut dyn StepObserver,
    ) -> Result<Generation> {
        let capacity = prompt.len() + opts.max_new_tokens.max(1);
        let mut cache = self.model.new_cache(capacity)?;
        generate_reusing(
            &self.model,
            &self.tokenizer,
            &mut cache,
            prompt,
            opts,
            observer,
            self.reuse(),
        )
    }

    /// Generate from several raw texts together (see [`generate_batch`]): `opts` is one entry
    /// for all or one per prompt, `observers` one per prompt; results in prompt order.
    pub fn generate_batch_text(
        &self,
        prompts: &[&str],
        opts: &[GenerateOptions],
        observers: &mut [&mut dyn StepObserver],
    ) -> Result<Vec<Generation>> {
        let ids = prompts
            .iter()
            .map(|p| self.tokenizer.encode(p, true))
            .collect::<Result<Vec<_>>>()?;
        self.generate_batch_ids(&ids, opts, observers)
    }

    /// Generate from several prompts (ids) together, each with a cache sized for it.
    pub fn generate_batch_ids(
        &self,
        prompts: &[Vec<u32>],
        opts: &[GenerateOptions],
        observers: &mut [&mut dyn StepObserver],
    ) -> Result<Vec<Generation>> {
        let generations = generate_batch_with_prefix(
            &self.model,
            &self.tokenizer,
            prompts,
            opts,
            observers,
            self.prefix(),
        )?;
        // The corpus learns every output whose options leave drafting on.
        for (i, (prompt, generation)) in prompts.iter().zip(&generations).enumerate() {
            if options_for(opts, i).prompt_lookup.is_some() {
                let mut sequence = prompt.clone();
                sequence.extend_from_slice(&generation.tokens);
                self.corpus.learn(&sequence, prompt.len());
            }
        }
        Ok(generations)
    }
}
