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
    encode_questions, run_batches, BatchPolicy, GenerateOptions, Hypothesis, Prepared, Stream,
};
use crate::runtime::{Backend, BackendKind, BackendOptions, EncoderInput, OnnxDir, Seq2Seq};
use crate::{GenerationConfig, T5Config};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How answers are produced: the engine, the decoding, the batching and the question text.
#[derive(Debug, Clone)]
pub struct AnswererOptions {
    pub backend: BackendOptions,
    /// Decoding settings (beams, candidates, lengths, penalty). The special token ids are the
    /// model's, and so is `early_stopping` when its generation_config.json sets it
    /// ([`GenerateOptions::for_model`]).
    pub generate: GenerateOptions,
    pub batch: BatchPolicy,
    /// Text put before every question (the paper used e.g. `nq question: `).
    pub prefix: String,
    /// Questions are cut to this many tokens (EOS kept; at least 2).
    pub max_input_tokens: usize,
}

impl Default for AnswererOptions {
    fn default() -> Self {
        AnswererOptions {
            backend: BackendOptions::default(),
            generate: GenerateOptions::default(),
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
    /// Tokens generated for the best candidate (its EOS included).
    pub generated_tokens: usize,
}

/// A loaded model that answers questions.
pub struct Answerer {
    backend: Backend,
    config: T5Config,
    tokenizer: tokenizers::Tokenizer,
    opts: AnswererOptions,
    generate: GenerateOptions,
    truncations: AtomicUsize,
    /// The worker threads of parallel batches, one per batch the backend decodes at once (an ONNX
    /// Runtime session copy, a tract thread), so no more batches run than it has sessions and
    /// threads.
    batch_workers: Option<rayon::ThreadPool>,
}

impl Answerer {
    /// Load a model: an exported ONNX directory (ours or optimum's) for `ort` and `tract`, a
    /// Hugging Face checkpoint directory for `tch`.
    pub fn load(path: &Path, opts: AnswererOptions) -> Result<Self> {
        opts.generate.check()?;
        let (backend, config, generation, tokenizer) = open_model(path, &opts.backend)?;
        let generate = opts.generate.clone().for_model(&generation, &config)?;
        let mut opts = opts;
        if backend.prefers_parallel_batches() {
            opts.batch.parallel = true;
        }
        let batch_workers = match backend.batches_at_once() {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| {
                        Error::setting(
                            "parallel_batches",
                            format!("cannot start {n} batch threads: {e}"),
                        )
                    })?,
            ),
            None => None,
        };
        Ok(Answerer {
            backend,
            config,
            tokenizer,
            opts,
            generate,
            truncations: AtomicUsize::new(0),
            batch_workers,
        })
    }

    /// The backend in words (engine, device, threads).
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// The model's config.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// The options this answerer was loaded with (batching as the backend prefers it).
    pub fn options(&self) -> &AnswererOptions {
        &self.opts
    }

    /// The decoding settings in use: the options given, with the model's special token ids.
    pub fn generate_options(&self) -> &GenerateOptions {
        &self.generate
    }

    /// Tokenise questions as [`answer_batch`](Self::answer_batch) does, with `prefix` before
    /// each, cut to the input limit: one result per question (an empty one is an error).
    pub fn prepare(&self, questions: &[&str], prefix: &str) -> Vec<Result<Prepared>> {
        encode_questions(
            &self.tokenizer,
            questions,
            prefix,
            self.opts.max_input_tokens,
            self.generate.eos_token_id,
        )
    }

    /// Answer prepared questions with decoding settings `generate` (which must keep the
    /// model's special token ids, as [`generate_options`](Self::generate_options) has them):
    /// one answer per item, in order, batched by the loaded batch policy.
    pub fn answer_prepared(
        &self,
        items: &[Prepared],
        generate: &GenerateOptions,
    ) -> Result<Vec<Answer>> {
        generate.check()?;
        let hyps = self.generate_all(items, generate, &|_, _| {})?;
        items
            .iter()
            .zip(hyps)
            .map(|(p, h)| self.decode(&h, p.truncated))
            .collect()
    }

    /// A running batch that prepared questions join and leave one decoder step at a time
    /// (continuous batching), decoding with `generate` (checked; the model's special token ids,
    /// as [`generate_options`](Self::generate_options) has them). Answers are those of
    /// [`answer_prepared`](Self::answer_prepared).
    pub fn stream<K>(&self, generate: &GenerateOptions) -> Result<AnswerStream<'_, K>> {
        Ok(AnswerStream {
            answerer: self,
            stream: Stream::new(&self.backend, generate)?,
        })
    }

    /// Whether questions can join a batch that is already decoding: the backend joins decoding
    /// states at different positions (cbqa's own exports and the tch model; not optimum's).
    pub fn joins_running_batches(&self) -> bool {
        self.backend.joins_any_position()
    }

    /// How many batches this answerer decodes at the same time: one per ONNX Runtime session
    /// copy (loaded with `parallel_batches` on the CPU), one per thread with tract, else one.
    pub fn batches_at_once(&self) -> usize {
        self.backend.batches_at_once().unwrap_or(1)
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
        let prepared = self.prepare(questions, &self.opts.prefix);
        // The questions that tokenised, and where each came from.
        let (idx, items): (Vec<usize>, Vec<Prepared>) = prepared
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().ok().map(|p| (i, p.clone())))
            .unzip();
        let hyps = self.generate_all(&items, &self.generate, progress);
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
                let cause = Arc::new(e);
                for &i in &idx {
                    out[i] = Err(self.batch_failure(&cause));
                }
            }
        }
        out
    }

    /// Hypotheses for every tokenised question, reporting progress as batches finish.
    fn generate_all(
        &self,
        items: &[Prepared],
        generate: &GenerateOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<Vec<Hypothesis>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let total = items.len();
        let done = AtomicUsize::new(0);
        let on_batch = |idx: &[usize], _: &[Vec<Hypothesis>]| {
            let d = done.fetch_add(idx.len(), Ordering::Relaxed) + idx.len();
            progress(d, total);
        };
        let run = || run_batches(&self.backend, items, &self.opts.batch, generate, &on_batch);
        match &self.batch_workers {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }

    /// The error of each question of a call whose decoding failed: the one failure, shared.
    fn batch_failure(&self, cause: &Arc<Error>) -> Error {
        let backend = match self.opts.backend.kind {
            BackendKind::Ort => "onnxruntime",
            BackendKind::Tract => "tract",
            BackendKind::Tch => "libtorch",
        };
        Error::backend(backend, "answering the questions", Arc::clone(cause))
    }

    fn decode(&self, hyps: &[Hypothesis], truncated: bool) -> Result<Answer> {
        let mut candidates = Vec::with_capacity(hyps.len());
        for h in hyps {
            let text = self
                .tokenizer
                .decode(&h.tokens, true)
                .map_err(|e| Error::tokenize("decoding an answer", e))?;
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
            generated_tokens: hyps.first().map_or(0, |h| h.tokens.len()),
        })
    }
}

/// Questions decoding together, joining and leaving at step boundaries ([`Answerer::stream`]);
/// each is known by a key of the caller's.
pub struct AnswerStream<'a, K> {
    answerer: &'a Answerer,
    /// Keys carry whether the question was cut to the input limit.
    stream: Stream<'a, Backend, (K, bool)>,
}

/// A question that left the stream: its key and its answer.
pub type Answered<K> = (K, Result<Answer>);

impl<K> AnswerStream<'_, K> {
    /// The decoding settings of this stream.
    pub fn options(&self) -> &GenerateOptions {
        self.stream.options()
    }

    /// Questions running.
    pub fn len(&self) -> usize {
        self.stream.len()
    }

    /// Whether no question runs.
    pub fn is_empty(&self) -> bool {
        self.stream.is_empty()
    }

    /// Decoder rows running (questions × beams).
    pub fn rows(&self) -> usize {
        self.stream.rows()
    }

    /// Whether questions can be admitted now (none runs, or the backend joins running batches).
    pub fn can_admit(&self) -> bool {
        self.stream.can_admit()
    }

    /// Encode `items` and add them to the running batch (their first step taken); returns the
    /// questions already answered by that step.
    pub fn admit(&mut self, items: Vec<(K, &Prepared)>) -> Result<Vec<Answered<K>>> {
        let pad = self.stream.options().pad_token_id;
        let seqs: Vec<Vec<u32>> = items.iter().map(|(_, p)| p.ids.clone()).collect();
        let input = EncoderInput::from_sequences(&seqs, pad);
        let keys = items.into_iter().map(|(k, p)| (k, p.truncated)).collect();
        let finished = self.stream.admit(&input, keys)?;
        Ok(self.answers(finished))
    }

    /// One decoder step of every running question; returns the questions it answered.
    pub fn step(&mut self) -> Result<Vec<Answered<K>>> {
        let finished = self.stream.step()?;
        Ok(self.answers(finished))
    }

    /// Drop the running questions `leaves` picks, unanswered; returns their keys.
    pub fn remove(&mut self, leaves: impl Fn(&K) -> bool) -> Result<Vec<K>> {
        let gone = self.stream.remove(|(k, _)| leaves(k))?;
        Ok(gone.into_iter().map(|(k, _)| k).collect())
    }

    fn answers(&self, finished: Vec<crate::generate::Finished<(K, bool)>>) -> Vec<Answered<K>> {
        finished
            .into_iter()
            .map(|((key, truncated), hyps)| (key, self.answerer.decode(&hyps, truncated)))
            .collect()
    }
}

/// Open the model directory `path` with the backend `opts` asks for: its backend, config,
/// generation config and tokenizer.
fn open_model(
    path: &Path,
    opts: &BackendOptions,
) -> Result<(Backend, T5Config, GenerationConfig, tokenizers::Tokenizer)> {
    #[cfg(feature = "train")]
    if opts.kind == BackendKind::Tch {
        let dir = crate::ModelDir::open(path)?;
        let backend = Backend::load_checkpoint(&dir, opts)?;
        return Ok((backend, dir.config, dir.generation, dir.tokenizer));
    }
    let dir = OnnxDir::open(path)?;
    let backend = Backend::load(&dir, opts)?;
    Ok((backend, dir.config, dir.generation, dir.tokenizer))
}

impl Answer {
    fn empty() -> Self {
        Answer {
            text: String::new(),
            score: 0.0,
            candidates: Vec::new(),
            truncated: false,
            generated_tokens: 0,
        }
    }
}
