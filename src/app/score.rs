//! `cbqa score`: score predictions made by any system against a benchmark file; shards are merged
//! by id.

use super::eval::{overlap_columns, print_summary, split_name};
use crate::cli::ScoreArgs;
use anyhow::{bail, Context, Result};
use cbqa::data::{Dataset, QaExample};
use cbqa::eval::journal::fingerprint;
use cbqa::eval::report::{
    append_row_once, metric_columns, recall_ks, utc_timestamp, write_predictions, PredictionRow,
};
use cbqa::eval::{score_examples_with, Prediction, ScoreOptions, Scores};
use std::collections::HashMap;
use std::path::Path;

/// Read, align and score the predictions; with `--out`, write predictions.csv and a metrics row.
pub fn run(args: ScoreArgs) -> Result<()> {
    let (ds, examples, normalizer) = super::load_data(&args.data)?;
    let mut all = Vec::new();
    for p in &args.predictions {
        all.extend(read_predictions(p)?);
    }
    // Align by id when every prediction has one (merging shards), else by position.
    let preds = if all.iter().all(|p| p.id.is_some()) {
        align_by_id(all, &examples, &ds.path)?
    } else {
        all
    };
    let beams = preds
        .iter()
        .map(|p| p.candidates.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut sopts = ScoreOptions::new(normalizer);
    sopts.recall_ks = recall_ks(beams);
    let scores = score_examples_with(&preds, &examples, &sopts)?;
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

/// The prediction of every question, by id; every question must have one, once.
fn align_by_id(
    all: Vec<Prediction>,
    examples: &[QaExample],
    data: &Path,
) -> Result<Vec<Prediction>> {
    let mut by_id: HashMap<String, Prediction> = HashMap::new();
    for p in all {
        let id = p.id.clone().unwrap_or_default();
        if by_id.insert(id.clone(), p).is_some() {
            bail!("prediction id {id:?} appears twice in the prediction files");
        }
    }
    let mut v = Vec::with_capacity(examples.len());
    let mut missing = Vec::new();
    for e in examples {
        match by_id.remove(&e.id) {
            Some(p) => v.push(p),
            None => missing.push(e.id.clone()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} question(s) of {} have no prediction (first ids: {:?})",
            missing.len(),
            data.display(),
            &missing[..missing.len().min(5)]
        );
    }
    if !by_id.is_empty() {
        eprintln!(
            "warning: {} prediction(s) match no question of the data file",
            by_id.len()
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

/// Read predictions of any system: JSON lines or CSV (cbqa's predictions.csv included).
fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('{') {
        read_jsonl_predictions(path, &text)
    } else {
        read_csv_predictions(path)
    }
}

/// JSON lines with `prediction` (or `answer`/`text`), optional `id` and `candidates`.
fn read_jsonl_predictions(path: &Path, text: &str) -> Result<Vec<Prediction>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
        out.push(prediction_of_json(&v).with_context(|| {
            format!(
                "{}: no string field \"prediction\" (or \"answer\"/\"text\")",
                at()
            )
        })?);
    }
    Ok(out)
}

/// One JSON line's prediction; `None` without a text field.
fn prediction_of_json(v: &serde_json::Value) -> Option<Prediction> {
    let text = ["prediction", "answer", "text"]
        .iter()
        .find_map(|k| v.get(*k).and_then(|x| x.as_str()))?;
    let id = v.get("id").map(|x| match x {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let candidates = v
        .get("candidates")
        .and_then(|c| c.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    c.as_str()
                        .or_else(|| c.get("text").and_then(|t| t.as_str()))
                })
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(Prediction {
        id,
        text: text.to_string(),
        candidates,
    })
}

/// A CSV with a `prediction` column, optional `id` and `candidates` (a JSON list) columns.
fn read_csv_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = r.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let p = col("prediction")
        .with_context(|| format!("{}: no \"prediction\" column", path.display()))?;
    let (id, cands) = (col("id"), col("candidates"));
    let mut out = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}:{}: malformed CSV", path.display(), i + 2))?;
        out.push(Prediction {
            id: id.and_then(|c| rec.get(c)).map(str::to_string),
            text: rec.get(p).unwrap_or_default().to_string(),
            candidates: cands
                .and_then(|c| rec.get(c))
                .and_then(|c| serde_json::from_str::<Vec<String>>(c).ok())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}
