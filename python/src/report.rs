//! `cbqa.write_eval`: predictions.csv and the metrics.csv row of answers made anywhere (one
//! process, a pool of Ray actors), written as `cbqa eval` writes them.
//!
//! The columns follow `src/app/eval.rs` (`dataset_columns`, `run_columns`); the metric columns
//! and the predictions table are the library's own (`cbqa::eval::report`). The Python tests
//! compare both files with `cbqa eval`'s.

use crate::answerer::Answer;
use crate::scoring::{parse_normalizer, read_options};
use cbqa::data::{Dataset, QaExample};
use cbqa::eval::report::{
    append_row, metric_columns, recall_ks, utc_timestamp, write_predictions, PredictionRow,
};
use cbqa::eval::{score_examples_with, Normalizer, Prediction, ScoreOptions, Scores};
use cbqa::AnswererOptions;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::{Path, PathBuf};

/// How the answers were made, for the run columns of metrics.csv.
struct RunFacts {
    model: PathBuf,
    backend: String,
    device: String,
    threads: usize,
    policy: String,
    wall_s: f64,
    peak_rss_mb: Option<f64>,
}

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
    let run = RunFacts {
        model,
        backend: backend.to_string(),
        device: device.to_string(),
        threads,
        policy: format!(
            "beams={beams} batch_size={} batch_tokens={} sorted",
            batch_size.unwrap_or(defaults.batch.max_batch_size),
            batch_tokens.unwrap_or(defaults.batch.max_batch_tokens)
        ),
        wall_s,
        peak_rss_mb,
    };
    let split = split.unwrap_or_else(|| split_name(&ds.path));
    py.detach(|| {
        write_files(
            &out, &ds.path, &split, &examples, &answers, normalizer, beams, &run,
        )
    })
    .map_err(crate::errors::to_py)
}

/// Score, write predictions.csv, append the metrics row; the row.
#[allow(clippy::too_many_arguments)]
fn write_files(
    out: &Path,
    dataset: &Path,
    split: &str,
    examples: &[QaExample],
    answers: &[Answer],
    normalizer: Normalizer,
    beams: usize,
    run: &RunFacts,
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
    let mut row = vec![
        ("dataset".to_string(), dataset.display().to_string()),
        ("split".into(), split.to_string()),
        ("shard".into(), String::new()),
    ];
    row.extend(metric_columns(&scores, examples.len()));
    row.extend(run_columns(run, answers, &scores));
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

/// The last columns of the metrics.csv row: how the answers were made and how fast.
fn run_columns(run: &RunFacts, answers: &[Answer], scores: &Scores) -> Vec<(String, String)> {
    let n = scores.rows.len();
    let errors = answers.iter().filter(|a| a.error.is_some()).count();
    let truncated = answers
        .iter()
        .filter(|a| a.error.is_none() && a.truncated)
        .count();
    vec![
        ("errors".to_string(), errors.to_string()),
        ("model".into(), run.model.display().to_string()),
        ("backend".into(), run.backend.clone()),
        ("device".into(), run.device.clone()),
        ("precision".into(), cbqa::runtime::precision_of(&run.model)),
        ("batch_policy".into(), run.policy.clone()),
        (
            "threads".into(),
            if run.threads == 0 {
                "auto".into()
            } else {
                run.threads.to_string()
            },
        ),
        (
            "questions_per_s".into(),
            format!("{:.3}", n as f64 / run.wall_s.max(1e-9)),
        ),
        ("wall_s".into(), format!("{:.3}", run.wall_s)),
        // answered in one go: nothing resumed from a journal
        ("resumed_questions".into(), "0".into()),
        (
            "peak_rss_mb".into(),
            run.peak_rss_mb
                .map(|m| format!("{m:.1}"))
                .unwrap_or_default(),
        ),
        ("truncated".into(), truncated.to_string()),
        ("cbqa_version".into(), cbqa::VERSION.into()),
        ("git_commit".into(), cbqa::GIT_COMMIT.into()),
        ("timestamp".into(), utc_timestamp()),
    ]
}

/// The split name metrics.csv gets by default: the data file's name.
fn split_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
