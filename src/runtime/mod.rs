//! One trait for a T5 seq2seq backend — encode once, then decoder steps over an explicit state
//! (encoder output, cross-attention keys/values and the self-attention cache) — and its
//! implementations: ONNX Runtime (`ort`), tract (`tract`) and, with feature `train`, the tch model.
//!
//! Decoding, evaluation and benchmarks are written once against [`Seq2Seq`]
//! (see [`crate::generate`]). Validation runs single graphs through the same sessions
//! ([`Backend::run_graph`]).

use crate::error::Result;
use ndarray::ArrayD;
use std::collections::HashMap;

mod any;
mod onnx_dir;
#[cfg(feature = "ort")]
pub mod ort;
#[cfg(feature = "ort")]
pub mod ort_probe;
#[cfg(feature = "ort")]
mod ort_weights;
#[cfg(feature = "train")]
pub mod tch;
#[cfg(feature = "tract")]
pub mod tract;

pub use self::any::{Backend, BackendKind, BackendOptions, BackendState, Compute, Device};
pub use onnx_dir::{precision_of, OnnxDir};

/// One named input of a single graph run ([`Backend::run_graph`]).
#[derive(Debug, Clone)]
pub enum GraphInput {
    I64(ArrayD<i64>),
    F32(ArrayD<f32>),
    Bool(ArrayD<bool>),
}

/// The float outputs of a single graph run, by output name.
pub type GraphOutputs = HashMap<String, ArrayD<f32>>;

/// A right-padded batch of encoder inputs (row-major `[batch, len]`).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderInput {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub batch: usize,
    pub len: usize,
}

impl EncoderInput {
    /// Pad token sequences on the right with `pad` to the longest one.
    pub fn from_sequences(seqs: &[Vec<u32>], pad: u32) -> Self {
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            ids.extend(s.iter().map(|&t| t as i64));
            mask.extend(std::iter::repeat_n(1, s.len()));
            ids.extend(std::iter::repeat_n(pad as i64, len - s.len()));
            mask.extend(std::iter::repeat_n(0, len - s.len()));
        }
        EncoderInput {
            ids,
            mask,
            batch: seqs.len(),
            len,
        }
    }
}

/// Next-token logits of every running row, row-major `[rows, vocab]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    pub data: Vec<f32>,
    pub rows: usize,
    pub vocab: usize,
}

impl Logits {
    /// The logits of one row.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.vocab..(r + 1) * self.vocab]
    }
}

/// A T5 encoder-decoder that can be stepped one token at a time.
///
/// The state is a value: `step` consumes it and returns the next one, `select` keeps, reorders or
/// repeats rows (beam expansion and reordering, finished sequences leaving the batch). The layout
/// inside is the backend's own, but every backend holds the same things: the encoder attention
/// mask, the cross-attention keys/values (computed once) and the growing self-attention cache.
pub trait Seq2Seq: Send + Sync {
    type State: Send;

    /// Run the encoder on a batch.
    fn encode(&self, input: &EncoderInput) -> Result<Self::State>;

    /// Feed one token per row (`tokens.len()` == rows of `state`) and return the logits of the
    /// next token for every row, with the state advanced by one position.
    fn step(&self, state: Self::State, tokens: &[i64]) -> Result<(Logits, Self::State)>;

    /// Keep rows `rows` of `state`, in that order (a row may appear more than once).
    fn select(&self, state: Self::State, rows: &[usize]) -> Result<Self::State>;

    /// Join two states into one: the rows of `first`, then the rows of `second` (the inverse of
    /// `select`; the continuous batcher adds new questions to a running batch this way). Both
    /// must have taken at least one `step`. They may be at different positions: the shorter
    /// self-attention cache is padded on the left and masked out (T5's relative position bias
    /// depends only on the distance from query to key, so the padding changes no logit), and the
    /// shorter encoder output on the right, masked by the encoder mask. States at different
    /// positions fail unless [`joins_any_position`](Self::joins_any_position).
    fn concat(&self, first: Self::State, second: Self::State) -> Result<Self::State> {
        let _ = (first, second);
        Err(crate::error::Error::input(
            "decoding state",
            format!("{} cannot join decoding states yet", self.describe()),
        ))
    }

    /// Whether [`concat`](Self::concat) joins states at different positions (the decoder takes a
    /// self-attention mask: cbqa's own exports and the tch model); an optimum export only joins
    /// states at the same position.
    fn joins_any_position(&self) -> bool {
        false
    }

    /// Number of rows in `state`.
    fn rows(&self, state: &Self::State) -> usize;

    /// A short description for reports (backend, device, threads).
    fn describe(&self) -> String;
}

/// Whether selecting `rows` from `n` rows keeps the state as it is (no copy needed).
pub(crate) fn is_identity(rows: &[usize], n: usize) -> bool {
    rows.len() == n && rows.iter().enumerate().all(|(i, &r)| i == r)
}

/// `tokens` must hold one token per row of the state.
pub(crate) fn check_tokens(tokens: &[i64], rows: usize) -> Result<()> {
    if tokens.len() == rows {
        return Ok(());
    }
    Err(crate::error::Error::input(
        "tokens",
        format!("{} tokens for {rows} rows", tokens.len()),
    ))
}

/// Every row in `rows` must be a row of the state.
pub(crate) fn check_rows(rows: &[usize], n: usize) -> Result<()> {
    match rows.iter().find(|&&r| r >= n) {
        Some(bad) => Err(crate::error::Error::input(
            "rows",
            format!("row {bad} selected from {n} rows"),
        )),
        None => Ok(()),
    }
}

/// Gather rows of a row-major tensor whose first axis is the batch: `data` has `rows * stride`
/// elements.
pub(crate) fn gather_rows<T: Copy>(data: &[T], stride: usize, rows: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(rows.len() * stride);
    for &r in rows {
        out.extend_from_slice(&data[r * stride..(r + 1) * stride]);
    }
    out
}

/// The logits of the last position of every row, from a `[rows, steps, vocab]` output of the
/// graph file `graph`.
pub(crate) fn last_position(
    graph: &std::path::Path,
    shape: &[usize],
    data: &[f32],
    rows: usize,
    vocab: usize,
) -> Result<Logits> {
    let bad = |msg: String| crate::error::Error::Tensor {
        path: graph.to_path_buf(),
        name: crate::onnx::layout::LOGITS.into(),
        msg,
    };
    if shape.last() != Some(&vocab) || shape.first() != Some(&rows) {
        return Err(bad(format!(
            "logits of shape {shape:?}, expected [{rows}, steps, {vocab}] (vocab_size from config.json)"
        )));
    }
    let steps = data.len().checked_div(rows * vocab).unwrap_or(0);
    if steps == 0 || steps * rows * vocab != data.len() {
        return Err(bad(format!(
            "logits of shape {shape:?} hold {} values",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(rows * vocab);
    for r in 0..rows {
        let start = (r * steps + steps - 1) * vocab;
        out.extend_from_slice(&data[start..start + vocab]);
    }
    Ok(Logits {
        data: out,
        rows,
        vocab,
    })
}
