//! Flax checkpoints (`flax_model.msgpack`, or the shards of `flax_model.msgpack.index.json`):
//! our own small MessagePack decoder and flax's serialization on top of it.
//!
//! flax (`flax/serialization.py`) writes the parameters as nested maps with string keys; each
//! array is a MessagePack ext of type 1 whose payload is itself MessagePack: the array
//! `[shape, dtype name, row-major bytes]`. An array over 1 GiB is split into a map
//! `{"__msgpack_chunked_array__": true, "shape": {"0": n, …}, "chunks": {"0": ext, …}}` of 1-D
//! chunks. Ext types 2 (a Python complex) and 3 (a NumPy scalar) cannot be T5 weights and are
//! refused by name.
//!
//! Our own decoder, not a crate: a checkpoint needs a dozen of MessagePack's formats, borrowed
//! from the memory map; every declared length and count is checked against the bytes left before
//! anything is allocated, and nesting depth is capped.
//!
//! Names are mapped as transformers' `load_flax_weights_in_pytorch_model` maps them for T5:
//! the path joined by `.`, a trailing `kernel` becomes `weight` transposed (Flax's Dense kernel
//! is `[in, out]`, torch's Linear weight `[out, in]`), `embedding` and `scale` become `weight`.

use super::{LocateError, Located};
use safetensors::Dtype;
use std::borrow::Cow;

/// Deepest nesting accepted (a Flax T5 needs 7 maps: encoder/block/0/layer/0/SelfAttention/q).
const MAX_DEPTH: usize = 32;

/// The flax ext type of an ndarray, of a Python complex, of a NumPy scalar.
const EXT_NDARRAY: i8 = 1;
const EXT_COMPLEX: i8 = 2;
const EXT_NPSCALAR: i8 = 3;

/// A decoded MessagePack value; strings and byte strings borrow the input.
#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Array(Vec<Value<'a>>),
    Map(Vec<(Value<'a>, Value<'a>)>),
    Ext(i8, &'a [u8]),
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bin(_) => "bin",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Ext(..) => "ext",
        }
    }

    /// The value of key `key` of a map.
    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Value::Map(kv) => kv
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if *s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let left = self.data.len() - self.pos;
        if n > left as u64 {
            return Err(format!(
                "truncated: {n} bytes declared at offset {}, {left} left",
                self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// A big-endian unsigned integer of `width` bytes.
    fn uint(&mut self, width: u64) -> Result<u64, String> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    /// A count of `n` items, each at least one byte: refused when more than the bytes left.
    fn count(&mut self, n: u64) -> Result<usize, String> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(format!(
                "{n} items declared at offset {}, only {left} bytes left",
                self.pos
            ));
        }
        Ok(n as usize)
    }

    fn str(&mut self, n: u64) -> Result<Value<'a>, String> {
        let at = self.pos;
        std::str::from_utf8(self.take(n)?)
            .map(Value::Str)
            .map_err(|_| format!("string at offset {at} is not UTF-8"))
    }

    fn array(&mut self, n: u64, depth: usize) -> Result<Value<'a>, String> {
        let n = self.count(n)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: u64, depth: usize) -> Result<Value<'a>, String> {
        let n = self.count(n.saturating_mul(2))? / 2;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            items.push((k, self.value(depth + 1)?));
        }
        Ok(Value::Map(items))
    }

    fn ext(&mut self, n: u64) -> Result<Value<'a>, String> {
        let tag = self.uint(1)? as u8 as i8;
        Ok(Value::Ext(tag, self.take(n)?))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("values nested deeper than {MAX_DEPTH}"));
        }
        let at = self.pos;
        let b = self.uint(1)? as u8;
        Ok(match b {
            0x00..=0x7f => Value::Int(b as i128),
            0x80..=0x8f => self.map((b & 0x0f) as u64, depth)?,
            0x90..=0x9f => self.array((b & 0x0f) as u64, depth)?,
            0xa0..=0xbf => self.str((b & 0x1f) as u64)?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.uint(1 << (b - 0xc4))?;
                Value::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.uint(1 << (b - 0xc7))?;
                self.ext(n)?
            }
            0xca => Value::Float(f32::from_bits(self.uint(4)? as u32) as f64),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::Int(self.uint(1 << (b - 0xcc))? as i128),
            0xd0..=0xd3 => {
                let width = 1u32 << (b - 0xd0);
                let raw = self.uint(width as u64)?;
                // Sign-extend from `width` bytes.
                let shift = 64 - 8 * width;
                Value::Int(((raw << shift) as i64 >> shift) as i128)
            }
            0xd4..=0xd8 => self.ext(1 << (b - 0xd4))?,
            0xd9..=0xdb => {
                let n = self.uint(1 << (b - 0xd9))?;
                self.str(n)?
            }
            0xdc | 0xdd => {
                let n = self.uint(if b == 0xdc { 2 } else { 4 })?;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.uint(if b == 0xde { 2 } else { 4 })?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int((b as i8) as i128),
            0xc1 => return Err(format!("byte 0xc1 at offset {at} is not MessagePack")),
        })
    }
}

/// Decode one MessagePack value that fills `data` exactly.
fn decode(data: &[u8]) -> Result<Value<'_>, String> {
    let mut d = Decoder { data, pos: 0 };
    let v = d.value(0)?;
    if d.pos != data.len() {
        return Err(format!(
            "{} bytes after the end of the value at offset {}",
            data.len() - d.pos,
            d.pos
        ));
    }
    Ok(v)
}

/// An array of the checkpoint: element type, shape and row-major bytes.
struct Array<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Cow<'a, [u8]>,
}

/// The element type of NumPy's dtype `name`; complex128 and anything else is refused.
fn dtype_of(name: &str) -> Result<Dtype, String> {
    Ok(match name {
        "float32" => Dtype::F32,
        "float16" => Dtype::F16,
        "bfloat16" => Dtype::BF16,
        "float64" => Dtype::F64,
        "int64" => Dtype::I64,
        "int32" => Dtype::I32,
        "int16" => Dtype::I16,
        "int8" => Dtype::I8,
        "uint64" => Dtype::U64,
        "uint32" => Dtype::U32,
        "uint16" => Dtype::U16,
        "uint8" => Dtype::U8,
        "bool" => Dtype::BOOL,
        "complex64" => Dtype::C64,
        other => {
            return Err(format!(
                "dtype {other}; a T5 checkpoint holds float32/float16/bfloat16"
            ))
        }
    })
}

/// Check that `shape` of `elem`-byte elements is exactly `found` bytes (no overflow).
fn check_size(shape: &[usize], elem: usize, found: usize, what: &str) -> Result<(), String> {
    let need = shape
        .iter()
        .try_fold(elem as u128, |acc, &d| acc.checked_mul(d as u128))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if need != found as u128 {
        return Err(format!(
            "{what} of shape {shape:?} needs {need} bytes, found {found}"
        ));
    }
    Ok(())
}

fn dims(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("{what}: expected non-negative ints, found {v:?}");
    let dim = |x: &Value| match x {
        Value::Int(i) => usize::try_from(*i).map_err(|_| bad()),
        _ => Err(bad()),
    };
    match v {
        Value::Array(items) => items.iter().map(dim).collect(),
        // A chunked array's shape is a map {"0": n0, "1": n1, …}.
        Value::Map(_) => (0..map_len(v))
            .map(|i| v.get(&i.to_string()).ok_or_else(bad).and_then(dim))
            .collect(),
        _ => Err(bad()),
    }
}

fn map_len(v: &Value) -> usize {
    match v {
        Value::Map(kv) => kv.len(),
        _ => 0,
    }
}

/// The payload of an ndarray ext: `[shape, dtype name, bytes]`.
fn ndarray(payload: &[u8]) -> Result<Array<'_>, String> {
    let v = decode(payload).map_err(|e| format!("array payload: {e}"))?;
    let Value::Array(parts) = &v else {
        return Err(format!(
            "array payload is a {}, expected [shape, dtype, bytes]",
            v.kind()
        ));
    };
    let [shape, dtype, Value::Bin(bytes)] = parts.as_slice() else {
        return Err("array payload is not [shape, dtype name, bytes]".into());
    };
    let dtype = match dtype {
        Value::Str(name) => dtype_of(name)?,
        // (msgpack-python without use_bin_type writes the name as raw bytes)
        Value::Bin(name) => dtype_of(&String::from_utf8_lossy(name))?,
        other => return Err(format!("dtype name is a {}", other.kind())),
    };
    let shape = dims(shape, "array shape")?;
    check_size(
        &shape,
        dtype.bitsize() / 8,
        bytes.len(),
        &format!("{dtype:?} array"),
    )?;
    Ok(Array {
        dtype,
        shape,
        bytes: Cow::Borrowed(bytes),
    })
}

/// A `__msgpack_chunked_array__` map: 1-D chunks of one dtype, concatenated, then reshaped.
fn unchunk<'a>(v: &Value<'a>) -> Result<Array<'a>, String> {
    let shape = dims(v.get("shape").unwrap_or(&Value::Nil), "chunked array shape")?;
    let chunks = v
        .get("chunks")
        .filter(|c| matches!(c, Value::Map(_)))
        .ok_or("chunked array without a \"chunks\" map")?;
    let mut parts = Vec::with_capacity(map_len(chunks));
    for i in 0..map_len(chunks) {
        match chunks.get(&i.to_string()) {
            Some(Value::Ext(EXT_NDARRAY, p)) => parts.push(ndarray(p)?),
            _ => return Err(format!("chunk \"{i}\" is missing or not an array")),
        }
    }
    let dtype = parts.first().map(|p| p.dtype).ok_or("no chunks")?;
    if parts.iter().any(|p| p.dtype != dtype || p.shape.len() != 1) {
        return Err("chunks differ in dtype or are not 1-D".into());
    }
    let total: usize = parts.iter().map(|p| p.bytes.len()).sum();
    check_size(&shape, dtype.bitsize() / 8, total, "chunked array")?;
    let mut bytes = Vec::with_capacity(total);
    parts.iter().for_each(|p| bytes.extend_from_slice(&p.bytes));
    Ok(Array {
        dtype,
        shape,
        bytes: Cow::Owned(bytes),
    })
}

/// Every array leaf of the tree `v` with its key path, depth first in file order.
fn leaves<'a>(
    v: &Value<'a>,
    path: &mut Vec<&'a str>,
    out: &mut Vec<(String, Array<'a>)>,
) -> Result<(), LocateError> {
    let err = |path: &[&str], msg: String| (Some(path.join("/")), msg);
    match v {
        Value::Ext(EXT_NDARRAY, p) => {
            let a = ndarray(p).map_err(|m| err(path, m))?;
            out.push((path.join("/"), a))
        }
        Value::Ext(EXT_COMPLEX, _) => {
            return Err(err(path, "a complex number, not an array".into()))
        }
        Value::Ext(EXT_NPSCALAR, _) => {
            return Err(err(path, "a NumPy scalar, not an array".into()))
        }
        Value::Map(_) if v.get("__msgpack_chunked_array__").is_some() => {
            let a = unchunk(v).map_err(|m| err(path, m))?;
            out.push((path.join("/"), a))
        }
        Value::Map(kv) => {
            for (k, child) in kv {
                let Value::Str(k) = k else {
                    return Err(err(path, format!("a key is a {}, not a str", k.kind())));
                };
                path.push(k);
                leaves(child, path, out)?;
                path.pop();
            }
        }
        other => {
            return Err(err(
                path,
                format!(
                    "a {}, not an array (a Flax checkpoint holds nested maps of arrays)",
                    other.kind()
                ),
            ))
        }
    }
    Ok(())
}

/// The Hugging Face name of Flax path `path` (`/`-separated) and whether its array is to be
/// transposed, as transformers' `load_flax_weights_in_pytorch_model` maps a T5's parameters.
fn hf_name(path: &str) -> (String, bool) {
    let mut parts: Vec<&str> = path.split('/').collect();
    // A model with a head saved with the base model's prefix (transformers strips it).
    if parts.len() > 1 && parts[0] == "transformer" {
        parts.remove(0);
    }
    let mut transpose = false;
    if let Some(last) = parts.last_mut() {
        match *last {
            "kernel" => {
                *last = "weight";
                transpose = true;
            }
            "embedding" | "scale" => *last = "weight",
            _ => {}
        }
    }
    (parts.join("."), transpose)
}

/// Read the Flax checkpoint `bytes`: its tensors under their Hugging Face names, stored in one
/// buffer (kernels transposed), located by byte range within it.
pub(crate) fn read(bytes: &[u8]) -> Result<(Vec<u8>, Vec<Located>), LocateError> {
    let tree = decode(bytes).map_err(|m| (None, format!("not a valid msgpack file: {m}")))?;
    if !matches!(tree, Value::Map(_)) {
        return Err((
            None,
            format!("holds a {}, expected a map of parameters", tree.kind()),
        ));
    }
    let mut arrays = Vec::new();
    leaves(&tree, &mut Vec::new(), &mut arrays)?;
    let mut buf = Vec::with_capacity(arrays.iter().map(|(_, a)| a.bytes.len()).sum());
    let mut located: Vec<Located> = Vec::with_capacity(arrays.len());
    for (path, a) in arrays {
        let (name, transpose) = hf_name(&path);
        if located.iter().any(|l| l.name == name) {
            return Err((Some(path), format!("a second array named {name}")));
        }
        let start = buf.len();
        let shape = if transpose {
            let [rows, cols] = a.shape[..] else {
                return Err((
                    Some(path),
                    format!("a kernel of shape {:?}; a T5 has only 2-D kernels", a.shape),
                ));
            };
            buf.resize(start + a.bytes.len(), 0);
            let elem = a.dtype.bitsize() / 8;
            super::transpose_into(&a.bytes, rows, cols, elem, &mut buf[start..]);
            vec![cols, rows]
        } else {
            buf.extend_from_slice(&a.bytes);
            a.shape
        };
        located.push(Located {
            name,
            dtype: a.dtype,
            shape,
            start,
            end: buf.len(),
        });
    }
    Ok((buf, located))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MessagePack of a str (fixstr or str8).
    fn s(text: &str) -> Vec<u8> {
        let mut v = if text.len() < 32 {
            vec![0xa0 | text.len() as u8]
        } else {
            vec![0xd9, text.len() as u8]
        };
        v.extend(text.as_bytes());
        v
    }

    /// An ndarray ext (ext8, type 1) of `dtype` with `shape` (small dims) and `data`.
    fn nd(shape: &[u8], dtype: &str, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0x93, 0x90 | shape.len() as u8];
        p.extend(shape);
        p.extend(s(dtype));
        p.extend([0xc4, data.len() as u8]);
        p.extend(data);
        let mut v = vec![0xc7, p.len() as u8, EXT_NDARRAY as u8];
        v.extend(p);
        v
    }

    /// A map of (key, encoded value) pairs.
    fn map(items: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut v = vec![0x80 | items.len() as u8];
        for (k, x) in items {
            v.extend(s(k));
            v.extend(x);
        }
        v
    }

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn decodes_the_formats_a_checkpoint_uses() {
        let v = decode(&[0x93, 0x05, 0xff, 0xd1, 0xfe, 0x0c]).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![Value::Int(5), Value::Int(-1), Value::Int(-500)])
        );
        assert_eq!(
            decode(&[0xcd, 0x01, 0x00]).unwrap(),
            Value::Int(256),
            "uint16"
        );
        assert_eq!(decode(&[0xc3]).unwrap(), Value::Bool(true));
        assert_eq!(
            decode(&[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]).unwrap(),
            Value::Float(1.0)
        );
        assert_eq!(
            decode(&[0xd4, 0x03, 0x07]).unwrap(),
            Value::Ext(3, &[7][..])
        );
        assert!(decode(&[0xc1]).unwrap_err().contains("0xc1"));
        assert!(decode(&[0x01, 0x02]).unwrap_err().contains("1 bytes after"));
    }

    #[test]
    fn kernels_are_transposed_and_names_mapped() {
        // encoder/block/0/layer/0/SelfAttention/q/kernel as [in=2, out=3], and an embedding.
        let kernel = nd(&[2, 3], "float32", &f32s(&[0., 1., 2., 3., 4., 5.]));
        let file = map(&[
            (
                "encoder",
                map(&[
                    ("q", map(&[("kernel", kernel)])),
                    (
                        "final_layer_norm",
                        map(&[("weight", nd(&[2], "float16", &[1, 2, 3, 4]))]),
                    ),
                ]),
            ),
            (
                "shared",
                map(&[("embedding", nd(&[1, 2], "bfloat16", &[9, 8, 7, 6]))]),
            ),
        ]);
        let (buf, t) = read(&file).unwrap();
        let names: Vec<&str> = t.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "encoder.q.weight",
                "encoder.final_layer_norm.weight",
                "shared.weight"
            ]
        );
        assert_eq!(t[0].shape, vec![3, 2]);
        assert_eq!(
            &buf[t[0].start..t[0].end],
            &f32s(&[0., 3., 1., 4., 2., 5.])[..]
        );
        assert_eq!(
            (t[1].dtype, &buf[t[1].start..t[1].end]),
            (Dtype::F16, &[1, 2, 3, 4][..])
        );
        assert_eq!((t[2].dtype, t[2].shape.clone()), (Dtype::BF16, vec![1, 2]));
        assert_eq!(
            hf_name("transformer/lm_head/kernel"),
            ("lm_head.weight".into(), true)
        );
        assert_eq!(hf_name("x/scale"), ("x.weight".into(), false));
    }

    #[test]
    fn chunked_arrays_are_concatenated() {
        let chunked = map(&[
            ("__msgpack_chunked_array__", vec![0xc3]),
            ("shape", map(&[("0", vec![0x02]), ("1", vec![0x02])])),
            (
                "chunks",
                map(&[
                    ("0", nd(&[3], "float32", &f32s(&[1., 2., 3.]))),
                    ("1", nd(&[1], "float32", &f32s(&[4.]))),
                ]),
            ),
        ]);
        let (buf, t) = read(&map(&[("w", chunked)])).unwrap();
        assert_eq!(t[0].shape, vec![2, 2]);
        assert_eq!(&buf[..], &f32s(&[1., 2., 3., 4.])[..]);
        // One chunk short of the shape.
        let short = map(&[
            ("__msgpack_chunked_array__", vec![0xc3]),
            ("shape", map(&[("0", vec![0x05])])),
            (
                "chunks",
                map(&[("0", nd(&[3], "float32", &f32s(&[1., 2., 3.])))]),
            ),
        ]);
        let (name, msg) = read(&map(&[("w", short)])).err().unwrap();
        assert_eq!(name.as_deref(), Some("w"));
        assert!(
            msg.contains("chunked array of shape [5] needs 20 bytes, found 12"),
            "{msg}"
        );
    }

    #[test]
    fn what_a_t5_cannot_hold_is_refused_by_path() {
        let cases: [(Vec<u8>, &str); 5] = [
            (nd(&[1], "complex128", &[0; 16]), "dtype complex128"),
            (vec![0xd4, EXT_NPSCALAR as u8, 0], "a NumPy scalar"),
            (vec![0xd4, EXT_COMPLEX as u8, 0], "a complex number"),
            (s("text"), "a str, not an array"),
            (nd(&[2, 2], "float32", &[0; 12]), "needs 16 bytes, found 12"),
        ];
        for (leaf, want) in cases {
            let (name, msg) = read(&map(&[("a", map(&[("b", leaf)]))])).err().unwrap();
            assert_eq!(name.as_deref(), Some("a/b"));
            assert!(msg.contains(want), "{msg} (expected {want})");
        }
        let (_, msg) = read(&map(&[(
            "k",
            map(&[("kernel", nd(&[2], "float32", &[0; 8]))]),
        )]))
        .err()
        .unwrap();
        assert!(msg.contains("only 2-D kernels"), "{msg}");
    }

    #[test]
    fn huge_counts_and_deep_nesting_are_errors_not_allocations() {
        // array32 of 2^32-1 items, map32, bin32, str32 with nothing after them.
        for head in [0xdd, 0xdf, 0xc6, 0xdb] {
            let e = decode(&[head, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
            assert!(e.contains("4294967295") || e.contains("8589934590"), "{e}");
        }
        let deep = vec![0x91; 100];
        assert!(decode(&deep).unwrap_err().contains("nested deeper"));
        // A shape whose product overflows.
        let e = ndarray(&{
            let mut p = vec![
                0x93, 0x92, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ];
            p.extend([0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
            p.extend(s("float32"));
            p.extend([0xc4, 0]);
            p
        })
        .err()
        .unwrap();
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let file = map(&[("w", map(&[("kernel", nd(&[2, 2], "float32", &[0; 16]))]))]);
        assert!(read(&file).is_ok());
        for n in 0..file.len() {
            assert!(read(&file[..n]).is_err(), "prefix of {n} bytes accepted");
        }
    }
}
