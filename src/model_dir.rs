//! A model directory in Hugging Face's layout, opened and checked as a whole.

use crate::checkpoint::Weights;
use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::pyjson::to_python_json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// `generation_config.json`, with transformers' keys; other keys are kept verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_beams: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl GenerationConfig {
    /// The generation config transformers derives from a T5 config.
    pub fn from_model_config(cfg: &T5Config) -> Self {
        GenerationConfig {
            decoder_start_token_id: Some(cfg.decoder_start_id()),
            eos_token_id: Some(cfg.eos_id()),
            pad_token_id: Some(cfg.pad_id()),
            max_length: None,
            max_new_tokens: None,
            num_beams: None,
            extra: Map::new(),
        }
    }

    /// Read `generation_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Write it as transformers does (sorted keys, indent 2), atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        crate::fsutil::write_atomic(
            &dir.join("generation_config.json"),
            to_python_json(&v).as_bytes(),
        )
    }
}

/// `dir/config.json`, or where a Mesh-TF checkpoint has none, the config its
/// `operative_config.gin` describes (vocabulary size and tying taken from the checkpoint).
fn read_config(dir: &Path) -> Result<T5Config> {
    let json = dir.join("config.json");
    let gin = dir.join("operative_config.gin");
    if json.exists() || !gin.exists() {
        return T5Config::from_file(&json);
    }
    let Some((vocab_size, separate_logits)) = crate::checkpoint::tf_bundle::vocab_and_logits(dir)?
    else {
        return T5Config::from_file(&json);
    };
    let facts = crate::config::CheckpointFacts {
        vocab_size,
        separate_logits,
    };
    T5Config::from_gin_file(&gin, facts)
}

/// An opened model directory: config, weights, tokenizer and generation config.
pub struct ModelDir {
    pub dir: PathBuf,
    pub config: T5Config,
    pub weights: Weights,
    pub tokenizer: tokenizers::Tokenizer,
    /// The file the tokenizer was read from: `tokenizer.json`, or `spiece.model` when the
    /// directory has no `tokenizer.json`.
    pub tokenizer_file: PathBuf,
    pub generation: GenerationConfig,
}

impl ModelDir {
    /// Open `dir` and check every part: config.json is a T5 config, every tensor the config
    /// implies is present with the right shape and dtype, the tokenizer (`tokenizer.json`, else
    /// `spiece.model`, see [`crate::tokenizer::load_dir`]) has T5's special tokens and fits the
    /// embedding matrix.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                msg: "not a directory (expected a Hugging Face model directory)".into(),
            });
        }
        let config = read_config(dir)?;
        let weights = Weights::open(dir, &config)?;
        let (tokenizer, tok_file) = crate::tokenizer::load_dir(dir)?;
        let tok_path = tok_file.path().to_path_buf();
        let n = tokenizer.get_vocab_size(true);
        if n > config.vocab_size {
            return Err(Error::Tokenizer {
                path: tok_path.clone(),
                msg: format!(
                    "has {n} tokens but config.json's vocab_size is {}",
                    config.vocab_size
                ),
            });
        }
        let gen_path = dir.join("generation_config.json");
        let generation = if gen_path.exists() {
            GenerationConfig::from_file(&gen_path)?
        } else {
            GenerationConfig::from_model_config(&config)
        };
        Ok(ModelDir {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
            tokenizer_file: tok_path,
            generation,
        })
    }
}

/// `cbqa_training.json` in a checkpoint written by `cbqa train`/`cbqa pretrain`: the settings
/// that trained it and the question prefixes it was trained with ([`EvalPrefixes`]).
pub const TRAINING_FILE: &str = "cbqa_training.json";

/// The key of the eval prefixes in an export's `cbqa_export.json` (`cbqa export` copies them
/// from the checkpoint's [`TRAINING_FILE`]).
pub const EVAL_PREFIXES_KEY: &str = "eval_prefixes";

/// The question prefixes a model was fine-tuned with, so evaluation puts the same text before
/// its questions: one per benchmark of the training data, by the paper's task name (`nq`,
/// `trivia_qa`, `wq`; see `data::Benchmark::task_name`), and the default for any other question
/// (the first training file's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalPrefixes {
    pub default: String,
    #[serde(default)]
    pub by_benchmark: std::collections::BTreeMap<String, String>,
}

impl EvalPrefixes {
    /// The prefix for questions of benchmark `task` (`None` or unknown: the default).
    pub fn for_task(&self, task: Option<&str>) -> &str {
        task.and_then(|t| self.by_benchmark.get(t))
            .unwrap_or(&self.default)
    }
}

/// The eval prefixes `dir` records: an export's (`cbqa_export.json`'s `eval_prefixes`), else a
/// checkpoint's (`cbqa_training.json`); `None` when it records none. A file that is there but
/// not JSON is an error naming it.
pub fn stored_prefixes(dir: &Path) -> Result<Option<EvalPrefixes>> {
    for name in [crate::onnx::layout::METADATA_FILE, TRAINING_FILE] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        match v.get(EVAL_PREFIXES_KEY) {
            None | Some(Value::Null) => continue,
            Some(p) => {
                let p = serde_json::from_value(p.clone()).map_err(|source| Error::Json {
                    path: path.clone(),
                    source,
                })?;
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}
