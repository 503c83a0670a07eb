//! The command line (clap derive only). Doc comments are the help text.

use cbqa::generate::{BatchPolicy, GenerateOptions};
use cbqa::runtime::BackendOptions;
use cbqa::serve::{Limits, ServeOptions};
use cbqa::AnswererOptions;
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
    /// Fine-tune a T5 for closed-book QA (AdaFactor, token-budget batches, dev exact match),
    /// writing Hugging Face checkpoints; --resume continues an interrupted run exactly.
    #[cfg(feature = "train")]
    Train(Box<TrainArgs>),
    /// Continue pre-training a T5 on a corpus with salient span masking or span corruption (the
    /// paper's recipe), on the same trainer as `cbqa train`; the checkpoints fine-tune with it.
    #[cfg(feature = "train")]
    Pretrain(Box<PretrainArgs>),
    /// Export a checkpoint to ONNX in optimum's layout (encoder_model.onnx, decoder_model.onnx,
    /// decoder_with_past_model.onnx), weights stored once, validated in ONNX Runtime and tract.
    Export(ExportArgs),
    /// Compare any ONNX export in optimum's layout (cbqa's, optimum's, a re-quantized one) with
    /// the reference forward pass of its source checkpoint, on cbqa export's validation batches.
    Validate(ValidateArgs),
    /// Answer questions with an exported model (arguments, or one question per line on stdin).
    Predict(PredictArgs),
    /// Serve answers over HTTP (POST /v1/answer; /health, /ready, /v1/model, /metrics) with one
    /// loaded model, batching concurrent requests; SIGTERM/SIGINT finish the requests in flight.
    Serve(ServeArgs),
    /// Evaluate an exported model on a benchmark file: predictions.csv and metrics.csv.
    Eval(EvalArgs),
    /// Score predictions made by any system against a benchmark file (merges shards).
    Score(ScoreArgs),
    /// Measure throughput across engines, batch sizes and threads; CSV, table and SVG plot.
    Bench(BenchArgs),
    /// Open a model directory, check every tensor against its config and print a summary.
    Inspect(InspectArgs),
    /// Rewrite a model directory (safetensors, pytorch_model.bin or flax_model.msgpack) in
    /// Hugging Face's safetensors layout: model.safetensors, config.json, tokenizer.json, ….
    Convert(ConvertArgs),
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

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The model directory to convert (any weights format `cbqa inspect` reads).
    #[arg(long)]
    pub model: PathBuf,
    /// Output directory; refused if it exists and is not empty, unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a non-empty --out directory (only after the new one is complete).
    #[arg(long)]
    pub force: bool,
}

/// Inference engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// ONNX Runtime (CPU, CUDA, TensorRT).
    Ort,
    /// tract, pure Rust (CPU).
    Tract,
    /// The libtorch model on a Hugging Face checkpoint directory (no export needed).
    #[cfg(feature = "train")]
    Tch,
}

/// How `cbqa serve` batches requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchingArg {
    Continuous,
    Dynamic,
}

/// Matmul precision of the tch backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComputeArg {
    Fp32,
    /// fp32 weights and residual stream, bf16 matmuls.
    Bf16,
}

/// How answers are produced from an exported model.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Inference engine.
    #[arg(long, value_enum, default_value_t = BackendArg::Ort)]
    pub backend: BackendArg,
    /// cpu, cuda[:N] (ort, tch) or tensorrt[:N] (ort). A GPU that cannot be used is an error.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Threads (0: one per core). ONNX Runtime: see --serial-batches; tract: batches decoded at
    /// once, one thread each.
    #[arg(long, default_value_t = BackendOptions::default().threads)]
    pub threads: usize,
    /// ONNX Runtime graph optimisation level, 0 (none) to 3 (all).
    #[arg(long, default_value_t = BackendOptions::default().opt_level,
          value_parser = clap::value_parser!(u8).range(0..=3))]
    pub opt_level: u8,
    /// Let ONNX Runtime fall back to the CPU when a GPU provider fails to register.
    #[arg(long)]
    pub allow_fallback: bool,
    /// TensorRT engine cache directory (default: MODEL/trt-cache).
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
    /// Matmul precision of the tch backend: fp32, or bf16 (fp32 weights, bf16 matmuls, as
    /// `cbqa train --precision bf16`). An export runs in the precision it was exported in.
    #[arg(long, value_enum, default_value_t = ComputeArg::Fp32)]
    pub compute: ComputeArg,
    /// Beam size (1: greedy decoding).
    #[arg(long, default_value_t = GenerateOptions::default().num_beams)]
    pub beams: usize,
    /// Candidates kept per question (default: all beams), for recall@k.
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Maximum answer length in tokens.
    #[arg(long, default_value_t = GenerateOptions::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Beam length penalty (score = log-prob / length^penalty).
    #[arg(long, default_value_t = GenerateOptions::default().length_penalty)]
    pub length_penalty: f32,
    /// Decoder rows per batch, at most: questions × beams (beam-4 puts 8 questions in a batch
    /// of 32).
    #[arg(long, default_value_t = BatchPolicy::default().max_batch_size)]
    pub batch_size: usize,
    /// Padded encoder tokens per batch, at most (questions are sorted by length first).
    #[arg(long, default_value_t = BatchPolicy::default().max_batch_tokens)]
    pub batch_tokens: usize,
    /// Text put before every question, e.g. "nq question: ". [default: the prefix the model was
    /// trained with, from its cbqa_export.json or cbqa_training.json — for `cbqa eval`, the
    /// one of the data file's benchmark when it was trained on several —, else none]
    #[arg(long)]
    pub prefix: Option<String>,
    /// Questions longer than this many tokens are cut (with a warning count).
    #[arg(long, default_value_t = AnswererOptions::default().max_input_tokens)]
    pub max_input_tokens: usize,
    /// ONNX Runtime on the CPU: decode one batch at a time with all --threads inside each call.
    /// By default `eval`, `predict` (of more than one batch) and `serve` (a running batch per
    /// decode loop) decode one batch per thread at once, each on its own session sharing the
    /// weights: more throughput, more memory; a batch decoding alone uses every thread.
    #[arg(long)]
    pub serial_batches: bool,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// An exported model directory (cbqa export, or optimum's ONNX export); a Hugging Face
    /// checkpoint directory with --backend tch.
    #[arg(long)]
    pub model: PathBuf,
    /// Questions; without any, questions are read from stdin, one per line.
    pub questions: Vec<String>,
    /// Output format: text (one answer per line) or jsonl (with scores and candidates).
    #[arg(long, value_enum, default_value_t = PredictFormat::Text)]
    pub format: PredictFormat,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// An exported model directory (cbqa export, or optimum's ONNX export); a Hugging Face
    /// checkpoint directory with --backend tch.
    #[arg(long)]
    pub model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value_t = ServeOptions::default().host)]
    pub host: String,
    /// Port to listen on (0: any free port; the one bound is printed).
    #[arg(long, default_value_t = ServeOptions::default().port)]
    pub port: u16,
    /// Questions waiting to be answered, at most; beyond it requests get 429 with Retry-After.
    #[arg(long, default_value_t = Limits::default().max_queue)]
    pub max_queue: usize,
    /// Questions in one request, at most.
    #[arg(long, default_value_t = Limits::default().max_questions)]
    pub max_questions: usize,
    /// Request body size in bytes, at most (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Seconds from a request's arrival to its answer, at most (504 beyond).
    #[arg(long, default_value_t = Limits::default().timeout.as_secs_f64())]
    pub timeout: f64,
    /// Milliseconds a batch of less than --batch-size questions waits, from its oldest request's
    /// arrival, for more requests (0: start at once).
    #[arg(long, default_value_t = ServeOptions::default().batch_wait.as_secs_f64() * 1000.0)]
    pub batch_wait_ms: f64,
    /// How requests are batched: `continuous` (questions join the running batch between decoder
    /// steps; needs an export made by `cbqa export`, else dynamic) or `dynamic` (batches formed
    /// at batch boundaries).
    #[arg(long, value_enum, default_value_t = BatchingArg::Continuous)]
    pub batching: BatchingArg,
    /// Beams (and candidates) a request may ask for, at most.
    #[arg(long, default_value_t = Limits::default().max_beams)]
    pub max_beams: usize,
    /// max_new_tokens a request may ask for, at most.
    #[arg(long, default_value_t = Limits::default().max_new_tokens)]
    pub max_new_tokens_limit: usize,
    /// The defaults of every request (--beams, --max-new-tokens, --prefix, …) and the engine.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Output format of `cbqa predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PredictFormat {
    Text,
    Jsonl,
}

/// Answer normalisation for scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NormalizerArg {
    /// From the data file: TriviaQA normalisation for TriviaQA, SQuAD otherwise.
    Auto,
    /// SQuAD normalisation (NQ-open, WebQuestions).
    Squad,
    /// TriviaQA normalisation.
    TriviaQa,
}

/// Which records of a data file to use.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// The data file: NQ-open JSON lines, DPR TSV (TriviaQA), WebQuestions JSON, or CSV/TSV/JSONL.
    #[arg(long)]
    pub data: PathBuf,
    /// Data format (default: detected): jsonl, dpr-tsv, json-array, csv, tsv.
    #[arg(long)]
    pub data_format: Option<String>,
    /// Question field/column (default: question, or qText for WebQuestions JSON).
    #[arg(long)]
    pub question_field: Option<String>,
    /// Answers field/column (default: answer, or answers for WebQuestions JSON).
    #[arg(long)]
    pub answer_field: Option<String>,
    /// Skip malformed records (reported as file:line warnings) instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    /// Use only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate shard I of N (I in 0..N): questions whose index mod N is I.
    #[arg(long)]
    pub shard: Option<String>,
    /// Answer normalisation.
    #[arg(long, value_enum, default_value_t = NormalizerArg::Auto)]
    pub normalizer: NormalizerArg,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// An exported model directory (cbqa export, or optimum's ONNX export); a Hugging Face
    /// checkpoint directory with --backend tch.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory: predictions.csv is written, a row is appended to metrics.csv. Answers
    /// are journaled in predictions.partial.KEY.jsonl as they are made, so an interrupted eval
    /// run again with the same settings continues where it stopped.
    #[arg(long)]
    pub out: PathBuf,
    /// Discard the journal of an unfinished evaluation in --out and start over.
    #[arg(long)]
    pub restart: bool,
    /// Dataset split name for metrics.csv (default: from the file name).
    #[arg(long)]
    pub split: Option<String>,
    /// Also report metrics on the question-overlap, answer-overlap-only and no-overlap subsets
    /// against this training file (Lewis et al., 2021).
    #[arg(long)]
    pub overlap_with: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Predictions of any system: JSON lines with "prediction" (or "answer"/"text") and optional
    /// "id" and "candidates", or a CSV with a "prediction" column (e.g. cbqa's predictions.csv).
    /// Several files (shards) are merged by id.
    #[arg(long, required = true, num_args = 1..)]
    pub predictions: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Write predictions.csv and append to metrics.csv in this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also report metrics on the overlap subsets against this training file (Lewis et al., 2021).
    #[arg(long)]
    pub overlap_with: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// An exported model directory; with `--backends tch`, a checkpoint directory.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Engines to sweep.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BackendArg::Ort, BackendArg::Tract])]
    pub backends: Vec<BackendArg>,
    /// Batch sizes to sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32, 128])]
    pub batch_sizes: Vec<usize>,
    /// Thread counts to sweep (ONNX Runtime on the CPU and tract run that many batches at once,
    /// one thread each; with --serial-batches ONNX Runtime runs one batch on that many threads).
    #[arg(long, value_delimiter = ',', default_values_t = [2usize])]
    pub threads: Vec<usize>,
    /// ONNX Runtime: one batch at a time, all threads inside each call (the latency of one
    /// batch, as `cbqa serve` decodes), instead of one batch per thread at once.
    #[arg(long)]
    pub serial_batches: bool,
    /// Device: cpu, cuda[:N] (ort, tch), tensorrt[:N] (ort).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Matmul precision of the tch backend (fp32, or bf16 matmuls on fp32 weights).
    #[arg(long, value_enum, default_value_t = ComputeArg::Fp32)]
    pub compute: ComputeArg,
    /// Real questions from this data file (any format cbqa reads); default: synthetic questions.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Number of questions.
    #[arg(long, default_value_t = 256)]
    pub questions: usize,
    /// Shortest question in tokens (EOS included).
    #[arg(long, default_value_t = 10)]
    pub min_tokens: usize,
    /// Longest question in tokens (EOS included).
    #[arg(long, default_value_t = 21)]
    pub max_tokens: usize,
    /// Decode exactly this many tokens per question (EOS suppressed), so engines do equal work.
    #[arg(long, default_value_t = 8)]
    pub force_steps: usize,
    /// Beam size.
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// Timed passes over the questions per configuration.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// ONNX Runtime graph optimisation level.
    #[arg(long, default_value_t = 3)]
    pub opt_level: u8,
    /// Label for the precision column (default: from the export's metadata, else fp32).
    #[arg(long)]
    pub precision: Option<String>,
    /// Output directory: rows are appended to bench.csv and throughput.svg is redrawn.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
    /// Only redraw throughput.svg from bench.csv (e.g. after the peer script added rows).
    #[arg(long)]
    pub plot_only: bool,
    /// Also measure this machine's limits (GEMM peak through ONNX Runtime's kernels, memory
    /// bandwidth by a STREAM triad) and report each phase against its roofline
    /// (roofline.json, roofline.svg, and the roofline_s/roofline_fraction columns).
    #[arg(long)]
    pub roofline: bool,
    /// Size of each of the three triad arrays for --roofline, MiB (keep 3× this well above the
    /// last-level cache; `lscpu` shows it).
    #[arg(long, default_value_t = 256)]
    pub triad_mib: usize,
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
    /// Symmetric per-channel weights in 7 bits of int8 ([-64, 64]) and activations quantized
    /// at run time: integer GEMMs (MatMulInteger) whose 16-bit pair sums cannot saturate on CPUs
    /// without VNNI.
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

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The source checkpoint directory (config.json, model.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// The ONNX directory (encoder_model.onnx, decoder_model.onnx, decoder_with_past_model.onnx;
    /// decoder_model_merged.onnx too when present).
    #[arg(long)]
    pub onnx: PathBuf,
    /// Allowed max absolute difference per unit of each output's scale (default: the export's
    /// own tolerance, from the precision in its cbqa_export.json; float32 when it has none).
    #[arg(long)]
    pub tolerance: Option<f32>,
    /// Target positions whose reference top-two logits differ by more than this, per unit of the
    /// logits' scale, must give the reference's token (default: the export's own, as
    /// --tolerance).
    #[arg(long)]
    pub decisive_margin: Option<f32>,
    /// Validate with ONNX Runtime only.
    #[arg(long)]
    pub no_tract: bool,
    /// Seed of the random validation batches (0: the batches `cbqa export` used).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which reference answer is the training target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnswerArg {
    /// The first answer (the paper's default).
    First,
    /// A random answer, drawn again each epoch (the paper's sample_answer).
    Random,
    /// One example per answer.
    All,
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

/// A preset of training settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecipeArg {
    /// Roberts, Raffel & Shazeer (2020): the paper's fine-tuning settings.
    Roberts2020,
}

/// Precision of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrainPrecisionArg {
    Fp32,
    /// bf16 matmuls with fp32 weights, optimizer state and residual stream (as autocast does;
    /// T5 was trained in bf16). Meant for GPUs; works, slowly, on CPUs too.
    Bf16,
}

/// The settings of a new training run before any flag: the flags' defaults come from them.
#[cfg(feature = "train")]
fn train_defaults() -> cbqa::train::TrainSettings {
    cbqa::train::TrainSettings::new(PathBuf::new(), PathBuf::new(), PathBuf::new())
}

/// The flags of the trainer that `cbqa train` and `cbqa pretrain` share.
#[cfg(feature = "train")]
#[derive(Debug, Args)]
pub struct TrainerArgs {
    /// The run directory (checkpoints, train_log.csv); must not exist or be empty. Not needed
    /// with --dump-examples or --export-examples, which train nothing.
    #[arg(
        long,
        required_unless_present_any = ["resume", "dump_examples", "export_examples"],
        conflicts_with = "resume"
    )]
    pub out: Option<PathBuf>,
    /// A preset of the paper's settings, resolved for the model and the data and printed at
    /// the start: roberts2020 = AdaFactor, constant lr 1e-3, 196,608 tokens per batch, dropout
    /// 0.1 (0.05 for T5.1.1 checkpoints); WebQuestions halves the batch and doubles the dropout.
    /// --optimizer, --lr, --batch-tokens and --dropout given explicitly win.
    #[arg(long, value_enum, conflicts_with = "resume")]
    pub recipe: Option<RecipeArg>,
    /// The optimizer. [default: adafactor]
    #[arg(long, value_enum, conflicts_with = "resume")]
    pub optimizer: Option<OptimizerArg>,
    /// Learning rate (constant; the paper used 1e-3 with AdaFactor). [default: 0.001]
    #[arg(long, conflicts_with = "resume")]
    pub lr: Option<f64>,
    /// Tokens (input + target) per optimizer step; the paper used 196,608. [default: 196608]
    #[arg(long, conflicts_with = "resume")]
    pub batch_tokens: Option<usize>,
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
    /// Dropout rate during training. [default: 0.1]
    #[arg(long, conflicts_with = "resume")]
    pub dropout: Option<f64>,
    /// Seed of the data order, answer choice, masks and dropout.
    #[arg(long, default_value_t = train_defaults().seed, conflicts_with = "resume")]
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N. Asking for CUDA without a GPU is an error. [default: auto]
    #[arg(long)]
    pub device: Option<String>,
    /// fp32, or bf16 mixed precision.
    #[arg(long, value_enum, default_value_t = TrainPrecisionArg::Fp32, conflicts_with = "resume")]
    pub precision: TrainPrecisionArg,
    /// Dev exact match every N steps (and at the end); 0: only at the end.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Checkpoint every N steps (also at the end, at a new best dev EM, on the time cadence of
    /// --save-every-minutes, and on SIGINT/SIGTERM).
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Checkpoint after the first step that ends M minutes (fractions allowed) after the last
    /// checkpoint, so a SIGKILL loses at most about M minutes; 0: no time cadence.
    /// [default: 10]
    #[arg(long)]
    pub save_every_minutes: Option<f64>,
    /// libtorch threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Without a terminal, print progress every N steps. [default: 10]
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Print the first N training examples (JSON lines: inputs, targets, their ids, source)
    /// exactly as the trainer would feed them, and exit without training.
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub dump_examples: Option<usize>,
    /// Write the processed, tokenized examples and the trainer's batches of each epoch (its
    /// order, mixture and answer draws, with --seed) to DIR — examples.jsonl, batches.jsonl,
    /// manifest.json, for scripts/train_distributed.py --examples DIR — and exit without
    /// training. DIR is refused if it exists and is not empty, unless --force.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["resume", "dump_examples"])]
    pub export_examples: Option<PathBuf>,
    /// With --export-examples: the epochs of batches to write. [default: --epochs, else enough
    /// epochs for --max-steps, else 1]
    #[arg(long, value_name = "E", requires = "export_examples")]
    pub export_epochs: Option<u64>,
    /// With --export-examples: replace an existing DIR (once the new one is complete).
    #[arg(long, requires = "export_examples")]
    pub force: bool,
}

#[cfg(feature = "train")]
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The model directory to fine-tune (Hugging Face layout, e.g. made by `cbqa init`).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub model: Option<PathBuf>,
    /// Training data: JSON lines {"question": str, "answer": [str, ...]} (NQ-open format) or
    /// any format cbqa reads. Several --train files make a task mixture (seqio's
    /// examples-proportional mixing; see --mixing-max).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub train: Vec<PathBuf>,
    /// Dev data in the same format; exact match is computed on it with greedy decoding (in a
    /// mixture, with the prefix of the training file of the same benchmark), and the dev loss
    /// on its first answers; both go to train_log.csv at every evaluation.
    #[arg(long, conflicts_with = "resume")]
    pub dev: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its settings
    /// (only --max-steps, --epochs, --device, --threads, --eval-every, --save-every,
    /// --save-every-minutes, --log-every and --micro-batch-tokens may change).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Text put before every question (the paper's T5 inputs look like "nq question: ...").
    /// With several --train files, give one --prefix per file or none: each file then gets the
    /// paper's prefix for its benchmark (nq question: , trivia_qa question: , wq question: ).
    #[arg(long, conflicts_with = "resume")]
    pub prefix: Vec<String>,
    /// Which answer is the target.
    #[arg(long, value_enum, default_value_t = AnswerArg::First, conflicts_with = "resume")]
    pub answer: AnswerArg,
    /// Mixtures: a file counts at most this many examples in its rate (seqio's maximum).
    #[arg(long, conflicts_with = "resume")]
    pub mixing_max: Option<f64>,
    /// Mixtures: rates are examples ^ (1 / T) (seqio's temperature).
    #[arg(long, default_value_t = 1.0, conflicts_with = "resume")]
    pub mixing_temperature: f64,
    /// Mixtures: every file at the same rate.
    #[arg(long, conflicts_with_all = ["resume", "mixing_max"])]
    pub mixing_equal: bool,
    /// Dev questions decoded per batch.
    #[arg(long, default_value_t = train_defaults().eval_batch_size, conflicts_with = "resume")]
    pub eval_batch_size: usize,
    /// Longest generated dev answer, in tokens.
    #[arg(long, default_value_t = train_defaults().eval_max_new_tokens, conflicts_with = "resume")]
    pub eval_max_new_tokens: usize,
    /// Evaluate only the first N dev questions.
    #[arg(long, conflicts_with = "resume")]
    pub eval_limit: Option<usize>,
    /// Inputs longer than this (in tokens, </s> included) are truncated.
    #[arg(long, default_value_t = train_defaults().max_input_len, conflicts_with = "resume")]
    pub max_input_len: usize,
    /// Targets longer than this are truncated.
    #[arg(long, default_value_t = train_defaults().max_target_len, conflicts_with = "resume")]
    pub max_target_len: usize,
    /// Skip malformed data lines (each is reported as file:line) instead of stopping.
    #[arg(long, conflicts_with = "resume")]
    pub skip_bad: bool,
    #[command(flatten)]
    pub trainer: TrainerArgs,
}

/// The pre-training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectiveArg {
    /// Salient span masking (REALM; the paper's best): "nem: ... _X_ ..." → the span. Needs
    /// spans: JSON lines {"text", "spans"} or REALM's annotated Wikipedia TFRecords.
    Ssm,
    /// T5's span corruption: 15% of the tokens in spans of mean 3 replaced by sentinels.
    SpanCorruption,
}

#[cfg(feature = "train")]
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// The model directory to continue pre-training (Hugging Face layout).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub model: Option<PathBuf>,
    /// Corpus files: plain text (a document per line), JSON lines {"text": str} or
    /// {"text": str, "spans": [{"start", "end", "type"}]} (code-point offsets), REALM's
    /// .tfrecord.gz; shard patterns (name@N.ext) and globs (quoted) expand.
    #[arg(long, num_args = 1.., required_unless_present = "resume", conflicts_with = "resume")]
    pub corpus: Vec<PathBuf>,
    /// The objective.
    #[arg(
        long,
        value_enum,
        required_unless_present = "resume",
        conflicts_with = "resume"
    )]
    pub objective: Option<ObjectiveArg>,
    /// A held-out corpus (any --corpus format, or a shard pattern) made into examples of the
    /// same objective once, masks drawn from --seed, so every evaluation (every --eval-every
    /// steps and at the end) reports the dev loss of the same examples in train_log.csv.
    #[arg(long, conflicts_with = "resume")]
    pub dev: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its settings.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Length of the inputs in tokens, EOS included; span corruption's raw pieces and targets
    /// length follow (512 → 568 raw tokens → 114 targets); longer SSM sentences are skipped.
    #[arg(long, default_value_t = 512, conflicts_with = "resume")]
    pub inputs_length: usize,
    /// Span corruption: the fraction of tokens masked.
    #[arg(long, default_value_t = 0.15, conflicts_with = "resume")]
    pub noise_density: f64,
    /// Span corruption: the mean length of a masked span.
    #[arg(long, default_value_t = 3.0, conflicts_with = "resume")]
    pub mean_noise_span: f64,
    /// Span corruption: draw the training pieces' noise masks once, from --seed, and repeat
    /// them every epoch (without it, epoch e's masks are drawn from a seed derived from --seed
    /// and e, so no epoch repeats another's examples; the --dev masks are fixed either way).
    #[arg(long, conflicts_with = "resume")]
    pub fixed_masks: bool,
    /// SSM: spans longer than this (in tokens, </s> included) are skipped.
    #[arg(long, default_value_t = 128, conflicts_with = "resume")]
    pub max_target_len: usize,
    /// SSM: give documents without spans the dates a regular expression finds (as REALM
    /// found dates; named entities need scripts/annotate_spans.py).
    #[arg(long, conflicts_with = "resume")]
    pub tag_dates: bool,
    #[command(flatten)]
    pub trainer: TrainerArgs,
}

/// The flag that sets a library setting (`num_beams` → `--beams`), for error messages: the
/// library names its settings by their field names, the command line by its flags. `None` for a
/// setting no flag sets.
pub fn flag_of_setting(setting: &str) -> Option<&'static str> {
    Some(match setting {
        // decoding (GenerateOptions), batching (BatchPolicy), answering (AnswererOptions)
        "num_beams" => "--beams",
        "num_return_sequences" => "--candidates",
        "max_new_tokens" => "--max-new-tokens",
        "length_penalty" => "--length-penalty",
        "max_batch_size" => "--batch-size",
        "max_batch_tokens" | "batch_tokens" => "--batch-tokens",
        "max_input_tokens" => "--max-input-tokens",
        "prefix" => "--prefix",
        // engines (BackendOptions)
        "kind" | "backend" => "--backend",
        "device" => "--device",
        "threads" => "--threads",
        "opt_level" => "--opt-level",
        "allow_fallback" => "--allow-fallback",
        "trt_cache" => "--trt-cache",
        "compute" => "--compute",
        // data files (ReadOptions) and selections
        "format" | "data_format" => "--data-format",
        "question_field" => "--question-field",
        "answer_field" => "--answer-field",
        "skip_bad" => "--skip-bad",
        "limit" => "--limit",
        "shard" => "--shard",
        "normalizer" => "--normalizer",
        // training (TrainSettings)
        "model" => "--model",
        "train" => "--train",
        "dev" => "--dev",
        "out" => "--out",
        "resume" => "--resume",
        "answer" => "--answer",
        "optimizer" => "--optimizer",
        "lr" => "--lr",
        "micro_batch_tokens" => "--micro-batch-tokens",
        "max_steps" => "--max-steps",
        "epochs" => "--epochs",
        "export_epochs" => "--export-epochs",
        "dropout" => "--dropout",
        "seed" => "--seed",
        "precision" => "--precision",
        "eval_every" => "--eval-every",
        "save_every" => "--save-every",
        "save_every_minutes" => "--save-every-minutes",
        "log_every" => "--log-every",
        "eval_batch_size" => "--eval-batch-size",
        "eval_max_new_tokens" => "--eval-max-new-tokens",
        "eval_limit" => "--eval-limit",
        "max_input_len" => "--max-input-len",
        "max_target_len" => "--max-target-len",
        "mixing_max" => "--mixing-max",
        "mixing_temperature" => "--mixing-temperature",
        "recipe" => "--recipe",
        // pre-training (PretrainSettings)
        "corpus" => "--corpus",
        "objective" => "--objective",
        "inputs_length" => "--inputs-length",
        "noise_density" => "--noise-density",
        "mean_noise_span" => "--mean-noise-span",
        // serving (serve::Limits)
        "max_queue" => "--max-queue",
        "max_questions" => "--max-questions",
        "max_body_bytes" => "--max-body-bytes",
        "timeout" => "--timeout",
        "max_beams" => "--max-beams",
        "max_new_tokens_limit" => "--max-new-tokens-limit",
        // export and validation (ExportOptions, ValidateOptions)
        "force" => "--force",
        "merged" => "--merged",
        "quantize" => "--quantize",
        "tolerance" => "--tolerance",
        "decisive_margin" => "--decisive-margin",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every long flag of every subcommand.
    fn all_flags() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .flat_map(|c| c.get_arguments().filter_map(|a| a.get_long()))
            .map(|long| format!("--{long}"))
            .collect()
    }

    #[test]
    fn settings_are_named_by_flags_that_exist() {
        let flags = all_flags();
        let settings = [
            "num_beams",
            "num_return_sequences",
            "max_new_tokens",
            "length_penalty",
            "max_batch_size",
            "max_batch_tokens",
            "batch_tokens",
            "max_input_tokens",
            "prefix",
            "kind",
            "backend",
            "device",
            "threads",
            "opt_level",
            "allow_fallback",
            "trt_cache",
            "compute",
            "format",
            "data_format",
            "question_field",
            "answer_field",
            "skip_bad",
            "limit",
            "shard",
            "normalizer",
            "model",
            "out",
            "force",
            "merged",
            "quantize",
            "tolerance",
            "decisive_margin",
            "seed",
            "precision",
        ];
        #[cfg(feature = "train")]
        let settings = [
            &settings[..],
            &[
                "train",
                "dev",
                "resume",
                "answer",
                "optimizer",
                "lr",
                "micro_batch_tokens",
                "max_steps",
                "epochs",
                "export_epochs",
                "dropout",
                "eval_every",
                "save_every",
                "save_every_minutes",
                "log_every",
                "eval_batch_size",
                "eval_max_new_tokens",
                "eval_limit",
                "max_input_len",
                "max_target_len",
                "mixing_max",
                "mixing_temperature",
                "recipe",
                "corpus",
                "objective",
                "inputs_length",
                "noise_density",
                "mean_noise_span",
            ],
        ]
        .concat();
        for setting in settings {
            let flag = flag_of_setting(setting).unwrap_or_else(|| panic!("{setting}: no flag"));
            assert!(
                flags.iter().any(|f| f == flag),
                "{setting}: {flag} is no flag"
            );
        }
        assert_eq!(flag_of_setting("num_beams"), Some("--beams"));
        assert_eq!(flag_of_setting("lr"), Some("--lr"));
        assert_eq!(flag_of_setting("early_stopping"), None);
    }
}
