//! Decoding written once over [`Seq2Seq`]: greedy and beam search with the exact semantics of
//! transformers' `generate` (4.57: `_sample` with `do_sample=False`, and the vectorised
//! `_beam_search`), plus length-sorted batching under a token budget.
//!
//! Sequences that finish leave the running batch (their rows are dropped from the backend state),
//! so a batch costs what its unfinished rows cost; new questions can join it ([`Stream`]).

mod batch;
mod beam;
mod greedy;
mod stream;

pub use batch::{encode_questions, plan_batches, run_batches, BatchPolicy, OnBatch, Prepared};
pub use stream::{Finished, Stream};

use crate::error::{Error, Result};
use crate::runtime::{EncoderInput, Seq2Seq};
use crate::{GenerationConfig, T5Config};

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
    /// The one check of these settings: at least one beam and one new token, and between 1 and
    /// `num_beams` returned sequences.
    pub fn check(&self) -> Result<()> {
        if self.num_beams == 0 {
            return Err(Error::setting("num_beams", "must be at least 1"));
        }
        if self.max_new_tokens == 0 {
            return Err(Error::setting("max_new_tokens", "must be at least 1"));
        }
        if self.num_return_sequences == 0 || self.num_return_sequences > self.num_beams {
            return Err(Error::setting(
                "num_return_sequences",
                format!(
                    "{} requested; must be between 1 and the number of beams ({})",
                    self.num_return_sequences, self.num_beams
                ),
            ));
        }
        Ok(())
    }

    /// These settings with what the model's directory says: the special token ids of its
    /// generation_config.json (else of its config.json), and the `early_stopping` of its
    /// generation_config.json when it has one, as transformers' `generate` takes them.
    pub fn for_model(self, generation: &GenerationConfig, config: &T5Config) -> Result<Self> {
        let early_stopping = match generation.extra.get("early_stopping") {
            Some(value) => EarlyStopping::from_json(value)?,
            None => self.early_stopping,
        };
        Ok(GenerateOptions {
            decoder_start_token_id: generation
                .decoder_start_token_id
                .unwrap_or_else(|| config.decoder_start_id()),
            eos_token_id: generation.eos_token_id.unwrap_or_else(|| config.eos_id()),
            pad_token_id: generation.pad_token_id.unwrap_or_else(|| config.pad_id()),
            early_stopping,
            ..self
        })
    }
}

impl EarlyStopping {
    /// transformers' spelling in generation_config.json: `true`, `false` or `"never"`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        match value {
            serde_json::Value::Bool(true) => Ok(EarlyStopping::True),
            serde_json::Value::Bool(false) => Ok(EarlyStopping::False),
            serde_json::Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
            other => Err(Error::setting(
                "early_stopping",
                format!("generation_config.json has {other}; expected true, false or \"never\""),
            )),
        }
    }
}

/// Generate for one padded batch: greedy when `num_beams == 1`, beam search otherwise.
/// Returns, per input row, up to `num_return_sequences` hypotheses (best first).
pub fn generate<B: Seq2Seq>(
    backend: &B,
    input: &EncoderInput,
    opts: &GenerateOptions,
) -> Result<Vec<Vec<Hypothesis>>> {
    stream::run(backend, input, opts)
}

/// `log_softmax` of one row, in f32 like transformers (which upcasts logits to f32 first).
pub(crate) fn log_softmax(row: &[f32], out: &mut Vec<f32>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    out.clear();
    out.extend(row.iter().map(|&x| x - lse));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_is_transformers_default_unless_the_model_says_otherwise() {
        let config = T5Config::preset("tiny").unwrap();
        let mut generation = GenerationConfig::from_model_config(&config);
        let opts = GenerateOptions::default();
        assert_eq!(opts.early_stopping, EarlyStopping::False);
        let resolved = opts.clone().for_model(&generation, &config).unwrap();
        assert_eq!(resolved.early_stopping, EarlyStopping::False);
        assert_eq!(resolved.eos_token_id, config.eos_id());
        for (value, want) in [
            (serde_json::json!(true), EarlyStopping::True),
            (serde_json::json!("never"), EarlyStopping::Never),
        ] {
            generation.extra.insert("early_stopping".into(), value);
            let resolved = opts.clone().for_model(&generation, &config).unwrap();
            assert_eq!(resolved.early_stopping, want);
        }
        generation
            .extra
            .insert("early_stopping".into(), serde_json::json!(3));
        assert!(opts.for_model(&generation, &config).is_err());
    }

    #[test]
    fn check_names_the_setting() {
        let setting = |opts: GenerateOptions| match opts.check() {
            Err(Error::Setting { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        let beams = |n| GenerateOptions {
            num_beams: n,
            ..GenerateOptions::default()
        };
        assert_eq!(setting(beams(0)), "num_beams");
        let too_many = GenerateOptions {
            num_return_sequences: 3,
            ..beams(2)
        };
        assert_eq!(setting(too_many), "num_return_sequences");
        assert!(beams(4).check().is_ok());
    }
}
