//! `cbqa init`: a new model directory with T5's random initialisation (the standard deviations
//! of [`init_std`], as transformers' `T5PreTrainedModel._init_weights`).

use crate::checkpoint::{save_safetensors, OwnedTensor};
use crate::config::{expected_tensors, init_std, T5Config};
use crate::error::{Error, Result};
use crate::fsutil::OutputDir;
use crate::model_dir::GenerationConfig;
use crate::tokenizer::{self, TrainOptions};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the tokenizer of a new model comes from.
#[derive(Debug, Clone)]
pub enum TokenizerSource {
    /// Copy an existing `tokenizer.json`.
    File(PathBuf),
    /// Train a Unigram tokenizer on the questions and answers of a data file.
    Train {
        data: PathBuf,
        vocab_size: u32,
        extra_ids: u32,
    },
}

/// Everything `cbqa init` needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub config: T5Config,
    pub tokenizer: TokenizerSource,
    pub out: PathBuf,
    pub force: bool,
    pub seed: u64,
}

/// Random weights for `cfg`, deterministic in `seed`, as f32 tensors with HF names.
pub fn random_weights(cfg: &T5Config, seed: u64) -> Result<BTreeMap<String, OwnedTensor>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for spec in expected_tensors(cfg) {
        let n: usize = spec.shape.iter().product();
        let values: Vec<f32> = match init_std(&spec.name, cfg) {
            None => vec![cfg.initializer_factor as f32; n],
            Some(std) => {
                let normal = Normal::new(0.0f32, std as f32).map_err(|e| {
                    Error::setting(
                        "initializer_factor",
                        format!("cannot initialise {} with std {std}: {e}", spec.name),
                    )
                })?;
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            }
        };
        out.insert(spec.name, OwnedTensor::from_f32(spec.shape, &values));
    }
    Ok(out)
}

/// Texts a tokenizer is trained on: every question and answer of a QA file (any format the data
/// readers detect: NQ-open JSON lines, DPR TSV, WebQuestions JSON, ...).
fn training_texts(data: &Path) -> Result<Vec<String>> {
    let ds = crate::data::Dataset::read(data, &crate::data::ReadOptions::for_training())?;
    let mut texts = Vec::with_capacity(ds.len() * 2);
    for ex in ds.examples {
        texts.push(ex.question);
        texts.extend(ex.answers);
    }
    if texts.is_empty() {
        return Err(Error::input(
            data.display().to_string(),
            "no questions to train a tokenizer on",
        ));
    }
    Ok(texts)
}

/// Create the model directory. Nothing is visible at `out` until every file is written.
pub fn init_model(opts: &InitOptions) -> Result<PathBuf> {
    let mut cfg = opts.config.clone();
    let out = OutputDir::create(&opts.out, opts.force)?;
    let tok = match &opts.tokenizer {
        TokenizerSource::File(path) => tokenizer::load(path)?,
        TokenizerSource::Train {
            data,
            vocab_size,
            extra_ids,
        } => {
            let texts = training_texts(data)?;
            let tok = tokenizer::train(
                texts.iter(),
                &TrainOptions {
                    vocab_size: *vocab_size,
                    extra_ids: *extra_ids,
                },
            )?;
            // The embedding matrix is sized to the tokenizer that was trained for it.
            cfg.vocab_size = tok.get_vocab_size(true);
            tok
        }
    };
    let n = tok.get_vocab_size(true);
    if n > cfg.vocab_size {
        return Err(Error::input(
            "tokenizer",
            format!(
                "it has {n} tokens but the config's vocab_size is {}; use a larger vocab_size",
                cfg.vocab_size
            ),
        ));
    }
    cfg.save(out.path())?;
    GenerationConfig::from_model_config(&cfg).save(out.path())?;
    tokenizer::save(&tok, out.path(), 512)?;
    save_safetensors(
        &out.path().join("model.safetensors"),
        &random_weights(&cfg, opts.seed)?,
    )?;
    out.commit()
}
