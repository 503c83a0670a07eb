//! `cbqa pretrain`: resolve the arguments into [`cbqa::train::TrainSettings`] with a
//! pre-training corpus, then run the same trainer as `cbqa train`.

use super::options::pretrain_settings;
use crate::cli::PretrainArgs;
use anyhow::Result;

/// Pre-train (or resume), or dump (`--dump-examples`) or export (`--export-examples`) the
/// examples.
pub fn run(args: PretrainArgs) -> Result<()> {
    let (s, resume) = pretrain_settings(&args)?;
    super::train::run_settings("pretrain", s, resume, &args.trainer)
}
