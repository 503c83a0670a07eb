//! `--dump-examples N` of `cbqa train` and `cbqa pretrain`: the first N examples of the first
//! epoch exactly as the trainer would feed them (same sources, prefixes, objective, seed and
//! order), one JSON line each, without training. [`run_examples`] is the one source of a run's
//! examples for the dump and for `--export-examples` ([`super::export_examples`]).

use super::data::{plan_of, read_train, TrainData};
use super::mixture::source_of;
use super::settings::TrainSettings;
use crate::error::{Error, Result};
use crate::model_dir::ModelDir;
use std::io::Write;
use tokenizers::Tokenizer;

/// The model directory of a new run `s` and its training examples, read and tokenized as the
/// trainer reads them (skipped lines are printed to stderr).
pub fn run_examples(s: &TrainSettings) -> Result<(ModelDir, TrainData)> {
    let model = ModelDir::open(&s.model)?;
    let data = read_train(s, &model.tokenizer, model.config.eos_id())?;
    for line in &data.skipped {
        eprintln!("skipped {line}");
    }
    Ok((model, data))
}

/// Write the first `n` training examples of `s` to `out` as JSON lines
/// `{"inputs", "targets", "input_ids", "target_ids", "source"}` (texts decoded with the special
/// tokens, so `</s>` and the sentinels show). Returns how many were written.
pub fn dump_examples(s: &TrainSettings, n: usize, out: &mut dyn Write) -> Result<usize> {
    let (model, data) = run_examples(s)?;
    let plan = plan_of(&data.examples, &data.sources, s, 0);
    let mut written = 0;
    for &(i, a) in plan.items.iter().take(n) {
        let ex = &data.examples[i];
        let source = source_of(&data.sources, i).map_or("", |src| src.name.as_str());
        let line = serde_json::json!({
            "inputs": decode(&model.tokenizer, &ex.input)?,
            "targets": decode(&model.tokenizer, &ex.targets[a])?,
            "input_ids": ex.input,
            "target_ids": ex.targets[a],
            "source": source,
        });
        writeln!(out, "{line}").map_err(|e| Error::io("write", "the examples", e))?;
        written += 1;
    }
    Ok(written)
}

fn decode(tok: &Tokenizer, ids: &[i64]) -> Result<String> {
    let ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
    tok.decode(&ids, false)
        .map_err(|e| Error::tokenize("decode an example", e))
}
