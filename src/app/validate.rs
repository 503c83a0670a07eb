//! `cbqa validate`: compare any ONNX export with the reference forward pass of its checkpoint.

use super::export::print_validation;
use crate::cli::ValidateArgs;
use anyhow::{Context, Result};
use cbqa::ModelDir;

/// Validate and print the report; fails when a check fails.
pub fn run(args: ValidateArgs) -> Result<()> {
    let model = ModelDir::open(&args.model)?;
    let opts = super::options::validate_options(&args);
    let context = || {
        format!(
            "cbqa validate --model {} --onnx {}",
            args.model.display(),
            args.onnx.display()
        )
    };
    let report =
        cbqa::validate::validation_report(&args.onnx, &model.config, &model.weights, &opts)
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
