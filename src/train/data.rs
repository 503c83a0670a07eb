//! Training and dev data for `cbqa train`: every format the crate's readers take (NQ-open JSON
//! lines, DPR TSV, WebQuestions JSON, CSV/TSV), read with file:line errors, tokenized once.

use super::batching::{plan_epoch, EpochPlan, ExampleLengths};
use super::mixture::{plan_mixture_epoch, Source};
use super::settings::TrainSettings;
use super::store::{DiskExamples, TrainExamples};
use crate::data::{Benchmark, DataError, Dataset, QaExample, ReadOptions};
use crate::error::{Error, Result};
use crate::generate::encode_questions;
use crate::pretrain::span_corruption::{epoch_seed, MaskDraw};
use crate::pretrain::{build_examples, CorpusCounts, Example, Pieces, PretrainSettings};
use std::path::Path;
use tokenizers::Tokenizer;

/// What a file gave: its examples and, with `skip_bad`, the lines that were skipped.
#[derive(Debug)]
pub struct ReadReport {
    pub examples: Vec<QaExample>,
    /// `file:line: reason` for every skipped line.
    pub skipped: Vec<String>,
    /// The answer normalisation the benchmark is scored with (dev EM uses it).
    pub normalizer: crate::eval::Normalizer,
    /// The benchmark the file holds (guessed from its name).
    pub benchmark: Benchmark,
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
        benchmark: ds.benchmark,
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

/// The input prefix of the paper's task for a benchmark (`t5_cbqa/preprocessors.py`).
pub fn paper_prefix(benchmark: Benchmark) -> &'static str {
    match benchmark {
        Benchmark::NaturalQuestions => "nq question: ",
        Benchmark::TriviaQa => "trivia_qa question: ",
        Benchmark::WebQuestions => "wq question: ",
        Benchmark::Unknown => "",
    }
}

/// The training examples of a run, tokenized, in memory, with their sources (what
/// `--dump-examples` and `--export-examples` read; the trainer reads
/// [`read_train_examples`]).
#[derive(Debug, Default)]
pub struct TrainData {
    pub examples: Vec<Tokenized>,
    /// Each source's examples (a range of `examples`), in order; one unless a mixture.
    pub sources: Vec<Source>,
    /// Skipped lines and examples (`origin: reason`).
    pub skipped: Vec<String>,
    /// The benchmark and question prefix of each QA source.
    pub prefixes: Vec<(Benchmark, String)>,
    /// Span corruption with [`MaskDraw::PerEpoch`]: what draws each epoch's examples
    /// (`examples` holds epoch 0's).
    pub redraw: Option<Redraw>,
}

/// The raw pieces of a span-corruption corpus, masked anew every epoch: epoch `e`'s examples
/// are the pieces masked by the draws of [`epoch_seed`]`(seed, e)`. Every piece's inputs and
/// targets have the same lengths in every epoch (the noise and span counts follow from the
/// piece's length), so the epochs' batches depend on the epoch's order only.
#[derive(Debug, Clone)]
pub struct Redraw {
    pieces: Pieces,
    seed: u64,
}

impl Redraw {
    /// The training examples of epoch `epoch`, in corpus order.
    pub fn examples(&self, epoch: u64) -> Vec<Tokenized> {
        to_tokenized(self.pieces.examples(epoch_seed(self.seed, epoch)))
    }
}

impl TrainData {
    /// The prefix to evaluate a `benchmark` dev set with: the one of the training source of
    /// the same benchmark, else `fallback`.
    pub fn prefix_for(&self, benchmark: Benchmark, fallback: &str) -> String {
        self.prefixes
            .iter()
            .find(|(b, _)| *b == benchmark && benchmark != Benchmark::Unknown)
            .map_or(fallback, |(_, p)| p.as_str())
            .to_string()
    }
}

/// Epoch `epoch`'s order and batches: seeded; drawn by the mixing rates for a mixture.
pub fn plan_of<D: ExampleLengths + ?Sized>(
    examples: &D,
    sources: &[Source],
    s: &TrainSettings,
    epoch: u64,
) -> EpochPlan {
    match sources.len() > 1 {
        true => plan_mixture_epoch(examples, sources, s.seed, epoch, s.answer, s.batch_tokens),
        false => plan_epoch(examples, s.seed, epoch, s.answer, s.batch_tokens),
    }
}

/// The training examples `s` names: a pre-training corpus, one QA file or a mixture.
pub fn read_train(s: &TrainSettings, tok: &Tokenizer, eos: u32) -> Result<TrainData> {
    if let Some(p) = &s.pretrain {
        return read_corpus(p, tok, eos, s.seed);
    }
    s.mixing.check()?;
    let mixed = !s.mixture.is_empty();
    let first_prefix = match mixed && s.prefix.is_empty() {
        true => None,
        false => Some(s.prefix.as_str()),
    };
    let first = (s.train.as_path(), first_prefix);
    let rest = s
        .mixture
        .iter()
        .map(|m| (m.path.as_path(), m.prefix.as_deref()));
    let mut data = TrainData::default();
    for (path, prefix) in std::iter::once(first).chain(rest) {
        let report = read_qa(path, s.skip_bad, true)?;
        let prefix = prefix
            .unwrap_or_else(|| paper_prefix(report.benchmark))
            .to_string();
        let tokenized = tokenize(
            tok,
            &report.examples,
            &prefix,
            eos,
            s.max_input_len,
            s.max_target_len,
        )?;
        let start = data.examples.len();
        data.sources.push(Source {
            name: path.display().to_string(),
            range: start..start + tokenized.len(),
            rate: s.mixing.rate(tokenized.len()),
        });
        data.examples.extend(tokenized);
        data.skipped.extend(report.skipped);
        data.prefixes.push((report.benchmark, prefix));
    }
    Ok(data)
}

/// A pre-training corpus built into examples (`build_examples`, masks of `seed`), what it
/// skipped (the first messages, then "… and N more"), and its raw span-corruption pieces.
pub(super) fn corpus_examples(
    p: &PretrainSettings,
    tok: &Tokenizer,
    eos: u32,
    seed: u64,
) -> Result<(Vec<Tokenized>, Vec<String>, Option<Pieces>)> {
    let built = build_examples(p, tok, eos, seed)?;
    let examples = to_tokenized(built.examples);
    Ok((examples, skip_messages(&built.counts), built.pieces))
}

/// What a corpus skipped: the first messages, then "… and N more".
pub(super) fn skip_messages(counts: &CorpusCounts) -> Vec<String> {
    let mut skipped = counts.skipped.clone();
    if counts.skipped_total > skipped.len() {
        skipped.push(format!(
            "… and {} more",
            counts.skipped_total - skipped.len()
        ));
    }
    skipped
}

/// Pre-training examples as the trainer's token ids, one target each.
fn to_tokenized(examples: Vec<Example>) -> Vec<Tokenized> {
    let ids = |v: Vec<u32>| v.into_iter().map(i64::from).collect::<Vec<i64>>();
    examples
        .into_iter()
        .map(|e| Tokenized {
            input: ids(e.inputs),
            targets: vec![ids(e.targets)],
        })
        .collect()
}

/// A pre-training corpus as one source; span corruption's pieces kept to redraw the masks when
/// the settings say [`MaskDraw::PerEpoch`].
fn read_corpus(p: &PretrainSettings, tok: &Tokenizer, eos: u32, seed: u64) -> Result<TrainData> {
    let (examples, skipped, pieces) = corpus_examples(p, tok, eos, seed)?;
    let redraw = pieces
        .filter(|_| p.masks == MaskDraw::PerEpoch)
        .map(|pieces| Redraw { pieces, seed });
    Ok(TrainData {
        sources: vec![corpus_source(p, examples.len())],
        examples,
        skipped,
        prefixes: Vec::new(),
        redraw,
    })
}

/// The one source of a pre-training corpus of `count` examples, named by objective and files.
fn corpus_source(p: &PretrainSettings, count: usize) -> Source {
    let names: Vec<String> = p.corpus.iter().map(|c| c.display().to_string()).collect();
    let objective = serde_json::to_value(p.objective).ok();
    let objective = objective
        .as_ref()
        .and_then(|v| v.as_str())
        .unwrap_or("pretrain");
    Source {
        name: format!("{objective}:{}", names.join(",")),
        range: 0..count,
        rate: 1.0,
    }
}

/// The training examples `s` names, as the trainer reads them: QA sources in memory
/// ([`read_train`]), a pre-training corpus streamed into the token file `store`
/// ([`DiskExamples::write`], ids of a `vocab_size` vocabulary; the caller moves it into the run
/// directory). The [`TrainData`] beside them has the sources, prefixes and skipped lines; its
/// `examples` are empty.
pub fn read_train_examples(
    s: &TrainSettings,
    tok: &Tokenizer,
    eos: u32,
    vocab_size: usize,
    store: &Path,
) -> Result<(TrainExamples, TrainData)> {
    let Some(p) = &s.pretrain else {
        let mut data = read_train(s, tok, eos)?;
        let examples = std::mem::take(&mut data.examples);
        return Ok((TrainExamples::Memory(examples), data));
    };
    let (disk, counts) = DiskExamples::write(p, tok, eos, s.seed, vocab_size, store)?;
    let data = TrainData {
        sources: vec![corpus_source(p, disk.count())],
        skipped: skip_messages(&counts),
        ..TrainData::default()
    };
    Ok((TrainExamples::Disk(disk), data))
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
