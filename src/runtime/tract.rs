//! The tract backend: optimum's three unmerged graphs, optimised once with symbolic batch and
//! length dimensions and reused for every batch (plans are shared `Arc`s, so independent batches
//! can run on several threads at once). Later steps run `decoder_with_past_masked_model.onnx`
//! where the export has it (see [`OnnxDir::step_graph`]), so states at different positions
//! join (`concat`, on the host).

use super::onnx_dir::{check_io, OnnxDir};
use super::{
    gather_rows, CachePadding, EncoderInput, GraphInput, GraphOutputs, JoinPads, Logits, Seq2Seq,
};
use crate::error::{BoxError, Error, Result};
use crate::onnx::layout::{
    IoNames, ATTENTION_MASK, DECODER, DECODER_ATTENTION_MASK, DECODER_WITH_PAST,
    DECODER_WITH_PAST_MASKED, ENCODER, ENCODER_ATTENTION_MASK, ENCODER_HIDDEN_STATES, INPUT_IDS,
    LAST_HIDDEN_STATE, LOGITS,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::*;

type Plan = Arc<TypedSimplePlan>;

/// The name this backend's errors and reports carry.
const TRACT: &str = "tract";

/// A tract failure while doing `action`, keeping tract's error as the source.
fn fail<E: Into<BoxError>>(action: impl Into<String>) -> impl FnOnce(E) -> Error {
    let action = action.into();
    move |e| Error::backend(TRACT, action, e)
}

/// One optimised graph with its input and output positions by name.
struct Graph {
    path: PathBuf,
    plan: Plan,
    inputs: HashMap<String, usize>,
    /// Input names in graph order.
    input_names: Vec<String>,
    outputs: HashMap<String, usize>,
}

/// The names of a typed model's outlets (`inputs` by node name, outputs by label).
fn outlet_names(typed: &TypedModel, outlets: &[OutletId], labelled: bool) -> Vec<String> {
    outlets
        .iter()
        .map(|o| {
            let label = labelled.then(|| typed.outlet_label(*o)).flatten();
            label
                .map(str::to_string)
                .unwrap_or_else(|| typed.node(o.node).name.clone())
        })
        .collect()
}

/// The packing of constant matmul weights into the kernels' layout, done once here where
/// tract's optimizer leaves it to every run.
///
/// tract folds a node whose inputs are all constants only where each input larger than its
/// 4 MB budget has no other consumer, so as not to keep a second large tensor. t5's tied
/// embedding feeds both the decoder's token `Gather` and the LM head, so the 66 MB LM-head
/// weight of t5-small was packed again at every decoder step (a fresh 66 MB buffer each time,
/// heaptrack). Folded here, the packed copy is made once, at load: t5-small, 2 threads, tract
/// batch 1 went from 5.2 to 16.9 q/s and batch 32 from 46 to 59 q/s, at the same peak RSS
/// (`eval/results/tract-packing-xeon-amx.md`).
fn fold_weight_packing(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::konst::Const;
    use tract_onnx::tract_core::ops::matmul::pack::OptMatMulPack;
    let packs: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<OptMatMulPack>())
        .map(|n| n.id)
        .collect();
    for id in packs {
        let Some(inputs) = model
            .node_input_facts(id)?
            .iter()
            .map(|f| f.konst.clone().map(|k| k.into_tvalue()))
            .collect::<Option<TVec<TValue>>>()
        else {
            continue;
        };
        let node = model.node(id);
        let Some(packed) = node.op.eval_out_of_plan(inputs)? else {
            continue;
        };
        let outlet = OutletId::new(id, 0);
        let exotic = model.outlet_fact(outlet)?.exotic_fact.clone();
        let Some(tensor) = packed.into_iter().next() else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let wire = patch.wire_node(
            format!("{}.folded", node.name),
            Const::new_with_opt_exotic_fact(tensor.into_arc_tensor(), exotic)?,
            &[],
        )?[0];
        patch.shunt_outside(&model, outlet, wire)?;
        patch.apply(&mut model)?;
    }
    model.into_compact()
}

fn positions(names: &[String]) -> HashMap<String, usize> {
    names.iter().cloned().zip(0..).collect()
}

impl Graph {
    fn load(path: &Path) -> Result<Self> {
        let action = || format!("load {}", path.display());
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(fail(action()))?;
        let typed = model
            .into_optimized()
            .and_then(fold_weight_packing)
            .map_err(fail(action()))?;
        let input_names = outlet_names(
            &typed,
            typed.input_outlets().map_err(fail(action()))?,
            false,
        );
        let output_names = outlet_names(
            &typed,
            typed.output_outlets().map_err(fail(action()))?,
            true,
        );
        let plan = typed.into_runnable().map_err(fail(action()))?;
        Ok(Graph {
            path: path.to_path_buf(),
            plan,
            inputs: positions(&input_names),
            input_names,
            outputs: positions(&output_names),
        })
    }

    fn check(&self, inputs: &[String], outputs: &[String]) -> Result<()> {
        check_io(
            &self.path,
            inputs,
            outputs,
            |n| self.inputs.contains_key(n),
            |n| self.outputs.contains_key(n),
        )
    }

    /// Run with inputs given by name; returns the outputs in graph order.
    fn run(&self, named: Vec<(&str, TValue)>) -> Result<TVec<TValue>> {
        let mut slots: Vec<Option<TValue>> = vec![None; self.input_names.len()];
        for (name, v) in named {
            let i = *self.inputs.get(name).ok_or_else(|| {
                Error::input(name, format!("not an input of {}", self.path.display()))
            })?;
            slots[i] = Some(v);
        }
        let inputs: TVec<TValue> = slots
            .into_iter()
            .zip(&self.input_names)
            .map(|(v, name)| {
                v.ok_or_else(|| Error::input(name, format!("not given to {}", self.path.display())))
            })
            .collect::<Result<_>>()?;
        self.plan
            .run(inputs)
            .map_err(fail(format!("run {}", self.path.display())))
    }

    fn output(&self, outs: &TVec<TValue>, name: &str) -> Result<TValue> {
        let i = *self.outputs.get(name).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            name: name.into(),
            msg: "output missing from the graph".into(),
        })?;
        Ok(outs[i].clone())
    }

    /// Run on named arrays and return every output as a float array, by name.
    fn run_arrays(&self, inputs: Vec<(String, GraphInput)>) -> Result<GraphOutputs> {
        let values: Vec<(String, TValue)> = inputs
            .into_iter()
            .map(|(name, v)| {
                let t: Tensor = match v {
                    GraphInput::I64(a) => a.into(),
                    GraphInput::F32(a) => a.into(),
                    GraphInput::Bool(a) => a.into(),
                };
                (name, t.into_tvalue())
            })
            .collect();
        let outs = self.run(
            values
                .iter()
                .map(|(n, v)| (n.as_str(), v.clone()))
                .collect(),
        )?;
        let mut map = GraphOutputs::new();
        for (name, &i) in &self.outputs {
            let array = outs[i]
                .to_plain_array_view::<f32>()
                .map_err(fail(format!(
                    "read output {name} of {}",
                    self.path.display()
                )))?
                .to_owned();
            map.insert(name.clone(), array);
        }
        Ok(map)
    }
}

/// A T5 export loaded into three tract plans.
pub struct TractSeq2Seq {
    encoder: Graph,
    decoder: Graph,
    /// The plan of every later step: [`TractSeq2Seq::step_graph`].
    decoder_past: Graph,
    /// `decoder_with_past_masked_model.onnx` where the export has it, else
    /// `decoder_with_past_model.onnx`.
    step_graph: &'static str,
    /// `decoder_with_past_model.onnx` when decoding uses the masked one, loaded for validation
    /// ([`TractSeq2Seq::load_graphs`]).
    unused: Option<Graph>,
    /// The export directory (errors name it).
    dir: PathBuf,
    layers: usize,
    vocab: usize,
    names: IoNames,
    /// Batches decoded at once, one thread each (tract runs a plan on the calling thread).
    threads: usize,
}

/// Decoding state: the encoder mask, the encoder output (until the first step), the per-layer
/// [decoder key, decoder value, encoder key, encoder value] cache, and the cache's length and
/// each row's left padding.
pub struct TractState {
    rows: usize,
    mask: TValue,
    hidden: Option<TValue>,
    cache: Vec<[TValue; 4]>,
    padding: CachePadding,
}

impl TractState {
    /// The length of the self-attention cache (positions, padding included) as its tensors
    /// hold it: 0 before the first step.
    pub fn cache_len(&self) -> usize {
        self.cache
            .first()
            .and_then(|layer| layer[0].shape().get(2).copied())
            .unwrap_or(0)
    }
}

/// Load and optimise `file` of `dir`, checking it has the (inputs, outputs) `names`.
fn load_checked(dir: &OnnxDir, file: &str, names: (Vec<String>, Vec<String>)) -> Result<Graph> {
    let graph = Graph::load(&dir.graph(file))?;
    graph.check(&names.0, &names.1)?;
    Ok(graph)
}

impl TractSeq2Seq {
    /// Load and optimise the three graphs of `dir` decoding uses.
    pub fn load(dir: &OnnxDir) -> Result<Self> {
        Self::load_graphs(dir, false)
    }

    /// As [`TractSeq2Seq::load`], and with `every_graph` also `decoder_with_past_model.onnx`
    /// when decoding uses `decoder_with_past_masked_model.onnx` (for
    /// [`TractSeq2Seq::run_graph`]: validation).
    pub fn load_graphs(dir: &OnnxDir, every_graph: bool) -> Result<Self> {
        let layers = dir.config.decoder_layers();
        let names = IoNames::new(layers);
        let encoder = load_checked(dir, ENCODER, names.encoder())?;
        let decoder = load_checked(dir, DECODER, names.decoder())?;
        let (step_graph, step_names) = dir.step_graph(&names);
        let decoder_past = load_checked(dir, step_graph, step_names)?;
        let unused = match every_graph && step_graph != DECODER_WITH_PAST {
            true => Some(load_checked(
                dir,
                DECODER_WITH_PAST,
                names.decoder_with_past(),
            )?),
            false => None,
        };
        Ok(TractSeq2Seq {
            encoder,
            decoder,
            decoder_past,
            step_graph,
            unused,
            dir: dir.dir.clone(),
            layers,
            vocab: dir.config.vocab_size,
            names,
            threads: super::threads_or_cores(0),
        })
    }

    /// Decode `threads` batches at once (0: one per core).
    pub fn with_threads(self, threads: usize) -> Self {
        TractSeq2Seq {
            threads: super::threads_or_cores(threads),
            ..self
        }
    }

    /// How many batches are decoded at once, one thread each.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run one graph of the export (`encoder_model.onnx`, ...) on named inputs, through the
    /// same plan decoding uses; returns every output by name.
    pub fn run_graph(
        &self,
        graph: &str,
        inputs: Vec<(String, GraphInput)>,
    ) -> Result<GraphOutputs> {
        let plan =
            match graph {
                ENCODER => &self.encoder,
                DECODER => &self.decoder,
                g if g == self.step_graph => &self.decoder_past,
                DECODER_WITH_PAST if self.unused.is_some() => {
                    self.unused.as_ref().unwrap_or(&self.decoder_past)
                }
                _ => return Err(Error::input(
                    graph,
                    "not a graph the tract backend loaded (encoder, decoder, the decoders with \
                     past the export has; the unmasked one only with every_graph)",
                )),
            };
        plan.run_arrays(inputs)
    }
}

fn i64_tensor(shape: &[usize], data: &[i64]) -> Result<TValue> {
    Ok(Tensor::from_shape(shape, data)
        .map_err(fail("make an int64 input"))?
        .into_tvalue())
}

fn logits_of(graph: &Graph, v: &TValue, rows: usize, vocab: usize) -> Result<Logits> {
    let read = || format!("read the logits of {}", graph.path.display());
    let data = v
        .try_as_plain_ram()
        .map_err(fail(read()))?
        .as_slice::<f32>()
        .map_err(fail(read()))?;
    super::last_position(&graph.path, v.shape(), data, rows, vocab)
}

/// Rows `rows` of a state tensor of element type `T`.
fn gather_as<T: Datum + Copy>(v: &TValue, rows: &[usize]) -> Result<Tensor> {
    let mut shape = v.shape().to_vec();
    let n = shape.first().copied().unwrap_or(0).max(1);
    let d = v
        .try_as_plain_ram()
        .map_err(fail("read the decoding state"))?
        .as_slice::<T>()
        .map_err(fail("read the decoding state"))?;
    shape[0] = rows.len();
    Tensor::from_shape(&shape, &gather_rows(d, d.len() / n, rows))
        .map_err(fail("gather rows of the decoding state"))
}

fn gather(v: &TValue, rows: &[usize]) -> Result<TValue> {
    let t = match v.datum_type() {
        DatumType::I64 => gather_as::<i64>(v, rows)?,
        _ => gather_as::<f32>(v, rows)?,
    };
    Ok(t.into_tvalue())
}

/// Rows `rows` of a self-attention cache `[B, H, len, d]`, without its first `trim` positions.
fn gather_trimmed(v: &TValue, rows: &[usize], trim: usize) -> Result<TValue> {
    let t = gather(v, rows)?;
    if trim == 0 {
        return Ok(t);
    }
    let len = t.shape().get(2).copied().unwrap_or(0);
    Ok(t.slice(2, trim.min(len), len)
        .map_err(fail("trim the self-attention cache"))?
        .into_tvalue())
}

/// `v` with `before` zero columns before and `after` after on `axis`.
fn pad_axis(v: &TValue, axis: usize, before: usize, after: usize) -> Result<Tensor> {
    let zeros = |n: usize| {
        let mut shape = v.shape().to_vec();
        shape[axis] = n;
        Tensor::zero_dt(v.datum_type(), &shape).map_err(fail("pad the decoding state"))
    };
    let parts = [zeros(before)?, v.clone().into_tensor(), zeros(after)?];
    Tensor::stack_tensors(axis, &parts).map_err(fail("pad the decoding state"))
}

/// The rows of `a` then those of `b`, each padded on `axis` by its (before, after).
fn join(
    a: &TValue,
    b: &TValue,
    axis: usize,
    pa: (usize, usize),
    pb: (usize, usize),
) -> Result<TValue> {
    let parts = [
        pad_axis(a, axis, pa.0, pa.1)?,
        pad_axis(b, axis, pb.0, pb.1)?,
    ];
    Ok(Tensor::stack_tensors(0, &parts)
        .map_err(fail("join decoding states"))?
        .into_tvalue())
}

/// The per-layer caches of two states joined: self-attention caches padded on the left by
/// `left`, cross-attention ones on the right by `right`.
fn join_caches(
    a: &[[TValue; 4]],
    b: &[[TValue; 4]],
    left: JoinPads,
    right: JoinPads,
) -> Result<Vec<[TValue; 4]>> {
    let (sa, sb) = ((left.first, 0), (left.second, 0));
    let (ca, cb) = ((0, right.first), (0, right.second));
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            Ok([
                join(&x[0], &y[0], 2, sa, sb)?,
                join(&x[1], &y[1], 2, sa, sb)?,
                join(&x[2], &y[2], 2, ca, cb)?,
                join(&x[3], &y[3], 2, ca, cb)?,
            ])
        })
        .collect()
}

impl Seq2Seq for TractSeq2Seq {
    type State = TractState;

    fn encode(&self, input: &EncoderInput) -> Result<TractState> {
        let shape = [input.batch, input.len];
        let ids = i64_tensor(&shape, &input.ids)?;
        let mask = i64_tensor(&shape, &input.mask)?;
        let outs = self
            .encoder
            .run(vec![(INPUT_IDS, ids), (ATTENTION_MASK, mask.clone())])?;
        let hidden = self.encoder.output(&outs, LAST_HIDDEN_STATE)?;
        Ok(TractState {
            rows: input.batch,
            mask,
            hidden: Some(hidden),
            cache: Vec::new(),
            padding: CachePadding::new(input.batch),
        })
    }

    fn step(&self, mut state: TractState, tokens: &[i64]) -> Result<(Logits, TractState)> {
        super::check_tokens(tokens, state.rows)?;
        let ids = i64_tensor(&[state.rows, 1], tokens)?;
        if let Some(hidden) = state.hidden.take() {
            let outs = self.decoder.run(vec![
                (INPUT_IDS, ids),
                (ENCODER_ATTENTION_MASK, state.mask.clone()),
                (ENCODER_HIDDEN_STATES, hidden),
            ])?;
            let logits = logits_of(
                &self.decoder,
                &self.decoder.output(&outs, LOGITS)?,
                state.rows,
                self.vocab,
            )?;
            let mut cache = Vec::with_capacity(self.layers);
            for p in &self.names.present_outputs {
                let out = |n: &str| self.decoder.output(&outs, n);
                cache.push([out(&p[0])?, out(&p[1])?, out(&p[2])?, out(&p[3])?]);
            }
            state.cache = cache;
            state.padding = state.padding.stepped();
            return Ok((logits, state));
        }

        let mut inputs: Vec<(&str, TValue)> = vec![
            (INPUT_IDS, ids),
            (ENCODER_ATTENTION_MASK, state.mask.clone()),
        ];
        if self.step_graph == DECODER_WITH_PAST_MASKED {
            let shape = [state.rows, state.padding.len + 1];
            let mask = i64_tensor(&shape, &state.padding.next_mask())?;
            inputs.push((DECODER_ATTENTION_MASK, mask));
        }
        for (layer, n) in state.cache.iter().zip(&self.names.past_inputs) {
            for (v, name) in layer.iter().zip(n) {
                inputs.push((name.as_str(), v.clone()));
            }
        }
        let outs = self.decoder_past.run(inputs)?;
        let logits = logits_of(
            &self.decoder_past,
            &self.decoder_past.output(&outs, LOGITS)?,
            state.rows,
            self.vocab,
        )?;
        for (layer, p) in state.cache.iter_mut().zip(&self.names.present_outputs) {
            layer[0] = self.decoder_past.output(&outs, &p[0])?;
            layer[1] = self.decoder_past.output(&outs, &p[1])?;
        }
        state.padding = state.padding.stepped();
        Ok((logits, state))
    }

    fn select(&self, state: TractState, rows: &[usize]) -> Result<TractState> {
        if super::is_identity(rows, state.rows) {
            return Ok(state);
        }
        super::check_rows(rows, state.rows)?;
        // Leading self-attention cache columns that are padding in every kept row are dropped.
        let (padding, trim) = state.padding.select(rows);
        let hidden = match &state.hidden {
            Some(h) => Some(gather(h, rows)?),
            None => None,
        };
        let mut cache = Vec::with_capacity(state.cache.len());
        for l in &state.cache {
            cache.push([
                gather_trimmed(&l[0], rows, trim)?,
                gather_trimmed(&l[1], rows, trim)?,
                gather(&l[2], rows)?,
                gather(&l[3], rows)?,
            ]);
        }
        Ok(TractState {
            rows: rows.len(),
            mask: gather(&state.mask, rows)?,
            hidden,
            cache,
            padding,
        })
    }

    fn concat(&self, first: TractState, second: TractState) -> Result<TractState> {
        let any = self.joins_any_position();
        super::check_join(&first.padding, &second.padding, any, &self.dir)?;
        if first.cache.len() != second.cache.len()
            || first.mask.rank() != 2
            || second.mask.rank() != 2
        {
            return Err(Error::input(
                "decoding state",
                "the two states hold different tensors (states of different models?)",
            ));
        }
        let (padding, left) = first.padding.join(&second.padding);
        let enc_len = |s: &TractState| s.mask.shape()[1];
        let (_, right) = super::encoder_join(enc_len(&first), enc_len(&second));
        let mask = join(
            &first.mask,
            &second.mask,
            1,
            (0, right.first),
            (0, right.second),
        )?;
        Ok(TractState {
            rows: first.rows + second.rows,
            mask,
            hidden: None,
            cache: join_caches(&first.cache, &second.cache, left, right)?,
            padding,
        })
    }

    fn joins_any_position(&self) -> bool {
        self.step_graph == DECODER_WITH_PAST_MASKED
    }

    fn rows(&self, state: &TractState) -> usize {
        state.rows
    }

    fn describe(&self) -> String {
        match self.threads {
            1 => "tract (cpu)".into(),
            n => format!("tract (cpu) x {n} batches at once"),
        }
    }
}
