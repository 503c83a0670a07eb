//! `cbqa eval`: answer the questions of a benchmark file with an exported model, score them,
//! write predictions.csv and a metrics.csv row. The scoring columns are shared with `cbqa score`.

use super::options::answerer_options;
use crate::cli::EvalArgs;
use anyhow::{Context, Result};
use cbqa::data::QaExample;
use cbqa::eval::report::{
    append_row, metric_columns, peak_rss_mb, recall_ks, utc_timestamp, write_predictions,
    PredictionRow,
};
use cbqa::eval::{score_examples_with, Prediction, ScoreOptions, Scores};
use cbqa::progress::Progress;
use cbqa::{Answer, Answerer};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// Answer the selected questions, score them, write predictions.csv and a metrics.csv row.
pub fn run(args: EvalArgs) -> Result<()> {
    let (ds, examples, normalizer) = super::load_data(&args.data)?;
    let opts = answerer_options(&args.runtime)?;
    let policy = format!(
        "beams={} batch_size={} batch_tokens={} sorted",
        opts.generate.num_beams, opts.batch.max_batch_size, opts.batch.max_batch_tokens
    );
    let beams = opts.generate.num_beams;
    let answerer = Answerer::load(&args.model, opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let (answers, wall) = answer_all(&answerer, &examples);
    let preds = predictions(&examples, &answers);
    let errors = answers.iter().filter(|a| a.is_err()).count();
    let mut sopts = ScoreOptions::new(normalizer);
    sopts.recall_ks = recall_ks(beams);
    let scores = score_examples_with(&preds, &examples, &sopts)?;
    let rows = prediction_rows(&examples, &preds, &answers);
    write_predictions(&args.out.join("predictions.csv"), &rows, &scores)?;
    let mut row = dataset_columns(&args, &ds.path);
    row.extend(metric_columns(&scores, examples.len()));
    print_summary(&scores);
    row.extend(overlap_columns(
        args.overlap_with.as_deref(),
        &examples,
        &scores,
    )?);
    let run = RunFacts {
        answerer: &answerer,
        policy,
        errors,
        questions: examples.len(),
        wall,
    };
    row.extend(run_columns(&args, &run));
    append_row(&args.out.join("metrics.csv"), &row)?;
    println!(
        "{:.1} questions/s over {:.1}s with {}; wrote {}/predictions.csv and metrics.csv",
        examples.len() as f64 / wall.max(1e-9),
        wall,
        answerer.describe(),
        args.out.display()
    );
    if errors > 0 {
        eprintln!("warning: {errors} question(s) could not be answered (see the error column)");
    }
    Ok(())
}

/// Every answer, in order, with the wall time in seconds; progress goes to stderr.
fn answer_all(answerer: &Answerer, examples: &[QaExample]) -> (Vec<cbqa::Result<Answer>>, f64) {
    let questions: Vec<&str> = examples.iter().map(|e| e.question.as_str()).collect();
    let start = Instant::now();
    let progress = Mutex::new(Progress::new(
        "eval",
        "questions",
        questions.len() as u64,
        0,
    ));
    let answers = answerer.answer_batch_with(&questions, &|done, _| {
        if let Ok(mut p) = progress.lock() {
            p.set(done as u64, "");
        }
    });
    let wall = start.elapsed().as_secs_f64();
    if let Ok(p) = progress.into_inner() {
        p.finish();
    }
    (answers, wall)
}

/// The prediction scored for each question: its answer, or an empty one where it failed.
fn predictions(examples: &[QaExample], answers: &[cbqa::Result<Answer>]) -> Vec<Prediction> {
    examples
        .iter()
        .zip(answers)
        .map(|(e, a)| match a {
            Ok(a) => Prediction {
                id: Some(e.id.clone()),
                text: a.text.clone(),
                candidates: a.candidates.iter().map(|c| c.text.clone()).collect(),
            },
            Err(_) => Prediction {
                id: Some(e.id.clone()),
                text: String::new(),
                candidates: Vec::new(),
            },
        })
        .collect()
}

/// The rows of predictions.csv: prediction, candidates, score, truncation, error.
fn prediction_rows<'a>(
    examples: &'a [QaExample],
    preds: &'a [Prediction],
    answers: &[cbqa::Result<Answer>],
) -> Vec<PredictionRow<'a>> {
    examples
        .iter()
        .zip(preds)
        .zip(answers)
        .map(|((e, p), a)| PredictionRow {
            example: e,
            prediction: &p.text,
            candidates: &p.candidates,
            score: a.as_ref().ok().map(|a| a.score),
            truncated: a.as_ref().map(|a| a.truncated).unwrap_or(false),
            error: a.as_ref().err().map(|e| super::error_chain(e)),
        })
        .collect()
}

/// The first columns of the metrics.csv row: which data.
fn dataset_columns(args: &EvalArgs, dataset: &Path) -> Vec<(String, String)> {
    vec![
        ("dataset".to_string(), dataset.display().to_string()),
        (
            "split".into(),
            args.split.clone().unwrap_or_else(|| split_name(dataset)),
        ),
        ("shard".into(), args.data.shard.clone().unwrap_or_default()),
    ]
}

/// What a run measured, for its metrics.csv columns.
struct RunFacts<'a> {
    answerer: &'a Answerer,
    /// The batch policy in words.
    policy: String,
    /// Questions that could not be answered.
    errors: usize,
    questions: usize,
    /// Wall time of the answering, in seconds.
    wall: f64,
}

/// The last columns of the metrics.csv row: how the answers were made and how fast.
fn run_columns(args: &EvalArgs, run: &RunFacts<'_>) -> Vec<(String, String)> {
    let threads = args.runtime.threads;
    vec![
        ("errors".to_string(), run.errors.to_string()),
        ("model".into(), args.model.display().to_string()),
        (
            "backend".into(),
            format!("{:?}", args.runtime.backend).to_lowercase(),
        ),
        ("device".into(), args.runtime.device.clone()),
        ("precision".into(), cbqa::runtime::precision_of(&args.model)),
        ("batch_policy".into(), run.policy.clone()),
        (
            "threads".into(),
            if threads == 0 {
                "auto".into()
            } else {
                threads.to_string()
            },
        ),
        (
            "questions_per_s".into(),
            format!("{:.3}", run.questions as f64 / run.wall.max(1e-9)),
        ),
        ("wall_s".into(), format!("{:.3}", run.wall)),
        (
            "peak_rss_mb".into(),
            peak_rss_mb().map(|m| format!("{m:.1}")).unwrap_or_default(),
        ),
        ("truncated".into(), run.answerer.truncations().to_string()),
        ("cbqa_version".into(), env!("CARGO_PKG_VERSION").into()),
        ("git_commit".into(), env!("CBQA_GIT_COMMIT").into()),
        ("timestamp".into(), utc_timestamp()),
    ]
}

/// The split name metrics.csv gets by default: the data file's name.
pub(super) fn split_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Overlap subsets: columns for metrics.csv, printed too.
pub(super) fn overlap_columns(
    train: Option<&Path>,
    examples: &[QaExample],
    scores: &Scores,
) -> Result<Vec<(String, String)>> {
    use cbqa::eval::overlap::{classify, subset_metrics};
    let Some(train) = train else {
        return Ok(Vec::new());
    };
    let ds = cbqa::data::Dataset::read(train, &cbqa::data::ReadOptions::default())?;
    let classes = classify(examples, &ds.examples, scores.normalizer);
    let mut cols = vec![("overlap_train".to_string(), train.display().to_string())];
    for (c, n, em, f1) in subset_metrics(&scores.rows, &classes) {
        println!("  {:<20} n {n:<6} EM {em:.2}  F1 {f1:.2}", c.name());
        cols.push((format!("n_{}", c.name()), n.to_string()));
        cols.push((
            format!("em_{}", c.name()),
            if n == 0 {
                String::new()
            } else {
                format!("{em}")
            },
        ));
        cols.push((
            format!("f1_{}", c.name()),
            if n == 0 {
                String::new()
            } else {
                format!("{f1}")
            },
        ));
    }
    Ok(cols)
}

/// The one-line summary of the scores.
pub(super) fn print_summary(scores: &Scores) {
    let a = &scores.aggregate;
    let recall: Vec<String> = a
        .recall_at_k
        .iter()
        .map(|(k, v)| format!("recall@{k} {v:.2}"))
        .collect();
    println!(
        "n {}  EM {:.2}  F1 {:.2}  {}  has_answer {:.2}  ({} normalisation)",
        a.count,
        a.em,
        a.f1,
        recall.join("  "),
        a.has_answer,
        scores.normalizer.name()
    );
}
