//! Predictions of any system, as `cbqa score` reads them: JSON lines or CSV (cbqa's own
//! `predictions.csv` included). Every problem names `file:line`.

use super::Prediction;
use crate::data::DataError;
use std::path::Path;

/// The text fields a JSON line's prediction may be in, in order of preference.
const JSON_TEXT_FIELDS: [&str; 3] = ["prediction", "answer", "text"];

/// Read a predictions file: JSON lines when the first non-blank character is `{`, else CSV.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_predictions(path, &bytes)
}

/// [`read_predictions`] on the bytes of a file already read (`path` names it in errors).
pub fn parse_predictions(path: &Path, bytes: &[u8]) -> Result<Vec<Prediction>, DataError> {
    let starts_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if starts_json {
        parse_jsonl(path, bytes)
    } else {
        parse_csv(path, bytes)
    }
}

fn malformed(path: &Path, line: usize, message: impl Into<String>) -> DataError {
    DataError::Malformed {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// JSON lines with `prediction` (or `answer`/`text`), optional `id` and `candidates`.
fn parse_jsonl(path: &Path, bytes: &[u8]) -> Result<Vec<Prediction>, DataError> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let text = std::str::from_utf8(raw)
            .map_err(|e| malformed(path, line, format!("not UTF-8 ({e})")))?;
        if text.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| malformed(path, line, format!("invalid JSON: {e}")))?;
        out.push(prediction_of_json(path, line, &v)?);
    }
    Ok(out)
}

/// One JSON line's prediction.
fn prediction_of_json(
    path: &Path,
    line: usize,
    v: &serde_json::Value,
) -> Result<Prediction, DataError> {
    let text = JSON_TEXT_FIELDS
        .iter()
        .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
        .ok_or_else(|| {
            malformed(
                path,
                line,
                "no string field \"prediction\" (or \"answer\"/\"text\")",
            )
        })?;
    let id = v.get("id").map(|x| match x {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let candidates = match v.get("candidates") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|c| {
                c.as_str()
                    .or_else(|| c.get("text").and_then(|t| t.as_str()))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        malformed(
                            path,
                            line,
                            "each of \"candidates\" must be a string or {\"text\": string}",
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed(path, line, "\"candidates\" must be a list")),
    };
    Ok(Prediction {
        id,
        text: text.to_string(),
        candidates,
    })
}

/// A CSV with a `prediction` column, optional `id` and `candidates` (a JSON list of strings).
fn parse_csv(path: &Path, bytes: &[u8]) -> Result<Vec<Prediction>, DataError> {
    let mut r = csv::Reader::from_reader(bytes);
    let headers = r
        .headers()
        .map_err(|e| malformed(path, 1, format!("malformed CSV header: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let p = col("prediction").ok_or_else(|| DataError::MissingColumn {
        path: path.to_path_buf(),
        column: "prediction".into(),
        available: headers.iter().collect::<Vec<_>>().join(", "),
    })?;
    let (id, cands) = (col("id"), col("candidates"));
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            malformed(path, line, format!("malformed CSV: {e}"))
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        let candidates = match cands.and_then(|c| rec.get(c)) {
            None | Some("") => Vec::new(),
            Some(cell) => serde_json::from_str::<Vec<String>>(cell).map_err(|e| {
                malformed(
                    path,
                    line,
                    format!("column \"candidates\" is not a JSON list of strings: {e}"),
                )
            })?,
        };
        out.push(Prediction {
            id: id.and_then(|c| rec.get(c)).map(str::to_string),
            text: rec.get(p).unwrap_or_default().to_string(),
            candidates,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Prediction>, DataError> {
        parse_predictions(Path::new("p.txt"), text.as_bytes())
    }

    #[test]
    fn reads_jsonl_with_ids_and_candidates() {
        let p = parse(
            "\n{\"id\": 7, \"answer\": \"a\", \"candidates\": [\"a\", {\"text\": \"b\"}]}\n\n{\"prediction\": \"c\"}\n",
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].id.as_deref(), Some("7"));
        assert_eq!(p[0].candidates, ["a", "b"]);
        assert_eq!(p[1].text, "c");
    }

    #[test]
    fn reads_csv_as_cbqa_writes_it() {
        let p =
            parse("id,prediction,candidates\nq1,\"x, y\",\"[\"\"x, y\"\",\"\"z\"\"]\"\nq2,w,\n")
                .unwrap();
        assert_eq!(p[0].text, "x, y");
        assert_eq!(p[0].candidates, ["x, y", "z"]);
        assert!(p[1].candidates.is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "{\"prediction\": \"a\"}\n{\"x\": 1}\n",
                "p.txt:2: no string field",
            ),
            ("{\"prediction\": \"a\"}\n{oops\n", "p.txt:2: invalid JSON"),
            (
                "{\"prediction\": \"a\", \"candidates\": 3}\n",
                "p.txt:1: \"candidates\" must be a list",
            ),
            (
                "id,prediction,candidates\nq,a,[1]\n",
                "p.txt:2: column \"candidates\"",
            ),
            ("id,prediction\nq,a\nr,b,c\n", "p.txt:3: malformed CSV"),
            ("id,answer\nq,a\n", "no column named \"prediction\""),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
