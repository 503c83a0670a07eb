//! `cbqa eval` and `cbqa score`.

use crate::cli::{EvalArgs, ScoreArgs};
use anyhow::{bail, Context, Result};
use cbqa::eval::report::{
    append_row, peak_rss_mb, utc_timestamp, write_predictions, PredictionRow,
};
use cbqa::eval::{score_examples_with, Prediction, ScoreOptions, Scores};
use cbqa::Answerer;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn split_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn metric_row(scores: &Scores, n: usize) -> Vec<(String, String)> {
    let a = &scores.aggregate;
    let mut row = vec![
        ("n".to_string(), n.to_string()),
        ("normalizer".into(), scores.normalizer.name().into()),
        ("em".into(), format!("{}", a.em)),
        ("f1".into(), format!("{}", a.f1)),
    ];
    for (k, v) in &a.recall_at_k {
        row.push((format!("recall@{k}"), format!("{v}")));
    }
    row.push(("has_answer".into(), format!("{}", a.has_answer)));
    row.push(("efficientqa_em".into(), format!("{}", a.efficientqa_em)));
    row
}

/// Overlap subsets: columns for metrics.csv, printed too.
fn overlap_columns(
    train: Option<&Path>,
    examples: &[cbqa::data::QaExample],
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

fn print_summary(scores: &Scores) {
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

pub fn eval(args: EvalArgs) -> Result<()> {
    let (ds, examples, normalizer) = super::load_data(&args.data)?;
    let opts = super::answerer_options(&args.runtime)?;
    let policy = format!(
        "beams={} batch_size={} batch_tokens={} sorted",
        opts.num_beams, opts.batch.max_batch_size, opts.batch.max_batch_tokens
    );
    let beams = opts.num_beams;
    let answerer = Answerer::load(&args.model, opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let questions: Vec<&str> = examples.iter().map(|e| e.question.as_str()).collect();
    let start = Instant::now();
    let show = questions.len() >= 64;
    let progress = |done: usize, total: usize| {
        if show {
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            let rate = done as f64 / secs;
            let eta = (total - done) as f64 / rate.max(1e-9);
            eprint!("\reval: {done}/{total} questions, {rate:.1} q/s, ETA {eta:.0}s   ");
            let _ = std::io::stderr().flush();
        }
    };
    let answers = answerer.answer_batch_with(&questions, &progress);
    let wall = start.elapsed().as_secs_f64();
    if show {
        eprintln!();
    }
    let mut preds = Vec::with_capacity(examples.len());
    let mut errors = 0;
    for (e, a) in examples.iter().zip(&answers) {
        preds.push(match a {
            Ok(a) => Prediction {
                id: Some(e.id.clone()),
                text: a.text.clone(),
                candidates: a.candidates.iter().map(|c| c.text.clone()).collect(),
            },
            Err(_) => {
                errors += 1;
                Prediction {
                    id: Some(e.id.clone()),
                    text: String::new(),
                    candidates: Vec::new(),
                }
            }
        });
    }
    let mut sopts = ScoreOptions::new(normalizer);
    sopts.recall_ks = recall_ks(beams);
    let scores = score_examples_with(&preds, &examples, &sopts)?;
    let rows: Vec<PredictionRow<'_>> = examples
        .iter()
        .zip(&preds)
        .zip(&answers)
        .map(|((e, p), a)| PredictionRow {
            example: e,
            prediction: &p.text,
            candidates: &p.candidates,
            score: a.as_ref().ok().map(|a| a.score),
            truncated: a.as_ref().map(|a| a.truncated).unwrap_or(false),
            error: a.as_ref().err().map(|e| e.to_string()),
        })
        .collect();
    write_predictions(&args.out.join("predictions.csv"), &rows, &scores)?;
    let mut row = vec![
        ("dataset".to_string(), ds.path.display().to_string()),
        (
            "split".into(),
            args.split.clone().unwrap_or_else(|| split_name(&ds.path)),
        ),
        ("shard".into(), args.data.shard.clone().unwrap_or_default()),
    ];
    row.extend(metric_row(&scores, examples.len()));
    print_summary(&scores);
    row.extend(overlap_columns(
        args.overlap_with.as_deref(),
        &examples,
        &scores,
    )?);
    let threads = args.runtime.threads;
    row.extend([
        ("errors".to_string(), errors.to_string()),
        ("model".into(), args.model.display().to_string()),
        (
            "backend".into(),
            format!("{:?}", args.runtime.backend).to_lowercase(),
        ),
        ("device".into(), args.runtime.device.clone()),
        ("precision".into(), cbqa::runtime::precision_of(&args.model)),
        ("batch_policy".into(), policy),
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
            format!("{:.3}", examples.len() as f64 / wall.max(1e-9)),
        ),
        ("wall_s".into(), format!("{wall:.3}")),
        (
            "peak_rss_mb".into(),
            peak_rss_mb().map(|m| format!("{m:.1}")).unwrap_or_default(),
        ),
        ("truncated".into(), answerer.truncations().to_string()),
        ("cbqa_version".into(), env!("CARGO_PKG_VERSION").into()),
        ("git_commit".into(), env!("CBQA_GIT_COMMIT").into()),
        ("timestamp".into(), utc_timestamp()),
    ]);
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

fn recall_ks(beams: usize) -> Vec<usize> {
    let mut ks = vec![1];
    for k in [5, 10] {
        if k <= beams {
            ks.push(k);
        }
    }
    if beams > 1 && !ks.contains(&beams) {
        ks.push(beams);
    }
    ks
}

/// Read predictions of any system: JSON lines or CSV (cbqa's predictions.csv included).
fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let is_jsonl = text.trim_start().starts_with('{');
    let mut out = Vec::new();
    if is_jsonl {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
            let text = ["prediction", "answer", "text"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
                .with_context(|| {
                    format!(
                        "{}:{}: no string field \"prediction\" (or \"answer\"/\"text\")",
                        path.display(),
                        i + 1
                    )
                })?;
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
            out.push(Prediction {
                id,
                text: text.to_string(),
                candidates,
            });
        }
    } else {
        let mut r =
            csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
        let headers = r.headers()?.clone();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let p = col("prediction")
            .with_context(|| format!("{}: no \"prediction\" column", path.display()))?;
        let (id, cands) = (col("id"), col("candidates"));
        for (i, rec) in r.records().enumerate() {
            let rec =
                rec.with_context(|| format!("{}:{}: malformed CSV", path.display(), i + 2))?;
            out.push(Prediction {
                id: id.and_then(|c| rec.get(c)).map(str::to_string),
                text: rec.get(p).unwrap_or_default().to_string(),
                candidates: cands
                    .and_then(|c| rec.get(c))
                    .and_then(|c| serde_json::from_str::<Vec<String>>(c).ok())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

pub fn score(args: ScoreArgs) -> Result<()> {
    let (ds, examples, normalizer) = super::load_data(&args.data)?;
    let mut all = Vec::new();
    for p in &args.predictions {
        all.extend(read_predictions(p)?);
    }
    // Align by id when every prediction has one (merging shards), else by position.
    let preds: Vec<Prediction> = if all.iter().all(|p| p.id.is_some()) {
        let mut by_id: HashMap<String, Prediction> = HashMap::new();
        for p in all {
            let id = p.id.clone().unwrap_or_default();
            if by_id.insert(id.clone(), p).is_some() {
                bail!("prediction id {id:?} appears twice in the prediction files");
            }
        }
        let mut v = Vec::with_capacity(examples.len());
        let mut missing = Vec::new();
        for e in &examples {
            match by_id.remove(&e.id) {
                Some(p) => v.push(p),
                None => missing.push(e.id.clone()),
            }
        }
        if !missing.is_empty() {
            bail!(
                "{} question(s) of {} have no prediction (first ids: {:?})",
                missing.len(),
                ds.path.display(),
                &missing[..missing.len().min(5)]
            );
        }
        if !by_id.is_empty() {
            eprintln!(
                "warning: {} prediction(s) match no question of the data file",
                by_id.len()
            );
        }
        v
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
        std::fs::create_dir_all(out)?;
        let rows: Vec<PredictionRow<'_>> = examples
            .iter()
            .zip(&preds)
            .map(|(e, p)| PredictionRow {
                example: e,
                prediction: &p.text,
                candidates: &p.candidates,
                score: None,
                truncated: false,
                error: None,
            })
            .collect();
        write_predictions(&out.join("predictions.csv"), &rows, &scores)?;
        let mut row = vec![
            ("dataset".to_string(), ds.path.display().to_string()),
            ("split".into(), split_name(&ds.path)),
            (
                "predictions".into(),
                args.predictions
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ];
        row.extend(metric_row(&scores, examples.len()));
        row.extend(overlap);
        row.extend([
            (
                "cbqa_version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            ("git_commit".into(), env!("CBQA_GIT_COMMIT").into()),
            ("timestamp".into(), utc_timestamp()),
        ]);
        append_row(&out.join("metrics.csv"), &row)?;
    }
    Ok(())
}
