//! `cbqa export`: a checkpoint to ONNX, validated; and the validation table it shares with
//! `cbqa validate`.

use crate::cli::ExportArgs;
use anyhow::{Context, Result};

/// Export, validate and print the files written.
pub fn run(args: ExportArgs) -> Result<()> {
    let (opts, validate) = super::options::export_options(&args);
    let done = cbqa::validate::export(&opts, validate.as_ref()).with_context(|| {
        format!(
            "cbqa export --model {} --out {}",
            args.model.display(),
            args.out.display()
        )
    })?;
    if let Some(v) = &done.validation {
        print_validation(v);
    }
    let report = &done.export;
    for (name, len) in &report.files {
        println!("  {len:>14}  {name}");
    }
    println!(
        "exported {} in {:.2}s (validation {:.2}s): {} bytes, {:.3}x the checkpoint ({} bytes)",
        report.dir.display(),
        report.export_time.as_secs_f64(),
        done.validation_time.as_secs_f64(),
        report.export_bytes,
        report.size_ratio(),
        report.checkpoint_bytes
    );
    Ok(())
}

/// The validation table of `cbqa export` and `cbqa validate`.
pub fn print_validation(v: &cbqa::validate::ValidationReport) {
    println!(
        "validation: max abs difference from the reference forward pass \
         (allowed: {:.0e} x max(1, max|ref|))",
        v.tolerance
    );
    for c in &v.checks {
        println!(
            "  {:<12} {:<30} {:<28} {:.3e}  (allowed {:.1e}, max|ref| {:.3})",
            c.runtime,
            c.graph,
            c.output,
            c.max_abs_diff,
            c.allowed(v.tolerance),
            c.max_abs_ref
        );
    }
    for (rt, same, total, ties) in &v.argmax {
        println!(
            "  {rt:<12} argmax tokens equal to the reference: {same}/{total} \
             (+{ties} near-ties, where the reference's own top two are closer than the decisive margin)"
        );
    }
}
