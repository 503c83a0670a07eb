//! `cbqa.write_eval`: predictions.csv and the metrics.csv row of answers made anywhere (one
//! process, a pool of Ray actors), written as `cbqa eval` writes them.
//!
//! Every column and the predictions table are the library's own (`cbqa::eval::report`:
//! `dataset_columns`, `metric_columns`, `EvalRun::columns`), as `cbqa eval` writes them. The
//! Python tests compare both files with `cbqa eval`'s.

use crate::answerer::Answer;
use crate::scoring::{parse_normalizer, read_options};
use cbqa::data::{Dataset, QaExample};
use cbqa::eval::report::{
    append_row, batch_policy, dataset_columns, metric_columns, recall_ks, utc_timestamp,
    write_predictions, EvalRun, PredictionRow,
};
use cbqa::eval::{score_examples_with, Normalizer, Prediction, ScoreOptions};
use cbqa::AnswererOptions;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::{Path, PathBuf};

/// Write `out/predictions.csv` and append a row to `out/metrics.csv` for `answers` (one per
/// selected question of `data`, in order), exactly as `cbqa eval` with the same settings does;
/// returns the row as (column, value) pairs. The data selection (`limit`, `format`, fields,
/// `normalizer`: `None` follows the benchmark) and the settings are those of the run.
#[pyfunction]
#[pyo3(signature = (out, data, answers, *, model, backend="ort", device="cpu", threads=0,
    beams=None, batch_size=None, batch_tokens=None, limit=None, normalizer=None, split=None,
    format=None, question_field=None, answer_field=None, skip_bad=false, wall_s=0.0,
    peak_rss_mb=None))]
#[allow(clippy::too_many_arguments)]
pub fn write_eval(
    py: Python<'_>,
    out: PathBuf,
    data: PathBuf,
    answers: Vec<Bound<'_, Answer>>,
    model: PathBuf,
    backend: &str,
    device: &str,
    threads: usize,
    beams: Option<usize>,
    batch_size: Option<usize>,
    batch_tokens: Option<usize>,
    limit: Option<usize>,
    normalizer: Option<&str>,
    split: Option<String>,
    format: Option<&str>,
    question_field: Option<String>,
    answer_field: Option<String>,
    skip_bad: bool,
    wall_s: f64,
    peak_rss_mb: Option<f64>,
) -> PyResult<Vec<(String, String)>> {
    let opts = read_options(format, question_field, answer_field, skip_bad)?;
    let ds = Dataset::read(&data, &opts).map_err(|e| crate::errors::to_py(e.into()))?;
    let mut examples = ds.examples.clone();
    if let Some(n) = limit {
        examples.truncate(n);
    }
    let answers: Vec<Answer> = answers.iter().map(|a| a.get().clone()).collect();
    if answers.len() != examples.len() {
        return Err(PyValueError::new_err(format!(
            "answers: {} for the {} selected questions of {}",
            answers.len(),
            examples.len(),
            data.display()
        )));
    }
    let normalizer = match normalizer {
        Some(n) => parse_normalizer(n)?,
        None => Normalizer::for_benchmark(ds.benchmark),
    };
    let defaults = AnswererOptions::default();
    let beams = beams.unwrap_or(defaults.generate.num_beams);
    let errors = answers.iter().filter(|a| a.error.is_some()).count();
    let truncated = answers
        .iter()
        .filter(|a| a.error.is_none() && a.truncated)
        .count();
    let run = EvalRun {
        precision: cbqa::runtime::precision_of(&model),
        model,
        backend: backend.to_string(),
        device: device.to_string(),
        batch_policy: batch_policy(
            beams,
            batch_size.unwrap_or(defaults.batch.max_batch_size),
            batch_tokens.unwrap_or(defaults.batch.max_batch_tokens),
        ),
        threads,
        errors,
        // answered in one go: nothing resumed from a journal
        questions: examples.len(),
        resumed: 0,
        wall_s,
        peak_rss_mb,
        truncated,
    };
    py.detach(|| {
        write_files(
            &out,
            &ds.path,
            split.as_deref(),
            &examples,
            &answers,
            normalizer,
            beams,
            &run,
        )
    })
    .map_err(crate::errors::to_py)
}

/// Score, write predictions.csv, append the metrics row; the row.
#[allow(clippy::too_many_arguments)]
fn write_files(
    out: &Path,
    dataset: &Path,
    split: Option<&str>,
    examples: &[QaExample],
    answers: &[Answer],
    normalizer: Normalizer,
    beams: usize,
    run: &EvalRun,
) -> cbqa::Result<Vec<(String, String)>> {
    std::fs::create_dir_all(out).map_err(|source| cbqa::Error::Io {
        action: "create",
        path: out.to_path_buf(),
        source,
    })?;
    let preds = predictions(examples, answers);
    let mut sopts = ScoreOptions::new(normalizer);
    sopts.recall_ks = recall_ks(beams);
    let scores = score_examples_with(&preds, examples, &sopts)?;
    let rows: Vec<PredictionRow<'_>> = examples
        .iter()
        .zip(&preds)
        .zip(answers)
        .map(|((e, p), a)| PredictionRow {
            example: e,
            prediction: &p.text,
            candidates: &p.candidates,
            score: a.error.is_none().then_some(a.score),
            truncated: a.error.is_none() && a.truncated,
            error: a.error.clone(),
        })
        .collect();
    write_predictions(&out.join("predictions.csv"), &rows, &scores)?;
    let mut row = dataset_columns(dataset, split, None);
    row.extend(metric_columns(&scores, examples.len()));
    row.extend(run.columns());
    // as `cbqa eval`'s journal id: one per run (the table's last column)
    let run_id = cbqa::eval::journal::fingerprint(&[
        dataset.display().to_string().as_bytes(),
        utc_timestamp().as_bytes(),
        std::process::id().to_string().as_bytes(),
    ]);
    row.push(("run_id".into(), run_id));
    append_row(&out.join("metrics.csv"), &row)?;
    Ok(row)
}

/// The prediction scored for each question: its answer, or an empty one where it failed.
fn predictions(examples: &[QaExample], answers: &[Answer]) -> Vec<Prediction> {
    examples
        .iter()
        .zip(answers)
        .map(|(e, a)| Prediction {
            id: Some(e.id.clone()),
            text: if a.error.is_none() {
                a.text.clone()
            } else {
                String::new()
            },
            candidates: if a.error.is_none() {
                a.candidates.iter().map(|c| c.text.clone()).collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}
