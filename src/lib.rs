//! # cbqa
//!
//! Closed-book question answering with T5, after Roberts, Raffel & Shazeer (2020), "How Much
//! Knowledge Can You Pack Into the Parameters of a Language Model?": train a T5 to answer
//! open-domain questions from its parameters alone, export it to ONNX, answer and score.
//!
//! What an embedder uses:
//!
//! - **Answering**: [`Answerer`] loads an exported model once (ONNX Runtime or tract; the libtorch
//!   model on a checkpoint with feature `train`) and answers batches of questions from many
//!   threads; [`AnswererOptions`] holds every setting, each type with its own `Default`.
//! - **Decoding**: [`generate`] is the one decoder (greedy and beam search with transformers'
//!   semantics, [`generate::GenerateOptions`]) over any [`runtime::Seq2Seq`], with length-sorted
//!   batching ([`generate::BatchPolicy`]) and the question encoder
//!   ([`generate::encode_questions`]).
//! - **Backends**: [`runtime`] opens an export ([`runtime::OnnxDir`]) in the engine
//!   [`runtime::BackendOptions`] names ([`runtime::Backend`]: ONNX Runtime on CPU, CUDA or
//!   TensorRT with feature `ort`; tract with feature `tract`).
//! - **Data and scoring**: [`data`] reads benchmark files (NQ-open JSON lines, DPR TSV,
//!   WebQuestions, CSV/TSV) into [`data::Dataset`]; [`eval`] normalises answers and computes exact
//!   match, F1, recall@k and the overlap subsets; [`eval::report`] writes predictions.csv and
//!   metrics.csv.
//! - **Models**: [`ModelDir`] opens and checks a Hugging Face checkpoint directory ([`T5Config`],
//!   [`GenerationConfig`], [`checkpoint`]; safetensors, PyTorch pickles or Flax msgpack);
//!   [`init`] creates a new one; [`convert`] rewrites one in transformers' safetensors layout.
//! - **Export**: [`export`] writes a checkpoint as ONNX in optimum's layout (float32, float16 or
//!   int8 weights) and validates it against the reference forward pass; [`onnx`] is the ONNX
//!   layout contract both the exporter and the runtime follow.
//! - **Training** (feature `train`, libtorch): [`train`] fine-tunes a T5 for closed-book QA and
//!   writes Hugging Face checkpoints; `model` is the libtorch T5.
//! - **Throughput**: [`bench`] measures a backend on a fixed workload.
//!
//! Every error is an [`Error`] that names the file, tensor, line or setting it is about and keeps
//! the engine's own error as its `source`. Settings are named by their field names
//! (`num_beams`), never by a command-line flag. [`progress`] is the progress display of long
//! jobs; [`native`] finds the native libraries.

// A build without any backend (`--no-default-features`) compiles, as a check that every
// backend is behind its feature; much of the crate is unused there.
#![cfg_attr(
    not(any(feature = "ort", feature = "tract", feature = "train")),
    allow(unused)
)]

pub mod answer;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod data;
pub mod error;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod generate;
pub mod init;
#[cfg(feature = "train")]
pub mod model;
pub mod model_dir;
pub mod native;
pub mod onnx;
pub mod pretrain;
pub mod progress;
pub(crate) mod pyjson;
pub mod runtime;
pub mod serve;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;
pub mod validate;

pub use answer::{Answer, Answerer, AnswererOptions};

/// This library's version, as metrics.csv records it (`cbqa_version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit this library was built from, as metrics.csv records it (`git_commit`; empty outside
/// a git checkout).
pub const GIT_COMMIT: &str = env!("CBQA_GIT_COMMIT");
pub use config::{FeedForward, T5Config};
pub use error::{Error, Result};
pub use model_dir::{GenerationConfig, ModelDir};
