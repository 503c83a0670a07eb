//! `cbqa convert`: a model directory rewritten in Hugging Face's safetensors layout.

use crate::cli::ConvertArgs;
use anyhow::{Context, Result};
use cbqa::convert::{convert, ConvertOptions};

/// Convert and print what was written.
pub fn run(args: ConvertArgs) -> Result<()> {
    let opts = ConvertOptions {
        model: args.model.clone(),
        out: args.out.clone(),
        force: args.force,
    };
    let report = convert(&opts).with_context(|| {
        format!(
            "cbqa convert --model {} --out {}",
            args.model.display(),
            args.out.display()
        )
    })?;
    for name in &report.files {
        println!("  {name}");
    }
    println!(
        "converted {} ({} weights) to {}: {} tensors in model.safetensors",
        args.model.display(),
        report.source_format,
        report.dir.display(),
        report.tensors
    );
    Ok(())
}
