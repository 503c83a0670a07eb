//! Fine-tuning T5 as in Roberts et al. (2020): AdaFactor (or AdamW), token-budget batches with
//! gradient accumulation, checkpoints in Hugging Face's layout with the trainer state beside them,
//! and exact resumption.

pub mod adafactor;
pub mod adamw;
pub mod optim;

pub use adafactor::{Adafactor, AdafactorConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use optim::Optimizer;
