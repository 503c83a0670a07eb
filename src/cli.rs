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
    /// Export a checkpoint to ONNX in optimum's layout (encoder_model.onnx, decoder_model.onnx,
    /// decoder_with_past_model.onnx), weights stored once, validated in ONNX Runtime and tract.
    Export(ExportArgs),
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

/// Numeric precision of the exported graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    Fp32,
    /// Float16 weights and matmuls; layer norms, softmax, the residual stream and the FFN output
    /// projection (`wo`) stay float32, where T5 overflows float16.
    Fp16,
}

/// Weight quantization of the linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantizeArg {
    None,
    /// Symmetric per-channel int8 weights, dequantized in the graph (DequantizeLinear).
    Int8,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Output directory; refused if it exists and is not empty, unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a non-empty --out directory (only after the new export is complete).
    #[arg(long)]
    pub force: bool,
    /// Skip running the graphs in ONNX Runtime and tract against the reference forward pass.
    #[arg(long)]
    pub no_validate: bool,
    /// Validate with ONNX Runtime only (tract optimizes each graph once per input shape, which
    /// takes a while on large models).
    #[arg(long, conflicts_with = "no_validate")]
    pub no_tract: bool,
    /// Also write decoder_model_merged.onnx (both decoders behind an If on use_cache_branch).
    #[arg(long)]
    pub merged: bool,
    /// Numeric precision of the graphs.
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: PrecisionArg,
    /// Quantize the weights of the linear layers.
    #[arg(long, value_enum, default_value = "none")]
    pub quantize: QuantizeArg,
    /// Seed of the random validation batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}
