//! Weights stored once: every graph's initializers point into one external-data file
//! (`model.onnx_data`) by location, offset and length, as the ONNX external-data spec allows
//! (<https://github.com/onnx/onnx/blob/main/docs/ExternalData.md>). optimum writes one data file
//! per graph, so the encoder's and both decoders' copies of the embedding and the decoder weights
//! are stored two or three times; here a tensor is written the first time a graph asks for it and
//! every later graph gets the same offset.
//!
//! Tensors are converted one at a time from the memory-mapped checkpoint, so exporting needs about
//! one tensor of extra memory, and models over 2 GB (protobuf's limit) export like small ones.

use crate::checkpoint::Weights;
use crate::error::{Error, Result};
use crate::onnx::external::StoredTensor;
use crate::onnx::layout::DATA_FILE;
use crate::onnx::proto::data_type;
use half::f16;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The element type the exported graphs compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Fp32,
    /// Weights and activations in float16, except the parts T5 needs in float32 (see graphs.rs).
    Fp16,
}

/// Weight-only quantization of the linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantize {
    #[default]
    None,
    /// Symmetric int8 weights in 7 bits (`[-64, 64]`, see [`INT8_WEIGHT_MAX`]) with one float32
    /// scale per output channel and activations quantized at run time (`DynamicQuantizeLinear` +
    /// `MatMulInteger`, standard operators that ONNX Runtime and tract both run), LM head
    /// included.
    Int8,
}

/// Large tensors start on a 4096-byte boundary, so ONNX Runtime can memory-map them in place
/// instead of copying; small ones on 64 bytes, to keep the file close to the checkpoint's size.
fn alignment(len: usize) -> u64 {
    if len >= 1 << 20 {
        4096
    } else {
        64
    }
}

/// The shared data file and what has been written to it.
pub(crate) struct Params<'a> {
    weights: &'a Weights,
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    pos: u64,
    stored: HashMap<String, StoredTensor>,
    pub precision: Precision,
    pub quantize: Quantize,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// Transpose a row-major `[rows, cols]` matrix.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// The largest |int8 weight| of the int8 export: 7 bits, as ONNX Runtime's `reduce_range`.
///
/// On x86 CPUs without VNNI, ONNX Runtime multiplies uint8 activations by int8 weights with
/// `vpmaddubsw`, which adds each adjacent pair of products into a saturating int16:
/// `255 * 127 * 2 = 64770` overflows it, and on the tiny test model 15950 of 39.5M pairs did,
/// giving 6.1e-2 relative error on the encoder output instead of 1.3e-2 with VNNI
/// (`scripts/int8_study.py`). With |w| <= 64 a pair is at most `255 * 64 * 2 = 32640 <= 32767`,
/// so every CPU computes the exact integer sums and the export is equally accurate everywhere.
pub const INT8_WEIGHT_MAX: i8 = 64;

/// Symmetric per-column int8 quantization of a `[rows, cols]` matrix into
/// `[-INT8_WEIGHT_MAX, INT8_WEIGHT_MAX]`: one scale per column (the output channel once the HF
/// weight is transposed to `[in, out]`).
pub(crate) fn quantize_columns(v: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    let qmax = f32::from(INT8_WEIGHT_MAX);
    let mut scale = vec![0f32; cols];
    for r in 0..rows {
        for c in 0..cols {
            scale[c] = scale[c].max(v[r * cols + c].abs());
        }
    }
    for s in scale.iter_mut() {
        *s = if *s > 0.0 { *s / qmax } else { 1.0 };
    }
    let q = v
        .iter()
        .enumerate()
        .map(|(i, x)| (x / scale[i % cols]).round().clamp(-qmax, qmax) as i8)
        .collect();
    (q, scale)
}

impl<'a> Params<'a> {
    /// Create `dir/model.onnx_data`.
    pub fn create(
        weights: &'a Weights,
        dir: &Path,
        precision: Precision,
        quantize: Quantize,
    ) -> Result<Self> {
        let path = dir.join(DATA_FILE);
        let file = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
        Ok(Params {
            weights,
            path,
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            pos: 0,
            stored: HashMap::new(),
            precision,
            quantize,
        })
    }

    /// The element type of activations and unquantized weights.
    pub fn elem(&self) -> i32 {
        match self.precision {
            Precision::Fp32 => data_type::FLOAT,
            Precision::Fp16 => data_type::FLOAT16,
        }
    }

    fn write(
        &mut self,
        name: &str,
        elem: i32,
        dims: Vec<i64>,
        bytes: &[u8],
    ) -> Result<StoredTensor> {
        let align = alignment(bytes.len());
        let pad = (align - self.pos % align) % align;
        let zeros = [0u8; 4096];
        let io = |e| Error::io("write", &self.path, e);
        self.file.write_all(&zeros[..pad as usize]).map_err(io)?;
        self.pos += pad;
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io("write", &self.path, e))?;
        let t = StoredTensor {
            name: name.into(),
            elem,
            dims,
            location: DATA_FILE.into(),
            offset: self.pos,
            length: bytes.len() as u64,
        };
        self.pos += bytes.len() as u64;
        self.stored.insert(name.into(), t.clone());
        Ok(t)
    }

    fn f32_of(&self, hf: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.weights.f32(hf)
    }

    fn encode(&self, v: &[f32], keep_f32: bool) -> (i32, Vec<u8>) {
        if keep_f32 || self.precision == Precision::Fp32 {
            (data_type::FLOAT, f32_bytes(v))
        } else {
            (data_type::FLOAT16, f16_bytes(v))
        }
    }

    /// A checkpoint tensor as it is (embeddings, layer norms, LM head), in the compute precision
    /// unless `keep_f32`.
    pub fn plain(&mut self, hf: &str, keep_f32: bool) -> Result<StoredTensor> {
        let name = if keep_f32 && self.precision != Precision::Fp32 {
            format!("{hf}.f32")
        } else {
            hf.to_string()
        };
        if let Some(t) = self.stored.get(&name) {
            return Ok(t.clone());
        }
        let (v, shape) = self.f32_of(hf)?;
        let (elem, bytes) = self.encode(&v, keep_f32);
        self.write(
            &name,
            elem,
            shape.iter().map(|&d| d as i64).collect(),
            &bytes,
        )
    }

    /// A `nn.Linear` weight (HF `[out, in]`), stored transposed to `[in, out]` so a plain MatMul
    /// applies it, as torch.onnx does; the `.T` suffix says so.
    pub fn linear_t(&mut self, hf: &str, keep_f32: bool) -> Result<StoredTensor> {
        let suffix = if keep_f32 && self.precision != Precision::Fp32 {
            ".T.f32"
        } else {
            ".T"
        };
        let name = format!("{hf}{suffix}");
        if let Some(t) = self.stored.get(&name) {
            return Ok(t.clone());
        }
        let (v, shape) = self.f32_of(hf)?;
        let (rows, cols) = matrix_dims(hf, &shape, &self.path)?;
        let vt = transpose(&v, rows, cols);
        let (elem, bytes) = self.encode(&vt, keep_f32);
        self.write(&name, elem, vec![cols as i64, rows as i64], &bytes)
    }

    /// A `nn.Linear` weight quantized to int8, transposed to `[in, out]`, with its per-output
    /// scales (`[out]`, float32).
    pub fn linear_q(&mut self, hf: &str) -> Result<(StoredTensor, StoredTensor)> {
        let qname = format!("{hf}.T.int8");
        let sname = format!("{hf}.scale");
        if let (Some(q), Some(s)) = (self.stored.get(&qname), self.stored.get(&sname)) {
            return Ok((q.clone(), s.clone()));
        }
        let (v, shape) = self.f32_of(hf)?;
        let (rows, cols) = matrix_dims(hf, &shape, &self.path)?;
        let vt = transpose(&v, rows, cols);
        let (q, scale) = quantize_columns(&vt, cols, rows);
        let qbytes: Vec<u8> = q.iter().map(|x| *x as u8).collect();
        let qt = self.write(
            &qname,
            data_type::INT8,
            vec![cols as i64, rows as i64],
            &qbytes,
        )?;
        let st = self.write(
            &sname,
            data_type::FLOAT,
            vec![rows as i64],
            &f32_bytes(&scale),
        )?;
        Ok((qt, st))
    }

    /// Flush and close the file; returns its size.
    pub fn finish(mut self) -> Result<u64> {
        self.file
            .flush()
            .map_err(|e| Error::io("write", &self.path, e))?;
        let f = self
            .file
            .into_inner()
            .map_err(|e| Error::io("write", &self.path, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("sync", &self.path, e))?;
        Ok(self.pos)
    }
}

fn matrix_dims(hf: &str, shape: &[usize], path: &Path) -> Result<(usize, usize)> {
    match shape {
        [r, c] => Ok((*r, *c)),
        _ => Err(Error::Tensor {
            path: path.to_path_buf(),
            name: hf.into(),
            msg: format!("expected a matrix, got shape {shape:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_round_trips_within_half_a_step() {
        let v: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.37).collect();
        let (q, s) = quantize_columns(&v, 4, 3);
        for (i, x) in v.iter().enumerate() {
            let back = q[i] as f32 * s[i % 3];
            assert!((back - x).abs() <= s[i % 3] * 0.5 + 1e-6, "{back} vs {x}");
        }
        assert!(q
            .iter()
            .any(|&x| x == INT8_WEIGHT_MAX || x == -INT8_WEIGHT_MAX));
        assert!(q.iter().all(|&x| x.abs() <= INT8_WEIGHT_MAX));
    }

    /// The property the 7-bit range exists for: no two uint8 x int8 products that AVX2's
    /// `vpmaddubsw` adds into one int16 (K positions 2j and 2j+1 of one output column) can leave
    /// its range, whatever the activations.
    #[test]
    fn no_pair_of_products_saturates_int16() {
        let (rows, cols) = (16, 4);
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 64) as f32 - 31.0) * 0.11)
            .collect();
        let (q, _) = quantize_columns(&v, rows, cols);
        for c in 0..cols {
            for j in 0..rows / 2 {
                let (a, b) = (q[2 * j * cols + c], q[(2 * j + 1) * cols + c]);
                let worst = 255 * (i32::from(a).abs() + i32::from(b).abs());
                assert!(worst <= i32::from(i16::MAX), "column {c} pair {j}: {worst}");
            }
        }
    }

    #[test]
    fn transpose_is_row_major() {
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }
}
