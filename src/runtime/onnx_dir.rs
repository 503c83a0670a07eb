//! An exported model directory in optimum's seq2seq layout (ours, or optimum's own export).

use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::model_dir::GenerationConfig;
use std::path::{Path, PathBuf};

/// The files of an ONNX export: three graphs plus config, generation config and tokenizer.
#[derive(Debug)]
pub struct OnnxDir {
    pub dir: PathBuf,
    pub config: T5Config,
    pub generation: GenerationConfig,
    pub tokenizer: tokenizers::Tokenizer,
}

/// The graph files every export must have (optimum's unmerged layout).
pub const GRAPHS: [&str; 3] = [
    "encoder_model.onnx",
    "decoder_model.onnx",
    "decoder_with_past_model.onnx",
];

impl OnnxDir {
    /// Open and check an export directory.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                msg: "not a directory (expected an ONNX export: encoder_model.onnx, \
                      decoder_model.onnx, decoder_with_past_model.onnx, config.json, tokenizer.json)"
                    .into(),
            });
        }
        for g in GRAPHS {
            if !dir.join(g).is_file() {
                return Err(Error::Checkpoint {
                    path: dir.join(g),
                    msg: "missing (an ONNX export in optimum's layout needs the encoder, decoder and \
                          decoder-with-past graphs; `cbqa export` writes them)"
                        .into(),
                });
            }
        }
        let config = T5Config::from_file(&dir.join("config.json"))?;
        let gen_path = dir.join("generation_config.json");
        let generation = if gen_path.is_file() {
            GenerationConfig::from_file(&gen_path)?
        } else {
            GenerationConfig::from_model_config(&config)
        };
        let tokenizer = crate::tokenizer::load(&dir.join("tokenizer.json"))?;
        Ok(OnnxDir {
            dir: dir.to_path_buf(),
            config,
            generation,
            tokenizer,
        })
    }

    /// Path of one of the graphs.
    pub fn graph(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Input/output names of optimum's decoder graphs for layer `i`.
pub(crate) fn past_name(i: usize, part: &str, kv: &str) -> String {
    format!("past_key_values.{i}.{part}.{kv}")
}

/// Output names of the present cache for layer `i`.
pub(crate) fn present_name(i: usize, part: &str, kv: &str) -> String {
    format!("present.{i}.{part}.{kv}")
}
