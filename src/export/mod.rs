//! `cbqa export`: a T5 checkpoint directory → ONNX graphs in optimum's seq2seq layout, written by
//! our own protobuf writer, with every weight stored once. [`stage`] writes an export into a
//! temporary directory, where `crate::validate` checks it against the plain-Rust reference
//! forward pass ([`ReferenceT5`]) before it is put in place.
//!
//! The directory it writes:
//!
//! ```text
//! encoder_model.onnx            input_ids, attention_mask → last_hidden_state
//! decoder_model.onnx            input_ids, encoder_attention_mask, encoder_hidden_states
//!                                 → logits, present.{i}.{decoder,encoder}.{key,value}
//! decoder_with_past_model.onnx  input_ids, encoder_attention_mask, past_key_values.{i}.*
//!                                 → logits, present.{i}.decoder.{key,value}
//! decoder_with_past_masked_model.onnx
//!                               the same with decoder_attention_mask (self-attention key mask:
//!                                 cbqa's runtimes join decoding states at different positions)
//! decoder_model_merged.onnx     (with --merged) both decoders behind an If on use_cache_branch
//! model.onnx_data               the weights, once, referenced by offset from every graph
//! config.json, generation_config.json, tokenizer.json (+ tokenizer_config.json, ...)
//! ```
//!
//! Names, dtypes and dynamic axes follow optimum's `T5OnnxConfig`, so optimum's
//! `ORTModelForSeq2SeqLM.from_pretrained(dir)` and plain ONNX Runtime users load it unchanged.

mod graphs;
mod merged;
mod position;
mod reference;
mod weights;

// The ONNX contract lives in `crate::onnx`; these re-exports keep the paths users and tests
// have always had (`cbqa::export::ENCODER`, `cbqa::export::proto::ModelProto`, ...).
pub use crate::onnx::layout::{
    DATA_FILE, DECODER, DECODER_MERGED, DECODER_WITH_PAST, DECODER_WITH_PAST_MASKED, ENCODER,
};
pub use crate::onnx::proto;
pub use crate::onnx::{IR_VERSION, OPSET};
pub use position::BucketTable;
pub use reference::{DecoderOutput, ReferenceT5};
pub use weights::{Precision, Quantize, INT8_WEIGHT_MAX};

use crate::error::{Error, Result};
use crate::fsutil::OutputDir;
use crate::model_dir::ModelDir;
use crate::onnx::layout::METADATA_FILE;
use graphs::DecoderStep;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Tokenizer files copied when present (tokenizer.json is required by [`ModelDir::open`]).
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
];

/// Settings of one export, resolved from the command line or set by a library user.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The checkpoint directory (Hugging Face layout).
    pub model: PathBuf,
    /// The ONNX directory to create.
    pub out: PathBuf,
    /// Replace a non-empty `out`.
    pub force: bool,
    /// Also write `decoder_model_merged.onnx`.
    pub merged: bool,
    pub precision: Precision,
    pub quantize: Quantize,
}

impl ExportOptions {
    /// Float32, unmerged.
    pub fn new(model: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        ExportOptions {
            model: model.into(),
            out: out.into(),
            force: false,
            merged: false,
            precision: Precision::Fp32,
            quantize: Quantize::None,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub dir: PathBuf,
    /// Every file and its size in bytes.
    pub files: Vec<(String, u64)>,
    /// Total size of the checkpoint's files (config, weights, tokenizer).
    pub checkpoint_bytes: u64,
    /// Total size of the export directory.
    pub export_bytes: u64,
    /// Time spent writing the export.
    pub export_time: Duration,
}

impl ExportReport {
    /// Export size / checkpoint size.
    pub fn size_ratio(&self) -> f64 {
        self.export_bytes as f64 / self.checkpoint_bytes.max(1) as f64
    }
}

fn write_model(dir: &Path, name: &str, model: &proto::ModelProto) -> Result<()> {
    use prost::Message;
    let path = dir.join(name);
    std::fs::write(&path, model.encode_to_vec()).map_err(|e| Error::io("write", &path, e))
}

fn dir_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let e = e.map_err(|e| Error::io("read directory", dir, e))?;
        let len = e
            .metadata()
            .map_err(|err| Error::io("stat", e.path(), err))?
            .len();
        files.push((e.file_name().to_string_lossy().into_owned(), len));
    }
    files.sort();
    Ok(files)
}

/// Size of the files that make up the checkpoint: config, generation config, weights (single or
/// sharded) and tokenizer files (not other files that may sit in the directory).
fn checkpoint_bytes(dir: &Path) -> Result<u64> {
    Ok(dir_files(dir)?
        .iter()
        .filter(|(n, _)| {
            n == "config.json"
                || n == "generation_config.json"
                || n == "model.safetensors"
                || n == "model.safetensors.index.json"
                || (n.starts_with("model-") && n.ends_with(".safetensors"))
                || TOKENIZER_FILES.contains(&n.as_str())
        })
        .map(|(_, l)| l)
        .sum())
}

/// Export `opts.model` to `opts.out`, unvalidated (`crate::validate::export` validates it
/// before putting it in place).
pub fn export(opts: &ExportOptions) -> Result<ExportReport> {
    stage(opts)?.commit(None)
}

/// An export written into a temporary sibling of its output directory, not yet in place:
/// dropping it removes it, [`StagedExport::commit`] renames it into place.
pub struct StagedExport {
    out: OutputDir,
    model: ModelDir,
    /// `cbqa_export.json` as far as it is known before validation.
    meta: serde_json::Value,
    export_time: Duration,
}

/// Write the export of `opts.model` (graphs, weights, configs, tokenizer) into a temporary
/// directory; the metadata file is written by [`StagedExport::commit`].
pub fn stage(opts: &ExportOptions) -> Result<StagedExport> {
    let started = Instant::now();
    let model = ModelDir::open(&opts.model)?;
    let out = OutputDir::create(&opts.out, opts.force)?;
    write_graphs(&model, out.path(), opts)?;
    model.config.save(out.path())?;
    model.generation.save(out.path())?;
    for name in TOKENIZER_FILES {
        let src = model.dir.join(name);
        if src.is_file() {
            let dst = out.path().join(name);
            std::fs::copy(&src, &dst).map_err(|e| Error::io("copy", &src, e))?;
        }
    }
    let mut meta = metadata(opts, &model);
    // The question prefixes the checkpoint was trained with go with the export.
    if let Some(prefixes) = crate::model_dir::stored_prefixes(&model.dir)? {
        meta[crate::model_dir::EVAL_PREFIXES_KEY] = serde_json::json!(prefixes);
    }
    Ok(StagedExport {
        out,
        model,
        meta,
        export_time: started.elapsed(),
    })
}

/// The graphs and their shared data file.
fn write_graphs(model: &ModelDir, dir: &Path, opts: &ExportOptions) -> Result<()> {
    let cfg = &model.config;
    let mut params = weights::Params::create(&model.weights, dir, opts.precision, opts.quantize)?;
    write_model(dir, ENCODER, &graphs::encoder(cfg, &mut params)?)?;
    let decoder = |step, params: &mut weights::Params<'_>| graphs::decoder(cfg, params, step);
    write_model(dir, DECODER, &decoder(DecoderStep::First, &mut params)?)?;
    write_model(
        dir,
        DECODER_WITH_PAST,
        &decoder(DecoderStep::WithPast, &mut params)?,
    )?;
    write_model(
        dir,
        DECODER_WITH_PAST_MASKED,
        &decoder(DecoderStep::WithPastMasked, &mut params)?,
    )?;
    if opts.merged {
        write_model(
            dir,
            DECODER_MERGED,
            &merged::decoder_merged(cfg, &mut params)?,
        )?;
    }
    params.finish()?;
    Ok(())
}

/// What this export is, for reports (`cbqa eval` and `cbqa bench` fill their precision column
/// from it).
fn metadata(opts: &ExportOptions, model: &ModelDir) -> serde_json::Value {
    let precision = match (opts.precision, opts.quantize) {
        (_, Quantize::Int8) => "int8",
        (Precision::Fp16, _) => "fp16",
        (Precision::Fp32, _) => "fp32",
    };
    let mut meta = serde_json::json!({
        "precision": precision,
        "quantize": format!("{:?}", opts.quantize).to_lowercase(),
        "weights_dtype": format!("{:?}", opts.precision).to_lowercase(),
        "merged": opts.merged,
        // The runtimes step with it in place of decoder_with_past_model.onnx.
        "decoder_with_past_masked": true,
        "source": model.dir.display().to_string(),
        "cbqa_version": env!("CARGO_PKG_VERSION"),
        "opset": OPSET,
    });
    if opts.quantize == Quantize::Int8 {
        // 7-bit weights: exact integer sums on CPUs with and without VNNI (INT8_WEIGHT_MAX).
        meta["int8_weight_max"] = INT8_WEIGHT_MAX.into();
    }
    meta
}

impl StagedExport {
    /// The temporary directory the export is written in.
    pub fn dir(&self) -> &Path {
        self.out.path()
    }

    /// The checkpoint being exported.
    pub fn model(&self) -> &ModelDir {
        &self.model
    }

    /// Write `cbqa_export.json` (with `validated_on_cpu`, the CPU a validation ran on:
    /// reduced-precision kernels differ by CPU) and rename the export into place.
    pub fn commit(mut self, validated_on_cpu: Option<String>) -> Result<ExportReport> {
        if let Some(cpu) = validated_on_cpu {
            self.meta["validated_on_cpu"] = cpu.into();
        }
        let dir = self.out.path();
        crate::fsutil::write_atomic(
            &dir.join(METADATA_FILE),
            crate::pyjson::to_python_json(&self.meta).as_bytes(),
        )?;
        let files = dir_files(dir)?;
        let export_bytes = files.iter().map(|(_, l)| l).sum();
        let checkpoint_bytes = checkpoint_bytes(&self.model.dir)?;
        Ok(ExportReport {
            dir: self.out.commit()?,
            files,
            checkpoint_bytes,
            export_bytes,
            export_time: self.export_time,
        })
    }
}
