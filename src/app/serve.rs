//! `cbqa serve`: load the model as `cbqa predict` does, then serve it over HTTP until SIGTERM or
//! SIGINT.

use super::options::{answerer_options, question_prefix, serve_options};
use crate::cli::ServeArgs;
use anyhow::{Context, Result};
use cbqa::Answerer;
use std::io::Write;

/// Load the model and serve it; the bound address is printed on stdout once it accepts requests.
pub fn run(args: ServeArgs) -> Result<()> {
    let serve = serve_options(&args)?;
    // As offline evaluation: a running batch per thread, each on its own session copy (one
    // batch on all threads with --serial-batches).
    let mut opts = answerer_options(&args.runtime)?;
    opts.prefix = question_prefix(&args.runtime, &args.model, None)?;
    let answerer = Answerer::load(&args.model, opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    eprintln!(
        "cbqa serve: {} on {}",
        args.model.display(),
        answerer.describe()
    );
    cbqa::serve::serve(answerer, serve, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    })?;
    Ok(())
}
