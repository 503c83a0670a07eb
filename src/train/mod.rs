//! Fine-tuning T5 as in Roberts et al. (2020): AdaFactor (or AdamW), token-budget batches with
//! gradient accumulation, checkpoints in Hugging Face's layout with the trainer state beside them,
//! dev exact match with greedy decoding, and exact resumption.

pub mod adafactor;
pub mod adamw;
pub mod batching;
pub mod data;
mod dev;
pub mod dump;
pub mod export_examples;
pub mod mixture;
pub mod optim;
pub mod recipe;
pub mod settings;
pub mod state;
pub mod store;
pub mod trainer;

pub use adafactor::{Adafactor, AdafactorConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use batching::AnswerChoice;
pub use dump::dump_examples;
pub use export_examples::{export_examples, ExportExamplesOptions, ExportSummary};
pub use mixture::MixingRates;
pub use optim::Optimizer;
pub use recipe::{apply_recipe, Given, Recipe, RecipeChoice};
pub use settings::{OptimizerChoice, Precision, TrainSettings, TrainSource};
pub use state::{load_settings, BestDevLoss, BEST_DIR};
pub use trainer::{greedy_options, predict, train, TrainOutcome, Trainer};
