//! Training presets (`--recipe`): the paper's settings, resolved once for the model and data of a
//! new run, under any setting given explicitly, and recorded in the run's settings (`run.json`)
//! and in every checkpoint (`cbqa_training.json`), so a resumed run and a reader of a checkpoint
//! see what was chosen and why.
//!
//! `roberts2020` (Roberts, Raffel & Shazeer 2020, §3 "Training"; the released fine-tuning command
//! in google-research `t5_closed_book_qa/README.md`: `utils.run.batch_size=('tokens_per_batch',
//! 196608)`, `learning_rate_schedules.constant_learning_rate`, `learning_rate=1e-3`):
//! - AdaFactor, constant learning rate 1e-3, batches of 196,608 tokens, dropout 0.1;
//! - T5.1.1 checkpoints (a gated feed-forward, `feed_forward_proj` `gated-gelu`/`gated-relu`, in
//!   the model's config.json) use dropout 0.05 for every dataset (the paper: "For the T5.1.1
//!   checkpoints, we followed the same procedure but with a dropout rate of 5% for all
//!   datasets"; T5.1.1 was pre-trained without dropout, T5's `released_checkpoints.md`);
//! - WebQuestions, being small, halves the batch (98,304 tokens) and doubles the dropout (0.2;
//!   T5.1.1 keeps 0.05, as above). A run trains on WebQuestions when every QA training file
//!   (the one `--train`, or every source of a mixture) is WebQuestions by
//!   [`crate::data::Benchmark::guess`]: its name (`webquestions`, `wq`, `brmson`) or, failing
//!   that, its format (brmson's JSON array). Pre-training runs never do.

use super::settings::{OptimizerChoice, TrainSettings};
use crate::config::T5Config;
use crate::data::{Benchmark, DataFormat};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// A preset of training settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// The paper's fine-tuning settings (see the module docs).
    Roberts2020,
}

/// The settings of a recipe that the command line gave explicitly (these win).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Given {
    pub optimizer: bool,
    pub lr: bool,
    pub batch_tokens: bool,
    pub dropout: bool,
}

/// What a recipe chose for a run, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeChoice {
    pub recipe: Recipe,
    /// The model has T5.1.1's gated feed-forward.
    pub t5_1_1: bool,
    /// Every training file is WebQuestions.
    pub webquestions: bool,
    /// `setting = value (why)`, one line per setting the recipe covers.
    pub settings: Vec<String>,
}

/// The paper's batch in tokens.
const BATCH_TOKENS: usize = 196_608;

/// Resolve `recipe` for the model and data of `s` and set every setting it covers that `given`
/// does not name; `s.recipe` records the choice.
pub fn apply_recipe(s: &mut TrainSettings, recipe: Recipe, given: Given) -> Result<()> {
    let t5_1_1 = model_config(&s.model)?.ff().is_gated();
    let webquestions = s.pretrain.is_none() && trains_on_webquestions(s);
    let (batch, dropout, dropout_why) = match (t5_1_1, webquestions) {
        (true, wq) => (
            halved(BATCH_TOKENS, wq),
            0.05,
            "T5.1.1 checkpoint, every dataset",
        ),
        (false, true) => (BATCH_TOKENS / 2, 0.2, "doubled for WebQuestions"),
        (false, false) => (BATCH_TOKENS, 0.1, "the paper's"),
    };
    let batch_why = match webquestions {
        true => "halved for WebQuestions",
        false => "the paper's",
    };
    if !given.optimizer {
        s.optimizer = OptimizerChoice::Adafactor;
    }
    if !given.lr {
        s.lr = 1e-3;
    }
    if !given.batch_tokens {
        s.batch_tokens = batch;
    }
    if !given.dropout {
        s.dropout = dropout;
    }
    let why = |g: bool, why: &'static str| if g { "given" } else { why };
    let optimizer = serde_json::to_value(s.optimizer).ok();
    let optimizer = optimizer.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
    let lines = vec![
        format!(
            "optimizer = {optimizer} ({})",
            why(given.optimizer, "the paper's")
        ),
        format!("lr = {} ({})", s.lr, why(given.lr, "constant, the paper's")),
        format!(
            "batch_tokens = {} ({})",
            s.batch_tokens,
            why(given.batch_tokens, batch_why)
        ),
        format!(
            "dropout = {} ({})",
            s.dropout,
            why(given.dropout, dropout_why)
        ),
    ];
    s.recipe = Some(RecipeChoice {
        recipe,
        t5_1_1,
        webquestions,
        settings: lines,
    });
    Ok(())
}

fn halved(tokens: usize, halve: bool) -> usize {
    if halve {
        tokens / 2
    } else {
        tokens
    }
}

/// The config of the model directory (`config.json`, else whatever [`crate::ModelDir`] reads).
fn model_config(dir: &Path) -> Result<T5Config> {
    let json = dir.join("config.json");
    if json.is_file() {
        return T5Config::from_file(&json);
    }
    Ok(crate::ModelDir::open(dir)?.config)
}

/// Every QA training file of `s` is WebQuestions.
fn trains_on_webquestions(s: &TrainSettings) -> bool {
    std::iter::once(s.train.as_path())
        .chain(s.mixture.iter().map(|m| m.path.as_path()))
        .all(|p| benchmark_of(p) == Benchmark::WebQuestions)
}

/// The benchmark of a data file, from its name and (failing that) the format of its first
/// 64 KiB; `Unknown` when it cannot be read (the reader says why later).
pub fn benchmark_of(path: &Path) -> Benchmark {
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(1 << 16).read_to_end(&mut head));
    if read.is_err() {
        return Benchmark::Unknown;
    }
    let text = String::from_utf8_lossy(&head);
    match DataFormat::detect(path, &text) {
        Ok(format) => Benchmark::guess(path, format),
        Err(_) => Benchmark::Unknown,
    }
}
