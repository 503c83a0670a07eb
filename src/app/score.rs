//! `cbqa score`: score predictions made by any system against a benchmark file; shards are merged
//! by id.

use super::eval::{overlap_columns, print_summary};
use crate::cli::ScoreArgs;
use anyhow::{bail, Context, Result};
use cbqa::data::{Dataset, QaExample};
use cbqa::eval::journal::fingerprint;
use cbqa::eval::predictions::read_predictions;
use cbqa::eval::report::{
    append_row_once, metric_columns, recall_ks, split_name, utc_timestamp, write_predictions,
    PredictionRow,
};
use cbqa::eval::{score_examples_with, Prediction, ScoreOptions, Scores};
use std::collections::HashMap;
use std::path::Path;

/// Read, align and score the predictions; with `--out`, write predictions.csv and a metrics row.
pub fn run(args: ScoreArgs) -> Result<()> {
    let (ds, examples, normalizer) = super::load_data(&args.data)?;
    let mut all = Vec::new();
    for (file, p) in args.predictions.iter().enumerate() {
        all.extend(read_predictions(p)?.into_iter().map(|pred| (pred, file)));
    }
    // Align by id when every prediction has one (merging shards), else by position.
    let preds = if all.iter().all(|(p, _)| p.id.is_some()) {
        align_by_id(all, &examples, &ds.path, &args.predictions)?
    } else {
        all.into_iter().map(|(p, _)| p).collect()
    };
    let beams = preds
        .iter()
        .map(|p| p.candidates.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut sopts = ScoreOptions::new(normalizer);
    sopts.recall_ks = recall_ks(beams);
    let scores = score_examples_with(&preds, &examples, &sopts).with_context(|| {
        let files: Vec<String> = args
            .predictions
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!("scoring {} against {}", files.join(", "), ds.path.display())
    })?;
    print_summary(&scores);
    let overlap = overlap_columns(args.overlap_with.as_deref(), &examples, &scores)?;
    if let Some(out) = &args.out {
        let scored = Scored {
            dataset: &ds,
            examples: &examples,
            preds: &preds,
            scores: &scores,
        };
        write_outputs(&args, out, &scored, overlap)?;
    }
    Ok(())
}

/// The prediction of every question, by id; every question must have one, once. `all` holds
/// each prediction with the index of its file in `files`.
fn align_by_id(
    all: Vec<(Prediction, usize)>,
    examples: &[QaExample],
    data: &Path,
    files: &[std::path::PathBuf],
) -> Result<Vec<Prediction>> {
    let mut by_id: HashMap<String, (Prediction, usize)> = HashMap::new();
    for (p, file) in all {
        let id = p.id.clone().unwrap_or_default();
        if let Some((_, first)) = by_id.insert(id.clone(), (p, file)) {
            bail!(
                "{}: prediction id {id:?} appears twice (also in {})",
                files[file].display(),
                files[first].display()
            );
        }
    }
    let mut v = Vec::with_capacity(examples.len());
    let mut missing = Vec::new();
    for e in examples {
        match by_id.remove(&e.id) {
            Some((p, _)) => v.push(p),
            None => missing.push(e.id.clone()),
        }
    }
    let names = || {
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !missing.is_empty() {
        bail!(
            "{} question(s) of {} have no prediction in {} (first ids: {:?})",
            missing.len(),
            data.display(),
            names(),
            &missing[..missing.len().min(5)]
        );
    }
    if !by_id.is_empty() {
        eprintln!(
            "warning: {} prediction(s) of {} match no question of the data file",
            by_id.len(),
            names()
        );
    }
    Ok(v)
}

/// Scored predictions and what they were scored against.
struct Scored<'a> {
    dataset: &'a Dataset,
    examples: &'a [QaExample],
    preds: &'a [Prediction],
    scores: &'a Scores,
}

/// predictions.csv and a metrics.csv row in `out`.
fn write_outputs(
    args: &ScoreArgs,
    out: &Path,
    s: &Scored<'_>,
    overlap: Vec<(String, String)>,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let rows: Vec<PredictionRow<'_>> = s
        .examples
        .iter()
        .zip(s.preds)
        .map(|(e, p)| PredictionRow {
            example: e,
            prediction: &p.text,
            candidates: &p.candidates,
            score: None,
            truncated: false,
            error: None,
        })
        .collect();
    write_predictions(&out.join("predictions.csv"), &rows, s.scores)?;
    let path = &s.dataset.path;
    let mut row = vec![
        ("dataset".to_string(), path.display().to_string()),
        ("split".into(), split_name(path)),
        (
            "predictions".into(),
            args.predictions
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    row.extend(metric_columns(s.scores, s.examples.len()));
    row.extend(overlap);
    row.extend([
        (
            "cbqa_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("git_commit".into(), env!("CBQA_GIT_COMMIT").into()),
        ("timestamp".into(), utc_timestamp()),
    ]);
    // The same scoring recorded twice (a rerun after a kill) adds one row only.
    let run_id = score_id(&row, s.preds);
    row.push(("run_id".into(), run_id.clone()));
    append_row_once(&out.join("metrics.csv"), &row, Some(("run_id", &run_id)))?;
    Ok(())
}

/// The id of a scoring in metrics.csv: a fingerprint of its columns but the timestamp (what was
/// scored against what, and the numbers) and of the predictions themselves.
fn score_id(row: &[(String, String)], preds: &[Prediction]) -> String {
    let mut parts: Vec<&[u8]> = row
        .iter()
        .filter(|(k, _)| k != "timestamp")
        .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()])
        .collect();
    for p in preds {
        parts.push(p.id.as_deref().unwrap_or_default().as_bytes());
        parts.push(p.text.as_bytes());
        parts.extend(p.candidates.iter().map(|c| c.as_bytes()));
    }
    format!("score-{}", fingerprint(&parts))
}
