//! Continued pre-training data, as the paper's released code makes it: salient span masking
//! ([`ssm`], after REALM) and T5's span corruption ([`span_corruption`]) over a corpus
//! ([`corpus`]: plain text, JSON lines with or without salient spans, REALM's annotated
//! Wikipedia TFRecords), read as a stream of documents, tokenized in batches.
//!
//! [`build_examples`] turns a corpus into token-id examples (EOS on both sides) that
//! `cbqa pretrain` trains on with the same trainer as `cbqa train`.

pub mod corpus;
pub mod dates;
pub mod span_corruption;
pub mod ssm;
pub mod tfrecord;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use span_corruption::{Denoiser, MaskDraw, SpanCorruptionSettings, SpanCorruptor};
use std::path::PathBuf;
use tokenizers::Tokenizer;

/// The pre-training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Salient span masking (`mask_salient_spans`): needs a corpus with spans.
    Ssm,
    /// T5's span corruption (`span_corruption`).
    SpanCorruption,
}

/// What to pre-train on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainSettings {
    /// Corpus files or shard patterns (`name@N.ext`, globs).
    pub corpus: Vec<PathBuf>,
    pub objective: Objective,
    /// Span corruption's settings; `inputs_length` also bounds SSM inputs.
    pub span_corruption: SpanCorruptionSettings,
    /// SSM examples whose target is longer than this (EOS included) are skipped.
    pub max_target_len: usize,
    /// Give documents without spans the dates [`dates::tag_dates`] finds.
    #[serde(default)]
    pub tag_dates: bool,
    /// Span corruption: how the training pieces' masks are drawn over the epochs. Runs from
    /// before this setting existed drew them once ([`MaskDraw::Fixed`]) and resume so.
    #[serde(default = "fixed_masks")]
    pub masks: MaskDraw,
}

/// What a `run.json` without `masks` trained with.
fn fixed_masks() -> MaskDraw {
    MaskDraw::Fixed
}

impl PretrainSettings {
    /// The paper's settings (512 inputs, density 0.15, mean span 3) on `corpus`, with new masks
    /// every epoch.
    pub fn new(corpus: Vec<PathBuf>, objective: Objective) -> Self {
        PretrainSettings {
            corpus,
            objective,
            span_corruption: SpanCorruptionSettings::default(),
            max_target_len: 128,
            tag_dates: false,
            masks: MaskDraw::PerEpoch,
        }
    }

    /// The longest inputs and targets (EOS included) the objective makes.
    pub fn lengths(&self) -> (usize, usize) {
        match self.objective {
            Objective::Ssm => (self.span_corruption.inputs_length, self.max_target_len),
            Objective::SpanCorruption => {
                let (_, targets) = span_corruption::random_spans_helper(&self.span_corruption);
                (self.span_corruption.inputs_length, targets)
            }
        }
    }
}

/// One example as token ids, EOS included on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

/// Span corruption's raw pieces of a corpus, in corpus order, and what makes them examples:
/// [`Pieces::examples`] draws every piece's mask from a seed.
#[derive(Debug, Clone)]
pub struct Pieces {
    pub raw: Vec<Vec<u32>>,
    pub denoiser: Denoiser,
}

impl Pieces {
    /// Every piece's example, piece `i` masked by the draw of (`seed`, `i`).
    pub fn examples(&self, seed: u64) -> Vec<Example> {
        self.raw
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let d = self.denoiser.denoise(piece, seed, i as u64);
                Example {
                    inputs: d.inputs,
                    targets: d.targets,
                }
            })
            .collect()
    }
}

/// What a corpus gave, in memory.
#[derive(Debug, Default)]
pub struct Examples {
    /// The examples; for span corruption those of the masks of the seed `build_examples` got.
    pub examples: Vec<Example>,
    /// Span corruption: the raw pieces the examples were masked from (to draw other masks).
    pub pieces: Option<Pieces>,
    pub counts: CorpusCounts,
}

/// What reading a corpus counted.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CorpusCounts {
    /// Documents (sentences) read.
    pub documents: usize,
    /// SSM: sentences without a salient span (dropped, as `mask_salient_spans` drops them).
    pub without_spans: usize,
    /// `origin: reason` of the first [`MAX_SKIP_MESSAGES`] skipped examples.
    pub skipped: Vec<String>,
    /// Skipped examples in all.
    pub skipped_total: usize,
    /// Examples (SSM) or raw pieces (span corruption) made.
    pub made: usize,
}

/// Where [`build_examples_into`] puts what it makes, in corpus order.
pub trait ExampleSink {
    /// An SSM example (EOS on both sides).
    fn example(&mut self, example: Example) -> Result<()>;
    /// A span-corruption raw piece (no EOS) and what makes it an example.
    fn piece(&mut self, raw: Vec<u32>, denoiser: &Denoiser) -> Result<()>;
}

/// At most this many skip messages are kept (all are counted).
pub const MAX_SKIP_MESSAGES: usize = 100;

/// Documents tokenized at once.
const BATCH: usize = span_corruption::DOCUMENTS_PER_GROUP;

impl CorpusCounts {
    fn skip(&mut self, origin: &str, reason: String) {
        self.skipped_total += 1;
        if self.skipped.len() < MAX_SKIP_MESSAGES {
            self.skipped.push(format!("{origin}: {reason}"));
        }
    }
}

/// What [`build_examples`] collects in memory.
#[derive(Default)]
struct Collected {
    examples: Vec<Example>,
    raw: Vec<Vec<u32>>,
    denoiser: Option<Denoiser>,
}

impl ExampleSink for Collected {
    fn example(&mut self, example: Example) -> Result<()> {
        self.examples.push(example);
        Ok(())
    }

    fn piece(&mut self, raw: Vec<u32>, denoiser: &Denoiser) -> Result<()> {
        self.raw.push(raw);
        self.denoiser = Some(*denoiser);
        Ok(())
    }
}

/// Every example of the corpus under `s`, in corpus order, in memory (span corruption: masked
/// by `seed`'s draws, the raw pieces kept); see [`build_examples_into`].
pub fn build_examples(
    s: &PretrainSettings,
    tokenizer: &Tokenizer,
    eos: u32,
    seed: u64,
) -> Result<Examples> {
    let mut collected = Collected::default();
    let counts = build_examples_into(s, tokenizer, eos, seed, &mut collected)?;
    let pieces = collected.denoiser.map(|denoiser| Pieces {
        raw: collected.raw,
        denoiser,
    });
    let examples = match &pieces {
        Some(p) => p.examples(seed),
        None => collected.examples,
    };
    Ok(Examples {
        examples,
        pieces,
        counts,
    })
}

/// Every example (SSM) or raw piece (span corruption) of the corpus under `s` into `sink`, in
/// corpus order, the documents streamed: what is held at once is one batch of documents and one
/// group of pieces. An empty corpus, or (SSM) one without any salient span, is an error; a
/// malformed line is an error naming `file:line`.
pub fn build_examples_into(
    s: &PretrainSettings,
    tokenizer: &Tokenizer,
    eos: u32,
    seed: u64,
    sink: &mut dyn ExampleSink,
) -> Result<CorpusCounts> {
    s.span_corruption.check()?;
    let files = corpus::expand_patterns(&s.corpus)?;
    if files.is_empty() {
        return Err(Error::setting("corpus", "name at least one corpus file"));
    }
    let mut out = CorpusCounts::default();
    let mut corruptor = match s.objective {
        Objective::SpanCorruption => Some(corruptor(s, tokenizer, eos, seed)?),
        Objective::Ssm => None,
    };
    let mut batch = Vec::with_capacity(BATCH);
    for doc in corpus::documents(&files) {
        let mut doc = doc?;
        if let (Objective::Ssm, Some(reason)) = (s.objective, doc.skip.take()) {
            out.documents += 1;
            out.skip(&doc.origin, reason);
            continue;
        }
        if s.tag_dates && doc.spans.is_empty() {
            doc.spans = dates::tag_dates(&doc.text);
        }
        batch.push(doc);
        if batch.len() == BATCH {
            let c = corruptor.as_mut();
            process_batch(s, tokenizer, eos, c, &batch, &mut out, sink)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        process_batch(
            s,
            tokenizer,
            eos,
            corruptor.as_mut(),
            &batch,
            &mut out,
            sink,
        )?;
    }
    if let Some(c) = &mut corruptor {
        put_pieces(c.finish(), &c.denoiser(), &mut out, sink)?;
    }
    check_not_empty(s, &files, &out)?;
    Ok(out)
}

/// Make the examples of one batch of documents by the objective (a corruptor: span
/// corruption).
fn process_batch(
    s: &PretrainSettings,
    tokenizer: &Tokenizer,
    eos: u32,
    corruptor: Option<&mut SpanCorruptor>,
    batch: &[corpus::Document],
    out: &mut CorpusCounts,
    sink: &mut dyn ExampleSink,
) -> Result<()> {
    out.documents += batch.len();
    match corruptor {
        Some(c) => corrupt_batch(c, tokenizer, batch, out, sink),
        None => ssm_batch(s, tokenizer, eos, batch, out, sink),
    }
}

/// Hand completed pieces to `sink`, counted.
fn put_pieces(
    pieces: Vec<Vec<u32>>,
    denoiser: &Denoiser,
    out: &mut CorpusCounts,
    sink: &mut dyn ExampleSink,
) -> Result<()> {
    for piece in pieces {
        out.made += 1;
        sink.piece(piece, denoiser)?;
    }
    Ok(())
}

/// An empty corpus, or one that gave no example, is an error saying why.
fn check_not_empty(s: &PretrainSettings, files: &[PathBuf], out: &CorpusCounts) -> Result<()> {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let what = names.join(", ");
    if out.documents == 0 {
        return Err(Error::input(
            what,
            "the corpus holds no document (every line is blank)",
        ));
    }
    if out.made == 0 {
        let why = match (s.objective, out.without_spans == out.documents) {
            (Objective::Ssm, true) => {
                "no sentence has a salient span; SSM needs spans: JSON lines \
                 {\"text\", \"spans\"} (scripts/annotate_spans.py writes them), REALM's \
                 TFRecords, or dates found by tag_dates"
                    .to_string()
            }
            _ => format!("every example was skipped ({} of them)", out.skipped_total),
        };
        return Err(Error::input(what, why));
    }
    Ok(())
}

/// The span corruptor for the tokenizer's sentinels, which must count down from
/// `<extra_id_0>` far enough for the longest piece.
fn corruptor(s: &PretrainSettings, tok: &Tokenizer, eos: u32, seed: u64) -> Result<SpanCorruptor> {
    let Some(sentinel0) = tok.token_to_id("<extra_id_0>") else {
        return Err(Error::input(
            "tokenizer",
            "span corruption needs the sentinels <extra_id_0>, <extra_id_1>, … (T5's tokenizers \
             have 100; `cbqa init --extra-ids N` makes them)",
        ));
    };
    let c = SpanCorruptor::new(s.span_corruption, sentinel0, eos, seed);
    for k in 0..c.max_sentinels() {
        let name = format!("<extra_id_{k}>");
        if tok.token_to_id(&name) != sentinel0.checked_sub(k as u32) {
            let msg = format!(
                "span corruption of {} inputs needs {} sentinels counting down from \
                 <extra_id_0> (id {sentinel0}), but {name} is not id {}",
                s.span_corruption.inputs_length,
                c.max_sentinels(),
                i64::from(sentinel0) - k as i64
            );
            return Err(Error::input("tokenizer", msg));
        }
    }
    Ok(c)
}

/// Token ids of `texts` without special tokens.
fn encode(tok: &Tokenizer, texts: Vec<&str>) -> Result<Vec<Vec<u32>>> {
    let encodings = tok
        .encode_batch(texts, false)
        .map_err(|e| Error::tokenize("encoding the corpus", e))?;
    Ok(encodings
        .into_iter()
        .map(|e| e.get_ids().to_vec())
        .collect())
}

fn corrupt_batch(
    c: &mut SpanCorruptor,
    tok: &Tokenizer,
    batch: &[corpus::Document],
    out: &mut CorpusCounts,
    sink: &mut dyn ExampleSink,
) -> Result<()> {
    let ids = encode(tok, batch.iter().map(|d| d.text.as_str()).collect())?;
    let denoiser = c.denoiser();
    for doc in &ids {
        put_pieces(c.push(doc), &denoiser, out, sink)?;
    }
    Ok(())
}

fn ssm_batch(
    s: &PretrainSettings,
    tok: &Tokenizer,
    eos: u32,
    batch: &[corpus::Document],
    out: &mut CorpusCounts,
    sink: &mut dyn ExampleSink,
) -> Result<()> {
    let mut texts = Vec::new();
    let mut origins = Vec::new();
    for doc in batch {
        if doc.spans.is_empty() {
            out.without_spans += 1;
        }
        for ex in ssm::mask_salient_spans(&doc.text, &doc.spans) {
            texts.push(ex);
            origins.push(doc.origin.as_str());
        }
    }
    let inputs = encode(tok, texts.iter().map(|t| t.inputs.as_str()).collect())?;
    let targets = encode(tok, texts.iter().map(|t| t.targets.as_str()).collect())?;
    let (max_in, max_tgt) = s.lengths();
    for ((mut i, mut t), origin) in inputs.into_iter().zip(targets).zip(origins) {
        i.push(eos);
        t.push(eos);
        if i.len() > max_in {
            out.skip(
                origin,
                format!(
                    "the masked sentence is {} tokens, longer than the {max_in} inputs",
                    i.len()
                ),
            );
        } else if t.len() > max_tgt {
            out.skip(
                origin,
                format!(
                    "the span is {} tokens, longer than the {max_tgt} targets",
                    t.len()
                ),
            );
        } else {
            out.made += 1;
            sink.example(Example {
                inputs: i,
                targets: t,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlapping_realm_sentence_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wiki.tfrecord");
        let text = "Ada Lovelace wrote notes. Paris is big.";
        tfrecord::tests::write_article(
            &p,
            text,
            &[(0, 25), (26, 39)],
            &[(0, 12), (4, 12), (26, 31)],
        );
        let tok_file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/t5_v1_0/tokenizer.json"
        );
        let tok = Tokenizer::from_file(tok_file).unwrap();
        let s = PretrainSettings::new(vec![p.clone()], Objective::Ssm);
        let out = build_examples(&s, &tok, 1, 0).unwrap();
        let counts = &out.counts;
        assert_eq!(
            (out.examples.len(), counts.documents, counts.skipped_total),
            (1, 2, 1)
        );
        let msg = &counts.skipped[0];
        assert!(
            msg.contains("wiki.tfrecord: record 1, sentence 0: spans") && msg.contains("overlap"),
            "{msg}"
        );
    }
}
