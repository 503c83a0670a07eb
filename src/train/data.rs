//! Training and dev data for `cbqa train`: NQ-open JSON lines (`{"question": str, "answer": [str,
//! ...]}`), read with file:line errors, tokenized once.
//!
//! This is the trainer's own minimal reader; when the crate's dataset readers (`src/data/`) land,
//! the trainer should take their records instead, so every format `cbqa eval` reads trains too.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;

/// One question with its reference answers.
#[derive(Debug, Clone, PartialEq)]
pub struct QaExample {
    pub question: String,
    /// Non-empty reference answers; the first is the paper's default training target.
    pub answers: Vec<String>,
    /// 1-based line number in its file.
    pub line: usize,
}

/// What a file gave: its examples and, with `skip_bad`, the lines that were skipped.
#[derive(Debug, Default)]
pub struct ReadReport {
    pub examples: Vec<QaExample>,
    /// `file:line: reason` for every skipped line.
    pub skipped: Vec<String>,
}

fn parse_line(line: &str) -> std::result::Result<(String, Vec<String>), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let question = v
        .get("question")
        .and_then(Value::as_str)
        .ok_or("no string field \"question\"")?
        .trim()
        .to_string();
    if question.is_empty() {
        return Err("empty question".into());
    }
    let answers: Vec<String> = match v.get("answer") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                out.push(
                    x.as_str()
                        .ok_or("\"answer\" must be a list of strings")?
                        .to_string(),
                );
            }
            out
        }
        _ => return Err("no field \"answer\" (a list of strings)".into()),
    };
    let answers: Vec<String> = answers
        .into_iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if answers.is_empty() {
        return Err("no non-empty answer".into());
    }
    Ok((question, answers))
}

/// Read a JSON-lines QA file. A bad line is an error naming `file:line`, unless `skip_bad`, in
/// which case it is reported in [`ReadReport::skipped`]. Blank lines are ignored.
pub fn read_qa_jsonl(path: &Path, skip_bad: bool) -> Result<ReadReport> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let mut report = ReadReport::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok((question, answers)) => report.examples.push(QaExample {
                question,
                answers,
                line: i + 1,
            }),
            Err(msg) => {
                let msg = format!("{}:{}: {msg}", path.display(), i + 1);
                if !skip_bad {
                    return Err(Error::Invalid(format!(
                        "{msg} (pass --skip-bad to skip bad lines)"
                    )));
                }
                report.skipped.push(msg);
            }
        }
    }
    if report.examples.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no usable question/answer lines",
            path.display()
        )));
    }
    Ok(report)
}

/// An example as token ids: the encoder input and one target per answer, each ending in `</s>`.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub input: Vec<i64>,
    pub targets: Vec<Vec<i64>>,
}

/// Token ids of `text` without special tokens, truncated to `max_len - 1`, then `</s>`.
pub fn encode(tok: &Tokenizer, text: &str, eos: i64, max_len: usize) -> Result<Vec<i64>> {
    let enc = tok
        .encode(text, false)
        .map_err(|e| Error::Invalid(format!("cannot tokenize {text:?}: {e}")))?;
    let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
    ids.truncate(max_len.saturating_sub(1));
    ids.push(eos);
    Ok(ids)
}

/// Tokenize examples: `prefix + question` as input, every answer as a target.
pub fn tokenize(
    tok: &Tokenizer,
    examples: &[QaExample],
    prefix: &str,
    eos: i64,
    max_input_len: usize,
    max_target_len: usize,
) -> Result<Vec<Tokenized>> {
    examples
        .iter()
        .map(|ex| {
            let input = encode(tok, &format!("{prefix}{}", ex.question), eos, max_input_len)?;
            let targets = ex
                .answers
                .iter()
                .map(|a| encode(tok, a, eos, max_target_len))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tokenized { input, targets })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_named_and_skippable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"question\": \"q1\", \"answer\": [\"a\"]}\n\n{\"question\": \"q2\", \"answer\": []}\nnot json\n{\"question\": \"q3\", \"answer\": [\" \", \"b\"]}\n",
        )
        .unwrap();
        let e = read_qa_jsonl(&p, false).unwrap_err().to_string();
        assert!(e.contains("d.jsonl:3: no non-empty answer"), "{e}");
        let r = read_qa_jsonl(&p, true).unwrap();
        assert_eq!(r.examples.len(), 2);
        assert_eq!(r.examples[1].answers, ["b"]);
        assert_eq!(r.examples[1].line, 5);
        assert_eq!(r.skipped.len(), 2);
        assert!(
            r.skipped[1].contains("d.jsonl:4: invalid JSON"),
            "{:?}",
            r.skipped
        );
    }
}
