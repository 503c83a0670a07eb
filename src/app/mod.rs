//! The subcommands of the binary, one module each. Arguments are resolved into library settings
//! once ([`options`]), then the library does the work.

pub mod bench;
pub mod convert;
pub mod doctor;
pub mod eval;
pub mod export;
pub mod init;
pub mod inspect;
pub mod options;
pub mod predict;
#[cfg(feature = "train")]
pub mod pretrain;
pub mod score;
pub mod serve;
#[cfg(feature = "train")]
pub mod train;
pub mod validate;

use crate::cli::DataArgs;
use anyhow::{bail, Context, Result};
use cbqa::data::{Dataset, QaExample};
use cbqa::eval::Normalizer;

/// The records a data selection names: read, then `--limit`, then `--shard`.
pub fn load_data(d: &DataArgs) -> Result<(Dataset, Vec<QaExample>, Normalizer)> {
    let ds = Dataset::read(&d.data, &options::read_options(d)?)?;
    for w in &ds.warnings {
        eprintln!("warning: skipped {w}");
    }
    let mut examples = ds.examples.clone();
    if let Some(n) = d.limit {
        examples.truncate(n);
    }
    if let Some(spec) = &d.shard {
        let (i, n) = parse_shard(spec)?;
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
    let normalizer = options::normalizer(d.normalizer, ds.benchmark);
    Ok((ds, examples, normalizer))
}

/// `I/N` with `0 <= I < N`.
fn parse_shard(spec: &str) -> Result<(usize, usize)> {
    spec.split_once('/')
        .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .filter(|(i, n)| *n > 0 && i < n)
        .with_context(|| format!("--shard {spec}: expected I/N with 0 <= I < N, e.g. 0/4"))
}

/// An error and its causes on one line (`a: b: c`), for a predictions file or a JSON field.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = crate::error_message(err);
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&crate::error_message(c));
        cause = c.source();
    }
    text
}
