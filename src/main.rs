//! The `cbqa` binary: parse the command line, run, print the error chain, set the exit code.

mod cli;
#[cfg(feature = "train")]
mod train_cmd;

use anyhow::{Context, Result};
use cbqa::init::{init_model, InitOptions, TokenizerSource};
use cbqa::{ModelDir, T5Config};
use clap::Parser;
use cli::{Cli, Command, InitArgs, InspectArgs};

fn main() {
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
