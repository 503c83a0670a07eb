//! The ONNX Runtime backend: optimum's three unmerged graphs run through `ort`.
//!
//! The first decoder step runs `decoder_model.onnx`, which also returns the cross-attention
//! keys/values (`present.{i}.encoder.*`); they are kept as ONNX Runtime values in the state and fed
//! by reference to every later `decoder_with_past_model.onnx` step, so they are computed once and
//! never copied per step. The growing self-attention cache is handed from one step's outputs to the
//! next step's inputs as the same values, also without copies. Rows are gathered (a copy) only
//! when `select` changes them: beam reordering, or finished rows leaving the batch. That gather
//! is itself an ONNX graph (`select_rows_model`) run on the model's execution provider, so on
//! a GPU the state is reordered on the device; so is `concat`, which joins two states
//! (`join_states_model`: the shorter self-attention cache padded on the left, the shorter encoder
//! mask and cross-attention keys/values on the right, then one `Concat` each).
//!
//! Later steps run `decoder_with_past_masked_model.onnx` in place of
//! `decoder_with_past_model.onnx` where the export has it (cbqa's exports): it takes the
//! self-attention key mask, built on the host each step from the state's `CachePadding`, so
//! states at different positions can be joined. optimum's exports lack it and join only states
//! at the same position.
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
use super::ort_cache::{CacheTarget, LogitsTarget, SelfCacheBlocks};
use super::ort_weights::{fail, SharedWeights, ORT};
use super::{
    is_identity, CachePadding, EncoderInput, GraphInput, GraphOutputs, JoinPads, Logits, Seq2Seq,
};
use crate::error::{Error, Result};
use crate::onnx::layout::{
    IoNames, ATTENTION_MASK, DECODER, DECODER_ATTENTION_MASK, DECODER_MERGED, DECODER_WITH_PAST,
    DECODER_WITH_PAST_MASKED, ENCODER, ENCODER_ATTENTION_MASK, ENCODER_HIDDEN_STATES, INPUT_IDS,
    LAST_HIDDEN_STATE, LOGITS,
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
    /// Sessions per graph (at least 1): batches decoded on that many threads at once each run on
    /// their own copy (see [`Sessions`]).
    pub session_copies: usize,
    /// With session copies: also open one session per graph on this many intra-op threads, which
    /// a run takes when no copy is running, so a batch decoding alone (the last batch of a set,
    /// one client of `cbqa serve`) uses every thread. 0: none.
    pub lone_run_threads: usize,
    /// CPU only: write every step's self-attention cache into memory the decoding state owns
    /// (two blocks in turn) and its logits into the vector the step returns (see `ort_cache.rs`)
    /// instead of fresh ONNX Runtime outputs. Off: ONNX Runtime allocates them (as on a GPU).
    pub cache_in_place: bool,
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
            session_copies: 1,
            lone_run_threads: 0,
            cache_in_place: true,
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
pub(super) fn builder(
    label: &str,
    opts: &OrtOptions,
    device: &OrtDevice,
) -> Result<SessionBuilder> {
    let (lib, env) = crate::native::ort_environment()?;
    let level = match opts.opt_level {
        0 => GraphOptimizationLevel::Disable,
        1 => GraphOptimizationLevel::Level1,
        2 => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::All,
    };
    let ctx = || format!("{label}: configure the session");
    let mut b = Session::builder(env).map_err(fail(ctx()))?;
    b = b.with_optimization_level(level).map_err(fail(ctx()))?;
    if opts.intra_threads > 0 {
        b = b
            .with_intra_threads(opts.intra_threads)
            .map_err(fail(ctx()))?;
    }
    b = b.with_inter_threads(1).map_err(fail(ctx()))?;
    if !opts.spin {
        // Idle intra-op threads spin-wait by default. With as many threads as cores, the
        // spinning competes with the thread that drives the decoding loop: turning it off made
        // t5-small batch 32 go from 77 to 92-95 q/s (fp32) and 134 to 181 q/s (int8), and
        // batch 1 from 9 to 18 q/s, on 2 cores (cbqa bench, same run).
        b = b
            .with_config_entry("session.intra_op.allow_spinning", "0")
            .map_err(fail(ctx()))?;
    }
    if !opts.cpu_arena {
        b = b.with_memory_pattern(false).map_err(fail(ctx()))?;
    }
    if let Some(prefix) = std::env::var_os("CBQA_ORT_PROFILE") {
        // Developer aid: ONNX Runtime's per-node profile, one JSON per session, written when the
        // session closes (`CBQA_ORT_PROFILE=/tmp/prof/run`). Used to find where a phase is short
        // of its roofline.
        let stem = Path::new(label)
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy();
        let mut file = prefix;
        file.push(format!("-{stem}"));
        b = b.with_profiling(file).map_err(fail(ctx()))?;
    }
    let eps = providers(opts, device);
    if !eps.is_empty() {
        b = b.with_execution_providers(eps).map_err(fail(format!(
            "cannot register the {device:?} execution provider with ONNX Runtime loaded from {} \
             (install onnxruntime-gpu with scripts/setup.sh --gpu, or allow the CPU fallback \
             (setting allow_fallback) to run on the CPU)",
            lib.display()
        )))?;
    }
    Ok(b)
}

fn open_session(
    path: &Path,
    opts: &OrtOptions,
    prepacked: &PrepackedWeights,
    initializers: Vec<(String, Arc<DynValue>)>,
) -> Result<Session> {
    let label = path.display().to_string();
    let mut b = builder(&label, opts, &opts.device)?;
    // The three graphs use the same weights: pre-packed GEMM weights of shared initializers are
    // kept once for all of them instead of once per session.
    b = b
        .with_prepacked_weights(prepacked)
        .map_err(fail(format!("{label}: share pre-packed weights")))?;
    for (name, value) in initializers {
        b = b
            .with_initializer(&name, value)
            .map_err(fail(format!("{label}: add initializer {name}")))?;
    }
    b.commit_from_file(path)
        .map_err(fail(format!("{label}: load the graph")))
}

/// An ONNX model that gathers the rows `rows` (int64 `[n]`) of its inputs `x0, x1, ...` (of
/// element types `elems[i].0`, any rank) into its outputs `y0, y1, ...`: one `Gather` on axis 0
/// each. Where `elems[i].1` (self-attention caches, `[B, H, len, d]`), the first `trim` (int64
/// `[1]`) positions are then sliced off (columns that are padding in every kept row).
fn select_rows_model(elems: &[(i32, bool)]) -> Vec<u8> {
    use crate::onnx::builder::{model, Attr, Dim, Graph};
    use crate::onnx::proto::data_type::INT64;
    let mut g = Graph::new("cbqa_select_rows");
    let rows = g.input("rows", INT64, &[Dim::Sym("rows")]);
    let trims = elems.iter().any(|&(_, trim)| trim);
    let slice = trims.then(|| {
        let start = g.input("trim", INT64, &[Dim::Fixed(1)]);
        (start, g.ints(&[i64::MAX]), g.ints(&[2]))
    });
    for (i, &(elem, trim)) in elems.iter().enumerate() {
        let x = g.input_unranked(&format!("x{i}"), elem);
        let mut y = g.op("Gather", &[&x, &rows], vec![Attr::Int("axis", 0)]);
        if let (true, Some((start, end, axis))) = (trim, &slice) {
            y = g.op("Slice", &[&y, start, end, axis], vec![]);
        }
        g.output_unranked(&y, &format!("y{i}"), elem);
    }
    model(g.into_proto(), "cbqa: rows of the decoding state", &[]).encode_to_vec()
}

/// How [`join_states_model`] pads one state tensor before joining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum JoinAs {
    /// The encoder mask `[B, S]`: zeros on the right of axis 1.
    EncoderMask,
    /// A self-attention cache `[B, H, len, d]`: zeros on the left of axis 2.
    SelfCache,
    /// A cross-attention key/value `[B, H, S, d]`: zeros on the right of axis 2.
    CrossCache,
}

impl JoinAs {
    fn index(self) -> usize {
        self as usize
    }
}

/// The `Pad` amounts (ONNX's `[begin per axis..., end per axis...]`) of one state and one
/// [`JoinAs`] kind, given its left padding of the self cache and right padding of the encoder.
fn join_pads(kind: JoinAs, left: usize, right: usize) -> Vec<i64> {
    let (left, right) = (left as i64, right as i64);
    match kind {
        JoinAs::EncoderMask => vec![0, 0, 0, right],
        JoinAs::SelfCache => vec![0, 0, left, 0, 0, 0, 0, 0],
        JoinAs::CrossCache => vec![0, 0, 0, 0, 0, 0, right, 0],
    }
}

/// The names of the `Pad` amount inputs of [`join_states_model`]: per [`JoinAs`], the first
/// state's and the second's.
const JOIN_PADS: [[&str; 2]; 3] = [
    ["mask_pads_a", "mask_pads_b"],
    ["self_pads_a", "self_pads_b"],
    ["cross_pads_a", "cross_pads_b"],
];

/// An ONNX model that joins two decoding states: inputs `a0, a1, ...` (the first state's
/// tensors) and `b0, b1, ...` (the second's), of element types and [`JoinAs`] kinds `elems`, and
/// the `Pad` amounts of [`JOIN_PADS`]; output `y{i}` = `Concat(Pad(a{i}), Pad(b{i}))` on axis 0.
fn join_states_model(elems: &[(i32, JoinAs)]) -> Vec<u8> {
    use crate::onnx::builder::{model, Attr, Dim, Graph};
    use crate::onnx::proto::data_type::INT64;
    let mut g = Graph::new("cbqa_join_states");
    let pads: Vec<[_; 2]> = [4, 8, 8]
        .iter()
        .zip(JOIN_PADS)
        .map(|(&n, names)| names.map(|name| g.input(name, INT64, &[Dim::Fixed(n)])))
        .collect();
    for (i, &(elem, kind)) in elems.iter().enumerate() {
        let [pa, pb] = &pads[kind.index()];
        let a = g.input_unranked(&format!("a{i}"), elem);
        let b = g.input_unranked(&format!("b{i}"), elem);
        let a = g.op("Pad", &[&a, pa], vec![]);
        let b = g.op("Pad", &[&b, pb], vec![]);
        let y = g.op("Concat", &[&a, &b], vec![Attr::Int("axis", 0)]);
        g.output_unranked(&y, &format!("y{i}"), elem);
    }
    model(g.into_proto(), "cbqa: two decoding states joined", &[]).encode_to_vec()
}

/// The ONNX element type of a tensor value.
fn elem_of(value: &DynValue) -> Result<i32> {
    match value.dtype() {
        ValueType::Tensor { ty, .. } => Ok(ort::sys::ONNXTensorElementDataType::from(*ty) as i32),
        other => Err(Error::input(
            "decoding state",
            format!("holds a {other}, not a tensor"),
        )),
    }
}

/// Copies of one graph's session, opened alike (on the CPU they share the mapped weights and the
/// pre-packed matrices, so a copy costs its own buffers only): batches decoded on several threads
/// run the graph at the same time, each run on a copy no other run holds. Where there is a lone
/// session (on more threads), a run that finds every copy idle takes it instead.
struct Sessions {
    copies: Vec<Mutex<Session>>,
    lone: Option<Mutex<Session>>,
}

impl Sessions {
    fn one(session: Session) -> Self {
        Sessions {
            copies: vec![Mutex::new(session)],
            lone: None,
        }
    }

    /// The lone session when no copy runs (and it is free), else a copy no other run holds,
    /// else (all busy) the first copy once it is free.
    fn take(&self) -> std::sync::MutexGuard<'_, Session> {
        if let Some(lone) = &self.lone {
            if self.copies.iter().all(is_free) {
                if let Some(guard) = try_take(lone) {
                    return guard;
                }
            }
        }
        self.copies
            .iter()
            .find_map(try_take)
            .unwrap_or_else(|| lock(&self.copies[0]))
    }
}

/// The session, unless another run holds it.
fn try_take(session: &Mutex<Session>) -> Option<std::sync::MutexGuard<'_, Session>> {
    match session.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Whether no run holds the session now.
fn is_free(session: &Mutex<Session>) -> bool {
    !matches!(session.try_lock(), Err(std::sync::TryLockError::WouldBlock))
}

/// A T5 export loaded into three ONNX Runtime sessions (four with the merged decoder).
pub struct OrtSeq2Seq {
    encoder: Sessions,
    decoder: Sessions,
    /// The session of every later step: [`OrtSeq2Seq::step_graph`].
    decoder_past: Sessions,
    /// `decoder_with_past_masked_model.onnx` where the export has it (it takes the
    /// self-attention key mask, so states at any position join), else
    /// `decoder_with_past_model.onnx`.
    step_graph: &'static str,
    /// Graphs decoding does not use, opened for validation ([`OrtSeq2Seq::load_graphs`]): the
    /// unmasked decoder with past when the masked one is used, the merged decoder.
    unused: Vec<(&'static str, Sessions)>,
    /// The export directory (errors name its graph files).
    dir: PathBuf,
    layers: usize,
    vocab: usize,
    names: IoNames,
    describe: String,
    /// Where the encoder output and the key/value caches live between steps: the GPU for CUDA
    /// and TensorRT (so they are never copied back and forth), host memory on the CPU.
    cache_mem: MemoryInfo<'static>,
    /// Host memory, for the logits (read every step).
    host_mem: MemoryInfo<'static>,
    /// Whether self-attention caches and logits are written in place
    /// ([`OrtOptions::cache_in_place`]).
    in_place: bool,
    /// Row-selection sessions (see [`select_rows_model`]), one per list of state element types
    /// and trimmed tensors.
    select: Mutex<HashMap<Vec<(i32, bool)>, Session>>,
    /// State-joining sessions (see [`join_states_model`]), one per list of state tensor kinds.
    join: Mutex<HashMap<Vec<(i32, JoinAs)>, Session>>,
    /// Options of the row-selection sessions: the model's, with CUDA in place of TensorRT.
    select_opts: OrtOptions,
    /// Input and output names of the row-selection graphs (`x0..`, `y0..`), made once: one per
    /// state tensor at most (mask, encoder output, four per layer).
    select_names: (Vec<String>, Vec<String>),
    /// The first and second state's input names of the joining graphs (`a0..`, `b0..`).
    join_names: (Vec<String>, Vec<String>),
    /// Encoder rows numbered so far (each state row knows its source: [`OrtState`]).
    encoded_rows: std::sync::atomic::AtomicU64,
    /// Decoder steps run so far, by every state (see [`OrtSeq2Seq::release_unused_memory`]).
    steps: std::sync::atomic::AtomicUsize,
    /// The mapped weights the sessions use; declared after them so it is dropped after them.
    weights: Option<SharedWeights>,
}

/// Decoding state: the encoder mask, the encoder output (until the first step), the cross
/// attention keys/values and the self-attention cache, all as ONNX Runtime values, and on the
/// host the cache's length and each row's left padding.
pub struct OrtState {
    rows: usize,
    mask: DynValue,
    hidden: Option<DynValue>,
    /// Per layer: [decoder key, decoder value, encoder key, encoder value].
    cache: Vec<[DynValue; 4]>,
    padding: CachePadding,
    /// Per row, the encoder row it was gathered from (numbered by [`OrtSeq2Seq::encode`], unique
    /// among the backend's states): rows of one source hold the same encoder mask and
    /// cross-attention keys/values.
    sources: Vec<u64>,
    /// The memory the self-attention caches of `cache` are written into in place, on the CPU;
    /// declared after `cache`, whose values view it, so it is dropped after them.
    blocks: SelfCacheBlocks,
}

impl OrtState {
    /// The length of the self-attention cache (positions, padding included) as its tensors
    /// hold it: 0 before the first step.
    pub fn cache_len(&self) -> usize {
        match self.cache.first().map(|layer| layer[0].dtype()) {
            Some(ValueType::Tensor { shape, .. }) => shape.get(2).map_or(0, |&d| d.max(0) as usize),
            _ => 0,
        }
    }
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

/// The sessions of one export, opened with the same options, pre-packed weights container and
/// (on the CPU) shared weights.
struct Opener<'a> {
    opts: &'a OrtOptions,
    prepacked: PrepackedWeights,
    shared: Option<SharedWeights>,
}

impl Opener<'_> {
    fn open(&mut self, path: &Path) -> Result<Session> {
        self.open_with(path, self.opts)
    }

    /// Open `path` with `opts` (the opener's, or those of a lone session).
    fn open_with(&mut self, path: &Path, opts: &OrtOptions) -> Result<Session> {
        match self.shared.as_mut() {
            Some(weights) => {
                let inits = weights.for_graph(path)?;
                weights.trimming(|| open_session(path, opts, &self.prepacked, inits))
            }
            None => open_session(path, opts, &self.prepacked, Vec::new()),
        }
    }

    /// Open `path` and check it has the `names` (inputs, outputs) of optimum's layout.
    fn open_checked(&mut self, path: &Path, names: (Vec<String>, Vec<String>)) -> Result<Session> {
        self.open_checked_with(path, names, self.opts)
    }

    fn open_checked_with(
        &mut self,
        path: &Path,
        names: (Vec<String>, Vec<String>),
        opts: &OrtOptions,
    ) -> Result<Session> {
        let session = self.open_with(path, opts)?;
        check_names(&session, path, &names.0, &names.1)?;
        Ok(session)
    }

    /// `copies` sessions of `path`, each checked as [`Opener::open_checked`] checks one, and with
    /// more than one copy the lone session the options ask for.
    fn open_copies(
        &mut self,
        path: &Path,
        names: (Vec<String>, Vec<String>),
        copies: usize,
    ) -> Result<Sessions> {
        let sessions = (0..copies)
            .map(|_| Ok(Mutex::new(self.open_checked(path, names.clone())?)))
            .collect::<Result<_>>()?;
        let lone = match self.opts.lone_run_threads {
            _ if copies < 2 => None,
            0 => None,
            threads => {
                let lone_opts = OrtOptions {
                    intra_threads: threads,
                    ..self.opts.clone()
                };
                let lone = self.open_checked_with(path, names, &lone_opts)?;
                Some(Mutex::new(lone))
            }
        };
        Ok(Sessions {
            copies: sessions,
            lone,
        })
    }
}

/// The one-line description of a backend opened with `opts`.
fn describe(opts: &OrtOptions, copies: usize, shared: Option<&SharedWeights>) -> String {
    format!(
        "onnxruntime {:?} threads={}{} opt={}{}",
        opts.device,
        if opts.intra_threads == 0 {
            "auto".into()
        } else {
            opts.intra_threads.to_string()
        },
        if copies > 1 {
            match opts.lone_run_threads {
                0 => format!(" x {copies} batches at once"),
                n => format!(" x {copies} batches at once (a batch alone: threads={n})"),
            }
        } else {
            String::new()
        },
        opts.opt_level,
        match shared {
            Some(s) => format!(" shared-weights={}MB", s.mapped_bytes() >> 20),
            None => String::new(),
        }
    )
}

/// Host memory, and the memory the decoding state lives in on `device`.
fn memories(device: &OrtDevice) -> Result<(MemoryInfo<'static>, MemoryInfo<'static>)> {
    let mem = |dev: AllocationDevice<'static>, id: i32| {
        MemoryInfo::new(dev, id, AllocatorType::Device, MemoryType::Default)
            .map_err(fail("describe the memory of the decoding state"))
    };
    let host = mem(AllocationDevice::CPU, 0)?;
    let cache = match device {
        OrtDevice::Cpu => mem(AllocationDevice::CPU, 0)?,
        OrtDevice::Cuda(i) | OrtDevice::TensorRt { device: i, .. } => {
            mem(AllocationDevice::CUDA, *i)?
        }
    };
    Ok((host, cache))
}

impl OrtSeq2Seq {
    /// Sessions per graph: how many batches can run at the same time.
    pub fn session_copies(&self) -> usize {
        self.decoder_past.copies.len()
    }

    /// Load the three graphs of `dir` with `opts`, checking their input and output names.
    pub fn load(dir: &OnnxDir, opts: &OrtOptions) -> Result<Self> {
        Self::load_graphs(dir, opts, false)
    }

    /// As [`OrtSeq2Seq::load`], and with `every_graph` also the graphs decoding does not use,
    /// where the export has them, opened the same way (for [`OrtSeq2Seq::run_graph`]:
    /// validation): `decoder_model_merged.onnx`, and `decoder_with_past_model.onnx` when
    /// decoding uses `decoder_with_past_masked_model.onnx`.
    pub fn load_graphs(dir: &OnnxDir, opts: &OrtOptions, every_graph: bool) -> Result<Self> {
        let layers = dir.config.decoder_layers();
        crate::native::ort_environment()?; // loads the library before any other ort call
        let mut opener = Opener {
            opts,
            prepacked: PrepackedWeights::new(),
            shared: match opts.device {
                OrtDevice::Cpu if opts.share_weights => Some(SharedWeights::new()?),
                _ => None,
            },
        };
        let names = IoNames::new(layers);
        let copies = opts.session_copies.max(1);
        let encoder = opener.open_copies(&dir.graph(ENCODER), names.encoder(), copies)?;
        let decoder = opener.open_copies(&dir.graph(DECODER), names.decoder(), copies)?;
        let (step_graph, step_names) = dir.step_graph(&names);
        let decoder_past = opener.open_copies(&dir.graph(step_graph), step_names, copies)?;
        let mut unused = Vec::new();
        if every_graph && step_graph != DECODER_WITH_PAST {
            let past =
                opener.open_checked(&dir.graph(DECODER_WITH_PAST), names.decoder_with_past())?;
            unused.push((DECODER_WITH_PAST, Sessions::one(past)));
        }
        let merged_path = dir.graph(DECODER_MERGED);
        if every_graph && merged_path.is_file() {
            unused.push((DECODER_MERGED, Sessions::one(opener.open(&merged_path)?)));
        }
        let (host_mem, cache_mem) = memories(&opts.device)?;
        Ok(OrtSeq2Seq {
            in_place: opts.device == OrtDevice::Cpu && opts.cache_in_place,
            cache_mem,
            host_mem,
            encoder,
            decoder,
            decoder_past,
            step_graph,
            unused,
            dir: dir.dir.clone(),
            layers,
            vocab: dir.config.vocab_size,
            names,
            describe: describe(opts, copies, opener.shared.as_ref()),
            select: Mutex::new(HashMap::new()),
            join: Mutex::new(HashMap::new()),
            select_names: (0..2 + 4 * layers)
                .map(|i| (format!("x{i}"), format!("y{i}")))
                .unzip(),
            join_names: (0..1 + 4 * layers)
                .map(|i| (format!("a{i}"), format!("b{i}")))
                .unzip(),
            select_opts: OrtOptions {
                device: match &opts.device {
                    // Gathers are memory copies: TensorRT gains nothing on them, CUDA runs them.
                    OrtDevice::TensorRt { device, .. } => OrtDevice::Cuda(*device),
                    d => d.clone(),
                },
                ..opts.clone()
            },
            encoded_rows: Default::default(),
            steps: Default::default(),
            weights: opener.shared,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves the session itself intact.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a run puts its outputs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Decoding: the logits in host memory, everything else where the state lives.
    Decoding,
    /// Every output in host memory (to be read as arrays).
    Host,
}

/// A tensor value over a copy of `array`.
fn value_of(name: &str, input: GraphInput) -> Result<DynValue> {
    let make = |e: ort::Error| Error::backend(ORT, format!("make input {name}"), e);
    Ok(match input {
        GraphInput::I64(a) => Tensor::from_array(a).map_err(make)?.into_dyn(),
        GraphInput::F32(a) => Tensor::from_array(a).map_err(make)?.into_dyn(),
        GraphInput::Bool(a) => Tensor::from_array(a).map_err(make)?.into_dyn(),
    })
}

impl OrtSeq2Seq {
    /// One run through an `IoBinding`: under [`Placement::Decoding`] the logits are written to
    /// host memory, every other output stays where `cache_mem` says (the GPU under
    /// CUDA/TensorRT), and inputs that already live there are bound without a copy. A fresh
    /// binding per run gives every run fresh output buffers, so values kept from earlier steps
    /// are never overwritten. CPU and GPU share this code; only the memory placement differs.
    fn run(
        &self,
        session: &Sessions,
        graph: &str,
        inputs: &[(&str, &DynValue)],
        outputs: &[&str],
        placement: Placement,
    ) -> Result<Vec<DynValue>> {
        self.run_on(
            &mut session.take(),
            graph,
            inputs,
            outputs,
            &mut [],
            placement,
        )
    }

    /// [`OrtSeq2Seq::run`] with output `i` written into `into[i]` where that is a value (a view
    /// of memory the caller owns, `ort_cache.rs`); the others are placed as `placement` says.
    fn run_on(
        &self,
        s: &mut Session,
        graph: &str,
        inputs: &[(&str, &DynValue)],
        outputs: &[&str],
        into: &mut [Option<DynValue>],
        placement: Placement,
    ) -> Result<Vec<DynValue>> {
        let path = self.dir.join(graph);
        // Every decoder step comes here: the messages are only formatted on failure.
        let err = |what: &dyn std::fmt::Display, e: ort::Error| {
            Error::backend(ORT, format!("{}: {what}", path.display()), e)
        };
        let mut binding = s.create_binding().map_err(|e| err(&"bind the run", e))?;
        for (name, value) in inputs {
            binding
                .bind_input(*name, *value)
                .map_err(|e| err(&format_args!("bind input {name}"), e))?;
        }
        for (i, name) in outputs.iter().enumerate() {
            if let Some(Some(value)) = into.get_mut(i) {
                binding
                    .bind_output(*name, value)
                    .map_err(|e| err(&format_args!("bind output {name} in place"), e))?;
                continue;
            }
            let mem = if *name == LOGITS || placement == Placement::Host {
                &self.host_mem
            } else {
                &self.cache_mem
            };
            binding
                .bind_output_to_device(*name, mem)
                .map_err(|e| err(&format_args!("bind output {name}"), e))?;
        }
        let mut out = s.run_binding(&binding).map_err(|e| err(&"run", e))?;
        outputs
            .iter()
            .map(|name| {
                out.remove(name).ok_or_else(|| Error::Tensor {
                    path: path.clone(),
                    name: name.to_string(),
                    msg: "output missing from the run".into(),
                })
            })
            .collect()
    }

    /// The session of one graph file of the export.
    fn session(&self, graph: &str) -> Result<&Sessions> {
        if graph == self.step_graph {
            return Ok(&self.decoder_past);
        }
        match graph {
            ENCODER => Ok(&self.encoder),
            DECODER => Ok(&self.decoder),
            DECODER_WITH_PAST | DECODER_MERGED | DECODER_WITH_PAST_MASKED => self
                .unused
                .iter()
                .find(|(name, _)| *name == graph)
                .map(|(_, session)| session)
                .ok_or_else(|| {
                    Error::input(
                        graph,
                        "not loaded (absent from the export, or OrtSeq2Seq::load_graphs without \
                         every_graph)",
                    )
                }),
            _ => Err(Error::input(graph, "not a graph of the export")),
        }
    }

    /// Run one graph of the export (`encoder_model.onnx`, ...) on named inputs, through the
    /// same session and run path decoding uses; returns every output, by name, from host
    /// memory.
    pub fn run_graph(
        &self,
        graph: &str,
        inputs: Vec<(String, GraphInput)>,
    ) -> Result<GraphOutputs> {
        let session = self.session(graph)?;
        let output_names: Vec<String> = session
            .take()
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let values = inputs
            .into_iter()
            .map(|(name, input)| Ok((value_of(&name, input)?, name)))
            .collect::<Result<Vec<_>>>()?;
        let named: Vec<(&str, &DynValue)> = values.iter().map(|(v, n)| (n.as_str(), v)).collect();
        let outputs: Vec<&str> = output_names.iter().map(String::as_str).collect();
        let out = self.run(session, graph, &named, &outputs, Placement::Host)?;
        let mut map = GraphOutputs::new();
        for (name, value) in output_names.into_iter().zip(out) {
            let array = value
                .try_extract_array::<f32>()
                .map_err(fail(format!("{graph}: read output {name}")))?
                .to_owned();
            map.insert(name, array);
        }
        Ok(map)
    }

    fn logits_of(&self, graph: &str, value: &DynValue, rows: usize) -> Result<Logits> {
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(fail(format!("{graph}: read the logits")))?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        super::last_position(&self.dir.join(graph), &shape, data, rows, self.vocab)
    }
}

/// Decoder steps between two returns of unused memory ([`OrtSeq2Seq::release_unused_memory`]).
const STEPS_PER_RELEASE: usize = 16;

/// The per-layer caches (four values each) of a run's remaining outputs.
fn layers_of(mut out: impl Iterator<Item = DynValue>, layers: usize) -> Vec<[DynValue; 4]> {
    let mut cache = Vec::with_capacity(layers);
    while let (Some(a), Some(b), Some(c), Some(d)) =
        (out.next(), out.next(), out.next(), out.next())
    {
        cache.push([a, b, c, d]);
    }
    cache
}

/// The `into` of a step run: the logits into `logits` where there is one, the self-attention
/// outputs after them into the views of `target` (in order); ONNX Runtime places the rest.
fn step_outputs(
    logits: &mut Option<LogitsTarget>,
    target: &mut Option<CacheTarget>,
) -> Vec<Option<DynValue>> {
    let first = logits.as_mut().map(|l| l.view.take());
    let views = target.iter_mut().flat_map(|t| t.views.drain(..).map(Some));
    std::iter::once(first.flatten()).chain(views).collect()
}

/// The int64 tensor `[shape]` over `data`, as an input of `graph`.
fn i64_value(what: &str, shape: Vec<i64>, data: Vec<i64>) -> Result<DynValue> {
    Ok(Tensor::from_array((shape, data))
        .map_err(fail(format!("make input {what}")))?
        .into_dyn())
}

impl OrtSeq2Seq {
    /// The first decoder step: `decoder_model.onnx` also returns the cross-attention
    /// keys/values, kept in the state with the self-attention cache.
    fn first_step(
        &self,
        mut state: OrtState,
        hidden: DynValue,
        ids: DynValue,
    ) -> Result<(Logits, OrtState)> {
        let mut outputs: Vec<&str> = vec![LOGITS];
        outputs.extend(
            self.names
                .present_outputs
                .iter()
                .flatten()
                .map(String::as_str),
        );
        let inputs = [
            (INPUT_IDS, &ids),
            (ENCODER_ATTENTION_MASK, &state.mask),
            (ENCODER_HIDDEN_STATES, &hidden),
        ];
        let out = self.run(
            &self.decoder,
            DECODER,
            &inputs,
            &outputs,
            Placement::Decoding,
        )?;
        let mut out = out.into_iter();
        let logits = out.next().ok_or_else(|| self.missing(DECODER, LOGITS))?;
        let logits = self.logits_of(DECODER, &logits, state.rows)?;
        let mut cache = Vec::with_capacity(self.layers);
        while let (Some(a), Some(b), Some(c), Some(d)) =
            (out.next(), out.next(), out.next(), out.next())
        {
            cache.push([a, b, c, d]);
        }
        state.cache = cache;
        state.padding = state.padding.stepped();
        Ok((logits, state))
    }

    /// A later step: the step graph (see [`OrtSeq2Seq::step_graph`]) on the cache, which
    /// returns the new self-attention keys/values.
    fn past_step(&self, mut state: OrtState, ids: DynValue) -> Result<(Logits, OrtState)> {
        let graph = self.step_graph;
        let self_mask = match graph {
            DECODER_WITH_PAST_MASKED => {
                let shape = vec![state.rows as i64, state.padding.len as i64 + 1];
                Some(i64_value(
                    DECODER_ATTENTION_MASK,
                    shape,
                    state.padding.next_mask(),
                )?)
            }
            _ => None,
        };
        let (rows, len) = (state.rows, state.cache_len() + 1);
        let mut target = self.cache_target(&mut state, rows, len)?;
        let mut logits_target = match self.in_place {
            true => Some(LogitsTarget::new(&self.host_mem, rows, self.vocab)?),
            false => None,
        };
        let mut into = step_outputs(&mut logits_target, &mut target);
        let mut inputs: Vec<(&str, &DynValue)> = Vec::with_capacity(3 + 4 * self.layers);
        inputs.push((INPUT_IDS, &ids));
        inputs.push((ENCODER_ATTENTION_MASK, &state.mask));
        if let Some(mask) = &self_mask {
            inputs.push((DECODER_ATTENTION_MASK, mask));
        }
        for (layer, n) in state.cache.iter().zip(&self.names.past_inputs) {
            for (v, name) in layer.iter().zip(n) {
                inputs.push((name.as_str(), v));
            }
        }
        let mut outputs: Vec<&str> = vec![LOGITS];
        outputs.extend(self.names.self_attention_outputs().map(String::as_str));
        let out = self.run_on(
            &mut self.decoder_past.take(),
            graph,
            &inputs,
            &outputs,
            &mut into,
            Placement::Decoding,
        )?;
        drop((inputs, into));
        let mut out = out.into_iter();
        let logits = out.next().ok_or_else(|| self.missing(graph, LOGITS))?;
        let read = |value: &DynValue| self.logits_of(graph, value, rows);
        let logits = match logits_target {
            Some(buffer) => buffer.finish(logits, read)?,
            None => read(&logits)?,
        };
        for layer in state.cache.iter_mut() {
            if let (Some(k), Some(v)) = (out.next(), out.next()) {
                layer[0] = k;
                layer[1] = v;
            }
        }
        if let Some(target) = target {
            state.blocks.advance(target);
        }
        state.padding = state.padding.stepped();
        Ok((logits, state))
    }

    /// An output `name` of `graph` that a run did not return.
    fn missing(&self, graph: &str, name: &str) -> Error {
        Error::Tensor {
            path: self.dir.join(graph),
            name: name.into(),
            msg: "output missing from the run".into(),
        }
    }

    /// Run a small state graph (row selection, joining) on the device the state lives on: the
    /// session of `sessions` for `key`, made once from `model(key)`. Its outputs, in order.
    fn run_state_graph<K: std::hash::Hash + Eq>(
        &self,
        sessions: &Mutex<HashMap<K, Session>>,
        (key, model): (K, impl FnOnce(&K) -> Vec<u8>),
        label: &str,
        inputs: &[(&str, &DynValue)],
        outputs: &[&str],
        into: &mut [Option<DynValue>],
    ) -> Result<std::vec::IntoIter<DynValue>> {
        use std::collections::hash_map::Entry;
        let mut sessions = lock(sessions);
        let session = match sessions.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let model = model(e.key());
                let session = builder(label, &self.select_opts, &self.select_opts.device)?
                    .commit_from_memory(&model)
                    .map_err(fail(format!("{label}: load the graph")))?;
                e.insert(session)
            }
        };
        let out = self.run_on(session, label, inputs, outputs, into, Placement::Decoding)?;
        Ok(out.into_iter())
    }

    /// `values` (`(tensor, trims)`: see [`select_rows_model`]) gathered at `rows`, the first
    /// `trim` positions cut from the trimmed ones, in one run of the row-selection graph.
    fn gather_rows(
        &self,
        values: &[(&DynValue, bool)],
        rows: &[usize],
        trim: usize,
        into: &mut [Option<DynValue>],
    ) -> Result<std::vec::IntoIter<DynValue>> {
        let elems = values
            .iter()
            .map(|&(v, trims)| Ok((elem_of(v)?, trims)))
            .collect::<Result<Vec<_>>>()?;
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let idx = i64_value("rows", vec![rows.len() as i64], idx)?;
        let trim_value = i64_value("trim", vec![1], vec![trim as i64])?;
        let (xs, ys) = &self.select_names;
        if values.len() > xs.len() {
            return Err(Error::input(
                "decoding state",
                format!(
                    "{} state tensors, at most {} expected",
                    values.len(),
                    xs.len()
                ),
            ));
        }
        let mut inputs: Vec<(&str, &DynValue)> = vec![("rows", &idx)];
        if trim > 0 {
            inputs.push(("trim", &trim_value));
        }
        let outputs: Vec<&str> = ys[..values.len()].iter().map(String::as_str).collect();
        inputs.extend(
            xs.iter()
                .map(String::as_str)
                .zip(values.iter().map(|v| v.0)),
        );
        let graph = (elems, |k: &Vec<(i32, bool)>| select_rows_model(k));
        self.run_state_graph(
            &self.select,
            graph,
            "row selection",
            &inputs,
            &outputs,
            into,
        )
    }

    /// Every [`STEPS_PER_RELEASE`] decoder steps on the CPU, give back memory this process holds
    /// but does not use: the pages of the mapped weights read since the last time (embedding
    /// rows the decoder gathered: each read maps a run of pages around the row, and over a few
    /// batches of a random-weights model most of the 66 MB t5-small embedding becomes resident)
    /// and the free pages inside the C heap (what ONNX Runtime's outputs and intermediates of
    /// earlier steps left, `ort_cache::trim_heap`). Both fault back in as used. Beam-4 t5-small
    /// `cbqa eval` at batch 32, 2 threads: peak RSS 528 -> 481 MB at the same speed
    /// (`eval/results/beam4-t5-small-xeon-amx.md`).
    fn release_unused_memory(&self) {
        use std::sync::atomic::Ordering;
        let Some(weights) = &self.weights else {
            return;
        };
        if self
            .steps
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(STEPS_PER_RELEASE)
        {
            weights.release_pages();
            super::ort_cache::trim_heap();
        }
    }

    /// Where a run writes `state`'s next self-attention cache, `rows` rows of `len` positions
    /// (shaped as the current cache otherwise): views of a block of the state's on the CPU
    /// (`ort_cache.rs`), none where ONNX Runtime places the outputs itself (a GPU, no cache
    /// yet).
    fn cache_target(
        &self,
        state: &mut OrtState,
        rows: usize,
        len: usize,
    ) -> Result<Option<CacheTarget>> {
        let Some(first) = state.cache.first() else {
            return Ok(None);
        };
        let ValueType::Tensor { shape, .. } = first[0].dtype() else {
            return Ok(None);
        };
        if !self.in_place || shape.len() != 4 {
            return Ok(None);
        }
        let dims = [
            rows,
            shape[1].max(0) as usize,
            len,
            shape[3].max(0) as usize,
        ];
        let data_type = elem_of(&first[0])?;
        let tensors = 2 * state.cache.len();
        state
            .blocks
            .target(&self.host_mem, tensors, dims, data_type)
    }

    /// The tensors of a stepped state, the encoder mask first, then per layer the cache in
    /// [`crate::onnx::layout::CACHE_ORDER`], each with how it is padded when joined.
    fn join_values(state: &OrtState) -> Result<Vec<(&DynValue, (i32, JoinAs))>> {
        let kinds = [
            JoinAs::SelfCache,
            JoinAs::SelfCache,
            JoinAs::CrossCache,
            JoinAs::CrossCache,
        ];
        let mut values = vec![(&state.mask, JoinAs::EncoderMask)];
        for layer in &state.cache {
            values.extend(layer.iter().zip(kinds));
        }
        values
            .into_iter()
            .map(|(v, kind)| Ok((v, (elem_of(v)?, kind))))
            .collect()
    }

    /// The encoder length of a state (its mask's second axis).
    fn encoder_len(state: &OrtState) -> Result<usize> {
        match state.mask.dtype() {
            ValueType::Tensor { shape, .. } if shape.len() == 2 => Ok(shape[1].max(0) as usize),
            other => Err(Error::input(
                "decoding state",
                format!("encoder mask of type {other}, expected int64 [rows, encoder_len]"),
            )),
        }
    }

    /// The `Pad` amounts of [`JOIN_PADS`] for the two states.
    fn join_pad_values(left: JoinPads, right: JoinPads) -> Result<Vec<DynValue>> {
        let mut values = Vec::with_capacity(6);
        for kind in [JoinAs::EncoderMask, JoinAs::SelfCache, JoinAs::CrossCache] {
            for (l, r) in [(left.first, right.first), (left.second, right.second)] {
                let pads = join_pads(kind, l, r);
                values.push(i64_value("pads", vec![pads.len() as i64], pads)?);
            }
        }
        Ok(values)
    }
}

impl Seq2Seq for OrtSeq2Seq {
    type State = OrtState;

    fn encode(&self, input: &EncoderInput) -> Result<OrtState> {
        let shape = vec![input.batch as i64, input.len as i64];
        let ids = i64_value(INPUT_IDS, shape.clone(), input.ids.clone())?;
        let mask = i64_value(ATTENTION_MASK, shape, input.mask.clone())?;
        let mut out = self.run(
            &self.encoder,
            ENCODER,
            &[(INPUT_IDS, &ids), (ATTENTION_MASK, &mask)],
            &[LAST_HIDDEN_STATE],
            Placement::Decoding,
        )?;
        let first = self
            .encoded_rows
            .fetch_add(input.batch as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(OrtState {
            rows: input.batch,
            mask,
            hidden: out.pop(),
            cache: Vec::new(),
            padding: CachePadding::new(input.batch),
            sources: (first..first + input.batch as u64).collect(),
            blocks: SelfCacheBlocks::default(),
        })
    }

    fn step(&self, mut state: OrtState, tokens: &[i64]) -> Result<(Logits, OrtState)> {
        super::check_tokens(tokens, state.rows)?;
        let ids = i64_value(INPUT_IDS, vec![state.rows as i64, 1], tokens.to_vec())?;
        self.release_unused_memory();
        match state.hidden.take() {
            Some(hidden) => self.first_step(state, hidden, ids),
            None => self.past_step(state, ids),
        }
    }

    fn select(&self, mut state: OrtState, rows: &[usize]) -> Result<OrtState> {
        if is_identity(rows, state.rows) {
            return Ok(state);
        }
        super::check_rows(rows, state.rows)?;
        let sources: Vec<u64> = rows.iter().map(|&r| state.sources[r]).collect();
        // Beams reordered within their questions: every row keeps its encoder row, so the
        // encoder mask and the cross-attention keys/values (bitwise copies per encoder row)
        // stay as they are and only the self-attention caches are gathered.
        let keep_encoder_side = sources == state.sources && !state.cache.is_empty();
        let (padding, trim) = state.padding.select(rows);
        let len = state.cache_len().saturating_sub(trim);
        let mut target = self.cache_target(&mut state, rows.len(), len)?;
        let mut views = target.iter_mut().flat_map(|t| t.views.drain(..));
        // The state tensors, gathered in one run of the row-selection graph, on the device the
        // state lives on (nothing goes through the host under CUDA); self-attention caches lose
        // the `trim` leading columns that are padding in every kept row, and are written into
        // the target where there is one.
        let mut values: Vec<(&DynValue, bool)> = Vec::new();
        let mut into: Vec<Option<DynValue>> = Vec::new();
        if !keep_encoder_side {
            values.push((&state.mask, false));
            values.extend(state.hidden.iter().map(|h| (h, false)));
            into.resize_with(values.len(), || None);
        }
        for layer in &state.cache {
            values.extend([(&layer[0], trim > 0), (&layer[1], trim > 0)]);
            into.extend([views.next(), views.next()]);
            if !keep_encoder_side {
                values.extend([(&layer[2], false), (&layer[3], false)]);
                into.extend([None, None]);
            }
        }
        drop(views);
        let mut out = self.gather_rows(&values, rows, trim, &mut into)?;
        drop((values, into));
        let label = "row selection";
        let mut next = |what: &str| out.next().ok_or_else(|| self.missing(label, what));
        let (mask, hidden) = match keep_encoder_side {
            true => (None, None),
            false => (Some(next("y0")?), state.hidden.as_ref().map(|_| next("y1"))),
        };
        let mut cache = Vec::with_capacity(state.cache.len());
        for layer in std::mem::take(&mut state.cache) {
            let [key, value] = [next("self key")?, next("self value")?];
            let [_, _, cross_key, cross_value] = layer;
            match keep_encoder_side {
                true => cache.push([key, value, cross_key, cross_value]),
                false => cache.push([key, value, next("cross key")?, next("cross value")?]),
            }
        }
        if let Some(target) = target {
            state.blocks.advance(target);
        }
        Ok(OrtState {
            rows: rows.len(),
            mask: mask.unwrap_or(state.mask),
            hidden: hidden.transpose()?,
            cache,
            padding,
            sources,
            blocks: state.blocks,
        })
    }

    fn concat(&self, first: OrtState, second: OrtState) -> Result<OrtState> {
        let any = self.joins_any_position();
        super::check_join(&first.padding, &second.padding, any, &self.dir)?;
        let (padding, left) = first.padding.join(&second.padding);
        let (_, right) =
            super::encoder_join(Self::encoder_len(&first)?, Self::encoder_len(&second)?);
        let a = Self::join_values(&first)?;
        let b = Self::join_values(&second)?;
        let kinds: Vec<(i32, JoinAs)> = a.iter().map(|(_, k)| *k).collect();
        if kinds != b.iter().map(|(_, k)| *k).collect::<Vec<_>>()
            || a.len() > self.join_names.0.len()
        {
            return Err(Error::input(
                "decoding state",
                "the two states hold different tensors (states of different models?)",
            ));
        }
        let pads = Self::join_pad_values(left, right)?;
        let mut inputs: Vec<(&str, &DynValue)> =
            JOIN_PADS.iter().flatten().copied().zip(&pads).collect();
        let (an, bn) = &self.join_names;
        inputs.extend(an.iter().map(String::as_str).zip(a.iter().map(|v| v.0)));
        inputs.extend(bn.iter().map(String::as_str).zip(b.iter().map(|v| v.0)));
        let ys = &self.select_names.1;
        let outputs: Vec<&str> = ys[..a.len()].iter().map(String::as_str).collect();
        let label = "joining states";
        let graph = (kinds, |k: &Vec<(i32, JoinAs)>| join_states_model(k));
        let mut out = self.run_state_graph(&self.join, graph, label, &inputs, &outputs, &mut [])?;
        let mask = out.next().ok_or_else(|| self.missing(label, "y0"))?;
        let mut sources = first.sources;
        sources.extend(second.sources);
        Ok(OrtState {
            rows: first.rows + second.rows,
            mask,
            hidden: None,
            cache: layers_of(out, first.cache.len()),
            padding,
            sources,
            blocks: SelfCacheBlocks::default(),
        })
    }

    fn joins_any_position(&self) -> bool {
        self.step_graph == DECODER_WITH_PAST_MASKED
    }

    fn rows(&self, state: &OrtState) -> usize {
        state.rows
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
