//! `cbqa inspect`: open a model directory, check it and print a summary.

use crate::cli::InspectArgs;
use anyhow::Result;
use cbqa::ModelDir;

/// Print the summary of the model directory (as JSON with `--json`).
pub fn run(args: InspectArgs) -> Result<()> {
    let model = ModelDir::open(&args.model)?;
    let c = &model.config;
    let mut summary = serde_json::json!({
        "dir": model.dir.display().to_string(),
        "parameters": c.num_parameters(),
        "weights_format": model.weights.format(),
        "weights_files": model.weights.files().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "dtype": format!("{:?}", model.weights.dtype()),
        "vocab_size": c.vocab_size,
        "tokenizer_file": model.tokenizer_file.display().to_string(),
        "tokenizer_vocab": model.tokenizer.get_vocab_size(true),
        "d_model": c.d_model, "d_kv": c.d_kv, "d_ff": c.d_ff, "num_heads": c.num_heads,
        "encoder_layers": c.num_layers, "decoder_layers": c.decoder_layers(),
        "feed_forward_proj": c.feed_forward_proj,
        "tie_word_embeddings": c.tie_word_embeddings,
        "unexpected_tensors": model.weights.unexpected,
    });
    if let (Some(note), Some(map)) = (&model.weights.note, summary.as_object_mut()) {
        map.insert("weights_note".into(), note.clone().into());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if let Some(map) = summary.as_object() {
        for (k, v) in map {
            println!("{k:<20} {v}");
        }
        let config = if model.dir.join("config.json").exists() {
            "config.json"
        } else {
            "operative_config.gin"
        };
        println!("ok: every tensor matches {config}");
    }
    Ok(())
}
