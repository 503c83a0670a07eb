//! The ONNX Runtime backend: optimum's three unmerged graphs run through `ort`.
//!
//! The first decoder step runs `decoder_model.onnx`, which also returns the cross-attention
//! keys/values (`present.{i}.encoder.*`); they are kept as ONNX Runtime values in the state and fed
//! by reference to every later `decoder_with_past_model.onnx` step, so they are computed once and
//! never copied per step. The growing self-attention cache is handed from one step's outputs to the
//! next step's inputs as the same values, also without copies. Rows are gathered (a copy) only
//! when `select` changes them: beam reordering, or finished rows leaving the batch.

use super::onnx_dir::{IoNames, OnnxDir};
use super::{gather_rows, EncoderInput, Logits, Seq2Seq};
use crate::error::{Error, Result};
use ort::ep::ExecutionProviderDispatch;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            device: OrtDevice::Cpu,
            intra_threads: 0,
            opt_level: 3,
            allow_fallback: false,
            cpu_arena: false,
        }
    }
}

fn err(msg: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: "onnxruntime",
        msg: msg.to_string(),
    }
}

fn providers(opts: &OrtOptions) -> Vec<ExecutionProviderDispatch> {
    let wrap = |ep: ExecutionProviderDispatch| {
        if opts.allow_fallback {
            ep
        } else {
            ep.error_on_failure()
        }
    };
    match &opts.device {
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

fn open_session(path: &Path, opts: &OrtOptions, prepacked: &PrepackedWeights) -> Result<Session> {
    let (lib, env) = crate::native::ort_environment()?;
    let level = match opts.opt_level {
        0 => GraphOptimizationLevel::Disable,
        1 => GraphOptimizationLevel::Level1,
        2 => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::All,
    };
    let ctx = |e: &dyn std::fmt::Display| err(format!("{}: {e}", path.display()));
    let mut b = Session::builder(env).map_err(|e| ctx(&e))?;
    b = b.with_optimization_level(level).map_err(|e| ctx(&e))?;
    if opts.intra_threads > 0 {
        b = b
            .with_intra_threads(opts.intra_threads)
            .map_err(|e| ctx(&e))?;
    }
    b = b.with_inter_threads(1).map_err(|e| ctx(&e))?;
    // The three graphs use the same weights: pre-packed GEMM weights are kept once for all of
    // them instead of once per session.
    b = b.with_prepacked_weights(prepacked).map_err(|e| ctx(&e))?;
    if !opts.cpu_arena {
        b = b.with_memory_pattern(false).map_err(|e| ctx(&e))?;
    }
    let eps = providers(opts);
    if !eps.is_empty() {
        b = b.with_execution_providers(eps).map_err(|e| {
            err(format!(
                "cannot register the {:?} execution provider with ONNX Runtime loaded from {} \
                 (install onnxruntime-gpu with scripts/setup.sh --gpu, or pass --allow-fallback to \
                 run on the CPU): {e}",
                opts.device,
                lib.display()
            ))
        })?;
    }
    b.commit_from_file(path).map_err(|e| ctx(&e))
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
    for name in inputs {
        if !session.inputs().iter().any(|i| i.name() == name) {
            return Err(Error::Tensor {
                path: file.to_path_buf(),
                name: name.clone(),
                msg: "input missing from the graph (expected optimum's seq2seq names)".into(),
            });
        }
    }
    for name in outputs {
        if !session.outputs().iter().any(|o| o.name() == name) {
            return Err(Error::Tensor {
                path: file.to_path_buf(),
                name: name.clone(),
                msg: "output missing from the graph (expected optimum's seq2seq names)".into(),
            });
        }
    }
    Ok(())
}

impl OrtSeq2Seq {
    /// Load the three graphs of `dir` with `opts`, checking their input and output names.
    pub fn load(dir: &OnnxDir, opts: &OrtOptions) -> Result<Self> {
        let layers = dir.config.decoder_layers();
        let enc_path = dir.graph("encoder_model.onnx");
        let dec_path = dir.graph("decoder_model.onnx");
        let past_path = dir.graph("decoder_with_past_model.onnx");
        crate::native::ort_environment()?; // loads the library before any other ort call
        let prepacked = PrepackedWeights::new();
        let encoder = open_session(&enc_path, opts, &prepacked)?;
        let decoder = open_session(&dec_path, opts, &prepacked)?;
        let decoder_past = open_session(&past_path, opts, &prepacked)?;
        let names = IoNames::new(layers);
        let (i, o) = names.encoder();
        check_names(&encoder, &enc_path, &i, &o)?;
        let (i, o) = names.decoder();
        check_names(&decoder, &dec_path, &i, &o)?;
        let (i, o) = names.decoder_with_past();
        check_names(&decoder_past, &past_path, &i, &o)?;
        let describe = format!(
            "onnxruntime {:?} threads={} opt={}",
            opts.device,
            if opts.intra_threads == 0 {
                "auto".into()
            } else {
                opts.intra_threads.to_string()
            },
            opts.opt_level
        );
        Ok(OrtSeq2Seq {
            encoder: Mutex::new(encoder),
            decoder: Mutex::new(decoder),
            decoder_past: Mutex::new(decoder_past),
            layers,
            vocab: dir.config.vocab_size,
            names,
            describe,
        })
    }
}

fn lock(m: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    // A panic while holding the lock leaves the session itself intact.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn take(outputs: &mut ort::session::SessionOutputs<'_>, name: &str) -> Result<DynValue> {
    outputs
        .remove(name)
        .ok_or_else(|| err(format!("output {name} missing from the run")))
}

fn logits_of(value: &DynValue, rows: usize, vocab: usize) -> Result<Logits> {
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(err)?;
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    super::last_position(&shape, data, rows, vocab).map_err(err)
}

fn gather_value<T>(value: &DynValue, rows: &[usize]) -> Result<DynValue>
where
    T: ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug + Clone + 'static,
{
    let (shape, data) = value.try_extract_tensor::<T>().map_err(err)?;
    let n = shape.first().copied().unwrap_or(0).max(1) as usize;
    let stride = data.len() / n;
    let mut new_shape: Vec<i64> = shape.iter().copied().collect();
    new_shape[0] = rows.len() as i64;
    Ok(
        Tensor::from_array((new_shape, gather_rows(data, stride, rows)))
            .map_err(err)?
            .into_dyn(),
    )
}

fn is_identity(rows: &[usize], n: usize) -> bool {
    rows.len() == n && rows.iter().enumerate().all(|(i, &r)| i == r)
}

impl Seq2Seq for OrtSeq2Seq {
    type State = OrtState;

    fn encode(&self, input: &EncoderInput) -> Result<OrtState> {
        let shape = vec![input.batch as i64, input.len as i64];
        let ids = Tensor::from_array((shape.clone(), input.ids.clone())).map_err(err)?;
        let mask = Tensor::from_array((shape, input.mask.clone())).map_err(err)?;
        let hidden = {
            let mut enc = lock(&self.encoder);
            let mut out = enc
                .run(ort::inputs!["input_ids" => &ids, "attention_mask" => &mask])
                .map_err(|e| err(format!("encoder: {e}")))?;
            take(&mut out, "last_hidden_state")?
        };
        Ok(OrtState {
            rows: input.batch,
            mask: mask.into_dyn(),
            hidden: Some(hidden),
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
        let ids = Tensor::from_array((vec![state.rows as i64, 1], tokens.to_vec())).map_err(err)?;
        if let Some(hidden) = state.hidden.take() {
            let mut dec = lock(&self.decoder);
            let mut out = dec
                .run(ort::inputs![
                    "input_ids" => &ids,
                    "encoder_attention_mask" => &state.mask,
                    "encoder_hidden_states" => &hidden
                ])
                .map_err(|e| err(format!("decoder_model: {e}")))?;
            let logits = logits_of(&take(&mut out, "logits")?, state.rows, self.vocab)?;
            let mut cache = Vec::with_capacity(self.layers);
            for p in &self.names.present {
                cache.push([
                    take(&mut out, &p[0])?,
                    take(&mut out, &p[1])?,
                    take(&mut out, &p[2])?,
                    take(&mut out, &p[3])?,
                ]);
            }
            state.cache = cache;
            return Ok((logits, state));
        }

        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(2 + 4 * self.layers);
        inputs.push(("input_ids".into(), (&ids).into()));
        inputs.push(("encoder_attention_mask".into(), (&state.mask).into()));
        for (layer, n) in state.cache.iter().zip(&self.names.past) {
            for (v, name) in layer.iter().zip(n) {
                inputs.push((name.as_str().into(), v.into()));
            }
        }
        let mut past = lock(&self.decoder_past);
        let mut out = past
            .run(inputs)
            .map_err(|e| err(format!("decoder_with_past_model: {e}")))?;
        let logits = logits_of(&take(&mut out, "logits")?, state.rows, self.vocab)?;
        let mut fresh = Vec::with_capacity(self.layers);
        for p in &self.names.present {
            fresh.push((take(&mut out, &p[0])?, take(&mut out, &p[1])?));
        }
        drop(out);
        drop(past);
        for (layer, (k, v)) in state.cache.iter_mut().zip(fresh) {
            layer[0] = k;
            layer[1] = v;
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
        let hidden = match &state.hidden {
            Some(h) => Some(gather_value::<f32>(h, rows)?),
            None => None,
        };
        let mut cache = Vec::with_capacity(state.cache.len());
        for layer in &state.cache {
            cache.push([
                gather_value::<f32>(&layer[0], rows)?,
                gather_value::<f32>(&layer[1], rows)?,
                gather_value::<f32>(&layer[2], rows)?,
                gather_value::<f32>(&layer[3], rows)?,
            ]);
        }
        Ok(OrtState {
            rows: rows.len(),
            mask: gather_value::<i64>(&state.mask, rows)?,
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
