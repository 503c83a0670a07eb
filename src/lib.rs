//! # cbqa
//!
//! Closed-book question answering with T5, after Roberts, Raffel & Shazeer (2020), "How Much
//! Knowledge Can You Pack Into the Parameters of a Language Model?".
//!
//! The library reads and writes Hugging Face checkpoint directories ([`ModelDir`], [`T5Config`],
//! [`checkpoint`]), creates new models ([`init`]) and finds its native libraries by itself
//! ([`native`]). Every error is an [`Error`] that names the file, tensor or line it is about.

pub mod answer;
pub mod bench;
pub mod checkpoint;
pub mod config;
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
pub mod progress;
pub mod pyjson;
pub mod runtime;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;
pub mod validate;

pub use answer::{Answer, Answerer, AnswererOptions};
pub use config::{FeedForward, T5Config};
pub use error::{Error, Result};
pub use model_dir::{GenerationConfig, ModelDir};
