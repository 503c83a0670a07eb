//! The `cbqa` binary: parse the command line, run, print the error chain, set the exit code.

mod app;
mod cli;
#[cfg(feature = "train")]
mod train_cmd;

use anyhow::{Context, Result};
use cbqa::init::{init_model, InitOptions, TokenizerSource};
use cbqa::{ModelDir, T5Config};
use clap::Parser;
use cli::{
    Cli, Command, ExportArgs, InitArgs, InspectArgs, PrecisionArg, QuantizeArg, ValidateArgs,
};

fn main() {
    // Like other Unix tools, end quietly when the reader of stdout goes away
    // (`cbqa predict ... | head`) instead of panicking on the failed write: Rust ignores SIGPIPE
    // by default.
    // SAFETY: restoring the default disposition of a signal, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(args) => init(args),
        Command::Inspect(args) => inspect(args),
        Command::Predict(args) => app::predict::run(args),
        Command::Eval(args) => app::eval::eval(args),
        Command::Score(args) => app::eval::score(args),
        Command::Bench(args) => app::bench::run(args),
        Command::Export(args) => export(args),
        Command::Validate(args) => validate(args),
        #[cfg(feature = "train")]
        Command::Train(args) => train_cmd::run(*args),
        Command::Doctor => {
            for (k, v) in cbqa::native::report() {
                println!("{k:<20} {v}");
            }
            Ok(())
        }
    }
}

fn init(args: InitArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => T5Config::from_file(path)?,
        None => T5Config::preset(&args.preset)?,
    };
    let tokenizer = match (&args.tokenizer, &args.train_tokenizer) {
        (Some(path), _) => TokenizerSource::File(path.clone()),
        (None, Some(data)) => TokenizerSource::Train {
            data: data.clone(),
            vocab_size: args.vocab_size,
            extra_ids: args.extra_ids,
        },
        (None, None) => anyhow::bail!(
            "a new model needs a tokenizer: pass --tokenizer FILE (a T5 tokenizer.json) or \
             --train-tokenizer FILE (question/answer JSON lines to train one on)"
        ),
    };
    let opts = InitOptions {
        config,
        tokenizer,
        out: args.out.clone(),
        force: args.force,
        seed: args.seed,
    };
    let dir =
        init_model(&opts).with_context(|| format!("cbqa init --out {}", args.out.display()))?;
    let model = ModelDir::open(&dir)?;
    println!(
        "created {}: {} parameters, vocab {}, d_model {}, {}+{} layers, {}",
        dir.display(),
        model.config.num_parameters(),
        model.config.vocab_size,
        model.config.d_model,
        model.config.num_layers,
        model.config.decoder_layers(),
        model.config.feed_forward_proj
    );
    Ok(())
}

fn inspect(args: InspectArgs) -> Result<()> {
    let model = ModelDir::open(&args.model)?;
    let c = &model.config;
    let summary = serde_json::json!({
        "dir": model.dir.display().to_string(),
        "parameters": c.num_parameters(),
        "dtype": format!("{:?}", model.weights.dtype()),
        "vocab_size": c.vocab_size,
        "tokenizer_vocab": model.tokenizer.get_vocab_size(true),
        "d_model": c.d_model, "d_kv": c.d_kv, "d_ff": c.d_ff, "num_heads": c.num_heads,
        "encoder_layers": c.num_layers, "decoder_layers": c.decoder_layers(),
        "feed_forward_proj": c.feed_forward_proj,
        "tie_word_embeddings": c.tie_word_embeddings,
        "unexpected_tensors": model.weights.unexpected,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if let Some(map) = summary.as_object() {
        for (k, v) in map {
            println!("{k:<20} {v}");
        }
        println!("ok: every tensor matches config.json");
    }
    Ok(())
}

fn export(args: ExportArgs) -> Result<()> {
    use cbqa::export::{ExportOptions, Precision, Quantize};
    use cbqa::validate::ValidateOptions;
    let precision = match args.precision {
        PrecisionArg::Fp32 => Precision::Fp32,
        PrecisionArg::Fp16 => Precision::Fp16,
    };
    let quantize = match args.quantize {
        QuantizeArg::None => Quantize::None,
        QuantizeArg::Int8 => Quantize::Int8,
    };
    let validate = (!args.no_validate).then(|| ValidateOptions {
        tract: !args.no_tract,
        seed: args.seed,
        ..ValidateOptions::for_precision(precision, quantize)
    });
    let opts = ExportOptions {
        model: args.model.clone(),
        out: args.out.clone(),
        force: args.force,
        merged: args.merged,
        precision,
        quantize,
    };
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
fn print_validation(v: &cbqa::validate::ValidationReport) {
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

fn validate(args: ValidateArgs) -> Result<()> {
    use cbqa::validate::ValidateOptions;
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
