//! `cbqa convert`: any model directory cbqa reads (safetensors, PyTorch pickles, Flax msgpack)
//! written in Hugging Face's PyTorch layout: `model.safetensors` (every tensor in its stored
//! dtype, bit for bit; tied weights once, as transformers saves them), `config.json`,
//! `generation_config.json`, `tokenizer.json`, and the tokenizer files the source has.
//!
//! The directory is built in a temporary sibling of `out` and renamed into place when complete
//! ([`crate::fsutil::OutputDir`]): a failure leaves nothing, and an existing non-empty `out` is
//! refused unless `force`.

use crate::checkpoint::{dtype_name, expected_tensors, save_safetensors};
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, OutputDir};
use crate::model_dir::ModelDir;
use crate::pyjson::to_python_json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Tokenizer files copied as they are when the source directory has them.
const COPIED: [&str; 3] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
];

/// What to convert and where.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The source model directory.
    pub model: PathBuf,
    /// The directory to write.
    pub out: PathBuf,
    /// Replace a non-empty `out` (only once the new directory is complete).
    pub force: bool,
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// The directory written.
    pub dir: PathBuf,
    /// The format the weights were read from (`pytorch`, `flax`, …).
    pub source_format: &'static str,
    /// Tensors written to `model.safetensors`.
    pub tensors: usize,
    /// The files of the new directory, sorted.
    pub files: Vec<String>,
}

/// Open and check `opts.model`, then write it in Hugging Face's safetensors layout to `opts.out`.
pub fn convert(opts: &ConvertOptions) -> Result<ConvertReport> {
    let model = ModelDir::open(&opts.model)?;
    let out = OutputDir::create(&opts.out, opts.force)?;
    let tensors = write_weights(&model, out.path())?;
    let dtype = dtype_name(model.weights.dtype());
    write_config(&model, out.path(), &dtype)?;
    write_tokenizer_and_generation(&model, out.path())?;
    let mut files: Vec<String> = std::fs::read_dir(out.path())
        .map_err(|e| Error::io("read directory", out.path(), e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    let dir = out.commit()?;
    Ok(ConvertReport {
        dir,
        source_format: model.weights.format(),
        tensors,
        files,
    })
}

/// `model.safetensors`: the tensors a T5 of this config has (transformers' state dict less the
/// tied copies it does not save), borrowed from the open weights, in their stored dtype.
fn write_weights(model: &ModelDir, dir: &Path) -> Result<usize> {
    let mut tensors = BTreeMap::new();
    for spec in expected_tensors(&model.config) {
        let raw = model.weights.raw(&spec.name)?;
        tensors.insert(spec.name, raw);
    }
    save_safetensors(&dir.join("model.safetensors"), &tensors)?;
    Ok(tensors.len())
}

/// `config.json` as the source has it, but naming the PyTorch class where a Flax or TensorFlow
/// save named its own (`FlaxT5ForConditionalGeneration`), and with the dtype the weights are
/// stored in (`dtype`, and `torch_dtype` where an older config has it), as transformers writes
/// it: `from_pretrained(dtype="auto")` takes it from there.
/// A Mesh-TF directory without `config.json` gets the config its `operative_config.gin` implies,
/// as transformers would write it.
fn write_config(model: &ModelDir, dir: &Path, dtype: &str) -> Result<()> {
    let source = model.dir.join("config.json");
    let text = if source.exists() {
        std::fs::read_to_string(&source).map_err(|e| Error::io("read", &source, e))?
    } else {
        model.config.to_json_string()
    };
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: source.clone(),
        source: e,
    })?;
    if let Some(archs) = v.get_mut("architectures").and_then(|a| a.as_array_mut()) {
        for a in archs.iter_mut() {
            if let Some(name) = a.as_str() {
                let torch = name
                    .strip_prefix("Flax")
                    .or_else(|| name.strip_prefix("TF"))
                    .unwrap_or(name);
                *a = serde_json::Value::from(torch);
            }
        }
    }
    if let Some(map) = v.as_object_mut() {
        if map.contains_key("torch_dtype") {
            map.insert("torch_dtype".into(), dtype.into());
        }
        if map.contains_key("dtype") || !map.contains_key("torch_dtype") {
            map.insert("dtype".into(), dtype.into());
        }
    }
    write_atomic(&dir.join("config.json"), to_python_json(&v).as_bytes())
}

/// `tokenizer.json` (the source's file, else the tokenizer the directory was opened with,
/// serialised), `generation_config.json` (the source's, else the one derived from the config),
/// and the other tokenizer files the source has.
fn write_tokenizer_and_generation(model: &ModelDir, dir: &Path) -> Result<()> {
    let tok = model.dir.join("tokenizer.json");
    if tok.exists() {
        copy(&tok, dir)?;
    } else {
        let text = model
            .tokenizer
            .to_string(false)
            .map_err(|e| Error::Tokenizer {
                path: dir.join("tokenizer.json"),
                msg: format!("cannot serialise the tokenizer: {e}"),
            })?;
        write_atomic(&dir.join("tokenizer.json"), text.as_bytes())?;
    }
    let gen = model.dir.join("generation_config.json");
    if gen.exists() {
        copy(&gen, dir)?;
    } else {
        model.generation.save(dir)?;
    }
    for name in COPIED {
        let path = model.dir.join(name);
        if path.exists() {
            copy(&path, dir)?;
        }
    }
    Ok(())
}

/// Copy file `path` into `dir` under its own name.
fn copy(path: &Path, dir: &Path) -> Result<()> {
    let name = path.file_name().unwrap_or_default();
    std::fs::copy(path, dir.join(name))
        .map(|_| ())
        .map_err(|e| Error::io("copy", path, e))
}
