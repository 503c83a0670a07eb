//! Training and dev data for `cbqa train`: every format the crate's readers take (NQ-open JSON
//! lines, DPR TSV, WebQuestions JSON, CSV/TSV), read with file:line errors, tokenized once.

use crate::data::{Dataset, QaExample, ReadOptions};
use crate::error::{Error, Result};
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
    let ds = Dataset::read(path, &opts)
        .map_err(|e| Error::Invalid(format!("{e} (pass --skip-bad to skip bad lines)")))?;
    if ds.examples.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no usable question/answer records",
            path.display()
        )));
    }
    Ok(ReadReport {
        normalizer: crate::eval::Normalizer::for_benchmark(ds.benchmark),
        skipped: ds.warnings.iter().map(|w| w.to_string()).collect(),
        examples: ds.examples,
    })
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
        let e = read_qa(&p, false, true).unwrap_err().to_string();
        assert!(e.contains("d.jsonl:3:") && e.contains("--skip-bad"), "{e}");
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
