//! `cbqa export`: a T5 checkpoint directory → ONNX graphs in optimum's seq2seq layout, written by
//! our own protobuf writer, with every weight stored once, validated against a reference forward
//! pass in ONNX Runtime and tract.
//!
//! The directory it writes:
//!
//! ```text
//! encoder_model.onnx            input_ids, attention_mask → last_hidden_state
//! decoder_model.onnx            input_ids, encoder_attention_mask, encoder_hidden_states
//!                                 → logits, present.{i}.{decoder,encoder}.{key,value}
//! decoder_with_past_model.onnx  input_ids, encoder_attention_mask, past_key_values.{i}.*
//!                                 → logits, present.{i}.decoder.{key,value}
//! decoder_model_merged.onnx     (with --merged) both decoders behind an If on use_cache_branch
//! model.onnx_data               the weights, once, referenced by offset from every graph
//! config.json, generation_config.json, tokenizer.json (+ tokenizer_config.json, ...)
//! ```
//!
//! Names, dtypes and dynamic axes follow optimum's `T5OnnxConfig`, so optimum's
//! `ORTModelForSeq2SeqLM.from_pretrained(dir)` and plain ONNX Runtime users load it unchanged.

mod backends;
mod graphs;
mod merged;
mod position;
mod reference;
mod validate;
mod weights;

// The ONNX contract lives in `crate::onnx`; these re-exports keep the paths users and tests
// have always had (`cbqa::export::ENCODER`, `cbqa::export::proto::ModelProto`, ...).
pub use crate::onnx::layout::{DATA_FILE, DECODER, DECODER_MERGED, DECODER_WITH_PAST, ENCODER};
pub use crate::onnx::proto;
pub use crate::onnx::{IR_VERSION, OPSET};
pub use position::BucketTable;
pub use reference::{DecoderOutput, ReferenceT5};
pub use validate::{validate, validation_report, OutputCheck, ValidateOptions, ValidationReport};
pub use weights::{Precision, Quantize, INT8_WEIGHT_MAX};

use crate::error::{Error, Result};
use crate::fsutil::OutputDir;
use crate::model_dir::ModelDir;
use crate::onnx::layout::METADATA_FILE;
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
    /// Validation settings; `None` skips validation.
    pub validate: Option<ValidateOptions>,
}

impl ExportOptions {
    /// Float32, unmerged, validated in every runtime this build has.
    pub fn new(model: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        ExportOptions {
            model: model.into(),
            out: out.into(),
            force: false,
            merged: false,
            precision: Precision::Fp32,
            quantize: Quantize::None,
            validate: Some(ValidateOptions::for_precision(
                Precision::Fp32,
                Quantize::None,
            )),
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
    pub validation: Option<ValidationReport>,
    pub export_time: Duration,
    pub validation_time: Duration,
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

/// Export `opts.model` to `opts.out`. Everything is written into a temporary sibling directory
/// and validated there; only a complete, validated export is renamed into place.
pub fn export(opts: &ExportOptions) -> Result<ExportReport> {
    let started = Instant::now();
    let model = ModelDir::open(&opts.model)?;
    let cfg = &model.config;
    let out = OutputDir::create(&opts.out, opts.force)?;
    let tmp = out.path().to_path_buf();
    let mut params = weights::Params::create(&model.weights, &tmp, opts.precision, opts.quantize)?;
    write_model(&tmp, ENCODER, &graphs::encoder(cfg, &mut params)?)?;
    write_model(&tmp, DECODER, &graphs::decoder(cfg, &mut params, false)?)?;
    write_model(
        &tmp,
        DECODER_WITH_PAST,
        &graphs::decoder(cfg, &mut params, true)?,
    )?;
    if opts.merged {
        write_model(
            &tmp,
            DECODER_MERGED,
            &merged::decoder_merged(cfg, &mut params)?,
        )?;
    }
    params.finish()?;
    cfg.save(&tmp)?;
    // What this export is, for reports (`cbqa eval` and `cbqa bench` fill their precision column
    // from it).
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
        "source": model.dir.display().to_string(),
        "cbqa_version": env!("CARGO_PKG_VERSION"),
        "opset": OPSET,
    });
    if opts.quantize == Quantize::Int8 {
        // 7-bit weights: exact integer sums on CPUs with and without VNNI (INT8_WEIGHT_MAX).
        meta["int8_weight_max"] = INT8_WEIGHT_MAX.into();
    }
    if opts.validate.is_some() {
        // Reduced-precision kernels differ by CPU: say which one the validation ran on.
        meta["validated_on_cpu"] = crate::native::int8_kernel_summary().into();
    }
    crate::fsutil::write_atomic(
        &tmp.join(METADATA_FILE),
        crate::pyjson::to_python_json(&meta).as_bytes(),
    )?;
    model.generation.save(&tmp)?;
    for name in TOKENIZER_FILES {
        let src = model.dir.join(name);
        if src.is_file() {
            let dst = tmp.join(name);
            std::fs::copy(&src, &dst).map_err(|e| Error::io("copy", &src, e))?;
        }
    }
    let export_time = started.elapsed();
    let started = Instant::now();
    let validation = match &opts.validate {
        Some(v) => Some(validate(&tmp, cfg, &model.weights, v)?),
        None => None,
    };
    let validation_time = started.elapsed();
    let files = dir_files(&tmp)?;
    let export_bytes = files.iter().map(|(_, l)| l).sum();
    let dir = out.commit()?;
    Ok(ExportReport {
        dir,
        files,
        checkpoint_bytes: checkpoint_bytes(&model.dir)?,
        export_bytes,
        validation,
        export_time,
        validation_time,
    })
}
