//! `cbqa validate`: compare any ONNX export with the reference forward pass of its checkpoint.

use super::export::print_validation;
use crate::cli::ValidateArgs;
use anyhow::{Context, Result};
use cbqa::ModelDir;

/// Validate and print the report; fails when a check fails.
pub fn run(args: ValidateArgs) -> Result<()> {
    use cbqa::export::ValidateOptions;
    let model = ModelDir::open(&args.model)?;
    let recorded = cbqa::runtime::precision_of(&args.onnx);
    let defaults = ValidateOptions::for_recorded_precision(&recorded);
    let opts = ValidateOptions {
        tract: !args.no_tract,
        seed: args.seed,
        tolerance: args.tolerance.unwrap_or(defaults.tolerance),
        decisive_margin: args.decisive_margin.unwrap_or(defaults.decisive_margin),
        ..defaults
    };
    let context = || {
        format!(
            "cbqa validate --model {} --onnx {}",
            args.model.display(),
            args.onnx.display()
        )
    };
    let report = cbqa::export::validation_report(&args.onnx, &model.config, &model.weights, &opts)
        .with_context(context)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        println!("cpu: {}", cbqa::native::int8_kernel_summary());
        print_validation(&report);
    }
    report.check(&args.onnx, &opts).with_context(context)?;
    Ok(())
}
