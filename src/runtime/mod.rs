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
mod ort_cache;
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
    ///
    /// `select` then drops the leading cache columns that are padding in every row it keeps, so
    /// the cache does not grow without bound as rows come and go.
    fn concat(&self, first: Self::State, second: Self::State) -> Result<Self::State>;

    /// Whether [`concat`](Self::concat) joins states at different positions (the decoder takes a
    /// self-attention mask: cbqa's own exports and the tch model); an optimum export only joins
    /// states at the same position.
    fn joins_any_position(&self) -> bool;

    /// Number of rows in `state`.
    fn rows(&self, state: &Self::State) -> usize;

    /// A short description for reports (backend, device, threads).
    fn describe(&self) -> String;
}

/// Host-side bookkeeping of a decoding state's self-attention cache, shared by the backends:
/// its length (padding included) and, per row, how many leading cache columns are padding
/// (zeros that a joined state carries, masked out in self-attention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachePadding {
    /// Cache length: the positions decoded so far by the longest-running row.
    pub len: usize,
    /// Per row, the leading cache columns that are padding.
    pub pads: Vec<usize>,
}

/// How [`CachePadding::join`] pads the two caches it joins: zero columns added on the left of
/// each one's self-attention cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinPads {
    pub first: usize,
    pub second: usize,
}

impl CachePadding {
    /// A fresh state of `rows` rows: no cache yet.
    pub fn new(rows: usize) -> Self {
        CachePadding {
            len: 0,
            pads: vec![0; rows],
        }
    }

    /// Whether some row has padding (the decoder then needs the self-attention mask).
    #[cfg_attr(not(feature = "train"), allow(dead_code))]
    pub fn padded(&self) -> bool {
        self.pads.iter().any(|&p| p > 0)
    }

    /// One more position in every row.
    pub fn stepped(self) -> Self {
        CachePadding {
            len: self.len + 1,
            pads: self.pads,
        }
    }

    /// The self-attention key mask of the next step, row-major `[rows, len + 1]`: each row's
    /// padding 0, its real positions and the new one 1.
    pub fn next_mask(&self) -> Vec<i64> {
        self.mask(self.len + 1)
    }

    /// The mask of the cache itself, row-major `[rows, len]`.
    #[cfg_attr(not(feature = "train"), allow(dead_code))]
    pub fn cache_mask(&self) -> Vec<i64> {
        self.mask(self.len)
    }

    /// Row-major `[rows, cols]`: each row's padding 0, then 1.
    fn mask(&self, cols: usize) -> Vec<i64> {
        let mut mask = Vec::with_capacity(self.pads.len() * cols);
        for &pad in &self.pads {
            mask.extend(std::iter::repeat_n(0, pad));
            mask.extend(std::iter::repeat_n(1, cols - pad));
        }
        mask
    }

    /// Keep rows `rows` (checked by [`check_rows`]); returns the new bookkeeping and the number
    /// of leading columns that are padding in every kept row, which the caller trims from the
    /// cache (they are already dropped from the returned bookkeeping).
    pub fn select(&self, rows: &[usize]) -> (Self, usize) {
        let pads: Vec<usize> = rows.iter().map(|&r| self.pads[r]).collect();
        let trim = pads.iter().copied().min().unwrap_or(0);
        let kept = CachePadding {
            len: self.len - trim,
            pads: pads.into_iter().map(|p| p - trim).collect(),
        };
        (kept, trim)
    }

    /// The rows of `self` then those of `other`, both caches padded on the left to the longer.
    pub fn join(&self, other: &Self) -> (Self, JoinPads) {
        let len = self.len.max(other.len);
        let pad = JoinPads {
            first: len - self.len,
            second: len - other.len,
        };
        let pads = (self.pads.iter().map(|p| p + pad.first))
            .chain(other.pads.iter().map(|p| p + pad.second))
            .collect();
        (CachePadding { len, pads }, pad)
    }
}

/// Whether two states can be joined: both have taken a step, and they are at the same
/// position unless the backend's decoder takes the self-attention mask (`any_position`).
/// `export` names the export directory in the error.
pub(crate) fn check_join(
    first: &CachePadding,
    second: &CachePadding,
    any_position: bool,
    export: &std::path::Path,
) -> Result<()> {
    if first.len == 0 || second.len == 0 {
        return Err(crate::error::Error::input(
            "decoding state",
            "only states that have taken at least one step can be joined (the first step \
             computes the cross-attention keys and values)",
        ));
    }
    if first.len != second.len && !any_position {
        return Err(crate::error::Error::Checkpoint {
            path: export.to_path_buf(),
            msg: format!(
                "cannot join decoding states at positions {} and {}: this export has no {} \
                 (the decoder with a self-attention mask; optimum's exports and cbqa's before it \
                 do not), so only states at the same position join; re-export the model with \
                 `cbqa export` to join at any position",
                first.len,
                second.len,
                crate::onnx::layout::DECODER_WITH_PAST_MASKED
            ),
        });
    }
    Ok(())
}

/// The joined encoder length of two states and the zero columns each one's encoder output (or
/// cross-attention keys/values, and encoder mask) gets on the right.
pub(crate) fn encoder_join(first: usize, second: usize) -> (usize, JoinPads) {
    let len = first.max(second);
    (
        len,
        JoinPads {
            first: len - first,
            second: len - second,
        },
    )
}

/// `threads`, or for 0 the cores this process may run on.
pub(crate) fn threads_or_cores(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_padding_joins_masks_and_trims() {
        let a = CachePadding::new(2).stepped().stepped().stepped(); // 2 rows at position 3
        let b = CachePadding::new(1).stepped(); // 1 row at position 1
        let (j, pads) = a.join(&b);
        assert_eq!(
            pads,
            JoinPads {
                first: 0,
                second: 2
            }
        );
        assert_eq!(j.len, 3);
        assert_eq!(j.pads, [0, 0, 2]);
        assert_eq!(j.next_mask(), [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1]);
        let j = j.stepped();
        // Only the joined row stays: its two padding columns are trimmed.
        let (kept, trim) = j.select(&[2, 2]);
        assert_eq!(trim, 2);
        assert_eq!(
            kept,
            CachePadding {
                len: 2,
                pads: vec![0, 0]
            }
        );
        assert!(!kept.padded());
        // A long row kept with it: nothing to trim.
        let (kept, trim) = j.select(&[2, 0]);
        assert_eq!((trim, kept.len, kept.pads), (0, 4, vec![2, 0]));
    }

    #[test]
    fn joining_checks_steps_and_positions() {
        let dir = std::path::Path::new("/exports/t5");
        let a = CachePadding::new(1).stepped();
        let b = CachePadding::new(1).stepped().stepped();
        assert!(check_join(&a, &a, false, dir).is_ok());
        assert!(check_join(&a, &b, true, dir).is_ok());
        let e = check_join(&a, &b, false, dir).unwrap_err().to_string();
        assert!(
            e.contains("/exports/t5")
                && e.contains("positions 1 and 2")
                && e.contains("cbqa export"),
            "{e}"
        );
        let e = check_join(&CachePadding::new(1), &a, true, dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one step"), "{e}");
        assert_eq!(
            encoder_join(5, 7),
            (
                7,
                JoinPads {
                    first: 2,
                    second: 0
                }
            )
        );
    }
}
