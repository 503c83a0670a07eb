//! CSV reports of an evaluation: `predictions.csv` (one row per question) and `metrics.csv`
//! (one row per run, appended). Both are written to a temp file and renamed, so a crash never
//! leaves a half-written table, and an append rewrites the whole table atomically, holding the
//! table's lock file (`.metrics.csv.lock`), so concurrent appends lose no row.

use crate::data::QaExample;
use crate::error::{Error, Result};
use crate::eval::{ExampleScore, Scores};
use std::path::Path;

/// One predicted example, for `predictions.csv`.
#[derive(Debug, Clone)]
pub struct PredictionRow<'a> {
    pub example: &'a QaExample,
    pub prediction: &'a str,
    pub candidates: &'a [String],
    pub score: Option<f32>,
    pub truncated: bool,
    pub error: Option<String>,
}

fn csv_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        msg: format!("cannot write CSV: {e}"),
    }
}

/// Write `predictions.csv`: id, question, prediction, candidates (JSON), references (JSON),
/// normalized_prediction, em, f1, has_answer, efficientqa_em, recall@k…, score, truncated, error.
pub fn write_predictions(path: &Path, rows: &[PredictionRow<'_>], scores: &Scores) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "id",
        "question",
        "prediction",
        "candidates",
        "references",
        "normalized_prediction",
        "em",
        "f1",
        "has_answer",
        "efficientqa_em",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(scores.recall_ks.iter().map(|k| format!("recall@{k}")));
    header.extend(
        ["score", "truncated", "error"]
            .iter()
            .map(|s| s.to_string()),
    );
    w.write_record(&header).map_err(|e| csv_err(path, e))?;
    for (r, s) in rows.iter().zip(&scores.rows) {
        let s: &ExampleScore = s;
        let mut rec = vec![
            r.example.id.clone(),
            r.example.question.clone(),
            r.prediction.to_string(),
            serde_json::to_string(r.candidates).unwrap_or_default(),
            serde_json::to_string(&r.example.answers).unwrap_or_default(),
            s.normalized_prediction.clone(),
            (s.em as u8).to_string(),
            format!("{}", s.f1),
            (s.has_answer as u8).to_string(),
            (s.efficientqa_em as u8).to_string(),
        ];
        rec.extend(s.recall_hits.iter().map(|h| (*h as u8).to_string()));
        rec.push(r.score.map(|x| x.to_string()).unwrap_or_default());
        rec.push((r.truncated as u8).to_string());
        rec.push(r.error.clone().unwrap_or_default());
        w.write_record(&rec).map_err(|e| csv_err(path, e))?;
    }
    let bytes = w.into_inner().map_err(|e| csv_err(path, e))?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// The metric columns of a metrics.csv row (`cbqa eval`, `cbqa score` and the Python package's
/// evaluations): `n`, `normalizer`, `em`, `f1`, `recall@k`…, `has_answer`, `efficientqa_em`.
pub fn metric_columns(scores: &Scores, n: usize) -> Vec<(String, String)> {
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

/// The k of recall@k reported for `beams` candidates: 1, 5, 10 up to the beams, and the beams.
pub fn recall_ks(beams: usize) -> Vec<usize> {
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

/// Append `row` (column → value, in order) to the table at `path`, creating it if needed. A
/// table with other columns is extended: old rows get empty cells for the new columns.
pub fn append_row(path: &Path, row: &[(String, String)]) -> Result<()> {
    append_row_once(path, row, None).map(|_| ())
}

/// As [`append_row`], but with `key = Some((column, value))` only when no row of the table has
/// that value in that column yet (a resumed run whose row was already written adds none).
/// Returns whether the row was added. The read-extend-rewrite holds the table's lock file
/// ([`crate::fsutil::lock_path`]), so concurrent appenders (two evals into one directory) lose
/// no row.
pub fn append_row_once(
    path: &Path,
    row: &[(String, String)],
    key: Option<(&str, &str)>,
) -> Result<bool> {
    let _lock = crate::fsutil::FileLock::acquire(&crate::fsutil::lock_path(path))?;
    let (mut header, rows) = read_table(path)?;
    if let Some((col, value)) = key {
        if let Some(c) = header.iter().position(|h| h == col) {
            if rows
                .iter()
                .any(|r| r.get(c).map(String::as_str) == Some(value))
            {
                return Ok(false);
            }
        }
    }
    for (k, _) in row {
        if !header.contains(k) {
            header.push(k.clone());
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).map_err(|e| csv_err(path, e))?;
    for mut r in rows {
        r.resize(header.len(), String::new());
        w.write_record(&r).map_err(|e| csv_err(path, e))?;
    }
    let new: Vec<String> = header
        .iter()
        .map(|h| {
            row.iter()
                .find(|(k, _)| k == h)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect();
    w.write_record(&new).map_err(|e| csv_err(path, e))?;
    let bytes = w.into_inner().map_err(|e| csv_err(path, e))?;
    crate::fsutil::write_atomic(path, &bytes)?;
    Ok(true)
}

/// The header and rows of the table at `path` (none when it does not exist); a table that is
/// not well-formed CSV is an error, never rewritten.
fn read_table(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    if !path.exists() {
        return Ok((header, rows));
    }
    let mut r = csv::Reader::from_path(path).map_err(|e| Error::Output {
        path: path.to_path_buf(),
        msg: format!("existing table is not readable CSV ({e}); not touching it"),
    })?;
    header = r
        .headers()
        .map_err(|e| csv_err(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| Error::Output {
            path: path.to_path_buf(),
            msg: format!(
                "existing table row {} is malformed ({e}); not touching it",
                i + 2
            ),
        })?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok((header, rows))
}

/// Peak resident set size of this process in MB (Linux `VmHWM`), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_extends_columns_and_keeps_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        append_row(&p, &[("a".into(), "1".into()), ("b".into(), "x,y".into())]).unwrap();
        append_row(&p, &[("a".into(), "2".into()), ("c".into(), "z".into())]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, "a,b,c\n1,\"x,y\",\n2,,z\n");
        // a corrupt table is refused, not overwritten
        std::fs::write(&p, "a,b\n\"unterminated\n").unwrap();
        let before = std::fs::read(&p).unwrap();
        assert!(append_row(&p, &[("a".into(), "3".into())]).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn recall_ks_follow_the_beams() {
        assert_eq!(recall_ks(1), vec![1]);
        assert_eq!(recall_ks(2), vec![1, 2]);
        assert_eq!(recall_ks(5), vec![1, 5]);
        assert_eq!(recall_ks(12), vec![1, 5, 10, 12]);
    }

    #[test]
    fn timestamp_is_iso8601() {
        let t = utc_timestamp();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}

/// The first columns of an evaluation's metrics.csv row: which data (`split` defaults to the
/// data file's name, `shard` to none).
pub fn dataset_columns(
    dataset: &Path,
    split: Option<&str>,
    shard: Option<&str>,
) -> Vec<(String, String)> {
    vec![
        ("dataset".to_string(), dataset.display().to_string()),
        (
            "split".into(),
            split.map_or_else(|| split_name(dataset), str::to_string),
        ),
        ("shard".into(), shard.unwrap_or_default().to_string()),
    ]
}

/// The split name metrics.csv gets by default: the data file's name.
pub fn split_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The batch policy of an evaluation in words, as the `batch_policy` column holds it.
pub fn batch_policy(beams: usize, batch_size: usize, batch_tokens: usize) -> String {
    format!("beams={beams} batch_size={batch_size} batch_tokens={batch_tokens} sorted")
}

/// How an evaluation's answers were made and how fast: the run columns of its metrics.csv row,
/// the same whoever made the answers (`cbqa eval`, the Python package's `write_eval`).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRun {
    /// The ONNX export (or checkpoint) answered with.
    pub model: std::path::PathBuf,
    /// `ort`, `tract` or `tch`.
    pub backend: String,
    pub device: String,
    /// The export's precision label (`runtime::precision_of`).
    pub precision: String,
    /// [`batch_policy`].
    pub batch_policy: String,
    /// Intra-op threads; 0 is the engine's default ("auto").
    pub threads: usize,
    /// Questions that could not be answered.
    pub errors: usize,
    /// Questions answered by this run (not taken from a journal).
    pub questions: usize,
    /// Questions taken from the journal of an unfinished run.
    pub resumed: usize,
    /// Wall time of this run's answering, in seconds.
    pub wall_s: f64,
    pub peak_rss_mb: Option<f64>,
    /// Answers whose question was truncated to the model's input limit.
    pub truncated: usize,
}

impl EvalRun {
    /// The columns after the metrics: errors, model … truncated, versions, timestamp.
    pub fn columns(&self) -> Vec<(String, String)> {
        let threads = match self.threads {
            0 => "auto".to_string(),
            n => n.to_string(),
        };
        vec![
            ("errors".to_string(), self.errors.to_string()),
            ("model".into(), self.model.display().to_string()),
            ("backend".into(), self.backend.clone()),
            ("device".into(), self.device.clone()),
            ("precision".into(), self.precision.clone()),
            ("batch_policy".into(), self.batch_policy.clone()),
            ("threads".into(), threads),
            (
                "questions_per_s".into(),
                format!("{:.3}", self.questions as f64 / self.wall_s.max(1e-9)),
            ),
            ("wall_s".into(), format!("{:.3}", self.wall_s)),
            ("resumed_questions".into(), self.resumed.to_string()),
            (
                "peak_rss_mb".into(),
                self.peak_rss_mb
                    .map(|m| format!("{m:.1}"))
                    .unwrap_or_default(),
            ),
            ("truncated".into(), self.truncated.to_string()),
            ("cbqa_version".into(), crate::VERSION.into()),
            ("git_commit".into(), crate::GIT_COMMIT.into()),
            ("timestamp".into(), utc_timestamp()),
        ]
    }
}
