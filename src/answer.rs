//! The embedding API: load an exported model once, answer questions from many threads.
//!
//! ```no_run
//! use cbqa::answer::{Answerer, AnswererOptions};
//! let answerer = Answerer::load("runs/demo/onnx".as_ref(), AnswererOptions::default())?;
//! for a in answerer.answer_batch(&["who wrote the iliad"]) {
//!     match a {
//!         Ok(a) => println!("{} ({:.3})", a.text, a.score),
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! # Ok::<(), cbqa::Error>(())
//! ```
//!
//! [`Answerer`] is `Send + Sync`: wrap it in an `Arc` and share it across request handlers. ONNX
//! Runtime sessions are used under a lock (each call already uses all intra-op threads); tract
//! plans are shared and run concurrently.

use crate::error::{Error, Result};
use crate::generate::{
    encode_questions, run_batches, BatchPolicy, EarlyStopping, GenerateOptions, Hypothesis,
    Prepared,
};
use crate::runtime::{Backend, BackendOptions, OnnxDir, Seq2Seq};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How answers are produced.
#[derive(Debug, Clone)]
pub struct AnswererOptions {
    pub backend: BackendOptions,
    /// Beams (1 = greedy).
    pub num_beams: usize,
    /// Candidates returned per question (≤ num_beams), for recall@k.
    pub num_return_sequences: usize,
    pub max_new_tokens: usize,
    /// Suppress EOS before this many tokens (`= max_new_tokens` forces equal work in benchmarks).
    pub min_new_tokens: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    pub batch: BatchPolicy,
    /// Text put before every question (the paper used e.g. `nq question: `).
    pub prefix: String,
    /// Questions are cut to this many tokens (EOS kept).
    pub max_input_tokens: usize,
}

impl Default for AnswererOptions {
    fn default() -> Self {
        AnswererOptions {
            backend: BackendOptions::default(),
            num_beams: 1,
            num_return_sequences: 1,
            max_new_tokens: 32,
            min_new_tokens: 0,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::True,
            batch: BatchPolicy::default(),
            prefix: String::new(),
            max_input_tokens: 512,
        }
    }
}

/// One answer candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub text: String,
    pub score: f32,
}

/// The answer to one question: the best candidate and all returned candidates, best first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub text: String,
    pub score: f32,
    pub candidates: Vec<Candidate>,
    /// The question was longer than the model's input limit and was cut.
    pub truncated: bool,
}

/// A loaded model that answers questions.
pub struct Answerer {
    backend: Backend,
    config: crate::T5Config,
    tokenizer: tokenizers::Tokenizer,
    opts: AnswererOptions,
    generate: GenerateOptions,
    truncations: AtomicUsize,
}

impl Answerer {
    /// Load a model: an exported ONNX directory (ours or optimum's) for `ort` and `tract`, a
    /// Hugging Face checkpoint directory for `tch`.
    pub fn load(path: &Path, opts: AnswererOptions) -> Result<Self> {
        let (backend, config, generation, tokenizer) = match opts.backend.kind {
            #[cfg(feature = "train")]
            crate::runtime::BackendKind::Tch => {
                let dir = crate::ModelDir::open(path)?;
                let backend = Backend::load_checkpoint(&dir, &opts.backend)?;
                (backend, dir.config, dir.generation, dir.tokenizer)
            }
            _ => {
                let dir = OnnxDir::open(path)?;
                let backend = Backend::load(&dir, &opts.backend)?;
                (backend, dir.config, dir.generation, dir.tokenizer)
            }
        };
        let generate = GenerateOptions {
            max_new_tokens: opts.max_new_tokens,
            min_new_tokens: opts.min_new_tokens,
            num_beams: opts.num_beams,
            num_return_sequences: opts.num_return_sequences,
            length_penalty: opts.length_penalty,
            early_stopping: opts.early_stopping,
            decoder_start_token_id: generation
                .decoder_start_token_id
                .unwrap_or_else(|| config.decoder_start_id()),
            eos_token_id: generation.eos_token_id.unwrap_or_else(|| config.eos_id()),
            pad_token_id: generation.pad_token_id.unwrap_or_else(|| config.pad_id()),
            output_scores: true,
        };
        if generate.num_return_sequences > generate.num_beams {
            return Err(Error::Invalid(format!(
                "{} candidates requested but only {} beams",
                generate.num_return_sequences, generate.num_beams
            )));
        }
        let mut opts = opts;
        if backend.prefers_parallel_batches() {
            opts.batch.parallel = true;
        }
        Ok(Answerer {
            backend,
            config,
            tokenizer,
            opts,
            generate,
            truncations: AtomicUsize::new(0),
        })
    }

    /// The backend in words (engine, device, threads).
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// The model's config.
    pub fn config(&self) -> &crate::T5Config {
        &self.config
    }

    /// How many questions were cut to the input limit so far.
    pub fn truncations(&self) -> usize {
        self.truncations.load(Ordering::Relaxed)
    }

    /// Answer a batch of questions; one result per question, in order. A bad question (empty)
    /// fails alone; an engine failure fails every question of the call.
    pub fn answer_batch(&self, questions: &[&str]) -> Vec<Result<Answer>> {
        self.answer_batch_with(questions, &|_, _| {})
    }

    /// As [`answer_batch`](Self::answer_batch), calling `progress(done, total)` as batches finish.
    pub fn answer_batch_with(
        &self,
        questions: &[&str],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<Result<Answer>> {
        let eos = self.generate.eos_token_id;
        let prepared = encode_questions(
            &self.tokenizer,
            questions,
            &self.opts.prefix,
            self.opts.max_input_tokens,
            eos,
        );
        // The questions that tokenised, and where each came from.
        let (idx, items): (Vec<usize>, Vec<Prepared>) = prepared
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().ok().map(|p| (i, p.clone())))
            .unzip();
        let total = items.len();
        let done = AtomicUsize::new(0);
        let on_batch = |idx: &[usize], _: &[Vec<Hypothesis>]| {
            let d = done.fetch_add(idx.len(), Ordering::Relaxed) + idx.len();
            progress(d, total);
        };
        let hyps = if items.is_empty() {
            Ok(Vec::new())
        } else {
            run_batches(
                &self.backend,
                &items,
                &self.opts.batch,
                &self.generate,
                &on_batch,
            )
        };
        let mut out: Vec<Result<Answer>> = prepared
            .into_iter()
            .map(|p| p.map(|_| Answer::empty()))
            .collect();
        match hyps {
            Ok(hyps) => {
                for ((&i, p), h) in idx.iter().zip(&items).zip(hyps) {
                    if p.truncated {
                        self.truncations.fetch_add(1, Ordering::Relaxed);
                    }
                    out[i] = self.decode(&h, p.truncated);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for &i in &idx {
                    out[i] = Err(Error::Invalid(msg.clone()));
                }
            }
        }
        out
    }

    fn decode(&self, hyps: &[Hypothesis], truncated: bool) -> Result<Answer> {
        let mut candidates = Vec::with_capacity(hyps.len());
        for h in hyps {
            let text = self
                .tokenizer
                .decode(&h.tokens, true)
                .map_err(|e| Error::Invalid(format!("cannot decode tokens: {e}")))?;
            candidates.push(Candidate {
                text,
                score: h.score,
            });
        }
        let best = candidates.first().cloned().unwrap_or(Candidate {
            text: String::new(),
            score: f32::NEG_INFINITY,
        });
        Ok(Answer {
            text: best.text,
            score: best.score,
            candidates,
            truncated,
        })
    }
}

impl Answer {
    fn empty() -> Self {
        Answer {
            text: String::new(),
            score: 0.0,
            candidates: Vec::new(),
            truncated: false,
        }
    }
}
