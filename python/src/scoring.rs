//! `cbqa.score`, `cbqa.normalize_answer` and `cbqa.read_dataset`: the official metrics and the
//! benchmark readers of the library, for any system's predictions.

use crate::errors::to_py;
use cbqa::data::{DataFormat, Dataset, QaExample, ReadOptions};
use cbqa::eval::report::recall_ks;
use cbqa::eval::{score_examples_with, Normalizer, Prediction, ScoreOptions};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// One benchmark record: its id (the file's, else its 0-based index), question and reference
/// answers, as `cbqa eval` reads them.
#[pyclass(module = "cbqa", frozen, get_all)]
#[derive(Clone)]
pub struct Example {
    pub id: String,
    pub question: String,
    pub answers: Vec<String>,
}

#[pymethods]
impl Example {
    fn __repr__(&self) -> String {
        format!(
            "Example(id={:?}, question={:?}, answers={:?})",
            self.id, self.question, self.answers
        )
    }
}

/// The normaliser a `normalizer=` string names.
pub fn parse_normalizer(name: &str) -> PyResult<Normalizer> {
    Normalizer::ALL
        .into_iter()
        .find(|n| n.name() == name)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "normalizer={name:?}: expected \"squad\" or \"trivia_qa\""
            ))
        })
}

/// `text` normalised as the official metrics do before comparing (`squad`: lower case, no
/// punctuation, no articles, single spaces; `trivia_qa`: punctuation becomes spaces).
#[pyfunction]
#[pyo3(signature = (text, normalizer="squad"))]
pub fn normalize_answer(text: &str, normalizer: &str) -> PyResult<String> {
    Ok(parse_normalizer(normalizer)?.normalize(text))
}

/// Score `predictions[i]` against the reference answers `references[i]` with the official
/// metrics (T5's `qa_utils`: EM and F1 ×100 as metrics.csv has them; DPR's `has_answer`;
/// EfficientQA's EM; recall@k over `candidates[i]` when given). Returns a dict with `n`,
/// `normalizer`, `em`, `f1`, `recall@k`…, `has_answer`, `efficientqa_em`.
#[pyfunction]
#[pyo3(signature = (predictions, references, normalizer="squad", candidates=None))]
pub fn score<'py>(
    py: Python<'py>,
    predictions: Vec<String>,
    references: Vec<Vec<String>>,
    normalizer: &str,
    candidates: Option<Vec<Vec<String>>>,
) -> PyResult<Bound<'py, PyDict>> {
    let normalizer = parse_normalizer(normalizer)?;
    let candidates = candidates.unwrap_or_else(|| vec![Vec::new(); predictions.len()]);
    if candidates.len() != predictions.len() {
        return Err(PyValueError::new_err(format!(
            "candidates: {} lists for {} predictions",
            candidates.len(),
            predictions.len()
        )));
    }
    let beams = candidates.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let preds: Vec<Prediction> = predictions
        .into_iter()
        .zip(candidates)
        .map(|(text, candidates)| Prediction {
            id: None,
            text,
            candidates,
        })
        .collect();
    let refs: Vec<QaExample> = references
        .into_iter()
        .enumerate()
        .map(|(i, answers)| QaExample {
            id: i.to_string(),
            question: String::new(),
            answers,
        })
        .collect();
    let mut opts = ScoreOptions::new(normalizer);
    opts.recall_ks = recall_ks(beams);
    let scores = py
        .detach(|| score_examples_with(&preds, &refs, &opts))
        .map_err(|e| to_py(e.into()))?;
    let a = &scores.aggregate;
    let out = PyDict::new(py);
    out.set_item("n", a.count)?;
    out.set_item("normalizer", normalizer.name())?;
    out.set_item("em", a.em)?;
    out.set_item("f1", a.f1)?;
    for (k, v) in &a.recall_at_k {
        out.set_item(format!("recall@{k}"), v)?;
    }
    out.set_item("has_answer", a.has_answer)?;
    out.set_item("efficientqa_em", a.efficientqa_em)?;
    Ok(out)
}

/// The read options of `cbqa eval`'s data flags.
pub fn read_options(
    format: Option<&str>,
    question_field: Option<String>,
    answer_field: Option<String>,
    skip_bad: bool,
) -> PyResult<ReadOptions> {
    let format = match format {
        Some(f) => Some(f.parse::<DataFormat>().map_err(|e| to_py(e.into()))?),
        None => None,
    };
    Ok(ReadOptions {
        format,
        question_field,
        answer_field,
        skip_bad,
        ..ReadOptions::default()
    })
}

/// The records of a benchmark file (NQ-open JSON lines, DPR TSV, WebQuestions JSON, CSV/TSV),
/// as the command line reads them; `format` overrides the detection (`jsonl`, `json-array`, `dpr-tsv`,
/// `csv`, `tsv`). A malformed record raises `CbqaError` naming `file:line`, unless `skip_bad`.
#[pyfunction]
#[pyo3(signature = (path, *, format=None, question_field=None, answer_field=None, skip_bad=false))]
pub fn read_dataset(
    py: Python<'_>,
    path: PathBuf,
    format: Option<&str>,
    question_field: Option<String>,
    answer_field: Option<String>,
    skip_bad: bool,
) -> PyResult<Vec<Example>> {
    let opts = read_options(format, question_field, answer_field, skip_bad)?;
    let ds = py
        .detach(|| Dataset::read(&path, &opts))
        .map_err(|e| to_py(e.into()))?;
    Ok(ds
        .examples
        .into_iter()
        .map(|e| Example {
            id: e.id,
            question: e.question,
            answers: e.answers,
        })
        .collect())
}
