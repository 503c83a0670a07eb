//! Everything `cbqa train` needs, resolved once from the command line (the library never sees
//! clap). Saved as `run.json` in the run directory so `--resume` continues with the same settings.

use super::batching::AnswerChoice;
use super::mixture::MixingRates;
use super::recipe::RecipeChoice;
use crate::pretrain::PretrainSettings;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The optimizer to fine-tune with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerChoice {
    /// AdaFactor with the paper's settings (constant lr, factored moments, clipping 1.0).
    Adafactor,
    /// AdamW with torch's defaults.
    Adamw,
}

/// Numeric precision of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    /// bf16 matmuls with fp32 parameters, optimizer state, softmax, layer-norm statistics and
    /// residual stream (what autocast does), on any device; T5 was trained in bf16.
    Bf16,
}

/// A further QA training file of a mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSource {
    pub path: PathBuf,
    /// Put before its questions; `None`: the paper's prefix for the file's benchmark
    /// (`nq question: `, `trivia_qa question: `, `wq question: `; none for another file).
    pub prefix: Option<String>,
}

/// The settings of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// The model directory to start from (Hugging Face layout).
    pub model: PathBuf,
    /// Training data (NQ-open JSON lines).
    pub train: PathBuf,
    /// Dev data for exact match during training.
    pub dev: Option<PathBuf>,
    /// The run directory.
    pub out: PathBuf,
    /// Prepended to every question (e.g. `nq question: `).
    pub prefix: String,
    pub answer: AnswerChoice,
    pub optimizer: OptimizerChoice,
    pub lr: f64,
    /// Token budget of one optimizer step (input + target tokens).
    pub batch_tokens: usize,
    /// Padded tokens that fit in memory at once; an effective batch is accumulated over
    /// micro-batches of at most this size.
    pub micro_batch_tokens: usize,
    pub max_steps: Option<u64>,
    pub epochs: Option<u64>,
    /// Dropout rate used in training (overrides config.json's `dropout_rate`).
    pub dropout: f64,
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub precision: Precision,
    /// Evaluate on the dev set every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Write a checkpoint every this many steps (0: only at the end, on SIGINT/SIGTERM, at new
    /// bests and on the time cadence).
    pub save_every: u64,
    /// Also write a checkpoint after a step that ends this many minutes after the last one (or
    /// the start), so a SIGKILL loses at most that much work (0: no time cadence). Runs from
    /// before this setting existed get the default.
    #[serde(default = "default_save_every_minutes")]
    pub save_every_minutes: f64,
    /// Dev questions decoded at once.
    pub eval_batch_size: usize,
    /// Longest answer generated on the dev set, in tokens.
    pub eval_max_new_tokens: usize,
    /// Only the first N dev questions are evaluated (None: all).
    pub eval_limit: Option<usize>,
    pub max_input_len: usize,
    pub max_target_len: usize,
    /// Skip malformed data lines (reported) instead of stopping.
    pub skip_bad: bool,
    /// libtorch intra-op threads (None: libtorch's default).
    pub threads: Option<usize>,
    /// Print a progress line every this many steps when stderr is not a terminal.
    pub log_every: u64,
    /// Further training files, mixed with `train` by seqio's examples-proportional rates. In a
    /// mixture an empty `prefix` means the paper's prefix for `train`'s benchmark.
    #[serde(default)]
    pub mixture: Vec<TrainSource>,
    /// The rates of a mixture.
    #[serde(default)]
    pub mixing: MixingRates,
    /// Pre-train on this corpus instead of QA pairs (`cbqa pretrain`; `train` is then unused).
    #[serde(default)]
    pub pretrain: Option<PretrainSettings>,
    /// The preset the optimizer, lr, batch and dropout came from, with why (`--recipe`).
    #[serde(default)]
    pub recipe: Option<RecipeChoice>,
}

/// Ten minutes: at most that much training is lost to a SIGKILL or a power cut.
fn default_save_every_minutes() -> f64 {
    10.0
}

impl TrainSettings {
    /// Defaults of the paper where it has them (AdaFactor, lr 1e-3, 196,608-token batches,
    /// dropout 0.1, first answer), for `model`, `train` and `out`.
    pub fn new(model: PathBuf, train: PathBuf, out: PathBuf) -> Self {
        TrainSettings {
            model,
            train,
            dev: None,
            out,
            prefix: String::new(),
            answer: AnswerChoice::First,
            optimizer: OptimizerChoice::Adafactor,
            lr: 1e-3,
            batch_tokens: 196_608,
            micro_batch_tokens: 16_384,
            max_steps: None,
            epochs: None,
            dropout: 0.1,
            seed: 0,
            device: "auto".into(),
            precision: Precision::Fp32,
            eval_every: 0,
            save_every: 0,
            save_every_minutes: default_save_every_minutes(),
            eval_batch_size: 64,
            eval_max_new_tokens: 32,
            eval_limit: None,
            max_input_len: 512,
            max_target_len: 128,
            skip_bad: false,
            threads: None,
            log_every: 10,
            mixture: Vec::new(),
            mixing: MixingRates::default(),
            pretrain: None,
            recipe: None,
        }
    }
}
