//! The run directory and its checkpoints.
//!
//! ```text
//! RUN/run.json                 the settings (what --resume continues with)
//! RUN/state.json               {"last": "checkpoint-N", "best": "checkpoint-M", "best_em": ...,
//!                              "best_dev_loss": {"step": K, "dev_loss": ...}}
//! RUN/best/                    with a dev set: the checkpoint of the lowest dev loss so far
//!                              (step K; its cbqa_training.json says so), outside the rotation
//! RUN/train_log.csv            step, epoch, loss, lr, tokens/s, dev EM, elapsed
//! RUN/train_examples.bin       a pre-training corpus's token ids (`super::store`), rewritten
//!                              by every invocation
//! RUN/checkpoint-N/            a Hugging Face model directory (config.json, model.safetensors,
//!                              tokenizer.json, generation_config.json) that transformers loads,
//!                              plus optimizer.safetensors, trainer_state.json and
//!                              cbqa_training.json (settings, recipe, eval prefixes)
//! ```
//!
//! A checkpoint is built in a temporary sibling directory and renamed into place (`best/` too,
//! from the checkpoint of its step); `state.json` is replaced atomically after that, so a crash
//! at any moment leaves the previous checkpoint valid and a kill loses at most the steps since
//! the last checkpoint. A new best dev loss always writes a checkpoint, so the last checkpoint's
//! `trainer_state.json` knows the best so far when the run resumes.

use super::optim::Optimizer;
use super::settings::{OptimizerChoice, TrainSettings};
use crate::data::Benchmark;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, OutputDir};
use crate::model::{tensor_to_owned, T5};
use crate::model_dir::{EvalPrefixes, GenerationConfig, TRAINING_FILE};
use crate::pretrain::span_corruption::MaskDraw;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Where the trainer is: enough to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: u64,
    /// The epoch being trained (its order is recomputed from the seed).
    pub epoch: u64,
    /// Index of the next effective batch within the epoch.
    pub next_batch: usize,
    /// Real tokens trained on so far.
    pub tokens_seen: u64,
    pub best_em: Option<f64>,
    pub best_step: Option<u64>,
    pub optimizer: OptimizerChoice,
    pub seed: u64,
    /// The lowest dev loss so far and its step (the checkpoint in `RUN/best`).
    #[serde(default)]
    pub best_dev_loss: Option<BestDevLoss>,
}

/// The step of the lowest dev loss of a run, and that loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestDevLoss {
    pub step: u64,
    pub dev_loss: f64,
}

/// `RUN/best`: the checkpoint of the lowest dev loss ([`BestDevLoss`]).
pub const BEST_DIR: &str = "best";

/// `RUN/state.json`: which checkpoints are the last and the best.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub last: String,
    pub best: Option<String>,
    pub best_em: Option<f64>,
    /// The checkpoint in [`BEST_DIR`] (runs before it existed: none).
    #[serde(default)]
    pub best_dev_loss: Option<BestDevLoss>,
}

/// Files copied verbatim into every checkpoint (tokenizer.json and transformers' tokenizer
/// side files when the model directory has them).
pub(crate) const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

pub(crate) fn read_tokenizer_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in TOKENIZER_FILES {
        let p = dir.join(name);
        if p.exists() {
            out.push((
                name.to_string(),
                std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?,
            ));
        }
    }
    Ok(out)
}

/// `checkpoint-N/cbqa_training.json` ([`crate::model_dir::TRAINING_FILE`]): the settings that
/// trained the checkpoint (the recipe's choice with why, when one was used) and the question
/// prefixes evaluation should use (`cbqa export` carries them on; `cbqa eval`/`predict`/`serve`
/// and the Python `Answerer` default to them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub optimizer: OptimizerChoice,
    pub lr: f64,
    pub batch_tokens: usize,
    pub dropout: f64,
    /// The pre-training objective (`None`: fine-tuned on QA pairs).
    pub objective: Option<crate::pretrain::Objective>,
    /// Span corruption: whether the masks were drawn anew every epoch or once.
    #[serde(default)]
    pub span_masks: Option<MaskDraw>,
    pub recipe: Option<super::recipe::RecipeChoice>,
    /// `None` for pre-training, which puts no prefix before questions.
    pub eval_prefixes: Option<EvalPrefixes>,
    /// In `RUN/best` only: this checkpoint is the run's lowest dev loss, at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_dev_loss: Option<BestDevLoss>,
}

impl TrainingRecord {
    /// The record of a run of `s` whose QA sources have these (benchmark, prefix) pairs.
    pub fn new(s: &TrainSettings, prefixes: &[(Benchmark, String)]) -> Self {
        let eval_prefixes = prefixes.first().map(|(_, first)| EvalPrefixes {
            default: first.clone(),
            by_benchmark: prefixes
                .iter()
                .filter_map(|(b, p)| Some((b.task_name()?.to_string(), p.clone())))
                .collect(),
        });
        TrainingRecord {
            optimizer: s.optimizer,
            lr: s.lr,
            batch_tokens: s.batch_tokens,
            dropout: s.dropout,
            objective: s.pretrain.as_ref().map(|p| p.objective),
            span_masks: s
                .pretrain
                .as_ref()
                .filter(|p| p.objective == crate::pretrain::Objective::SpanCorruption)
                .map(|p| p.masks),
            recipe: s.recipe.clone(),
            eval_prefixes,
            best_dev_loss: None,
        }
    }

    /// One line for the start of a run: the settings, and the recipe's reasons.
    pub fn describe(&self) -> String {
        let masks = match self.span_masks {
            Some(MaskDraw::PerEpoch) => "; span-corruption masks drawn anew every epoch",
            Some(MaskDraw::Fixed) => "; span-corruption masks fixed (the same every epoch)",
            None => "",
        };
        let settings = match &self.recipe {
            Some(r) => format!(
                "recipe {}: {}",
                serde_json::to_value(r.recipe)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                r.settings.join(", ")
            ),
            None => format!(
                "settings: optimizer {:?}, lr {}, batch_tokens {}, dropout {}",
                self.optimizer, self.lr, self.batch_tokens, self.dropout
            ),
        };
        settings + masks
    }
}

/// Everything a checkpoint is written from.
pub(crate) struct CheckpointParts<'a> {
    pub t5: &'a T5,
    pub training: &'a TrainingRecord,
    pub optimizer: &'a dyn Optimizer,
    pub state: &'a TrainerState,
    pub generation: &'a GenerationConfig,
    pub tokenizer_files: &'a [(String, Vec<u8>)],
}

/// Write `v` as pretty JSON to `path`, atomically.
fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// Write `RUN/checkpoint-<step>` atomically and return its path.
pub(crate) fn write_checkpoint(run: &Path, parts: &CheckpointParts<'_>) -> Result<PathBuf> {
    let target = run.join(format!("checkpoint-{}", parts.state.step));
    let out = OutputDir::create(&target, true)?;
    let dir = out.path();
    parts.t5.config.save(dir)?;
    parts.generation.save(dir)?;
    for (name, bytes) in parts.tokenizer_files {
        write_atomic(&dir.join(name), bytes)?;
    }
    parts.t5.save_safetensors(&dir.join("model.safetensors"))?;
    let mut opt = BTreeMap::new();
    for (name, t) in parts.optimizer.state_tensors() {
        opt.insert(name, tensor_to_owned(&t)?);
    }
    crate::checkpoint::save_safetensors(&dir.join("optimizer.safetensors"), &opt)?;
    write_json(&dir.join("trainer_state.json"), parts.state)?;
    write_json(&dir.join(TRAINING_FILE), parts.training)?;
    out.commit()
}

/// Make `RUN/best` the checkpoint `from` of step `best.step`: its files hard-linked (copied
/// where links fail) but the optimizer state, its `cbqa_training.json` saying `best`, built in
/// a temporary sibling and renamed into place, the previous best replaced only then.
pub(crate) fn write_best(
    run: &Path,
    from: &Path,
    training: &TrainingRecord,
    best: BestDevLoss,
) -> Result<PathBuf> {
    let out = OutputDir::create(&run.join(BEST_DIR), true)?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::io("read directory", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", from, e))?;
        let name = entry.file_name();
        if name == "optimizer.safetensors" || name == TRAINING_FILE {
            continue;
        }
        let (src, dst) = (entry.path(), out.path().join(&name));
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| Error::io("copy", &src, e))?;
        }
    }
    let record = TrainingRecord {
        best_dev_loss: Some(best),
        ..training.clone()
    };
    write_json(&out.path().join(TRAINING_FILE), &record)?;
    out.commit()
}

/// Replace `RUN/state.json`, then remove checkpoints that are neither the last nor the best.
pub(crate) fn publish(run: &Path, state: &RunState) -> Result<()> {
    write_json(&run.join("state.json"), state)?;
    let keep: Vec<&str> = std::iter::once(state.last.as_str())
        .chain(state.best.as_deref())
        .collect();
    if let Ok(entries) = std::fs::read_dir(run) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("checkpoint-") && !keep.contains(&name.as_str()) {
                // Best effort: a stale checkpoint left behind is harmless.
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// Write `RUN/run.json`.
pub(crate) fn save_settings(run: &Path, settings: &TrainSettings) -> Result<()> {
    write_json(&run.join("run.json"), settings)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The settings a run was started with (`RUN/run.json`).
pub fn load_settings(run: &Path) -> Result<TrainSettings> {
    let p = run.join("run.json");
    if !p.exists() {
        return Err(Error::Checkpoint {
            path: run.to_path_buf(),
            msg: "no run.json: not a cbqa training run directory".into(),
        });
    }
    read_json(&p)
}

/// The last checkpoint of a run, fully read: never a silent fresh start.
pub(crate) struct Resumed {
    pub dir: PathBuf,
    pub model: crate::ModelDir,
    pub state: TrainerState,
    pub optimizer: HashMap<String, Tensor>,
}

pub(crate) fn load_last(run: &Path, device: Device) -> Result<Resumed> {
    let state_path = run.join("state.json");
    if !state_path.exists() {
        return Err(Error::Checkpoint {
            path: run.to_path_buf(),
            msg: "no state.json: this run has no checkpoint to resume from".into(),
        });
    }
    let rs: RunState = read_json(&state_path)?;
    if rs.last.contains('/') || rs.last.contains("..") {
        return Err(Error::Checkpoint {
            path: state_path,
            msg: format!("\"last\" = {:?} is not a checkpoint name", rs.last),
        });
    }
    let dir = run.join(&rs.last);
    let model = crate::ModelDir::open(&dir)?;
    let state: TrainerState = read_json(&dir.join("trainer_state.json"))?;
    let opt_path = dir.join("optimizer.safetensors");
    let tensors = Tensor::read_safetensors(&opt_path).map_err(|e| Error::Checkpoint {
        path: opt_path.clone(),
        msg: format!("cannot read the optimizer state ({e}); is the checkpoint corrupt?"),
    })?;
    let optimizer = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.f_to_device(device)?)))
        .collect::<Result<_>>()?;
    Ok(Resumed {
        dir,
        model,
        state,
        optimizer,
    })
}
