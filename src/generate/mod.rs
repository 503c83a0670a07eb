//! Decoding written once over [`Seq2Seq`]: greedy and beam search with the exact semantics of
//! transformers' `generate` (4.57: `_sample` with `do_sample=False`, and the vectorised
//! `_beam_search`), plus length-sorted batching under a token budget.
//!
//! Sequences that finish leave the running batch (their rows are dropped from the backend state),
//! so a batch costs what its unfinished rows cost.

mod batch;
mod beam;
mod greedy;

pub use batch::{encode_questions, plan_batches, run_batches, BatchPolicy, OnBatch, Prepared};
pub use beam::beam_search;
pub use greedy::greedy;

use crate::error::{Error, Result};
use crate::runtime::{EncoderInput, Seq2Seq};

/// When beam search stops for a question (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop as soon as `num_beams` hypotheses are finished (`early_stopping=True`).
    True,
    /// Stop when the best running beam cannot beat the worst finished one at the current length
    /// (`early_stopping=False`, transformers' default heuristic).
    #[default]
    False,
    /// Canonical beam search: only stop when no better hypothesis is possible (`"never"`).
    Never,
}

/// Decoding settings; the defaults are transformers' for T5.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// EOS is suppressed until this many tokens were generated (transformers'
    /// `MinNewTokensLengthLogitsProcessor`); `min = max` forces exactly that many steps.
    pub min_new_tokens: usize,
    pub num_beams: usize,
    pub num_return_sequences: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    pub decoder_start_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    /// Greedy decoding: also compute each answer's log-probability (a log-sum-exp over the
    /// vocabulary per token, ~10% of a t5-small step on 2 cores). Beam search always scores.
    pub output_scores: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            min_new_tokens: 0,
            num_beams: 1,
            num_return_sequences: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
            decoder_start_token_id: 0,
            eos_token_id: 1,
            pad_token_id: 0,
            output_scores: true,
        }
    }
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated token ids, without the decoder start token; ends with EOS when the model ended it.
    pub tokens: Vec<u32>,
    /// Beam search: the sum of token log-probabilities divided by `length ** length_penalty`
    /// (transformers' `sequences_scores`). Greedy: the sum of token log-probabilities (0 when
    /// [`GenerateOptions::output_scores`] is off).
    pub score: f32,
}

impl GenerateOptions {
    fn check(&self) -> Result<()> {
        if self.num_beams == 0 || self.max_new_tokens == 0 {
            return Err(Error::Invalid(
                "num_beams and max_new_tokens must be positive".into(),
            ));
        }
        if self.num_return_sequences == 0 || self.num_return_sequences > self.num_beams.max(1) {
            return Err(Error::Invalid(format!(
                "num_return_sequences ({}) must be between 1 and num_beams ({})",
                self.num_return_sequences, self.num_beams
            )));
        }
        Ok(())
    }
}

/// Generate for one padded batch: greedy when `num_beams == 1`, beam search otherwise.
/// Returns, per input row, up to `num_return_sequences` hypotheses (best first).
pub fn generate<B: Seq2Seq>(
    backend: &B,
    input: &EncoderInput,
    opts: &GenerateOptions,
) -> Result<Vec<Vec<Hypothesis>>> {
    opts.check()?;
    if opts.num_beams == 1 {
        Ok(greedy(backend, input, opts)?
            .into_iter()
            .map(|h| vec![h])
            .collect())
    } else {
        beam_search(backend, input, opts)
    }
}

/// `log_softmax` of one row, in f32 like transformers (which upcasts logits to f32 first).
pub(crate) fn log_softmax(row: &[f32], out: &mut Vec<f32>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    out.clear();
    out.extend(row.iter().map(|&x| x - lse));
}
