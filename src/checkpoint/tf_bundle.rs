//! Mesh-TensorFlow / T5 checkpoints: TensorFlow tensor bundles (`model.ckpt-N.index` and
//! `model.ckpt-N.data-0000i-of-0000K`), read without TensorFlow.
//!
//! The format is TensorFlow's (`tensorflow/core/util/tensor_bundle/tensor_bundle.{h,cc,proto}`):
//! the `.index` is a sorted table ([`table`]) whose key "" holds a `BundleHeaderProto` (shard
//! count, endianness, version) and whose every other key is a variable name with its
//! `BundleEntryProto` ([`proto`]: dtype, shape, shard, offset, size, masked CRC-32C of the bytes).
//! The data shards hold the tensors' raw little-endian bytes. Every size and offset is checked
//! against the files before anything is allocated or read, each block's and each tensor's
//! checksum is verified ([`crc32c`]), and sliced (partitioned) variables are refused.
//!
//! Variables are renamed and transposed into Hugging Face's layout as transformers'
//! `load_tf_weights_in_t5` does ([`names`]) and copied, in their stored dtype, into one owned
//! buffer per shard (a transposed copy is needed anyway), which [`super::Weights`] then serves
//! like any other checkpoint.

pub(crate) mod crc32c;
mod names;
mod proto;
mod table;

use super::{Backing, Entry, Format, Shard, Weights};
use crate::config::T5Config;
use crate::error::{Error, Result};
use memmap2::Mmap;
use names::Mapped;
use prost::Message;
use proto::{data_type, BundleEntryProto, BundleHeaderProto};
use safetensors::tensor::{Dtype, TensorInfo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The label [`Weights::format`] gives these checkpoints.
pub(crate) const FORMAT: &str = "tensorflow-bundle";

/// The most data shards a bundle may declare (TF names them with five digits).
const MAX_SHARDS: i32 = 100_000;

/// A checkpoint found in a directory: its prefix, and how it was chosen when that needs saying.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// `dir/model.ckpt-N` (the files are `<prefix>.index` and `<prefix>.data-*`).
    pub prefix: PathBuf,
    pub note: Option<String>,
}

fn index_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".index")
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// TF's `DataFilename`: `<prefix>.data-00001-of-00004`.
fn data_path(prefix: &Path, shard: i32, num_shards: i32) -> PathBuf {
    with_suffix(prefix, &format!(".data-{shard:05}-of-{num_shards:05}"))
}

/// The checkpoint of `dir`: the one the `checkpoint` file names, else the only `*.index` with a
/// first data shard beside it, else the one with the highest step (`model.ckpt-<step>`).
/// `None` when the directory holds no bundle.
pub(crate) fn find(dir: &Path) -> Result<Option<Found>> {
    let state = dir.join("checkpoint");
    if state.is_file() {
        return from_state_file(dir, &state).map(Some);
    }
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    let files: Vec<String> = listing
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let candidates = files
        .iter()
        .filter_map(|name| name.strip_suffix(".index"))
        .filter(|stem| {
            let first_shard = format!("{stem}.data-00000-of-");
            files.iter().any(|f| f.starts_with(&first_shard))
        })
        .map(|stem| dir.join(stem))
        .collect();
    choose(dir, candidates)
}

/// The step of `model.ckpt-1000` (digits after the last '-').
fn step(prefix: &Path) -> Option<u64> {
    let name = prefix.file_name()?.to_str()?;
    name.rsplit_once('-')?.1.parse().ok()
}

fn choose(dir: &Path, mut candidates: Vec<PathBuf>) -> Result<Option<Found>> {
    candidates.sort();
    let names = || {
        candidates
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match candidates.len() {
        0 => Ok(None),
        1 => Ok(Some(Found {
            prefix: candidates[0].clone(),
            note: None,
        })),
        _ => {
            let best = candidates
                .iter()
                .filter_map(|p| step(p).map(|s| (s, p)))
                .max_by_key(|(s, _)| *s);
            let Some((best_step, best)) = best else {
                return Err(Error::Checkpoint {
                    path: dir.to_path_buf(),
                    msg: format!(
                        "several TensorFlow checkpoints ({}) and no `checkpoint` file naming one",
                        names()
                    ),
                });
            };
            Ok(Some(Found {
                prefix: best.clone(),
                note: Some(format!(
                    "read step {best_step} ({}), the highest of the checkpoints {} (no \
                     `checkpoint` file names one)",
                    best.file_name().unwrap_or_default().to_string_lossy(),
                    names()
                )),
            }))
        }
    }
}

/// The prefix a `checkpoint` state file (text `CheckpointState`) names in `model_checkpoint_path`.
fn from_state_file(dir: &Path, state: &Path) -> Result<Found> {
    let text = std::fs::read_to_string(state).map_err(|e| Error::io("read", state, e))?;
    let bad = |msg: String| Error::Checkpoint {
        path: state.to_path_buf(),
        msg,
    };
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("model_checkpoint_path:"))
        .ok_or_else(|| bad("no `model_checkpoint_path:` line".into()))?;
    let quoted = line.trim();
    let named = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .ok_or_else(|| {
            bad(format!(
                "model_checkpoint_path {quoted} is not a quoted string"
            ))
        })?
        .replace("\\\"", "\"")
        .replace("\\\\", "\\");
    let named_path = Path::new(&named);
    // Relative paths are relative to the directory (as TF reads them); an absolute path from
    // another machine (gs://..., /home/...) is looked up by its file name in this directory.
    let (prefix, note) = if named_path.is_relative() && !named.contains("://") {
        (dir.join(named_path), None)
    } else if index_path(named_path).is_file() {
        (named_path.to_path_buf(), None)
    } else {
        let file = named.rsplit('/').next().unwrap_or(&named);
        let note = format!("the `checkpoint` file names {named}; read {file} in this directory");
        (dir.join(file), Some(note))
    };
    if !index_path(&prefix).is_file() {
        return Err(bad(format!(
            "names {named}, but {} does not exist",
            index_path(&prefix).display()
        )));
    }
    Ok(Found { prefix, note })
}

/// One variable of the index.
struct Variable {
    name: String,
    entry: BundleEntryProto,
}

/// A bundle's index: the header and every variable, in key order.
pub(crate) struct Index {
    path: PathBuf,
    num_shards: i32,
    variables: Vec<Variable>,
}

impl Index {
    /// Read and check `<prefix>.index`.
    pub(crate) fn open(prefix: &Path) -> Result<Self> {
        let path = index_path(prefix);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let bad = |msg: String| Error::Checkpoint {
            path: path.clone(),
            msg,
        };
        let entries = table::entries(&bytes).map_err(bad)?;
        let mut it = entries.into_iter();
        let header = match it.next() {
            Some((key, value)) if key.is_empty() => BundleHeaderProto::decode(value)
                .map_err(|e| bad(format!("header entry does not parse ({e})")))?,
            _ => {
                return Err(bad(
                    "no header entry (key \"\"); not a tensor bundle index".into()
                ))
            }
        };
        check_header(&header).map_err(bad)?;
        let mut variables = Vec::new();
        for (key, value) in it {
            let name = String::from_utf8_lossy(&key).into_owned();
            let entry = BundleEntryProto::decode(value).map_err(|e| Error::Tensor {
                path: path.clone(),
                name: name.clone(),
                msg: format!("BundleEntryProto does not parse ({e})"),
            })?;
            variables.push(Variable { name, entry });
        }
        Ok(Index {
            path,
            num_shards: header.num_shards,
            variables,
        })
    }

    /// Rows of `shared/embedding` (the vocabulary size), if the bundle has it.
    pub(crate) fn embedding_rows(&self) -> Option<usize> {
        let v = self
            .variables
            .iter()
            .find(|v| v.name == "shared/embedding")?;
        let dim = v.entry.shape.as_ref()?.dim.first()?;
        usize::try_from(dim.size).ok()
    }

    /// Whether the bundle has a separate output projection (`decoder/logits/kernel`).
    pub(crate) fn has_logits(&self) -> bool {
        self.variables
            .iter()
            .any(|v| v.name == "decoder/logits/kernel")
    }
}

fn check_header(h: &BundleHeaderProto) -> std::result::Result<(), String> {
    if !(1..=MAX_SHARDS).contains(&h.num_shards) {
        return Err(format!("header declares {} data shards", h.num_shards));
    }
    if h.endianness == proto::BIG_ENDIAN {
        return Err("a big-endian bundle; cbqa reads little-endian bundles only".into());
    }
    // kTensorBundleVersion is 1: a reader of version 1 may read what needs min_consumer <= 1.
    if let Some(v) = &h.version {
        if v.min_consumer > 1 || v.bad_consumers.contains(&1) {
            return Err(format!(
                "bundle version needs a newer reader (min_consumer {}, bad_consumers {:?})",
                v.min_consumer, v.bad_consumers
            ));
        }
    }
    Ok(())
}

/// A tensor ready to be read: its HF name, shape and dtype in the file, where its bytes are.
struct Planned {
    hf_name: String,
    tf_name: String,
    transpose: bool,
    dtype: i32,
    shape: Vec<usize>,
    shard: usize,
    offset: usize,
    size: usize,
    masked_crc: u32,
}

fn element_size(dtype: i32) -> Option<usize> {
    match dtype {
        data_type::DT_FLOAT => Some(4),
        data_type::DT_BFLOAT16 | data_type::DT_HALF => Some(2),
        _ => None,
    }
}

/// Check `v`'s entry (dtype, shape against size, shard id) and plan how to read it.
fn plan(
    v: &Variable,
    hf_name: String,
    transpose: bool,
    num_shards: usize,
) -> Result<Planned, String> {
    let e = &v.entry;
    if !e.slices.is_empty() {
        return Err(format!(
            "a partitioned variable (saved as {} slices); cbqa reads whole tensors only",
            e.slices.len()
        ));
    }
    let elem = element_size(e.dtype).ok_or_else(|| {
        format!(
            "dtype {}, expected DT_FLOAT, DT_BFLOAT16 or DT_HALF",
            data_type::name(e.dtype)
        )
    })?;
    let shape_proto = e.shape.as_ref().filter(|s| !s.unknown_rank);
    let mut shape = Vec::new();
    let mut bytes = elem as u64;
    for d in shape_proto.map(|s| s.dim.as_slice()).unwrap_or(&[]) {
        let n = u64::try_from(d.size).map_err(|_| format!("negative dimension {}", d.size))?;
        bytes = bytes
            .checked_mul(n)
            .ok_or_else(|| "shape's byte size overflows".to_string())?;
        shape.push(n as usize);
    }
    if transpose && shape.len() > 2 {
        return Err(format!("{}-D, expected a 1-D or 2-D tensor", shape.len()));
    }
    let shard = usize::try_from(e.shard_id)
        .ok()
        .filter(|&s| s < num_shards)
        .ok_or_else(|| format!("shard_id {} of {num_shards} shards", e.shard_id))?;
    let (offset, size) = (e.offset as u64, e.size as u64);
    if e.offset < 0 || e.size < 0 || size != bytes {
        return Err(format!(
            "entry size {} at offset {}, but its shape {shape:?} of {} needs {bytes} bytes",
            e.size,
            e.offset,
            data_type::name(e.dtype)
        ));
    }
    Ok(Planned {
        hf_name,
        tf_name: v.name.clone(),
        transpose,
        dtype: e.dtype,
        shape,
        shard,
        offset: offset as usize,
        size: size as usize,
        masked_crc: e.crc32c,
    })
}

/// Whether the planned bytes lie within their shard of `len` bytes.
fn check_in_shard(p: &Planned, len: usize) -> Result<(), String> {
    if p.offset.checked_add(p.size).is_none_or(|end| end > len) {
        return Err(format!(
            "bytes {}..{} run past the end of the data shard ({len} bytes); is it truncated?",
            p.offset,
            p.offset.saturating_add(p.size),
        ));
    }
    Ok(())
}

/// The safetensors dtype of a TF dtype the plan accepted.
fn stored_dtype(dtype: i32) -> Dtype {
    match dtype {
        data_type::DT_BFLOAT16 => Dtype::BF16,
        data_type::DT_HALF => Dtype::F16,
        _ => Dtype::F32,
    }
}

/// Append the planned tensor, read from its shard with its checksum verified, to `out` in its
/// stored dtype and torch's layout (transposed where TF stores it transposed); returns its
/// Hugging Face shape.
fn append_tensor(
    p: &Planned,
    shard: &[u8],
    out: &mut Vec<u8>,
) -> std::result::Result<Vec<usize>, String> {
    let bytes = &shard[p.offset..p.offset + p.size];
    let stored = crc32c::unmask(p.masked_crc);
    let actual = crc32c::value(bytes);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored crc32c {stored:#010x}, computed {actual:#010x} over bytes \
             {}..{}); the data shard is corrupt",
            p.offset,
            p.offset + p.size
        ));
    }
    let start = out.len();
    match (p.transpose, p.shape.as_slice()) {
        (true, &[rows, cols]) => {
            out.resize(start + bytes.len(), 0);
            let elem = stored_dtype(p.dtype).bitsize() / 8;
            super::transpose_into(bytes, rows, cols, elem, &mut out[start..]);
            Ok(vec![cols, rows])
        }
        _ => {
            out.extend_from_slice(bytes);
            Ok(p.shape.clone())
        }
    }
}

fn map_shard(path: &Path) -> Result<Mmap> {
    if !path.is_file() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: "data shard missing (the bundle's index lists it)".into(),
        });
    }
    super::map_file(path)
}

/// Open the bundle at `found` as [`Weights`] checked against `cfg`.
pub(super) fn open_weights(found: &Found, cfg: &T5Config) -> Result<Weights> {
    let index = Index::open(&found.prefix)?;
    let data_paths: Vec<PathBuf> = (0..index.num_shards)
        .map(|i| data_path(&found.prefix, i, index.num_shards))
        .collect();
    let maps = data_paths
        .iter()
        .map(|p| map_shard(p))
        .collect::<Result<Vec<_>>>()?;
    let mut planned = Vec::new();
    let mut unknown = Vec::new();
    for v in &index.variables {
        match names::map(&v.name) {
            Mapped::Skipped => {}
            Mapped::Unknown => unknown.push(v.name.clone()),
            Mapped::Tensor { name, transpose } => {
                let p = plan(v, name, transpose, maps.len()).map_err(|msg| Error::Tensor {
                    path: index.path.clone(),
                    name: v.name.clone(),
                    msg,
                })?;
                check_in_shard(&p, maps[p.shard].len()).map_err(|msg| Error::Tensor {
                    path: data_paths[p.shard].clone(),
                    name: v.name.clone(),
                    msg,
                })?;
                planned.push(p);
            }
        }
    }
    let (shards, entries) = load(&index.path, &data_paths, &maps, &planned)?;
    let mut w = Weights {
        shards,
        entries,
        unexpected: Vec::new(),
        format: Format::TensorflowBundle,
        note: found.note.clone(),
    };
    w.check(cfg)?;
    w.unexpected.extend(unknown);
    Ok(w)
}

/// Read every planned tensor into one owned buffer per data shard, in its stored dtype. The index is listed as
/// the first (tensor-less) shard so that [`Weights::files`] names every file read.
fn load(
    index_path: &Path,
    data_paths: &[PathBuf],
    maps: &[Mmap],
    planned: &[Planned],
) -> Result<(Vec<Shard>, BTreeMap<String, Entry>)> {
    // Each planned size was checked against its shard: the copies are at most the shards' bytes.
    let mut sizes = vec![0usize; maps.len()];
    for p in planned {
        sizes[p.shard] += p.size;
    }
    let mut buffers: Vec<Vec<u8>> = sizes.iter().map(|&n| Vec::with_capacity(n)).collect();
    let mut entries = BTreeMap::new();
    for p in planned {
        let buf = &mut buffers[p.shard];
        let start = buf.len();
        let shape = append_tensor(p, &maps[p.shard], buf).map_err(|msg| Error::Tensor {
            path: data_paths[p.shard].clone(),
            name: p.tf_name.clone(),
            msg,
        })?;
        let info = TensorInfo {
            dtype: stored_dtype(p.dtype),
            shape,
            data_offsets: (start, buf.len()),
        };
        if entries
            .insert(
                p.hf_name.clone(),
                Entry {
                    shard: p.shard + 1,
                    info,
                },
            )
            .is_some()
        {
            return Err(Error::Tensor {
                path: index_path.to_path_buf(),
                name: p.tf_name.clone(),
                msg: format!("a second variable maps to {}", p.hf_name),
            });
        }
    }
    let mut shards = vec![Shard {
        path: index_path.to_path_buf(),
        bytes: Backing::Owned(Vec::new()),
        data_start: 0,
    }];
    for (path, buf) in data_paths.iter().zip(buffers) {
        shards.push(Shard {
            path: path.clone(),
            bytes: Backing::Owned(buf),
            data_start: 0,
        });
    }
    Ok((shards, entries))
}

/// The vocabulary size and whether the output projection is separate, read from the index of
/// `dir`'s TF checkpoint (for a config derived from `operative_config.gin`).
pub(crate) fn vocab_and_logits(dir: &Path) -> Result<Option<(usize, bool)>> {
    let Some(found) = find(dir)? else {
        return Ok(None);
    };
    let index = Index::open(&found.prefix)?;
    let rows = index.embedding_rows().ok_or_else(|| Error::Tensor {
        path: index.path.clone(),
        name: "shared/embedding".into(),
        msg: "missing or without a shape (the vocabulary size is read from it)".into(),
    })?;
    Ok(Some((rows, index.has_logits())))
}

/// The Mesh-TF variables of `<prefix>.index` with their dtype name, shape, shard, offset and
/// size, in key order (what `tf.train.list_variables` lists, plus where the bytes are).
pub fn list_variables(prefix: &Path) -> Result<Vec<VariableInfo>> {
    let index = Index::open(prefix)?;
    Ok(index
        .variables
        .iter()
        .map(|v| VariableInfo {
            name: v.name.clone(),
            dtype: data_type::name(v.entry.dtype),
            shape: v
                .entry
                .shape
                .as_ref()
                .map(|s| s.dim.iter().map(|d| d.size).collect())
                .unwrap_or_default(),
            shard: v.entry.shard_id,
            offset: v.entry.offset,
            size: v.entry.size,
        })
        .collect())
}

/// One variable of a bundle's index, as [`list_variables`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableInfo {
    pub name: String,
    /// TF's name of the dtype (`DT_FLOAT`).
    pub dtype: String,
    pub shape: Vec<i64>,
    pub shard: i32,
    pub offset: i64,
    pub size: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_into_matches_the_definition_across_tiles() {
        for (rows, cols) in [(1, 1), (3, 5), (33, 70), (64, 1)] {
            let values: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
            let src: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut dst = vec![0u8; src.len()];
            crate::checkpoint::transpose_into(&src, rows, cols, 4, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    let at = (c * rows + r) * 4;
                    let got = f32::from_le_bytes(dst[at..at + 4].try_into().unwrap());
                    assert_eq!(got, values[r * cols + c], "{rows}x{cols} at ({r}, {c})");
                }
            }
        }
    }

    #[test]
    fn checkpoint_prefixes_and_steps() {
        let prefix = Path::new("/d/model.ckpt-1000");
        assert_eq!(index_path(prefix), Path::new("/d/model.ckpt-1000.index"));
        assert_eq!(
            data_path(prefix, 1, 16),
            Path::new("/d/model.ckpt-1000.data-00001-of-00016")
        );
        assert_eq!(step(prefix), Some(1000));
        assert_eq!(step(Path::new("/d/model.ckpt")), None);
    }

    #[test]
    fn several_prefixes_pick_the_highest_step_and_say_so() {
        let dir = Path::new("/d");
        let found = choose(
            dir,
            vec![dir.join("model.ckpt-900"), dir.join("model.ckpt-10000")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(found.prefix, dir.join("model.ckpt-10000"));
        let note = found.note.unwrap();
        assert!(
            note.contains("step 10000") && note.contains("model.ckpt-900"),
            "{note}"
        );
        let err = choose(dir, vec![dir.join("a"), dir.join("b")]).unwrap_err();
        assert!(
            err.to_string().contains("several TensorFlow checkpoints"),
            "{err}"
        );
        assert!(choose(dir, vec![]).unwrap().is_none());
    }
}
