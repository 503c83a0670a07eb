//! Checkpoint I/O in Hugging Face's layout: `config.json`, `model.safetensors` (or a sharded
//! `model.safetensors.index.json`) or else a PyTorch `pytorch_model.bin` (or a sharded
//! `pytorch_model.bin.index.json`; zip or legacy format, read by [`torch_zip`] and the restricted
//! unpickler [`pickle`]) or else a Mesh-TensorFlow checkpoint (a TF tensor bundle,
//! `model.ckpt-N.index` + `.data-*` shards, read by [`tf_bundle`]),
//! `tokenizer.json` and `generation_config.json`.
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

mod pickle;
pub mod tf_bundle;
mod torch_zip;

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

/// The bytes a shard's tensors are in: the memory-mapped file, or tensors converted on load
/// (a TensorFlow bundle's, transposed into Hugging Face's layout).
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
    /// Start of the data section within the file.
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

/// The weights of a checkpoint directory, memory-mapped and checked against the config.
pub struct Weights {
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
    /// Tensors present in the files that a T5 of this config does not have.
    pub unexpected: Vec<String>,
    /// What [`Weights::format`] reports.
    format: &'static str,
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
    /// Open the weights of `dir`: `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`, else `pytorch_model.bin` (or its index), else a TF
    /// checkpoint (see [`tf_bundle`]; its tensors are renamed, transposed and converted to f32
    /// on load). Checks every expected tensor's presence, shape and dtype and
    /// reports the first problem by tensor name.
    pub fn open(dir: &Path, cfg: &T5Config) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let pt_single = dir.join("pytorch_model.bin");
        let pt_index = dir.join("pytorch_model.bin.index.json");
        let (files, torch): (Vec<PathBuf>, bool) = if single.exists() {
            (vec![single], false)
        } else if index.exists() {
            (shard_files(&index)?, false)
        } else if pt_single.exists() {
            (vec![pt_single], true)
        } else if pt_index.exists() {
            (shard_files(&pt_index)?, true)
        } else if let Some(found) = tf_bundle::find(dir)? {
            return tf_bundle::open_weights(&found, cfg);
        } else {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                msg: "no model.safetensors, model.safetensors.index.json, pytorch_model.bin, \
                      pytorch_model.bin.index.json or TensorFlow checkpoint (model.ckpt-N.index) \
                      (a Hugging Face or Mesh-TF checkpoint directory is expected)"
                    .into(),
            });
        };
        let mut shards = Vec::new();
        let mut entries = BTreeMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let mmap = map_file(&path)?;
            let data_start = if torch {
                read_torch(&path, &mmap, i, &mut entries)?;
                0
            } else {
                let (n, meta) =
                    SafeTensors::read_metadata(&mmap).map_err(|e| Error::Checkpoint {
                        path: path.clone(),
                        msg: format!("not a valid safetensors file ({e}); is it truncated?"),
                    })?;
                for (name, info) in meta.tensors() {
                    entries.insert(
                        name,
                        Entry {
                            shard: i,
                            info: info.clone(),
                        },
                    );
                }
                8 + n
            };
            shards.push(Shard {
                path,
                bytes: Backing::Mapped(mmap),
                data_start,
            });
        }
        let mut w = Weights {
            shards,
            entries,
            unexpected: Vec::new(),
            format: if torch { "pytorch" } else { "safetensors" },
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
                    msg: format!("dtype {:?}, expected F32, F16 or BF16", entry.info.dtype),
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
        Ok(())
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

    /// The format of the files: `safetensors`, `pytorch` (a torch.save zip archive) or
    /// `tensorflow-bundle` (a Mesh-TF checkpoint).
    pub fn format(&self) -> &'static str {
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

/// Locate the tensors of the torch.save file `path` (zip or legacy) (mapped as `mmap`, shard `shard`) in `entries`.
fn read_torch(
    path: &Path,
    mmap: &[u8],
    shard: usize,
    entries: &mut BTreeMap<String, Entry>,
) -> Result<()> {
    let located = if torch_zip::is_zip(mmap) {
        torch_zip::locate(mmap)
    } else {
        torch_zip::locate_legacy(mmap)
    }
    .map_err(|(name, msg)| match name {
        Some(name) => Error::Tensor {
            path: path.to_path_buf(),
            name,
            msg,
        },
        None => Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        },
    })?;
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
    Ok(())
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

/// Write `tensors` as a safetensors file with metadata `{"format": "pt"}` (what transformers
/// expects), through a temp file and a rename.
pub fn save_safetensors(path: &Path, tensors: &BTreeMap<String, OwnedTensor>) -> Result<()> {
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
