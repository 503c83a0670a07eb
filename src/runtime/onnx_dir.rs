//! An exported model directory in optimum's seq2seq layout (ours, or optimum's own export).

use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::model_dir::GenerationConfig;
use crate::onnx::layout::{
    IoNames, DECODER_WITH_PAST, DECODER_WITH_PAST_MASKED, GRAPHS, METADATA_FILE,
};
use std::path::{Path, PathBuf};

/// The files of an ONNX export: three graphs plus config, generation config and tokenizer.
#[derive(Debug)]
pub struct OnnxDir {
    pub dir: PathBuf,
    pub config: T5Config,
    pub generation: GenerationConfig,
    pub tokenizer: tokenizers::Tokenizer,
}

/// Check that the graph in `file` has the `inputs` and `outputs` optimum's seq2seq layout names;
/// the first one missing is an error naming the file and the tensor.
pub(crate) fn check_io(
    file: &Path,
    inputs: &[String],
    outputs: &[String],
    has_input: impl Fn(&str) -> bool,
    has_output: impl Fn(&str) -> bool,
) -> Result<()> {
    let check = |names: &[String], has: &dyn Fn(&str) -> bool, what: &str| match names
        .iter()
        .find(|n| !has(n))
    {
        Some(n) => Err(Error::Tensor {
            path: file.to_path_buf(),
            name: n.clone(),
            msg: format!("{what} missing from the graph (expected optimum's seq2seq names)"),
        }),
        None => Ok(()),
    };
    check(inputs, &has_input, "input")?;
    check(outputs, &has_output, "output")
}

impl OnnxDir {
    /// Open and check an export directory.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                msg: format!(
                    "not a directory (expected an ONNX export: {}, config.json, tokenizer.json)",
                    GRAPHS.join(", ")
                ),
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
        // tokenizer.json, or spiece.model (+ tokenizer_config.json) as the paper's checkpoints ship
        let (tokenizer, _) = crate::tokenizer::load_dir(dir)?;
        Ok(OnnxDir {
            dir: dir.to_path_buf(),
            config,
            generation,
            tokenizer,
        })
    }

    /// The weight precision recorded by `cbqa export` in `cbqa_export.json` (fp32 otherwise,
    /// e.g. for optimum's exports).
    pub fn precision(&self) -> String {
        precision_of(&self.dir)
    }

    /// The graph of every decoding step after the first, and its (inputs, outputs):
    /// `decoder_with_past_masked_model.onnx` where the export has it (cbqa's exports: it takes
    /// the self-attention key mask, so decoding states at any position can be joined), else
    /// `decoder_with_past_model.onnx` (optimum's exports). The runtimes open one of the two.
    pub(crate) fn step_graph(&self, names: &IoNames) -> (&'static str, (Vec<String>, Vec<String>)) {
        match self.graph(DECODER_WITH_PAST_MASKED).is_file() {
            true => (DECODER_WITH_PAST_MASKED, names.decoder_with_past_masked()),
            false => (DECODER_WITH_PAST, names.decoder_with_past()),
        }
    }

    /// Path of one of the graphs.
    pub fn graph(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The precision an export directory records (see [`OnnxDir::precision`]).
pub fn precision_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(METADATA_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("precision")
                .and_then(|p| p.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "fp32".into())
}
