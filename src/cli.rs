//! The command line (clap derive only). Doc comments are the help text.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Closed-book question answering with T5: create, train, export, evaluate and benchmark models
/// that answer open-domain questions from their parameters alone (Roberts, Raffel & Shazeer 2020).
#[derive(Debug, Parser)]
#[command(name = "cbqa", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new T5 model directory (Hugging Face layout) with random weights and a tokenizer.
    Init(InitArgs),
    /// Open a model directory, check every tensor against its config and print a summary.
    Inspect(InspectArgs),
    /// Fine-tune a T5 for closed-book QA (AdaFactor, token-budget batches, dev exact match),
    /// writing Hugging Face checkpoints; --resume continues an interrupted run exactly.
    #[cfg(feature = "train")]
    Train(Box<TrainArgs>),
    /// Show which native libraries (libtorch, ONNX Runtime, tract) this binary finds and uses.
    Doctor,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Output directory; refused if it exists and is not empty, unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Architecture preset: tiny, t5-small, t5-base, t5-large, t5-3b, t5-11b, t5-v1_1-small,
    /// t5-v1_1-base, t5-v1_1-large, t5-v1_1-xl, t5-v1_1-xxl.
    #[arg(long, default_value = "tiny", conflicts_with = "config")]
    pub preset: String,
    /// A config.json (Hugging Face T5Config keys) instead of a preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Copy this tokenizer.json (must have <pad>=0, </s>=1, <unk>=2).
    #[arg(long, conflicts_with = "train_tokenizer")]
    pub tokenizer: Option<PathBuf>,
    /// Train a Unigram tokenizer on the questions and answers of this JSON-lines file
    /// (NQ-open format: {"question": ..., "answer": [...]}); the model's vocab_size follows it.
    #[arg(long)]
    pub train_tokenizer: Option<PathBuf>,
    /// Vocabulary size of the trained tokenizer, sentinels included.
    #[arg(long, default_value_t = 2048)]
    pub vocab_size: u32,
    /// Number of <extra_id_N> sentinel tokens to add (T5 has 100).
    #[arg(long, default_value_t = 0)]
    pub extra_ids: u32,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace a non-empty --out directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The model directory.
    pub model: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which reference answer is the training target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnswerArg {
    /// The first answer (the paper's default).
    First,
    /// A random answer, drawn again each epoch.
    Random,
}

/// The optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// AdaFactor as in the paper: constant lr, factored second moments, update clipping 1.0,
    /// decay rate -0.8, no momentum, no parameter scaling.
    Adafactor,
    /// AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0.01).
    Adamw,
}

/// Precision of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    Fp32,
    /// bf16 matmuls with fp32 weights, optimizer state and residual stream (as autocast does;
    /// T5 was trained in bf16). Meant for GPUs; works, slowly, on CPUs too.
    Bf16,
}

#[cfg(feature = "train")]
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The model directory to fine-tune (Hugging Face layout, e.g. made by `cbqa init`).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub model: Option<PathBuf>,
    /// Training data: JSON lines {"question": str, "answer": [str, ...]} (NQ-open format).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub train: Option<PathBuf>,
    /// Dev data in the same format; exact match is computed on it with greedy decoding.
    #[arg(long, conflicts_with = "resume")]
    pub dev: Option<PathBuf>,
    /// The run directory (checkpoints, train_log.csv); must not exist or be empty.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its settings
    /// (only --max-steps, --epochs, --device, --threads, --eval-every, --save-every,
    /// --log-every and --micro-batch-tokens may change).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Text put before every question (the paper's T5 inputs look like "nq question: ...").
    #[arg(long, default_value = "", conflicts_with = "resume")]
    pub prefix: String,
    /// Which answer is the target.
    #[arg(long, value_enum, default_value_t = AnswerArg::First, conflicts_with = "resume")]
    pub answer: AnswerArg,
    /// The optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adafactor, conflicts_with = "resume")]
    pub optimizer: OptimizerArg,
    /// Learning rate (constant; the paper used 1e-3 with AdaFactor).
    #[arg(long, default_value_t = 1e-3, conflicts_with = "resume")]
    pub lr: f64,
    /// Tokens (input + target) per optimizer step; the paper used 196,608.
    #[arg(long, default_value_t = 196_608, conflicts_with = "resume")]
    pub batch_tokens: usize,
    /// Padded tokens processed at once; each step accumulates gradients over micro-batches of
    /// this size, so memory does not change the effective batch. [default: 16384]
    #[arg(long)]
    pub micro_batch_tokens: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Stop after this many epochs.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Dropout rate during training.
    #[arg(long, default_value_t = 0.1, conflicts_with = "resume")]
    pub dropout: f64,
    /// Seed of the data order, answer choice and dropout.
    #[arg(long, default_value_t = 0, conflicts_with = "resume")]
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N. Asking for CUDA without a GPU is an error. [default: auto]
    #[arg(long)]
    pub device: Option<String>,
    /// fp32, or bf16 mixed precision.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32, conflicts_with = "resume")]
    pub precision: PrecisionArg,
    /// Dev exact match every N steps (and at the end); 0: only at the end.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Checkpoint every N steps (also at the end, at a new best dev EM and on Ctrl-C).
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Dev questions decoded per batch.
    #[arg(long, default_value_t = 64, conflicts_with = "resume")]
    pub eval_batch_size: usize,
    /// Longest generated dev answer, in tokens.
    #[arg(long, default_value_t = 32, conflicts_with = "resume")]
    pub eval_max_new_tokens: usize,
    /// Evaluate only the first N dev questions.
    #[arg(long, conflicts_with = "resume")]
    pub eval_limit: Option<usize>,
    /// Inputs longer than this (in tokens, </s> included) are truncated.
    #[arg(long, default_value_t = 512, conflicts_with = "resume")]
    pub max_input_len: usize,
    /// Targets longer than this are truncated.
    #[arg(long, default_value_t = 128, conflicts_with = "resume")]
    pub max_target_len: usize,
    /// Skip malformed data lines (each is reported as file:line) instead of stopping.
    #[arg(long, conflicts_with = "resume")]
    pub skip_bad: bool,
    /// libtorch threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Without a terminal, print progress every N steps. [default: 10]
    #[arg(long)]
    pub log_every: Option<u64>,
}
