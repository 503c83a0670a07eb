//! The held-out set a run is evaluated on: for `cbqa train` a QA file (exact match with greedy
//! decoding, as `cbqa eval` scores, and the dev loss on its first answers); for `cbqa pretrain`
//! a corpus made into examples of the run's objective (the dev loss only). The dev loss is the
//! token-mean cross-entropy over every target token of the dev examples, as the training loss
//! is computed, in eval mode (no dropout) and without gradients. The examples are built once,
//! when the run opens, from the run's seed, so every evaluation (and a resumed run) sees the
//! same ones — for span corruption the same noise masks.

use super::batching::{collate, micro_batches};
use super::data::{corpus_examples, encode_texts, read_qa, Tokenized, TrainData};
use super::settings::TrainSettings;
use super::trainer::predict;
use crate::data::QaExample;
use crate::error::{Error, Result};
use crate::generate::{encode_questions, GenerateOptions, Prepared};
use crate::model::T5;
use crate::pretrain::PretrainSettings;
use crate::runtime::Seq2Seq;
use std::path::Path;
use std::sync::Mutex;
use tch::Device;
use tokenizers::Tokenizer;

/// What one evaluation measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DevScores {
    /// Exact match ×100 (QA dev sets only).
    pub em: Option<f64>,
    /// Token-mean cross-entropy of the dev targets.
    pub loss: f64,
}

/// The QA part of a dev set: its examples, their encoder inputs and the answer normaliser.
struct DevQa {
    examples: Vec<QaExample>,
    inputs: Vec<Prepared>,
    normalizer: crate::eval::Normalizer,
}

/// A dev set: the QA questions for exact match (none for a pre-training corpus) and the
/// examples the dev loss is computed on.
pub(crate) struct Dev {
    qa: Option<DevQa>,
    loss_examples: Vec<Tokenized>,
}

impl Dev {
    /// The dev set of `s` (`None` without one) and the lines skipped reading it. A QA dev
    /// set's questions get the prefix of the training source of the same benchmark.
    pub(crate) fn read(
        s: &TrainSettings,
        train: &TrainData,
        tokenizer: &Tokenizer,
        eos: u32,
    ) -> Result<Option<(Dev, Vec<String>)>> {
        let Some(path) = &s.dev else {
            return Ok(None);
        };
        let (dev, skipped) = match &s.pretrain {
            Some(p) => Self::read_corpus(path, p, tokenizer, eos, s.seed)?,
            None => Self::read_qa(path, s, train, tokenizer, eos)?,
        };
        if dev.loss_examples.is_empty() {
            let msg =
                "the dev set gives no example with a target (no answer, or every one skipped)";
            return Err(Error::input(path.display().to_string(), msg));
        }
        Ok(Some((dev, skipped)))
    }

    /// A held-out corpus made into examples exactly as the training corpus is (same objective,
    /// settings and seed).
    fn read_corpus(
        path: &Path,
        p: &PretrainSettings,
        tokenizer: &Tokenizer,
        eos: u32,
        seed: u64,
    ) -> Result<(Dev, Vec<String>)> {
        let dev = PretrainSettings {
            corpus: vec![path.to_path_buf()],
            ..p.clone()
        };
        // The masks of the run's seed, fixed: every evaluation sees the same examples.
        let (loss_examples, skipped, _) = corpus_examples(&dev, tokenizer, eos, seed)?;
        let skipped = skipped.iter().map(|m| format!("dev: {m}")).collect();
        let dev = Dev {
            qa: None,
            loss_examples,
        };
        Ok((dev, skipped))
    }

    /// A QA file (at most `eval_limit` examples), its questions encoded as `cbqa eval` does; the
    /// dev loss is on each question's first non-blank answer.
    fn read_qa(
        path: &Path,
        s: &TrainSettings,
        train: &TrainData,
        tokenizer: &Tokenizer,
        eos: u32,
    ) -> Result<(Dev, Vec<String>)> {
        let report = read_qa(path, s.skip_bad, false)?;
        let prefix = train.prefix_for(report.benchmark, &s.prefix);
        let mut examples = report.examples;
        if let Some(n) = s.eval_limit {
            examples.truncate(n);
        }
        let questions: Vec<&str> = examples.iter().map(|ex| ex.question.as_str()).collect();
        let inputs = encode_questions(tokenizer, &questions, &prefix, s.max_input_len, eos)
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let mut loss_examples = Vec::with_capacity(examples.len());
        for (ex, input) in examples.iter().zip(&inputs) {
            let Some(answer) = ex.answers.iter().find(|a| !a.trim().is_empty()) else {
                continue;
            };
            let target = encode_texts(tokenizer, &[answer], "", s.max_target_len, eos)?;
            loss_examples.push(Tokenized {
                input: input.ids.iter().map(|&t| i64::from(t)).collect(),
                targets: target,
            });
        }
        let qa = DevQa {
            examples,
            inputs,
            normalizer: report.normalizer,
        };
        let dev = Dev {
            qa: Some(qa),
            loss_examples,
        };
        Ok((dev, report.skipped))
    }

    /// Exact match ×100 of greedy answers against every reference, computed by the same code
    /// as `cbqa eval` (T5's `qa_utils` semantics, with the benchmark's normaliser); `None` for
    /// a dev set without questions.
    pub(crate) fn exact_match<B: Seq2Seq>(
        &self,
        backend: &B,
        tokenizer: &Tokenizer,
        opts: &GenerateOptions,
        batch_size: usize,
    ) -> Result<Option<f64>> {
        let Some(qa) = &self.qa else {
            return Ok(None);
        };
        let answers = predict(backend, tokenizer, &qa.inputs, opts, batch_size)?;
        let preds: Vec<crate::eval::Prediction> = answers
            .into_iter()
            .map(crate::eval::Prediction::new)
            .collect();
        let scores = crate::eval::score_examples(&preds, &qa.examples, qa.normalizer)?;
        Ok(Some(scores.aggregate.em))
    }

    /// The token-mean cross-entropy of the dev targets under the model as it is now: eval mode
    /// (no dropout), no gradients, in micro-batches of at most `micro_batch_tokens` padded
    /// tokens, the sums added in f64.
    pub(crate) fn loss(
        &self,
        t5: &Mutex<T5>,
        device: Device,
        micro_batch_tokens: usize,
    ) -> Result<f64> {
        let _no_grad = tch::no_grad_guard();
        let t5 = t5.lock().unwrap_or_else(|p| p.into_inner());
        let pad = i64::from(t5.config.pad_id());
        let items: Vec<(usize, usize)> = (0..self.loss_examples.len()).map(|i| (i, 0)).collect();
        let (mut sum, mut tokens) = (0.0f64, 0i64);
        for mb in micro_batches(&self.loss_examples, &items, micro_batch_tokens) {
            let b = collate(&self.loss_examples, &mb, pad, device)?;
            let out = t5
                .model()
                .loss(&b.input_ids, &b.attention_mask, &b.labels, false)?;
            sum += out.sum.f_double_value(&[])?;
            tokens += out.tokens;
        }
        // `read` refused a dev set without targets, so `tokens` is positive.
        Ok(sum / tokens.max(1) as f64)
    }
}
