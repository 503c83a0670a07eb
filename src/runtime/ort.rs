//! The ONNX Runtime backend: optimum's three unmerged graphs run through `ort`.
//!
//! The first decoder step runs `decoder_model.onnx`, which also returns the cross-attention
//! keys/values (`present.{i}.encoder.*`); they are kept as ONNX Runtime values in the state and fed
//! by reference to every later `decoder_with_past_model.onnx` step, so they are computed once and
//! never copied per step. The growing self-attention cache is handed from one step's outputs to the
//! next step's inputs as the same values, also without copies. Rows are gathered (a copy) only
//! when `select` changes them: beam reordering, or finished rows leaving the batch. That gather
//! is itself an ONNX graph (`select_rows_model`) run on the model's execution provider, so on
//! a GPU the state is reordered on the device.
//!
//! Every run goes through an `IoBinding` that places the outputs: logits in host memory (they
//! are read every step), the encoder output and the caches in `cache_mem` — GPU memory under the
//! CUDA and TensorRT providers, so on a GPU they stay on the device between steps. The CPU runs
//! the same code with host placement (that is what the tests cover); the GPU placement has not
//! been run on a GPU yet.
//!
//! On the CPU the weights are mapped once and shared by the three sessions
//! (see `ort_weights.rs`).

use super::onnx_dir::{check_io, OnnxDir};
use super::ort_weights::err;
use super::ort_weights::SharedWeights;
use super::{is_identity, EncoderInput, Logits, Seq2Seq};
use crate::error::Result;
use crate::onnx::layout::{
    IoNames, ATTENTION_MASK, DECODER, DECODER_WITH_PAST, ENCODER, ENCODER_ATTENTION_MASK,
    ENCODER_HIDDEN_STATES, INPUT_IDS, LAST_HIDDEN_STATE, LOGITS,
};
use ort::ep::ExecutionProviderDispatch;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};
use ort::session::Session;
use ort::value::{DynValue, Tensor, ValueType};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where ONNX Runtime runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrtDevice {
    Cpu,
    /// CUDA execution provider on device N.
    Cuda(i32),
    /// TensorRT execution provider on device N, with an engine cache directory.
    TensorRt {
        device: i32,
        cache_dir: PathBuf,
    },
}

/// Session settings, resolved once from the command line.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    pub device: OrtDevice,
    /// Intra-op threads; 0 lets ONNX Runtime choose (one per physical core).
    pub intra_threads: usize,
    /// Graph optimisation level 0–3 (0 none, 1 basic, 2 extended, 3 all).
    pub opt_level: u8,
    /// Allow a silent CPU fallback when a GPU provider fails to register.
    pub allow_fallback: bool,
    /// Use ONNX Runtime's CPU memory arena (off by default: less memory, same speed here).
    pub cpu_arena: bool,
    /// Let idle intra-op threads spin-wait (ONNX Runtime's default; off here, see `open_session`).
    pub spin: bool,
    /// CPU only: map the weight files once and give every session the same initializers, so
    /// pre-packed weights are shared and the mapped pages can be dropped after loading (see
    /// `ort_weights.rs`). Off: each session loads its weights itself.
    pub share_weights: bool,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            device: OrtDevice::Cpu,
            intra_threads: 0,
            opt_level: 3,
            allow_fallback: false,
            cpu_arena: false,
            spin: false,
            share_weights: true,
        }
    }
}

fn providers(opts: &OrtOptions, device: &OrtDevice) -> Vec<ExecutionProviderDispatch> {
    let wrap = |ep: ExecutionProviderDispatch| {
        if opts.allow_fallback {
            ep
        } else {
            ep.error_on_failure()
        }
    };
    match device {
        // Without the CPU arena, peak RSS of `cbqa eval` on t5-small drops by ~55 MB at the same
        // speed (measured with cbqa bench / cbqa eval, batch 32, 2 threads).
        OrtDevice::Cpu => vec![ort::ep::CPU::default()
            .with_arena_allocator(opts.cpu_arena)
            .build()],
        OrtDevice::Cuda(n) => vec![wrap(ort::ep::CUDA::default().with_device_id(*n).build())],
        OrtDevice::TensorRt { device, cache_dir } => vec![
            wrap(
                ort::ep::TensorRT::default()
                    .with_device_id(*device)
                    .with_engine_cache(true)
                    .with_engine_cache_path(cache_dir.display())
                    .build(),
            ),
            // Nodes TensorRT does not take run on CUDA, not on the CPU.
            wrap(ort::ep::CUDA::default().with_device_id(*device).build()),
        ],
    }
}

/// A session builder with the options every session of a model shares, on `device`'s
/// execution providers.
fn builder(label: &str, opts: &OrtOptions, device: &OrtDevice) -> Result<SessionBuilder> {
    let (lib, env) = crate::native::ort_environment()?;
    let level = match opts.opt_level {
        0 => GraphOptimizationLevel::Disable,
        1 => GraphOptimizationLevel::Level1,
        2 => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::All,
    };
    let ctx = |e: &dyn std::fmt::Display| err(format!("{label}: {e}"));
    let mut b = Session::builder(env).map_err(|e| ctx(&e))?;
    b = b.with_optimization_level(level).map_err(|e| ctx(&e))?;
    if opts.intra_threads > 0 {
        b = b
            .with_intra_threads(opts.intra_threads)
            .map_err(|e| ctx(&e))?;
    }
    b = b.with_inter_threads(1).map_err(|e| ctx(&e))?;
    if !opts.spin {
        // Idle intra-op threads spin-wait by default. With as many threads as cores, the
        // spinning competes with the thread that drives the decoding loop: turning it off made
        // t5-small batch 32 go from 77 to 92-95 q/s (fp32) and 134 to 181 q/s (int8), and
        // batch 1 from 9 to 18 q/s, on 2 cores (cbqa bench, same run).
        b = b
            .with_config_entry("session.intra_op.allow_spinning", "0")
            .map_err(|e| ctx(&e))?;
    }
    if !opts.cpu_arena {
        b = b.with_memory_pattern(false).map_err(|e| ctx(&e))?;
    }
    let eps = providers(opts, device);
    if !eps.is_empty() {
        b = b.with_execution_providers(eps).map_err(|e| {
            err(format!(
                "cannot register the {device:?} execution provider with ONNX Runtime loaded from {} \
                 (install onnxruntime-gpu with scripts/setup.sh --gpu, or pass --allow-fallback to \
                 run on the CPU): {e}",
                lib.display()
            ))
        })?;
    }
    Ok(b)
}

fn open_session(
    path: &Path,
    opts: &OrtOptions,
    prepacked: &PrepackedWeights,
    initializers: Vec<(String, Arc<DynValue>)>,
) -> Result<Session> {
    let ctx = |e: &dyn std::fmt::Display| err(format!("{}: {e}", path.display()));
    let mut b = builder(&path.display().to_string(), opts, &opts.device)?;
    // The three graphs use the same weights: pre-packed GEMM weights of shared initializers are
    // kept once for all of them instead of once per session.
    b = b.with_prepacked_weights(prepacked).map_err(|e| ctx(&e))?;
    for (name, value) in initializers {
        b = b.with_initializer(&name, value).map_err(|e| ctx(&e))?;
    }
    b.commit_from_file(path).map_err(|e| ctx(&e))
}

/// An ONNX model that gathers the rows `rows` (int64 `[n]`) of its inputs `x0, x1, ...` (of
/// element types `elems`, any rank) into its outputs `y0, y1, ...`: one `Gather` on axis 0 each.
fn select_rows_model(elems: &[i32]) -> Vec<u8> {
    use crate::onnx::builder::{model, Attr, Dim, Graph};
    use crate::onnx::proto::data_type::INT64;
    let mut g = Graph::new("cbqa_select_rows");
    let rows = g.input("rows", INT64, &[Dim::Sym("rows")]);
    for (i, &elem) in elems.iter().enumerate() {
        let x = g.input_unranked(&format!("x{i}"), elem);
        let y = g.op("Gather", &[&x, &rows], vec![Attr::Int("axis", 0)]);
        g.output_unranked(&y, &format!("y{i}"), elem);
    }
    model(g.into_proto(), "cbqa: rows of the decoding state", &[]).encode_to_vec()
}

/// The ONNX element type of a tensor value.
fn elem_of(value: &DynValue) -> Result<i32> {
    match value.dtype() {
        ValueType::Tensor { ty, .. } => Ok(ort::sys::ONNXTensorElementDataType::from(*ty) as i32),
        other => Err(err(format!("decoding state holds a {other}, not a tensor"))),
    }
}

/// A T5 export loaded into three ONNX Runtime sessions.
pub struct OrtSeq2Seq {
    encoder: Mutex<Session>,
    decoder: Mutex<Session>,
    decoder_past: Mutex<Session>,
    layers: usize,
    vocab: usize,
    names: IoNames,
    describe: String,
    /// Where the encoder output and the key/value caches live between steps: the GPU for CUDA
    /// and TensorRT (so they are never copied back and forth), host memory on the CPU.
    cache_mem: MemoryInfo<'static>,
    /// Host memory, for the logits (read every step).
    host_mem: MemoryInfo<'static>,
    /// Row-selection sessions (see [`select_rows_model`]), one per list of state element types.
    select: Mutex<HashMap<Vec<i32>, Session>>,
    /// Options of the row-selection sessions: the model's, with CUDA in place of TensorRT.
    select_opts: OrtOptions,
    /// Input and output names of the row-selection graphs (`x0..`, `y0..`), made once: one per
    /// state tensor at most (mask, encoder output, four per layer).
    select_names: (Vec<String>, Vec<String>),
    /// The mapped weights the sessions use; declared after them so it is dropped after them.
    _weights: Option<SharedWeights>,
}

/// Decoding state: the encoder mask, the encoder output (until the first step), the cross
/// attention keys/values and the self-attention cache, all as ONNX Runtime values.
pub struct OrtState {
    rows: usize,
    mask: DynValue,
    hidden: Option<DynValue>,
    /// Per layer: [decoder key, decoder value, encoder key, encoder value].
    cache: Vec<[DynValue; 4]>,
}

fn check_names(
    session: &Session,
    file: &Path,
    inputs: &[String],
    outputs: &[String],
) -> Result<()> {
    check_io(
        file,
        inputs,
        outputs,
        |n| session.inputs().iter().any(|i| i.name() == n),
        |n| session.outputs().iter().any(|o| o.name() == n),
    )
}

impl OrtSeq2Seq {
    /// Load the three graphs of `dir` with `opts`, checking their input and output names.
    pub fn load(dir: &OnnxDir, opts: &OrtOptions) -> Result<Self> {
        let layers = dir.config.decoder_layers();
        let enc_path = dir.graph(ENCODER);
        let dec_path = dir.graph(DECODER);
        let past_path = dir.graph(DECODER_WITH_PAST);
        crate::native::ort_environment()?; // loads the library before any other ort call
        let prepacked = PrepackedWeights::new();
        let mut shared = match opts.device {
            OrtDevice::Cpu if opts.share_weights => Some(SharedWeights::new()?),
            _ => None,
        };
        let mut open = |path: &Path| -> Result<Session> {
            match shared.as_mut() {
                Some(weights) => {
                    let inits = weights.for_graph(path)?;
                    weights.trimming(|| open_session(path, opts, &prepacked, inits))
                }
                None => open_session(path, opts, &prepacked, Vec::new()),
            }
        };
        let encoder = open(&enc_path)?;
        let decoder = open(&dec_path)?;
        let decoder_past = open(&past_path)?;
        let names = IoNames::new(layers);
        let (i, o) = names.encoder();
        check_names(&encoder, &enc_path, &i, &o)?;
        let (i, o) = names.decoder();
        check_names(&decoder, &dec_path, &i, &o)?;
        let (i, o) = names.decoder_with_past();
        check_names(&decoder_past, &past_path, &i, &o)?;
        let describe = format!(
            "onnxruntime {:?} threads={} opt={}{}",
            opts.device,
            if opts.intra_threads == 0 {
                "auto".into()
            } else {
                opts.intra_threads.to_string()
            },
            opts.opt_level,
            match &shared {
                Some(s) => format!(" shared-weights={}MB", s.mapped_bytes() >> 20),
                None => String::new(),
            }
        );
        let mem = |dev: AllocationDevice<'static>, id: i32| {
            MemoryInfo::new(dev, id, AllocatorType::Device, MemoryType::Default).map_err(err)
        };
        let host_mem = mem(AllocationDevice::CPU, 0)?;
        let cache_mem = match &opts.device {
            OrtDevice::Cpu => mem(AllocationDevice::CPU, 0)?,
            OrtDevice::Cuda(i) | OrtDevice::TensorRt { device: i, .. } => {
                mem(AllocationDevice::CUDA, *i)?
            }
        };
        Ok(OrtSeq2Seq {
            cache_mem,
            host_mem,
            encoder: Mutex::new(encoder),
            decoder: Mutex::new(decoder),
            decoder_past: Mutex::new(decoder_past),
            layers,
            vocab: dir.config.vocab_size,
            names,
            describe,
            select: Mutex::new(HashMap::new()),
            select_names: (0..2 + 4 * layers)
                .map(|i| (format!("x{i}"), format!("y{i}")))
                .unzip(),
            select_opts: OrtOptions {
                device: match &opts.device {
                    // Gathers are memory copies: TensorRT gains nothing on them, CUDA runs them.
                    OrtDevice::TensorRt { device, .. } => OrtDevice::Cuda(*device),
                    d => d.clone(),
                },
                ..opts.clone()
            },
            _weights: shared,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves the session itself intact.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OrtSeq2Seq {
    /// One run through an `IoBinding`: the logits are written to host memory, every other
    /// output stays where `cache_mem` says (the GPU under CUDA/TensorRT), and inputs that already
    /// live there are bound without a copy. A fresh binding per run gives every run fresh output
    /// buffers, so values kept from earlier steps are never overwritten. CPU and GPU share this
    /// code; only the memory placement differs.
    fn run(
        &self,
        session: &Mutex<Session>,
        graph: &str,
        inputs: &[(&str, &DynValue)],
        outputs: &[&str],
    ) -> Result<Vec<DynValue>> {
        self.run_on(&mut lock(session), graph, inputs, outputs)
    }

    fn run_on(
        &self,
        s: &mut Session,
        graph: &str,
        inputs: &[(&str, &DynValue)],
        outputs: &[&str],
    ) -> Result<Vec<DynValue>> {
        let ctx = |e: ort::Error| err(format!("{graph}: {e}"));
        let mut binding = s.create_binding().map_err(ctx)?;
        for (name, value) in inputs {
            binding.bind_input(*name, *value).map_err(ctx)?;
        }
        for name in outputs {
            let mem = if *name == LOGITS {
                &self.host_mem
            } else {
                &self.cache_mem
            };
            binding.bind_output_to_device(*name, mem).map_err(ctx)?;
        }
        let mut out = s.run_binding(&binding).map_err(ctx)?;
        outputs
            .iter()
            .map(|name| {
                out.remove(name)
                    .ok_or_else(|| err(format!("{graph}: output {name} missing from the run")))
            })
            .collect()
    }
}

fn logits_of(value: &DynValue, rows: usize, vocab: usize) -> Result<Logits> {
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(err)?;
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    super::last_position(&shape, data, rows, vocab).map_err(err)
}

impl Seq2Seq for OrtSeq2Seq {
    type State = OrtState;

    fn encode(&self, input: &EncoderInput) -> Result<OrtState> {
        let shape = vec![input.batch as i64, input.len as i64];
        let ids = Tensor::from_array((shape.clone(), input.ids.clone())).map_err(err)?;
        let mask = Tensor::from_array((shape, input.mask.clone())).map_err(err)?;
        let (ids, mask) = (ids.into_dyn(), mask.into_dyn());
        let mut out = self.run(
            &self.encoder,
            ENCODER,
            &[(INPUT_IDS, &ids), (ATTENTION_MASK, &mask)],
            &[LAST_HIDDEN_STATE],
        )?;
        Ok(OrtState {
            rows: input.batch,
            mask,
            hidden: out.pop(),
            cache: Vec::new(),
        })
    }

    fn step(&self, mut state: OrtState, tokens: &[i64]) -> Result<(Logits, OrtState)> {
        if tokens.len() != state.rows {
            return Err(err(format!(
                "{} tokens for {} rows",
                tokens.len(),
                state.rows
            )));
        }
        let ids = Tensor::from_array((vec![state.rows as i64, 1], tokens.to_vec()))
            .map_err(err)?
            .into_dyn();
        if let Some(hidden) = state.hidden.take() {
            // First step: decoder_model.onnx also returns the cross-attention keys/values.
            let mut outputs: Vec<&str> = vec![LOGITS];
            outputs.extend(
                self.names
                    .present_outputs
                    .iter()
                    .flatten()
                    .map(String::as_str),
            );
            let out = self.run(
                &self.decoder,
                DECODER,
                &[
                    (INPUT_IDS, &ids),
                    (ENCODER_ATTENTION_MASK, &state.mask),
                    (ENCODER_HIDDEN_STATES, &hidden),
                ],
                &outputs,
            )?;
            let mut out = out.into_iter();
            let logits = out
                .next()
                .ok_or_else(|| err(format!("{DECODER}: no logits")))?;
            let logits = logits_of(&logits, state.rows, self.vocab)?;
            let mut cache = Vec::with_capacity(self.layers);
            while let (Some(a), Some(b), Some(c), Some(d)) =
                (out.next(), out.next(), out.next(), out.next())
            {
                cache.push([a, b, c, d]);
            }
            state.cache = cache;
            return Ok((logits, state));
        }
        let mut inputs: Vec<(&str, &DynValue)> = Vec::with_capacity(2 + 4 * self.layers);
        inputs.push((INPUT_IDS, &ids));
        inputs.push((ENCODER_ATTENTION_MASK, &state.mask));
        for (layer, n) in state.cache.iter().zip(&self.names.past_inputs) {
            for (v, name) in layer.iter().zip(n) {
                inputs.push((name.as_str(), v));
            }
        }
        let mut outputs: Vec<&str> = vec![LOGITS];
        outputs.extend(self.names.self_attention_outputs().map(String::as_str));
        let out = self.run(&self.decoder_past, DECODER_WITH_PAST, &inputs, &outputs)?;
        drop(inputs);
        let mut out = out.into_iter();
        let logits = out
            .next()
            .ok_or_else(|| err(format!("{DECODER_WITH_PAST}: no logits")))?;
        let logits = logits_of(&logits, state.rows, self.vocab)?;
        for layer in state.cache.iter_mut() {
            if let (Some(k), Some(v)) = (out.next(), out.next()) {
                layer[0] = k;
                layer[1] = v;
            }
        }
        Ok((logits, state))
    }

    fn select(&self, state: OrtState, rows: &[usize]) -> Result<OrtState> {
        if is_identity(rows, state.rows) {
            return Ok(state);
        }
        if let Some(&bad) = rows.iter().find(|&&r| r >= state.rows) {
            return Err(err(format!("row {bad} selected from {} rows", state.rows)));
        }
        // Every state tensor, gathered in one run of the row-selection graph, on the device the
        // state lives on (nothing goes through the host under CUDA).
        let mut values: Vec<&DynValue> = vec![&state.mask];
        values.extend(&state.hidden);
        values.extend(state.cache.iter().flatten());
        let elems = values
            .iter()
            .map(|v| elem_of(v))
            .collect::<Result<Vec<i32>>>()?;
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let idx = Tensor::from_array((vec![rows.len() as i64], idx))
            .map_err(err)?
            .into_dyn();
        let (xs, ys) = &self.select_names;
        if values.len() > xs.len() {
            return Err(err(format!(
                "row selection: {} state tensors, at most {} expected",
                values.len(),
                xs.len()
            )));
        }
        let mut inputs: Vec<(&str, &DynValue)> = vec![("rows", &idx)];
        inputs.extend(xs.iter().map(String::as_str).zip(values));
        let outputs: Vec<&str> = ys[..inputs.len() - 1].iter().map(String::as_str).collect();
        let mut sessions = lock(&self.select);
        let session = match sessions.entry(elems) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let model = select_rows_model(e.key());
                let session =
                    builder("row selection", &self.select_opts, &self.select_opts.device)?
                        .commit_from_memory(&model)
                        .map_err(|e| err(format!("row selection: {e}")))?;
                e.insert(session)
            }
        };
        let mut out = self
            .run_on(session, "row selection", &inputs, &outputs)?
            .into_iter();
        drop(sessions);
        let mask = out.next().ok_or_else(|| err("row selection: no mask"))?;
        let hidden = match state.hidden {
            Some(_) => out.next(),
            None => None,
        };
        let mut cache = Vec::with_capacity(state.cache.len());
        while let (Some(a), Some(b), Some(c), Some(d)) =
            (out.next(), out.next(), out.next(), out.next())
        {
            cache.push([a, b, c, d]);
        }
        Ok(OrtState {
            rows: rows.len(),
            mask,
            hidden,
            cache,
        })
    }

    fn rows(&self, state: &OrtState) -> usize {
        state.rows
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
