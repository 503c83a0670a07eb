//! Scoring a set of predictions against references: per-example rows and corpus aggregates.
//!
//! EM and F1 are T5-CBQA's numbers (`t5.evaluation.metrics.squad` / `.trivia_qa`: normalise
//! every target and prediction, then `qa_utils.qa_metrics`). Alongside them each row carries
//! DPR's `has_answer` (is some reference contained in the prediction), EfficientQA's NFD exact
//! match, and recall@k over beam candidates (does one of the top k candidates exactly match
//! some reference under the chosen normaliser).

use serde::{Deserialize, Serialize};

use super::dpr::{contains_run, dpr_tokens_into};
use super::metrics::{f1_sorted, numpy_mean};
use super::normalize::{normalize_efficientqa_into, NormBuffers, Normalizer};
use super::EvalError;
use crate::data::QaExample;

/// A model's output for one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Prediction {
    /// When set, must equal the reference's id at the same position (catches misaligned files).
    pub id: Option<String>,
    /// The answer that is scored (normally the best beam).
    pub text: String,
    /// Beam candidates, best first, for recall@k; empty means just `[text]`.
    #[serde(default)]
    pub candidates: Vec<String>,
}

impl Prediction {
    pub fn new(text: impl Into<String>) -> Self {
        Prediction {
            text: text.into(),
            ..Prediction::default()
        }
    }
}

/// What to compute; [`ScoreOptions::new`] gives recall@{1,5,10}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreOptions {
    pub normalizer: Normalizer,
    /// The k of recall@k, each ≥ 1; k beyond the number of candidates uses all of them.
    pub recall_ks: Vec<usize>,
}

impl ScoreOptions {
    pub fn new(normalizer: Normalizer) -> Self {
        ScoreOptions {
            normalizer,
            recall_ks: vec![1, 5, 10],
        }
    }
}

/// One scored example.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExampleScore {
    pub id: String,
    /// The prediction after normalisation (what EM compared).
    pub normalized_prediction: String,
    /// Exact match with some reference, after normalisation.
    pub em: bool,
    /// Max token F1 over references, in [0, 1].
    pub f1: f64,
    /// DPR `has_answer`: some reference's tokens occur contiguously in the prediction.
    pub has_answer: bool,
    /// ORQA/EfficientQA exact match (NFD, then SQuAD normalisation).
    pub efficientqa_em: bool,
    /// For each k of [`Scores::recall_ks`]: one of the top k candidates matches exactly.
    pub recall_hits: Vec<bool>,
}

/// Corpus means ×100 (NumPy `mean` semantics, as `qa_metrics`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregate {
    pub count: usize,
    pub em: f64,
    pub f1: f64,
    pub has_answer: f64,
    pub efficientqa_em: f64,
    /// `(k, recall@k ×100)` in the order of [`Scores::recall_ks`].
    pub recall_at_k: Vec<(usize, f64)>,
}

/// Rows and aggregates of one scoring run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    #[serde(serialize_with = "ser_normalizer")]
    pub normalizer: Normalizer,
    pub recall_ks: Vec<usize>,
    pub rows: Vec<ExampleScore>,
    pub aggregate: Aggregate,
}

fn ser_normalizer<S: serde::Serializer>(n: &Normalizer, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.name())
}

/// Scores `preds[i]` against `refs[i]` with recall@{1,5,10}; see [`score_examples_with`].
pub fn score_examples(
    preds: &[Prediction],
    refs: &[QaExample],
    normalizer: Normalizer,
) -> Result<Scores, EvalError> {
    score_examples_with(preds, refs, &ScoreOptions::new(normalizer))
}

/// Scores `preds[i]` against `refs[i]`.
///
/// Errors on different lengths, an id mismatch, an example without references (the official
/// `max()` would raise), an empty corpus, or `k = 0`.
pub fn score_examples_with(
    preds: &[Prediction],
    refs: &[QaExample],
    opts: &ScoreOptions,
) -> Result<Scores, EvalError> {
    if preds.len() != refs.len() {
        return Err(EvalError::LengthMismatch {
            predictions: preds.len(),
            references: refs.len(),
        });
    }
    if refs.is_empty() {
        return Err(EvalError::NoExamples);
    }
    if opts.recall_ks.contains(&0) {
        return Err(EvalError::InvalidK);
    }
    let mut scorer = Scorer::new(opts);
    let rows = preds
        .iter()
        .zip(refs)
        .enumerate()
        .map(|(index, (pred, reference))| scorer.score(index, pred, reference))
        .collect::<Result<Vec<_>, _>>()?;
    let aggregate = aggregate(&rows, &opts.recall_ks);
    Ok(Scores {
        normalizer: opts.normalizer,
        recall_ks: opts.recall_ks.clone(),
        rows,
        aggregate,
    })
}

fn aggregate(rows: &[ExampleScore], ks: &[usize]) -> Aggregate {
    let mean = |f: &dyn Fn(&ExampleScore) -> f64| {
        let values: Vec<f64> = rows.iter().map(f).collect();
        // Mean first, then ×100, as `qa_metrics` does (`em = np.mean(...)`, `em *= 100`).
        numpy_mean(&values) * 100.0
    };
    let as_f64 = |b: bool| if b { 1.0 } else { 0.0 };
    Aggregate {
        count: rows.len(),
        em: mean(&|r| as_f64(r.em)),
        f1: mean(&|r| r.f1),
        has_answer: mean(&|r| as_f64(r.has_answer)),
        efficientqa_em: mean(&|r| as_f64(r.efficientqa_em)),
        recall_at_k: ks
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, mean(&|r| as_f64(r.recall_hits[i]))))
            .collect(),
    }
}

/// recall@k for one question: does one of the first `k` beam candidates exactly match one of
/// the references after `normalizer` (EM as in `qa_utils`, taken over candidates too)?
pub fn recall_at_k<C: AsRef<str>, R: AsRef<str>>(
    candidates: &[C],
    references: &[R],
    k: usize,
    normalizer: Normalizer,
) -> bool {
    let refs: Vec<String> = references
        .iter()
        .map(|r| normalizer.normalize(r.as_ref()))
        .collect();
    candidates
        .iter()
        .take(k)
        .any(|c| refs.contains(&normalizer.normalize(c.as_ref())))
}

/// ORQA/EfficientQA `is_correct(answers, prediction, is_regex=False)`: exact match after
/// [`normalize_efficientqa`](super::normalize_efficientqa) (NFD + SQuAD), max over references.
pub fn efficientqa_exact_match<R: AsRef<str>>(prediction: &str, references: &[R]) -> bool {
    let p = super::normalize_efficientqa(prediction);
    references
        .iter()
        .any(|r| super::normalize_efficientqa(r.as_ref()) == p)
}

/// Per-run scratch buffers, so scoring allocates little per example.
struct Scorer<'o> {
    opts: &'o ScoreOptions,
    buf: NormBuffers,
    norm_refs: Vec<String>,
    eqa_refs: Vec<String>,
    tmp: String,
    pred_tokens: Vec<String>,
    ans_tokens: Vec<String>,
}

impl<'o> Scorer<'o> {
    fn new(opts: &'o ScoreOptions) -> Self {
        Scorer {
            opts,
            buf: NormBuffers::default(),
            norm_refs: Vec::new(),
            eqa_refs: Vec::new(),
            tmp: String::new(),
            pred_tokens: Vec::new(),
            ans_tokens: Vec::new(),
        }
    }

    fn score(
        &mut self,
        index: usize,
        pred: &Prediction,
        reference: &QaExample,
    ) -> Result<ExampleScore, EvalError> {
        if let Some(id) = pred.id.as_ref().filter(|id| **id != reference.id) {
            return Err(EvalError::IdMismatch {
                index,
                prediction: id.clone(),
                reference: reference.id.clone(),
            });
        }
        if reference.answers.is_empty() {
            return Err(EvalError::NoReferences {
                index,
                id: reference.id.clone(),
            });
        }
        let normalizer = self.opts.normalizer;
        fill_normalized(&mut self.norm_refs, &reference.answers, |a, out| {
            normalizer.normalize_into(a, &mut self.buf, out)
        });
        let mut normalized_prediction = String::new();
        normalizer.normalize_into(&pred.text, &mut self.buf, &mut normalized_prediction);

        // EM and F1: max over references (`_metric_max_over_ground_truths`).
        let em = self.norm_refs.contains(&normalized_prediction);
        let mut p_tokens = super::metrics::py_split(&normalized_prediction);
        p_tokens.sort_unstable();
        let mut f1 = 0.0f64;
        for r in &self.norm_refs {
            let mut t_tokens = super::metrics::py_split(r);
            t_tokens.sort_unstable();
            f1 = f1.max(f1_sorted(&t_tokens, &p_tokens));
        }

        // DPR has_answer on the raw strings (it normalises with NFD itself).
        dpr_tokens_into(&pred.text, &mut self.pred_tokens);
        let has_answer = reference.answers.iter().any(|a| {
            dpr_tokens_into(a, &mut self.ans_tokens);
            contains_run(&self.pred_tokens, &self.ans_tokens)
        });

        // EfficientQA: NFD + SQuAD normalisation of both sides.
        fill_normalized(&mut self.eqa_refs, &reference.answers, |a, out| {
            normalize_efficientqa_into(a, &mut self.buf, out)
        });
        normalize_efficientqa_into(&pred.text, &mut self.buf, &mut self.tmp);
        let efficientqa_em = self.eqa_refs.contains(&self.tmp);

        // recall@k: the first candidate that matches decides every k at or beyond it.
        let first_hit = if pred.candidates.is_empty() {
            em.then_some(0)
        } else {
            let max_k = self.opts.recall_ks.iter().copied().max().unwrap_or(0);
            pred.candidates.iter().take(max_k).position(|c| {
                normalizer.normalize_into(c, &mut self.buf, &mut self.tmp);
                self.norm_refs.contains(&self.tmp)
            })
        };
        let recall_hits = self
            .opts
            .recall_ks
            .iter()
            .map(|&k| first_hit.is_some_and(|h| h < k))
            .collect();

        Ok(ExampleScore {
            id: reference.id.clone(),
            normalized_prediction,
            em,
            f1,
            has_answer,
            efficientqa_em,
            recall_hits,
        })
    }
}

/// Normalises `answers` into `slots`, reusing the strings already there.
fn fill_normalized(
    slots: &mut Vec<String>,
    answers: &[String],
    mut normalize: impl FnMut(&str, &mut String),
) {
    slots.truncate(answers.len());
    while slots.len() < answers.len() {
        slots.push(String::new());
    }
    for (slot, a) in slots.iter_mut().zip(answers) {
        normalize(a, slot);
    }
}
