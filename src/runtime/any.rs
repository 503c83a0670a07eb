//! The backend chosen at the edge: one enum over the compiled-in backends, so the CLI and the
//! embedding API pick at run time while decoding stays generic.

use super::{EncoderInput, GraphInput, GraphOutputs, Logits, OnnxDir, Seq2Seq};
use crate::error::{Error, Result};
use std::path::PathBuf;

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// ONNX Runtime (CPU, CUDA or TensorRT).
    Ort,
    /// tract (pure Rust, CPU).
    Tract,
    /// The eager libtorch model on a Hugging Face checkpoint (feature `train`).
    Tch,
}

/// Where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(i32),
    TensorRt(i32),
}

impl std::str::FromStr for Device {
    type Err = Error;
    /// `cpu`, `cuda`, `cuda:N`, `tensorrt`, `tensorrt:N`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, idx) = match s.split_once(':') {
            Some((n, i)) => (
                n,
                i.parse::<i32>().map_err(|_| Error::Device {
                    device: s.into(),
                    msg: format!("'{i}' is not a device index"),
                })?,
            ),
            None => (s, 0),
        };
        match name {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(idx)),
            "tensorrt" | "trt" => Ok(Device::TensorRt(idx)),
            _ => Err(Error::Device {
                device: s.into(),
                msg: "unknown device (expected cpu, cuda[:N] or tensorrt[:N])".into(),
            }),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::TensorRt(i) => write!(f, "tensorrt:{i}"),
        }
    }
}

/// Everything needed to open a backend.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    pub kind: BackendKind,
    pub device: Device,
    /// Intra-op threads (0: the engine's default); tract: batches decoded at once, one thread
    /// each (0: one per core).
    pub threads: usize,
    /// ONNX Runtime graph optimisation level 0–3.
    pub opt_level: u8,
    /// Allow ONNX Runtime to fall back to the CPU when a GPU provider fails.
    pub allow_fallback: bool,
    /// TensorRT engine cache directory (default: `<model>/trt-cache`).
    pub trt_cache: Option<PathBuf>,
    /// Matmul precision of the tch backend; an export carries its precision in its graphs.
    pub compute: Compute,
    /// ONNX Runtime on the CPU: spend the threads on batches decoded at the same time, one
    /// thread each (a session per thread, sharing the weights), rather than inside every call
    /// of one batch after another. More throughput where batches are independent (`eval`,
    /// `bench`: on t5-small batch 32, 2 threads, +18% fp32 and +41% int8 on a Zen 4), more memory
    /// (one batch's activations per thread). A batch running alone (the last of a set, the
    /// one batch of a lightly loaded `cbqa serve`) takes one more session per graph, on every
    /// thread, so its latency is that of all threads. tract always decodes batches several at
    /// once. On by default (validation turns it off).
    pub parallel_batches: bool,
}

/// The matmul precision of the tch backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compute {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// fp32 weights and residual stream, bf16 matmuls (as `cbqa train --precision bf16`).
    Bf16,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            kind: BackendKind::Ort,
            device: Device::Cpu,
            threads: 0,
            opt_level: 3,
            allow_fallback: false,
            trt_cache: None,
            compute: Compute::Fp32,
            parallel_batches: true,
        }
    }
}

/// ONNX Runtime's options for `opts` (the TensorRT cache defaults to `<model>/trt-cache`).
#[cfg(feature = "ort")]
fn ort_options(dir: &OnnxDir, opts: &BackendOptions) -> super::ort::OrtOptions {
    use super::ort::{OrtDevice, OrtOptions};
    let device = match &opts.device {
        Device::Cpu => OrtDevice::Cpu,
        Device::Cuda(i) => OrtDevice::Cuda(*i),
        Device::TensorRt(i) => OrtDevice::TensorRt {
            device: *i,
            cache_dir: opts
                .trt_cache
                .clone()
                .unwrap_or_else(|| dir.dir.join("trt-cache")),
        },
    };
    let copies = match device {
        OrtDevice::Cpu if opts.parallel_batches => super::threads_or_cores(opts.threads),
        _ => 1,
    };
    OrtOptions {
        device,
        intra_threads: if copies > 1 { 1 } else { opts.threads },
        session_copies: copies,
        lone_run_threads: if copies > 1 { copies } else { 0 },
        opt_level: opts.opt_level,
        allow_fallback: opts.allow_fallback,
        ..OrtOptions::default()
    }
}

/// A loaded backend of any compiled-in kind.
pub enum Backend {
    #[cfg(feature = "ort")]
    Ort(super::ort::OrtSeq2Seq),
    #[cfg(feature = "tract")]
    Tract(super::tract::TractSeq2Seq),
    #[cfg(feature = "train")]
    Tch(super::tch::TchSeq2Seq),
}

/// The state of whichever backend is in use.
pub enum BackendState {
    #[cfg(feature = "ort")]
    Ort(super::ort::OrtState),
    #[cfg(feature = "tract")]
    Tract(super::tract::TractState),
    #[cfg(feature = "train")]
    Tch(super::tch::TchState),
}

impl Backend {
    /// Open the export in `dir` with `opts`. A GPU device that cannot be used is an error.
    pub fn load(dir: &OnnxDir, opts: &BackendOptions) -> Result<Self> {
        Self::load_graphs(dir, opts, false)
    }

    /// As [`Backend::load`]; with `every_graph`, the graphs decoding does not use are also
    /// opened, the same way, for [`Backend::run_graph`] (validation): ONNX Runtime's
    /// `decoder_model_merged.onnx` where the export has it, and for both ONNX backends
    /// `decoder_with_past_model.onnx` when decoding uses `decoder_with_past_masked_model.onnx`.
    pub fn load_graphs(dir: &OnnxDir, opts: &BackendOptions, every_graph: bool) -> Result<Self> {
        if opts.compute != Compute::Fp32 {
            return Err(Error::setting(
                "compute",
                "an export runs in the precision it was exported in; bf16 matmuls are the tch \
                 backend's (a checkpoint directory)",
            ));
        }
        match opts.kind {
            #[cfg(feature = "ort")]
            BackendKind::Ort => {
                let o = ort_options(dir, opts);
                Ok(Backend::Ort(super::ort::OrtSeq2Seq::load_graphs(
                    dir,
                    &o,
                    every_graph,
                )?))
            }
            #[cfg(feature = "tract")]
            BackendKind::Tract => {
                if opts.device != Device::Cpu {
                    return Err(Error::Device {
                        device: opts.device.to_string(),
                        msg: "tract runs on the CPU only; use the ort backend".into(),
                    });
                }
                let tract = super::tract::TractSeq2Seq::load_graphs(dir, every_graph)?;
                Ok(Backend::Tract(tract.with_threads(opts.threads)))
            }
            #[allow(unreachable_patterns)]
            other => Err(Error::setting(
                "kind",
                format!(
                    "backend {other:?} is not compiled into this binary (cargo features ort, tract)"
                ),
            )),
        }
    }

    /// The engine's name, as validation reports name it (`onnxruntime`, `tract`, `tch`).
    pub fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "ort")]
            Backend::Ort(_) => "onnxruntime",
            #[cfg(feature = "tract")]
            Backend::Tract(_) => "tract",
            #[cfg(feature = "train")]
            Backend::Tch(_) => "tch",
            // With no backend compiled in, `Backend` has no values.
            #[cfg(not(any(feature = "ort", feature = "tract", feature = "train")))]
            _ => match *self {},
        }
    }

    /// Run one graph file of the export (`encoder_model.onnx`, ...) on named inputs through
    /// the sessions decoding uses; every output, by name. The tch backend has no graphs.
    pub fn run_graph(
        &self,
        graph: &str,
        inputs: Vec<(String, GraphInput)>,
    ) -> Result<GraphOutputs> {
        match self {
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b.run_graph(graph, inputs),
            #[cfg(feature = "tract")]
            Backend::Tract(b) => b.run_graph(graph, inputs),
            #[cfg(feature = "train")]
            Backend::Tch(_) => {
                drop(inputs);
                Err(Error::input(
                    graph,
                    "the tch backend runs a checkpoint, not ONNX graphs",
                ))
            }
            // With no backend compiled in, `Backend` has no values.
            #[cfg(not(any(feature = "ort", feature = "tract", feature = "train")))]
            _ => match *self {},
        }
    }

    /// Open a Hugging Face checkpoint directory with the tch model (`--backend tch`).
    #[cfg(feature = "train")]
    pub fn load_checkpoint(dir: &crate::ModelDir, opts: &BackendOptions) -> Result<Self> {
        if let Device::TensorRt(_) = opts.device {
            return Err(Error::Device {
                device: opts.device.to_string(),
                msg: "TensorRT needs the ort backend and an exported model".into(),
            });
        }
        let device = match opts.device {
            Device::Cuda(i) => {
                let index = usize::try_from(i).map_err(|_| Error::Device {
                    device: opts.device.to_string(),
                    msg: "a device index is not negative".into(),
                })?;
                crate::model::cuda_device(index)?
            }
            _ => tch::Device::Cpu,
        };
        if opts.threads > 0 {
            tch::set_num_threads(opts.threads as i32);
        }
        let compute = match opts.compute {
            Compute::Fp32 => None,
            Compute::Bf16 => Some(tch::Kind::BFloat16),
        };
        Ok(Backend::Tch(super::tch::TchSeq2Seq::load_with_compute(
            dir, device, compute,
        )?))
    }

    /// How many batches the backend runs at once, where more than one: an ONNX Runtime backend
    /// loaded with [`BackendOptions::parallel_batches`] one per session copy, tract one per
    /// thread; `None` for every other backend.
    pub fn batches_at_once(&self) -> Option<usize> {
        match self {
            #[cfg(feature = "ort")]
            Backend::Ort(b) if b.session_copies() > 1 => Some(b.session_copies()),
            #[cfg(feature = "tract")]
            Backend::Tract(b) if b.threads() > 1 => Some(b.threads()),
            _ => None,
        }
    }

    /// Whether independent batches should run on several threads (tract; ONNX Runtime loaded
    /// with [`BackendOptions::parallel_batches`]), rather than one after another with the
    /// engine's own threads.
    pub fn prefers_parallel_batches(&self) -> bool {
        match self {
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b.session_copies() > 1,
            #[cfg(feature = "tract")]
            Backend::Tract(_) => true,
            #[cfg(feature = "train")]
            Backend::Tch(_) => false,
            // With no backend compiled in, `Backend` has no values.
            #[cfg(not(any(feature = "ort", feature = "tract", feature = "train")))]
            _ => match *self {},
        }
    }
}

fn mismatch() -> Error {
    Error::input("state", "a decoding state of another backend")
}

impl Seq2Seq for Backend {
    type State = BackendState;

    fn encode(&self, input: &EncoderInput) -> Result<BackendState> {
        match self {
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b.encode(input).map(BackendState::Ort),
            #[cfg(feature = "tract")]
            Backend::Tract(b) => b.encode(input).map(BackendState::Tract),
            #[cfg(feature = "train")]
            Backend::Tch(b) => b.encode(input).map(BackendState::Tch),
            // With no backend compiled in, `Backend` has no values.
            #[cfg(not(any(feature = "ort", feature = "tract", feature = "train")))]
            _ => match *self {},
        }
    }

    fn step(&self, state: BackendState, tokens: &[i64]) -> Result<(Logits, BackendState)> {
        match (self, state) {
            #[cfg(feature = "ort")]
            (Backend::Ort(b), BackendState::Ort(s)) => {
                b.step(s, tokens).map(|(l, s)| (l, BackendState::Ort(s)))
            }
            #[cfg(feature = "tract")]
            (Backend::Tract(b), BackendState::Tract(s)) => {
                b.step(s, tokens).map(|(l, s)| (l, BackendState::Tract(s)))
            }
            #[cfg(feature = "train")]
            (Backend::Tch(b), BackendState::Tch(s)) => {
                b.step(s, tokens).map(|(l, s)| (l, BackendState::Tch(s)))
            }
            #[allow(unreachable_patterns)]
            _ => Err(mismatch()),
        }
    }

    fn select(&self, state: BackendState, rows: &[usize]) -> Result<BackendState> {
        match (self, state) {
            #[cfg(feature = "ort")]
            (Backend::Ort(b), BackendState::Ort(s)) => b.select(s, rows).map(BackendState::Ort),
            #[cfg(feature = "tract")]
            (Backend::Tract(b), BackendState::Tract(s)) => {
                b.select(s, rows).map(BackendState::Tract)
            }
            #[cfg(feature = "train")]
            (Backend::Tch(b), BackendState::Tch(s)) => b.select(s, rows).map(BackendState::Tch),
            #[allow(unreachable_patterns)]
            _ => Err(mismatch()),
        }
    }

    fn concat(&self, first: BackendState, second: BackendState) -> Result<BackendState> {
        match (self, first, second) {
            #[cfg(feature = "ort")]
            (Backend::Ort(b), BackendState::Ort(x), BackendState::Ort(y)) => {
                b.concat(x, y).map(BackendState::Ort)
            }
            #[cfg(feature = "tract")]
            (Backend::Tract(b), BackendState::Tract(x), BackendState::Tract(y)) => {
                b.concat(x, y).map(BackendState::Tract)
            }
            #[cfg(feature = "train")]
            (Backend::Tch(b), BackendState::Tch(x), BackendState::Tch(y)) => {
                b.concat(x, y).map(BackendState::Tch)
            }
            #[allow(unreachable_patterns)]
            _ => Err(mismatch()),
        }
    }

    fn joins_any_position(&self) -> bool {
        match self {
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b.joins_any_position(),
            #[cfg(feature = "tract")]
            Backend::Tract(b) => b.joins_any_position(),
            #[cfg(feature = "train")]
            Backend::Tch(b) => b.joins_any_position(),
            // With no backend compiled in, `Backend` has no values.
            #[cfg(not(any(feature = "ort", feature = "tract", feature = "train")))]
            _ => match *self {},
        }
    }

    fn rows(&self, state: &BackendState) -> usize {
        match (self, state) {
            #[cfg(feature = "ort")]
            (Backend::Ort(b), BackendState::Ort(s)) => b.rows(s),
            #[cfg(feature = "tract")]
            (Backend::Tract(b), BackendState::Tract(s)) => b.rows(s),
            #[cfg(feature = "train")]
            (Backend::Tch(b), BackendState::Tch(s)) => b.rows(s),
            #[allow(unreachable_patterns)]
            _ => 0,
        }
    }

    fn describe(&self) -> String {
        match self {
            #[cfg(feature = "ort")]
            Backend::Ort(b) => b.describe(),
            #[cfg(feature = "tract")]
            Backend::Tract(b) => b.describe(),
            #[cfg(feature = "train")]
            Backend::Tch(b) => b.describe(),
            // With no backend compiled in, `Backend` has no values.
            #[cfg(not(any(feature = "ort", feature = "tract", feature = "train")))]
            _ => match *self {},
        }
    }
}
