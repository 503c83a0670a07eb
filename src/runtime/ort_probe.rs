//! This machine's GEMM peak, measured through the kernels ONNX Runtime itself runs (MLAS): an fp32
//! `MatMul` and a u8×s8 `MatMulInteger`, each over a constant weight matrix (so ORT pre-packs it as
//! it does a model's weights), on a given number of intra-op threads. `cbqa bench --roofline`
//! divides a workload's FLOPs by these numbers.

use super::ort::{builder, OrtDevice, OrtOptions};
use super::ort_weights::fail;
use crate::error::Result;
use crate::onnx::builder::{model, Dim, Graph};
use crate::onnx::proto::data_type::{FLOAT, INT8, UINT8};
use ort::value::Tensor;
use prost::Message;
use std::time::Instant;

/// Which GEMM to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gemm {
    /// fp32 × fp32 → fp32 (`MatMul`).
    F32,
    /// u8 activations × s8 weights → i32 (`MatMulInteger`: the kernel under the int8 export's
    /// dynamically quantized linears).
    U8S8,
}

/// The GEMM shapes measured, `(m, k, n)`: a square one and t5-small's feed-forward at batch 32
/// (512 rows of 512 → 2048). The peak is the best of them.
const SHAPES: [(usize, usize, usize); 2] = [(1024, 1024, 1024), (512, 512, 2048)];

/// The best rate of `kind` on `threads` threads, in (multiply-add counted as two) operations per
/// second.
pub fn gemm_peak(kind: Gemm, threads: usize) -> Result<f64> {
    let mut best = 0.0f64;
    for (m, k, n) in SHAPES {
        best = best.max(gemm_rate(kind, threads, m, k, n)?);
    }
    Ok(best)
}

/// The ONNX model `Y = A @ B` with `B` a constant `[k, n]` initializer.
fn gemm_model(kind: Gemm, k: usize, n: usize) -> Vec<u8> {
    let mut g = Graph::new("cbqa_gemm_probe");
    let (a_elem, b_elem, op) = match kind {
        Gemm::F32 => (FLOAT, FLOAT, "MatMul"),
        Gemm::U8S8 => (UINT8, INT8, "MatMulInteger"),
    };
    let a = g.input("A", a_elem, &[Dim::Sym("m"), Dim::Fixed(k as i64)]);
    // Deterministic, non-trivial weights (zeros could take a shortcut nowhere, but be safe).
    let raw: Vec<u8> = match kind {
        Gemm::F32 => (0..k * n)
            .flat_map(|i| (((i % 13) as f32 - 6.0) * 0.01).to_le_bytes())
            .collect(),
        Gemm::U8S8 => (0..k * n).map(|i| ((i % 13) as i8 - 6) as u8).collect(),
    };
    let b = g.constant("B", b_elem, &[k, n], raw);
    let y = g.op(op, &[&a, &b], vec![]);
    let y_elem = if kind == Gemm::F32 {
        FLOAT
    } else {
        crate::onnx::proto::data_type::INT32
    };
    g.output(&y, "Y", y_elem, &[Dim::Sym("m"), Dim::Fixed(n as i64)]);
    model(g.into_proto(), "cbqa: GEMM peak probe", &[]).encode_to_vec()
}

/// Operations per second of one `m×k @ k×n` shape: the best of several timed runs after warm-up.
fn gemm_rate(kind: Gemm, threads: usize, m: usize, k: usize, n: usize) -> Result<f64> {
    let opts = OrtOptions {
        intra_threads: threads,
        ..OrtOptions::default()
    };
    let label = format!("GEMM probe {kind:?} {m}x{k}x{n}");
    let mut session = builder(&label, &opts, &OrtDevice::Cpu)?
        .commit_from_memory(&gemm_model(kind, k, n))
        .map_err(fail(format!("{label}: load the graph")))?;
    let shape = vec![m as i64, k as i64];
    let input = match kind {
        Gemm::F32 => Tensor::from_array((
            shape,
            (0..m * k).map(|i| (i % 7) as f32).collect::<Vec<_>>(),
        ))
        .map_err(fail(format!("{label}: make input A")))?
        .into_dyn(),
        Gemm::U8S8 => Tensor::from_array((
            shape,
            (0..m * k).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
        ))
        .map_err(fail(format!("{label}: make input A")))?
        .into_dyn(),
    };
    let mut best = f64::INFINITY;
    let started = Instant::now();
    for run in 0.. {
        let t = Instant::now();
        session
            .run(ort::inputs!["A" => &input])
            .map_err(fail(format!("{label}: run")))?;
        if run >= 2 {
            best = best.min(t.elapsed().as_secs_f64());
        }
        if run >= 6 && started.elapsed().as_secs_f64() > 0.5 {
            break;
        }
    }
    Ok(2.0 * (m * k * n) as f64 / best)
}
