//! Closed-book QA metrics, identical to the official Python to the last digit.
//!
//! * [`Normalizer`]: SQuAD and TriviaQA answer normalisation as in T5's
//!   [`qa_utils.py`](https://github.com/google-research/text-to-text-transfer-transformer/blob/main/t5/evaluation/qa_utils.py);
//!   [`normalize_efficientqa`] for ORQA/EfficientQA's NFD variant.
//! * [`exact_match`], [`f1_score`], [`metric_max_over_ground_truths`], [`qa_metrics`]: the
//!   functions of `qa_utils.py` of the same names, on normalised text; [`numpy_mean`] is
//!   `np.mean`'s pairwise summation, so corpus means agree in every bit.
//! * [`has_answer`]: DPR's token-containment check.
//! * [`score_examples`]: all of the above for a prediction set, with per-example rows and
//!   aggregates (the CLI writes them as CSV).
//!
//! `scripts/official_metrics.py` is an independent Python transcription of the same code; an
//! integration test compares both on every NQ-open dev and TriviaQA test question.
//!
//! Known residual difference: Unicode *versions*. CPython 3.11 uses Unicode 14 for
//! `str.lower`/`isalnum`/`unicodedata`, while the `regex` crate (categories, Unicode 16),
//! Rust's `to_lowercase` and `unicode-normalization` (Unicode 18) use newer tables; characters
//! assigned after Unicode 14 can therefore differ. None showed up in the oracle comparison over
//! NQ-open dev and TriviaQA test.

mod dpr;
pub mod journal;
mod metrics;
mod normalize;
pub mod overlap;
pub mod predictions;
pub mod report;
mod score;

pub use crate::data::is_py_space;
pub use crate::error::EvalError;
pub use dpr::{dpr_tokens, has_answer};
pub use metrics::{
    exact_match, f1_score, metric_max_over_ground_truths, numpy_mean, pairwise_sum, qa_metrics,
    QaMetrics,
};
pub use normalize::{
    is_ascii_punct, is_py_word, normalize_efficientqa, normalize_efficientqa_into,
    remove_articles_fix_whitespace, NormBuffers, Normalizer,
};
pub use score::{
    efficientqa_exact_match, recall_at_k, score_examples, score_examples_with, Aggregate,
    ExampleScore, Prediction, ScoreOptions, Scores,
};

#[cfg(test)]
mod tests;
