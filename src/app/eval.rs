//! `cbqa eval`: answer the questions of a benchmark file with an exported model, score them,
//! write predictions.csv and a metrics.csv row. The scoring columns are shared with `cbqa score`.
//!
//! Answers go to the journal `OUT/predictions.partial.<key>.jsonl` (the key: a fingerprint of
//! what decides the answers) as they are made, chunk by chunk, in input order, synced; so a
//! killed eval loses at most one chunk: the same command run again continues after the last whole
//! chunk (`--restart` discards the journal instead), and ends with the predictions.csv an
//! uninterrupted run writes and one metrics.csv row. Evaluations with other settings into the
//! same `--out` have journals of their own and may run at the same time.

use super::options::{answerer_options, question_prefix};
use crate::cli::EvalArgs;
use anyhow::{Context, Result};
use cbqa::data::QaExample;
use cbqa::eval::journal::{fingerprint, Journal, JournalEntry, JournalHeader, CHUNK_BATCHES};
use cbqa::eval::report::{
    append_row_once, batch_policy, dataset_columns, metric_columns, peak_rss_mb, recall_ks,
    write_predictions, EvalRun, PredictionRow,
};
use cbqa::eval::{score_examples_with, Prediction, ScoreOptions, Scores};
use cbqa::progress::Progress;
use cbqa::{Answer, Answerer};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// The journal of an unfinished evaluation in `--out` is `<JOURNAL_PREFIX><key>.jsonl`.
pub const JOURNAL_PREFIX: &str = "predictions.partial.";

/// Answer the selected questions (continuing an unfinished run in `--out`), score them, write
/// predictions.csv and a metrics.csv row.
pub fn run(args: EvalArgs) -> Result<()> {
    let (ds, examples, normalizer) = super::load_data(&args.data)?;
    let mut opts = answerer_options(&args.runtime)?;
    opts.prefix = question_prefix(&args.runtime, &args.model, Some(ds.benchmark))?;
    let policy = batch_policy(
        opts.generate.num_beams,
        opts.batch.max_batch_size,
        opts.batch.max_batch_tokens,
    );
    let beams = opts.generate.num_beams;
    let chunk = opts.batch.max_batch_size.max(1) * CHUNK_BATCHES;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Before the model loads: a run of the same evaluation going on now is refused at once.
    let (mut journal, done) = open_journal(&args, &examples, chunk)?;
    let answerer = Answerer::load(&args.model, opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let resumed = done.len();
    let (entries, wall) = answer_rest(&answerer, &examples, done, &mut journal)?;
    let preds = predictions(&entries);
    let errors = entries.iter().filter(|a| a.error.is_some()).count();
    let mut sopts = ScoreOptions::new(normalizer);
    sopts.recall_ks = recall_ks(beams);
    let scores = score_examples_with(&preds, &examples, &sopts)?;
    let rows = prediction_rows(&examples, &preds, &entries);
    write_predictions(&args.out.join("predictions.csv"), &rows, &scores)?;
    let mut row = dataset_columns(&ds.path, args.split.as_deref(), args.data.shard.as_deref());
    row.extend(metric_columns(&scores, examples.len()));
    print_summary(&scores);
    row.extend(overlap_columns(
        args.overlap_with.as_deref(),
        &examples,
        &scores,
    )?);
    let run = EvalRun {
        model: args.model.clone(),
        backend: format!("{:?}", args.runtime.backend).to_lowercase(),
        device: args.runtime.device.clone(),
        precision: cbqa::runtime::precision_of(&args.model),
        batch_policy: policy,
        threads: args.runtime.threads,
        errors,
        questions: examples.len() - resumed,
        resumed,
        wall_s: wall,
        peak_rss_mb: peak_rss_mb(),
        truncated: answerer.truncations(),
    };
    row.extend(run.columns());
    let run_id = journal.header().run_id.clone();
    row.push(("run_id".into(), run_id.clone()));
    let metrics = args.out.join("metrics.csv");
    append_row_once(&metrics, &row, Some(("run_id", &run_id)))?;
    journal.remove()?;
    println!(
        "{:.1} questions/s over {:.1}s with {}; wrote {}/predictions.csv and metrics.csv",
        run.questions as f64 / wall.max(1e-9),
        wall,
        answerer.describe(),
        args.out.display()
    );
    if errors > 0 {
        eprintln!("warning: {errors} question(s) could not be answered (see the error column)");
    }
    Ok(())
}

/// The journal in `--out`: the unfinished run's when it has these settings (an error when it
/// has others), else a new one; `--restart` discards an old one first. Also the entries it
/// already holds.
fn open_journal(
    args: &EvalArgs,
    examples: &[QaExample],
    chunk: usize,
) -> Result<(Journal, Vec<JournalEntry>)> {
    let settings = answer_settings(args, examples);
    let key = {
        let mut parts: Vec<&[u8]> = Vec::new();
        for (k, v) in &settings {
            parts.extend([k.as_bytes(), v.as_bytes()]);
        }
        let chunk = chunk.to_string();
        parts.push(chunk.as_bytes());
        fingerprint(&parts)
    };
    let path = args.out.join(format!("{JOURNAL_PREFIX}{key}.jsonl"));
    if args.restart && path.exists() {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let header = JournalHeader::new(examples.len(), chunk, settings);
    let (journal, done, resumed) = Journal::open(&path, header)?;
    if resumed && !done.is_empty() {
        eprintln!(
            "resuming the unfinished evaluation in {}: {} of {} questions already answered",
            args.out.display(),
            done.len(),
            examples.len()
        );
    }
    Ok((journal, done))
}

/// What decides the answers, as `(flag, value)`: a journal is only continued with the same.
fn answer_settings(args: &EvalArgs, examples: &[QaExample]) -> Vec<(String, String)> {
    let r = &args.runtime;
    let mut selected = Vec::new();
    for e in examples {
        selected.push(e.id.as_bytes().to_vec());
        selected.push(e.question.as_bytes().to_vec());
        selected.push(e.answers.join("\u{1f}").into_bytes());
    }
    let parts: Vec<&[u8]> = selected.iter().map(Vec::as_slice).collect();
    [
        ("--model", args.model.display().to_string()),
        ("--data", args.data.data.display().to_string()),
        ("questions (ids, texts, answers)", fingerprint(&parts)),
        ("--backend", format!("{:?}", r.backend).to_lowercase()),
        ("--device", r.device.clone()),
        ("--compute", format!("{:?}", r.compute).to_lowercase()),
        ("--opt-level", r.opt_level.to_string()),
        ("--beams", r.beams.to_string()),
        ("--candidates", format!("{:?}", r.candidates)),
        ("--max-new-tokens", r.max_new_tokens.to_string()),
        ("--length-penalty", r.length_penalty.to_string()),
        ("--batch-size", r.batch_size.to_string()),
        ("--batch-tokens", r.batch_tokens.to_string()),
        ("--prefix", format!("{:?}", r.prefix)),
        ("--max-input-tokens", r.max_input_tokens.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Every question's entry, in order: `done` (the journal's), then the rest answered chunk by
/// chunk, each chunk appended to the journal. Also the wall time of this run's answering in
/// seconds; progress goes to stderr.
fn answer_rest(
    answerer: &Answerer,
    examples: &[QaExample],
    done: Vec<JournalEntry>,
    journal: &mut Journal,
) -> Result<(Vec<JournalEntry>, f64)> {
    let mut entries = done;
    let resumed = entries.len();
    let chunk = journal.header().chunk;
    let start = Instant::now();
    let total = examples.len() as u64;
    let progress = Mutex::new(Progress::new("eval", "questions", total, resumed as u64));
    while entries.len() < examples.len() {
        let from = entries.len();
        let part = &examples[from..(from + chunk).min(examples.len())];
        let questions: Vec<&str> = part.iter().map(|e| e.question.as_str()).collect();
        let answers = answerer.answer_batch_with(&questions, &|done, _| {
            if let Ok(mut p) = progress.lock() {
                p.set((from + done) as u64, "");
            }
        });
        let new: Vec<JournalEntry> = part
            .iter()
            .zip(answers)
            .enumerate()
            .map(|(k, (e, a))| entry(from + k, e, a))
            .collect();
        journal.append(&new)?;
        entries.extend(new);
    }
    let wall = start.elapsed().as_secs_f64();
    if let Ok(p) = progress.into_inner() {
        p.finish();
    }
    Ok((entries, wall))
}

/// The journal entry of question `index`: its answer, or the error that stopped it.
fn entry(index: usize, e: &QaExample, a: cbqa::Result<Answer>) -> JournalEntry {
    match a {
        Ok(a) => JournalEntry {
            index,
            id: e.id.clone(),
            prediction: a.text,
            candidates: a.candidates.into_iter().map(|c| c.text).collect(),
            score: Some(a.score.to_string()),
            truncated: a.truncated,
            error: None,
        },
        Err(err) => JournalEntry {
            index,
            id: e.id.clone(),
            prediction: String::new(),
            candidates: Vec::new(),
            score: None,
            truncated: false,
            error: Some(super::error_chain(&err)),
        },
    }
}

/// The prediction scored for each question (empty where it failed).
fn predictions(entries: &[JournalEntry]) -> Vec<Prediction> {
    entries
        .iter()
        .map(|e| Prediction {
            id: Some(e.id.clone()),
            text: e.prediction.clone(),
            candidates: e.candidates.clone(),
        })
        .collect()
}

/// The rows of predictions.csv: prediction, candidates, score, truncation, error.
fn prediction_rows<'a>(
    examples: &'a [QaExample],
    preds: &'a [Prediction],
    entries: &[JournalEntry],
) -> Vec<PredictionRow<'a>> {
    examples
        .iter()
        .zip(preds)
        .zip(entries)
        .map(|((e, p), j)| PredictionRow {
            example: e,
            prediction: &p.text,
            candidates: &p.candidates,
            score: j.score.as_deref().and_then(|s| s.parse().ok()),
            truncated: j.truncated,
            error: j.error.clone(),
        })
        .collect()
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
