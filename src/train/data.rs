//! Training and dev data for `cbqa train`: every format the crate's readers take (NQ-open JSON
//! lines, DPR TSV, WebQuestions JSON, CSV/TSV), read with file:line errors, tokenized once.

use crate::data::{DataError, Dataset, QaExample, ReadOptions};
use crate::error::{Error, Result};
use crate::generate::encode_questions;
use std::path::Path;
use tokenizers::Tokenizer;

/// What a file gave: its examples and, with `skip_bad`, the lines that were skipped.
#[derive(Debug, Default)]
pub struct ReadReport {
    pub examples: Vec<QaExample>,
    /// `file:line: reason` for every skipped line.
    pub skipped: Vec<String>,
    /// The answer normalisation the benchmark is scored with (dev EM uses it).
    pub normalizer: crate::eval::Normalizer,
}

/// Read a QA file. Training data drops blank answers and rejects examples left without one;
/// dev data keeps every reference, as `cbqa eval` does. A bad record is an error naming
/// `file:line`, unless `skip_bad`, in which case it is listed in [`ReadReport::skipped`].
pub fn read_qa(path: &Path, skip_bad: bool, training: bool) -> Result<ReadReport> {
    let mut opts = if training {
        ReadOptions::for_training()
    } else {
        ReadOptions::default()
    };
    opts.skip_bad = skip_bad;
    let ds = Dataset::read(path, &opts).map_err(hint_skip_bad)?;
    if ds.examples.is_empty() {
        return Err(Error::Data(DataError::Empty {
            path: path.to_path_buf(),
            detail: " (no usable question/answer records)".into(),
        }));
    }
    Ok(ReadReport {
        normalizer: crate::eval::Normalizer::for_benchmark(ds.benchmark),
        skipped: ds.warnings.iter().map(|w| w.to_string()).collect(),
        examples: ds.examples,
    })
}

/// A malformed record's error also says that the `skip_bad` setting skips such records.
fn hint_skip_bad(e: DataError) -> Error {
    Error::Data(match e {
        DataError::Malformed {
            path,
            line,
            message,
        } => DataError::Malformed {
            path,
            line,
            message: format!("{message} (skip_bad skips bad lines)"),
        },
        other => other,
    })
}

/// An example as token ids: the encoder input and one target per answer, each ending in `</s>`.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub input: Vec<i64>,
    pub targets: Vec<Vec<i64>>,
}

/// Token ids of `prefix + text` for every text, made by the decoder's question encoder
/// ([`encode_questions`]: the tokenizer's post-processor appends `</s>`; a text longer than
/// `max_len` tokens is cut, keeping the `</s>`). A blank text is an error.
pub fn encode_texts(
    tok: &Tokenizer,
    texts: &[&str],
    prefix: &str,
    max_len: usize,
    eos: u32,
) -> Result<Vec<Vec<i64>>> {
    encode_questions(tok, texts, prefix, max_len, eos)
        .into_iter()
        .map(|p| p.map(|p| p.ids.iter().map(|&id| i64::from(id)).collect()))
        .collect()
}

/// Tokenize examples: `prefix + question` as input, every answer as a target.
pub fn tokenize(
    tok: &Tokenizer,
    examples: &[QaExample],
    prefix: &str,
    eos: u32,
    max_input_len: usize,
    max_target_len: usize,
) -> Result<Vec<Tokenized>> {
    let questions: Vec<&str> = examples.iter().map(|ex| ex.question.as_str()).collect();
    let inputs = encode_texts(tok, &questions, prefix, max_input_len, eos)?;
    examples
        .iter()
        .zip(inputs)
        .map(|(ex, input)| {
            let answers: Vec<&str> = ex.answers.iter().map(String::as_str).collect();
            let targets = encode_texts(tok, &answers, "", max_target_len, eos)?;
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
        let e = read_qa(&p, false, true).unwrap_err().to_string();
        assert!(e.contains("d.jsonl:3:") && e.contains("skip_bad"), "{e}");
        let r = read_qa(&p, true, true).unwrap();
        assert_eq!(r.examples.len(), 2);
        assert_eq!(r.examples[1].answers, ["b"]);
        assert_eq!(r.skipped.len(), 2);
        assert!(r.skipped[1].contains("d.jsonl:4:"), "{:?}", r.skipped);
        // dev data keeps blank references, as evaluation does
        std::fs::write(&p, "{\"question\": \"q\", \"answer\": [\" \", \"b\"]}\n").unwrap();
        assert_eq!(
            read_qa(&p, false, false).unwrap().examples[0].answers.len(),
            2
        );
    }
}
