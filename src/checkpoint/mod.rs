//! Checkpoint I/O in Hugging Face's layout: `config.json`, `model.safetensors` (or a sharded
//! `model.safetensors.index.json`) or else a PyTorch `pytorch_model.bin` (or a sharded
//! `pytorch_model.bin.index.json`; zip or legacy format, read by [`torch_zip`] and the restricted
//! unpickler [`pickle`]) or else a Flax `flax_model.msgpack` (or a sharded
//! `flax_model.msgpack.index.json`, read by [`msgpack`]) or else a Mesh-TensorFlow checkpoint
//! (a TF tensor bundle, `model.ckpt-N.index` + `.data-*` shards, read by [`tf_bundle`]),
//! `tokenizer.json` and `generation_config.json`. [`Weights::format`] says which was read.
//!
//! Tensor names are composed from the module path exactly as `T5ForConditionalGeneration`'s
//! `state_dict()` names them, so they match transformers by construction (see
//! [`expected_tensors`]). Safetensors files are memory-mapped; tensors are converted to f32 only
//! when asked for, so loading a large checkpoint costs no copy up front.

use crate::config::T5Config;
pub use crate::config::{expected_tensors, TensorPath, TensorSpec};
use crate::error::{Error, Result};
use crate::fsutil::temp_sibling;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

mod msgpack;
mod pickle;
pub mod tf_bundle;
mod torch_zip;

/// A tensor located in a file's bytes (or in the buffer a Flax file is decoded into): name,
/// dtype, shape and absolute byte range.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

/// An error about a whole file (`(None, msg)`) or about one tensor (`(Some(name), msg)`).
pub(crate) type LocateError = (Option<String>, String);

/// The file format the weights of a directory were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `model.safetensors` (or its sharded index).
    Safetensors,
    /// `pytorch_model.bin` (or its sharded index): a torch.save zip or legacy file.
    Pytorch,
    /// `flax_model.msgpack` (or its sharded index): flax's msgpack serialization.
    Flax,
    /// A Mesh-TF checkpoint: a TF tensor bundle (see [`tf_bundle`]).
    TensorflowBundle,
}

impl Format {
    /// The format's name as `cbqa inspect` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Pytorch => "pytorch",
            Format::Flax => "flax",
            Format::TensorflowBundle => tf_bundle::FORMAT,
        }
    }
}

/// The weights files a directory may hold, in order of preference (transformers' own for
/// safetensors, pickle, Flax): file name, format, whether it is a sharded index.
const WEIGHTS_FILES: [(&str, Format, bool); 6] = [
    ("model.safetensors", Format::Safetensors, false),
    ("model.safetensors.index.json", Format::Safetensors, true),
    ("pytorch_model.bin", Format::Pytorch, false),
    ("pytorch_model.bin.index.json", Format::Pytorch, true),
    ("flax_model.msgpack", Format::Flax, false),
    ("flax_model.msgpack.index.json", Format::Flax, true),
    // TensorFlow checkpoints come after Flax: `tf_bundle::find` in `Weights::open`.
];

/// The format and files of the weights of `dir`, the first of [`WEIGHTS_FILES`] present.
fn weights_files(dir: &Path) -> Result<Option<(Format, Vec<PathBuf>)>> {
    for (name, format, index) in WEIGHTS_FILES {
        let path = dir.join(name);
        if path.exists() {
            let files = if index {
                shard_files(&path)?
            } else {
                vec![path]
            };
            return Ok(Some((format, files)));
        }
    }
    Ok(None)
}

/// The error for a directory with no weights file of any format.
fn no_weights(dir: &Path) -> Error {
    let names: Vec<&str> = WEIGHTS_FILES.iter().map(|(n, ..)| *n).collect();
    Error::Checkpoint {
        path: dir.to_path_buf(),
        msg: format!(
            "none of {} or a TensorFlow checkpoint (model.ckpt-N.index) (a Hugging Face or \
             Mesh-TF checkpoint directory is expected)",
            names.join(", ")
        ),
    }
}

/// Tensors that may be present but are aliases of `shared.weight` (older or tied checkpoints).
fn is_alias(name: &str, cfg: &T5Config) -> bool {
    matches!(
        name,
        "encoder.embed_tokens.weight" | "decoder.embed_tokens.weight"
    ) || (cfg.tie_word_embeddings && name == "lm_head.weight")
}

/// Element types a checkpoint may store.
pub(crate) fn accepted_dtype(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// The bytes a shard's tensors are in: the memory-mapped file (safetensors, pickles), or tensors
/// converted on load (a Flax file's or a TensorFlow bundle's, transposed into Hugging Face's
/// layout).
enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

struct Shard {
    path: PathBuf,
    bytes: Backing,
    /// Start of the data section within `bytes`.
    data_start: usize,
}

/// A tensor's location: which shard, its dtype, shape and byte range within the data section.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    info: TensorInfo,
}

/// A borrowed tensor: raw little-endian bytes and their description.
#[derive(Debug, Clone, Copy)]
pub struct RawTensor<'a> {
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

impl RawTensor<'_> {
    /// The values as f32 (f16 and bf16 are widened exactly).
    pub fn to_f32(&self) -> Vec<f32> {
        bytes_to_f32(self.dtype, self.bytes)
    }
}

impl View for &RawTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn bytes_to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => Vec::new(),
    }
}

/// Write the row-major `rows` × `cols` matrix `src` (elements of `elem` bytes) transposed
/// (`cols` × `rows`) into `dst`, in tiles so that reads and writes both stay in cache. The
/// TensorFlow and Flax readers store kernels `[in, out]`; torch's layout is `[out, in]`.
pub(crate) fn transpose_into(src: &[u8], rows: usize, cols: usize, elem: usize, dst: &mut [u8]) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    let (from, to) = ((r * cols + c) * elem, (c * rows + r) * elem);
                    dst[to..to + elem].copy_from_slice(&src[from..from + elem]);
                }
            }
        }
    }
}

/// The weights of a checkpoint directory, memory-mapped and checked against the config.
pub struct Weights {
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
    /// Tensors present in the files that a T5 of this config does not have (transformers
    /// ignores them too; those of a dtype no T5 weight has are not kept).
    pub unexpected: Vec<String>,
    format: Format,
    /// How the files were chosen, where that needs saying (e.g. which of several TF steps).
    pub note: Option<String>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field(
                "files",
                &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    // SAFETY: the map is read-only; like every safetensors reader we rely on nobody truncating
    // the file while it is open (the same contract as transformers' safe_open).
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io("memory-map", path, e))
}

impl Weights {
    /// Open the weights of `dir`: `model.safetensors` (or the shards listed in
    /// `model.safetensors.index.json`), else `pytorch_model.bin` (or its index), else
    /// `flax_model.msgpack` (or its index), else a TF checkpoint (see [`tf_bundle`]; its tensors
    /// are renamed, transposed and converted to f32 on load). Checks every expected tensor's
    /// presence, shape and dtype and reports the first problem by tensor name.
    pub fn open(dir: &Path, cfg: &T5Config) -> Result<Self> {
        let Some((format, files)) = weights_files(dir)? else {
            if let Some(found) = tf_bundle::find(dir)? {
                return tf_bundle::open_weights(&found, cfg);
            }
            return Err(no_weights(dir));
        };
        let mut shards = Vec::new();
        let mut entries = BTreeMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let mmap = map_file(&path)?;
            let (bytes, data_start) = match format {
                Format::Safetensors => {
                    let n = read_safetensors(&path, &mmap, i, &mut entries)?;
                    (Backing::Mapped(mmap), 8 + n)
                }
                Format::Pytorch => {
                    let located = if torch_zip::is_zip(&mmap) {
                        torch_zip::locate(&mmap)
                    } else {
                        torch_zip::locate_legacy(&mmap)
                    };
                    let located = located.map_err(|e| locate_error(&path, e))?;
                    add_located(located, i, &mut entries);
                    (Backing::Mapped(mmap), 0)
                }
                Format::Flax => {
                    let (buf, located) =
                        msgpack::read(&mmap).map_err(|e| locate_error(&path, e))?;
                    add_located(located, i, &mut entries);
                    (Backing::Owned(buf), 0)
                }
                // Not in WEIGHTS_FILES: a TF bundle is found and opened by tf_bundle above.
                Format::TensorflowBundle => return Err(no_weights(dir)),
            };
            shards.push(Shard {
                path,
                bytes,
                data_start,
            });
        }
        let mut w = Weights {
            shards,
            entries,
            unexpected: Vec::new(),
            format,
            note: None,
        };
        w.check(cfg)?;
        Ok(w)
    }

    fn check(&mut self, cfg: &T5Config) -> Result<()> {
        let expected = expected_tensors(cfg);
        for spec in &expected {
            let Some(entry) = self.entries.get(&spec.name) else {
                return Err(Error::Tensor {
                    path: self.describe_files(),
                    name: spec.name.clone(),
                    msg: format!("missing (expected shape {:?})", spec.shape),
                });
            };
            let path = self.shards[entry.shard].path.clone();
            if entry.info.shape != spec.shape {
                return Err(Error::Tensor {
                    path,
                    name: spec.name.clone(),
                    msg: format!(
                        "shape {:?}, expected {:?} from config.json",
                        entry.info.shape, spec.shape
                    ),
                });
            }
            if !accepted_dtype(entry.info.dtype) {
                return Err(Error::Tensor {
                    path,
                    name: spec.name.clone(),
                    msg: self.dtype_message(entry.info.dtype),
                });
            }
        }
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|s| s.name.as_str()).collect();
        self.unexpected = self
            .entries
            .keys()
            .filter(|k| !known.contains(k.as_str()) && !is_alias(k, cfg))
            .cloned()
            .collect();
        // Tensors transformers ignores (not of the model) and no T5 weight could be: skipped.
        let unexpected = &self.unexpected;
        self.entries
            .retain(|name, e| accepted_dtype(e.info.dtype) || !unexpected.contains(name));
        Ok(())
    }

    /// Why a tensor of element type `dtype` cannot be a T5 weight, in the terms of the format.
    fn dtype_message(&self, dtype: Dtype) -> String {
        let name = dtype_name(dtype);
        let class = match (self.format, pickle::storage_class(dtype)) {
            (Format::Pytorch, Some(class)) => format!(" ({class})"),
            _ => String::new(),
        };
        format!("is {name}{class}; a T5 state dict holds float32/float16/bfloat16")
    }

    fn describe_files(&self) -> PathBuf {
        match self.shards.as_slice() {
            [one] => one.path.clone(),
            many => PathBuf::from(
                many.iter()
                    .map(|s| s.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        }
    }

    /// The files the weights were read from.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// The format of the files: `safetensors`, `pytorch` (a torch.save zip or legacy file),
    /// `flax` (flax's msgpack) or `tensorflow-bundle` (a Mesh-TF checkpoint);
    /// [`Weights::file_format`] as an enum.
    pub fn format(&self) -> &'static str {
        self.format.name()
    }

    /// The format of the files.
    pub fn file_format(&self) -> Format {
        self.format
    }

    /// The raw bytes of tensor `name`.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        let entry = self.entries.get(name).ok_or_else(|| Error::Tensor {
            path: self.describe_files(),
            name: name.into(),
            msg: "missing".into(),
        })?;
        let shard = &self.shards[entry.shard];
        let (a, b) = entry.info.data_offsets;
        Ok(RawTensor {
            dtype: entry.info.dtype,
            shape: &entry.info.shape,
            bytes: &shard.bytes[shard.data_start + a..shard.data_start + b],
        })
    }

    /// Tensor `name` as f32 values (row-major) with its shape.
    pub fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let raw = self.raw(name)?;
        Ok((raw.to_f32(), raw.shape.to_vec()))
    }

    /// Names of all tensors in the files.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The element type most of the expected tensors are stored in.
    pub fn dtype(&self) -> Dtype {
        self.entries
            .get("shared.weight")
            .map(|e| e.info.dtype)
            .unwrap_or(Dtype::F32)
    }
}

/// NumPy's / torch's name of element type `dtype` (`int64`, `bfloat16`), as config.json's
/// `dtype` and error messages name it.
pub fn dtype_name(dtype: Dtype) -> String {
    match dtype {
        Dtype::F32 => "float32".into(),
        Dtype::F16 => "float16".into(),
        Dtype::BF16 => "bfloat16".into(),
        Dtype::F64 => "float64".into(),
        Dtype::I64 => "int64".into(),
        Dtype::I32 => "int32".into(),
        Dtype::I16 => "int16".into(),
        Dtype::I8 => "int8".into(),
        Dtype::U64 => "uint64".into(),
        Dtype::U32 => "uint32".into(),
        Dtype::U16 => "uint16".into(),
        Dtype::U8 => "uint8".into(),
        Dtype::BOOL => "bool".into(),
        Dtype::C64 => "complex64".into(),
        other => format!("{other:?}"),
    }
}

/// Read the header of safetensors file `path` (mapped as `mmap`, shard `shard`) into `entries`;
/// returns the header's length.
fn read_safetensors(
    path: &Path,
    mmap: &[u8],
    shard: usize,
    entries: &mut BTreeMap<String, Entry>,
) -> Result<usize> {
    let (n, meta) = SafeTensors::read_metadata(mmap).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("not a valid safetensors file ({e}); is it truncated?"),
    })?;
    for (name, info) in meta.tensors() {
        entries.insert(
            name,
            Entry {
                shard,
                info: info.clone(),
            },
        );
    }
    Ok(n)
}

/// A reader's error about file `path` (or one of its tensors) as a [`Error`] naming both.
fn locate_error(path: &Path, (name, msg): LocateError) -> Error {
    match name {
        Some(name) => Error::Tensor {
            path: path.to_path_buf(),
            name,
            msg,
        },
        None => Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        },
    }
}

/// Add the tensors located in shard `shard` to `entries`.
fn add_located(located: Vec<Located>, shard: usize, entries: &mut BTreeMap<String, Entry>) {
    for t in located {
        entries.insert(
            t.name,
            Entry {
                shard,
                info: TensorInfo {
                    dtype: t.dtype,
                    shape: t.shape,
                    data_offsets: (t.start, t.end),
                },
            },
        );
    }
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io("read", index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: index.to_path_buf(),
        source,
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Checkpoint {
            path: index.to_path_buf(),
            msg: "no \"weight_map\" object".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| Error::Checkpoint {
            path: index.to_path_buf(),
            msg: format!("weight_map[\"{name}\"] is not a file name"),
        })?;
        if file.contains('/') || file.contains("..") {
            return Err(Error::Checkpoint {
                path: index.to_path_buf(),
                msg: format!("weight_map[\"{name}\"] = \"{file}\" is not a plain file name"),
            });
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    files.sort();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// An owned tensor to be written: name, dtype, shape and little-endian bytes.
#[derive(Debug, Clone)]
pub struct OwnedTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl OwnedTensor {
    /// An f32 tensor from values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        OwnedTensor {
            dtype: Dtype::F32,
            shape,
            bytes,
        }
    }
}

impl View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Write `tensors` (owned, or borrowed [`RawTensor`]s of open weights) as a safetensors file with
/// metadata `{"format": "pt"}` (what transformers expects), through a temp file and a rename.
pub fn save_safetensors<T>(path: &Path, tensors: &BTreeMap<String, T>) -> Result<()>
where
    for<'t> &'t T: View,
{
    let tmp = temp_sibling(path);
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let res = safetensors::serialize_to_file(tensors.iter(), Some(meta), &tmp)
        .map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("cannot write safetensors: {e}"),
        })
        .and_then(|_| {
            std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))
        });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_hf_layout() {
        let mut cfg = T5Config::preset("t5-v1_1-small").unwrap();
        cfg.num_layers = 2;
        cfg.num_decoder_layers = Some(1);
        let names: Vec<String> = expected_tensors(&cfg).into_iter().map(|t| t.name).collect();
        assert!(names.contains(
            &"encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight".into()
        ));
        assert!(!names.contains(
            &"encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight".into()
        ));
        assert!(names.contains(&"decoder.block.0.layer.1.EncDecAttention.q.weight".into()));
        assert!(names.contains(&"decoder.block.0.layer.2.DenseReluDense.wi_1.weight".into()));
        assert!(names.contains(&"lm_head.weight".into()));
        assert!(!names.iter().any(|n| n.starts_with("decoder.block.1")));
    }
}
