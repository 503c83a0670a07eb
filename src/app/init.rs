//! `cbqa init`: a new model directory with random weights and a tokenizer.

use crate::cli::InitArgs;
use anyhow::{Context, Result};
use cbqa::init::{init_model, InitOptions, TokenizerSource};
use cbqa::{ModelDir, T5Config};

/// Create the model directory and print its size.
pub fn run(args: InitArgs) -> Result<()> {
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
