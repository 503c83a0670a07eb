//! `--export-examples DIR` of `cbqa train` and `cbqa pretrain`: the processed, tokenized examples
//! of a run and the batches the trainer would make of them, epoch by epoch, in files a PyTorch
//! `Dataset` reads without cbqa (`scripts/train_distributed.py --examples DIR`).
//!
//! The directory holds (format version [`FORMAT_VERSION`]):
//! - `examples.jsonl`: one line per example, in index order,
//!   `{"id": i, "input_ids": [...], "target_ids": [[...], ...], "source": name}` — every target
//!   of the example (one per answer; one for pre-training), each ending in `</s>`. Span
//!   corruption with masks drawn anew every epoch writes every exported epoch's examples, epoch
//!   `e`'s as ids `e * N .. (e + 1) * N` (`N` pieces; the manifest's `examples_per_epoch`);
//! - `batches.jsonl`: one line per optimizer step, in the trainer's order,
//!   `{"step": k, "epoch": e, "items": [[id, answer], ...], "tokens": t, "target_tokens": n}` —
//!   the effective batch (`items` index `examples.jsonl` and its `target_ids`), drawn with the
//!   run's seed: shuffle, mixture draws and random-answer draws of each epoch included;
//!   `target_tokens` divides the batch's summed cross-entropy (the trainer's loss);
//! - `manifest.json`: the format, cbqa's version, the model directory, pad/eos/decoder-start
//!   ids, counts, the sources and the run's settings (`run.json`'s).
//!
//! The examples come from the one source the trainer and `--dump-examples` use
//! ([`super::dump::run_examples`], [`super::data::plan_of`]).

use super::batching::EpochPlan;
use super::data::{plan_of, Tokenized, TrainData};
use super::dump::run_examples;
use super::mixture::source_of;
use super::settings::TrainSettings;
use crate::error::{Error, Result};
use crate::fsutil::OutputDir;
use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The version of the directory's layout, `manifest.json`'s `format_version`.
pub const FORMAT_VERSION: u32 = 1;

/// Where and how much to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportExamplesOptions {
    /// The directory to create; refused if it exists and is not empty, unless `force`.
    pub dir: PathBuf,
    /// Epochs of batches to write; `None`: the run's `epochs`, else enough epochs for its
    /// `max_steps`, else one.
    pub epochs: Option<u64>,
    /// Replace an existing non-empty `dir` (only once the new one is complete).
    pub force: bool,
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    pub dir: PathBuf,
    pub examples: usize,
    pub epochs: u64,
    /// Effective batches (optimizer steps) over all exported epochs.
    pub batches: usize,
    /// The steps the run would train: `max_steps` if it ends earlier, else `batches`.
    pub steps: usize,
}

/// Write the examples and batches of the run `s` describes into `opts.dir` (built in a temporary
/// sibling, renamed into place when complete), without training.
pub fn export_examples(s: &TrainSettings, opts: &ExportExamplesOptions) -> Result<ExportSummary> {
    if opts.epochs == Some(0) {
        return Err(Error::setting("export_epochs", "must be at least 1"));
    }
    let out = OutputDir::create(&opts.dir, opts.force)?;
    let (model, data) = run_examples(s)?;
    if data.examples.is_empty() {
        return Err(Error::Data(crate::data::DataError::Empty {
            path: s.train.clone(),
            detail: " (no training examples to export)".into(),
        }));
    }
    let plans = epoch_plans(&data, s, opts.epochs);
    let epochs = epoch_examples(&data, plans.len());
    write_examples(&out.path().join("examples.jsonl"), &data, &epochs)?;
    let batches = write_batches(&out.path().join("batches.jsonl"), &epochs, &plans)?;
    let per_epoch = data.examples.len();
    let steps = s.max_steps.map_or(batches, |m| {
        batches.min(usize::try_from(m).unwrap_or(usize::MAX))
    });
    let config = &model.config;
    let manifest = serde_json::json!({
        "format": "cbqa-examples",
        "format_version": FORMAT_VERSION,
        "cbqa_version": env!("CARGO_PKG_VERSION"),
        "model": absolute(&s.model),
        "pad_id": config.pad_id(),
        "eos_id": config.eos_id(),
        "decoder_start_id": config.decoder_start_id(),
        "vocab_size": config.vocab_size,
        "seed": s.seed,
        "examples": per_epoch * epochs.len(),
        "examples_per_epoch": per_epoch,
        "epochs": plans.len(),
        "batches_per_epoch": plans.iter().map(|p| p.batches.len()).collect::<Vec<_>>(),
        "batches": batches,
        "steps": steps,
        "sources": data.sources.iter().map(|src| serde_json::json!({
            "name": src.name, "first": src.range.start, "count": src.range.len(), "rate": src.rate,
        })).collect::<Vec<_>>(),
        "loss": "per batch: the cross-entropy summed over its target tokens / target_tokens",
        "files": {"examples": "examples.jsonl", "batches": "batches.jsonl"},
        "settings": s,
    });
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::io("encode", "manifest.json", std::io::Error::other(e)))?;
    let manifest_path = out.path().join("manifest.json");
    std::fs::write(&manifest_path, text + "\n").map_err(|e| Error::io("write", &opts.dir, e))?;
    let dir = out.commit()?;
    Ok(ExportSummary {
        dir,
        examples: per_epoch * epochs.len(),
        epochs: plans.len() as u64,
        batches,
        steps,
    })
}

/// The plans of the exported epochs (see [`ExportExamplesOptions::epochs`]).
fn epoch_plans(data: &TrainData, s: &TrainSettings, epochs: Option<u64>) -> Vec<EpochPlan> {
    let plan = |e: u64| plan_of(&data.examples, &data.sources, s, e);
    if let Some(n) = epochs.or(s.epochs) {
        return (0..n).map(plan).collect();
    }
    let Some(max_steps) = s.max_steps else {
        return vec![plan(0)];
    };
    let mut plans = Vec::new();
    let mut steps = 0u64;
    while steps < max_steps.max(1) {
        let p = plan(plans.len() as u64);
        if p.batches.is_empty() {
            break;
        }
        steps += p.batches.len() as u64;
        plans.push(p);
    }
    plans
}

/// The examples of each of `epochs` epochs: one set for all unless the masks are redrawn.
fn epoch_examples(data: &TrainData, epochs: usize) -> Vec<Cow<'_, [Tokenized]>> {
    match &data.redraw {
        Some(r) if epochs > 1 => (0..epochs as u64)
            .map(|e| Cow::Owned(r.examples(e)))
            .collect(),
        _ => vec![Cow::Borrowed(data.examples.as_slice())],
    }
}

/// `examples.jsonl`: every example with all its targets, the sets of `epochs` one after the
/// other.
fn write_examples(path: &Path, data: &TrainData, epochs: &[Cow<'_, [Tokenized]>]) -> Result<()> {
    let mut w = Lines::create(path)?;
    let per_epoch = data.examples.len();
    for (e, examples) in epochs.iter().enumerate() {
        for (i, ex) in examples.iter().enumerate() {
            let source = source_of(&data.sources, i).map_or("", |src| src.name.as_str());
            w.line(&serde_json::json!({
                "id": e * per_epoch + i,
                "input_ids": ex.input,
                "target_ids": ex.targets,
                "source": source,
            }))?;
        }
    }
    w.finish()
}

/// `batches.jsonl`: every effective batch of every plan, numbered from step 1, its items naming
/// the examples of its epoch (`epochs`: one set for all, or one per plan). Returns how many.
fn write_batches(
    path: &Path,
    epochs: &[Cow<'_, [Tokenized]>],
    plans: &[EpochPlan],
) -> Result<usize> {
    let mut w = Lines::create(path)?;
    let mut step = 0usize;
    for (epoch, plan) in plans.iter().enumerate() {
        let set = epoch.min(epochs.len() - 1);
        let (examples, first_id) = (&epochs[set], set * epochs[0].len());
        for range in &plan.batches {
            let items = &plan.items[range.clone()];
            let target = |&(i, a): &(usize, usize)| examples[i].targets[a].len();
            let target_tokens: usize = items.iter().map(target).sum();
            let inputs: usize = items.iter().map(|&(i, _)| examples[i].input.len()).sum();
            let ids: Vec<(usize, usize)> = items.iter().map(|&(i, a)| (first_id + i, a)).collect();
            step += 1;
            w.line(&serde_json::json!({
                "step": step,
                "epoch": epoch,
                "items": ids,
                "tokens": inputs + target_tokens,
                "target_tokens": target_tokens,
            }))?;
        }
    }
    w.finish()?;
    Ok(step)
}

/// A JSON-lines file being written, errors naming it.
struct Lines {
    path: PathBuf,
    w: BufWriter<std::fs::File>,
}

impl Lines {
    fn create(path: &Path) -> Result<Lines> {
        let f = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
        Ok(Lines {
            path: path.to_path_buf(),
            w: BufWriter::new(f),
        })
    }

    fn line(&mut self, v: &serde_json::Value) -> Result<()> {
        writeln!(self.w, "{v}").map_err(|e| Error::io("write", &self.path, e))
    }

    fn finish(self) -> Result<()> {
        let f = self
            .w
            .into_inner()
            .map_err(|e| Error::io("write", &self.path, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("write", &self.path, e))
    }
}

/// `p` made absolute (as given when that fails), so the manifest names the model from anywhere.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed t5_v1_1 fixture and 12 questions with two answers each.
    fn settings(dir: &Path) -> TrainSettings {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let train = dir.join("train.jsonl");
        let lines: Vec<String> = (0..12)
            .map(|i| {
                format!("{{\"question\": \"who is number {i}\", \"answer\": [\"n{i}\", \"m{i}\"]}}")
            })
            .collect();
        std::fs::write(&train, lines.join("\n") + "\n").unwrap();
        let mut s = TrainSettings::new(root.join("tests/fixtures/t5_v1_1"), train, dir.join("run"));
        s.answer = super::super::AnswerChoice::Random;
        s.batch_tokens = 60;
        s
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn the_export_holds_the_trainers_plans_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = settings(tmp.path());
        let (_, data) = run_examples(&s).unwrap();
        let per_epoch = plan_of(&data.examples, &data.sources, &s, 0).batches.len();
        assert!(per_epoch > 1, "{per_epoch}");
        // max_steps one past the first epoch: two epochs are written, the run trains max_steps
        s.max_steps = Some(per_epoch as u64 + 1);
        let dir = tmp.path().join("ex");
        let opts = ExportExamplesOptions {
            dir: dir.clone(),
            epochs: None,
            force: false,
        };
        let done = export_examples(&s, &opts).unwrap();
        assert_eq!(
            (done.epochs, done.steps, done.examples),
            (2, per_epoch + 1, 12)
        );
        let records = lines(&dir.join("examples.jsonl"));
        assert_eq!(records[3]["target_ids"].as_array().unwrap().len(), 2);
        assert_eq!(
            records[3]["input_ids"],
            serde_json::json!(data.examples[3].input)
        );
        let batches = lines(&dir.join("batches.jsonl"));
        assert_eq!(batches.len(), done.batches);
        for epoch in 0..2u64 {
            let plan = plan_of(&data.examples, &data.sources, &s, epoch);
            let items: Vec<(usize, usize)> = batches
                .iter()
                .filter(|b| b["epoch"] == epoch)
                .flat_map(|b| {
                    serde_json::from_value::<Vec<(usize, usize)>>(b["items"].clone()).unwrap()
                })
                .collect();
            assert_eq!(items, plan.items, "epoch {epoch}");
        }
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["format_version"], FORMAT_VERSION);
        assert_eq!(manifest["settings"], serde_json::to_value(&s).unwrap());
        // an existing directory is refused and kept; with force it is replaced
        let err = export_examples(&s, &opts).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutputExists {
                    setting: "force",
                    ..
                }
            ),
            "{err}"
        );
        let three = ExportExamplesOptions {
            epochs: Some(3),
            force: true,
            ..opts.clone()
        };
        assert_eq!(export_examples(&s, &three).unwrap().epochs, 3);
        let zero = ExportExamplesOptions {
            epochs: Some(0),
            ..three
        };
        assert!(matches!(
            export_examples(&s, &zero),
            Err(Error::Setting {
                setting: "export_epochs",
                ..
            })
        ));
        assert!(!tmp.path().join("run").exists());
    }
}
