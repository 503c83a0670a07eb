//! Command implementations of the binary: arguments are resolved into library settings once,
//! then the library does the work.

pub mod bench;
pub mod eval;
pub mod predict;

use crate::cli::{BackendArg, DataArgs, NormalizerArg, RuntimeArgs};
use anyhow::{bail, Context, Result};
use cbqa::data::{DataFormat, Dataset, QaExample, ReadOptions};
use cbqa::eval::Normalizer;
use cbqa::generate::{BatchPolicy, EarlyStopping};
use cbqa::runtime::{BackendKind, BackendOptions, Device};
use cbqa::AnswererOptions;

/// Resolve the runtime flags.
pub fn answerer_options(r: &RuntimeArgs) -> Result<AnswererOptions> {
    let device: Device = r.device.parse()?;
    if r.beams == 0 {
        bail!("--beams must be at least 1");
    }
    let candidates = r.candidates.unwrap_or(r.beams);
    if candidates == 0 || candidates > r.beams {
        bail!("--candidates must be between 1 and --beams ({})", r.beams);
    }
    Ok(AnswererOptions {
        backend: BackendOptions {
            kind: match r.backend {
                BackendArg::Ort => BackendKind::Ort,
                BackendArg::Tract => BackendKind::Tract,
                #[cfg(feature = "train")]
                BackendArg::Tch => BackendKind::Tch,
            },
            device,
            threads: r.threads,
            opt_level: r.opt_level,
            allow_fallback: r.allow_fallback,
            trt_cache: r.trt_cache.clone(),
        },
        num_beams: r.beams,
        num_return_sequences: candidates,
        max_new_tokens: r.max_new_tokens,
        min_new_tokens: 0,
        length_penalty: r.length_penalty,
        early_stopping: EarlyStopping::True,
        batch: BatchPolicy {
            max_batch_size: r.batch_size.max(1),
            max_batch_tokens: r.batch_tokens.max(1),
            sort_by_length: true,
            parallel: false,
        },
        prefix: r.prefix.clone(),
        max_input_tokens: r.max_input_tokens.max(2),
    })
}

/// The records a data selection names: read, then `--limit`, then `--shard`.
pub fn load_data(d: &DataArgs) -> Result<(Dataset, Vec<QaExample>, Normalizer)> {
    let format = match &d.data_format {
        Some(f) => Some(f.parse::<DataFormat>()?),
        None => None,
    };
    let opts = ReadOptions {
        format,
        question_field: d.question_field.clone(),
        answer_field: d.answer_field.clone(),
        skip_bad: d.skip_bad,
        ..ReadOptions::default()
    };
    let ds = Dataset::read(&d.data, &opts)?;
    for w in &ds.warnings {
        eprintln!("warning: skipped {w}");
    }
    let mut examples = ds.examples.clone();
    if let Some(n) = d.limit {
        examples.truncate(n);
    }
    if let Some(spec) = &d.shard {
        let (i, n) = spec
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
            .filter(|(i, n)| *n > 0 && i < n)
            .with_context(|| format!("--shard {spec}: expected I/N with 0 <= I < N, e.g. 0/4"))?;
        examples = examples
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, e)| e)
            .collect();
    }
    if examples.is_empty() {
        bail!("{}: no questions selected", d.data.display());
    }
    let normalizer = match d.normalizer {
        NormalizerArg::Auto => Normalizer::for_benchmark(ds.benchmark),
        NormalizerArg::Squad => Normalizer::Squad,
        NormalizerArg::TriviaQa => Normalizer::TriviaQa,
    };
    Ok((ds, examples, normalizer))
}
