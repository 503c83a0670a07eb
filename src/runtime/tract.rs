//! The tract backend: optimum's three unmerged graphs, optimised once with symbolic batch and
//! length dimensions and reused for every batch (plans are shared `Arc`s, so independent batches
//! can run on several threads at once).

use super::onnx_dir::{check_io, OnnxDir};
use super::{gather_rows, EncoderInput, GraphInput, GraphOutputs, Logits, Seq2Seq};
use crate::error::{BoxError, Error, Result};
use crate::onnx::layout::{
    IoNames, ATTENTION_MASK, DECODER, DECODER_WITH_PAST, ENCODER, ENCODER_ATTENTION_MASK,
    ENCODER_HIDDEN_STATES, INPUT_IDS, LAST_HIDDEN_STATE, LOGITS,
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

fn positions(names: &[String]) -> HashMap<String, usize> {
    names.iter().cloned().zip(0..).collect()
}

impl Graph {
    fn load(path: &Path) -> Result<Self> {
        let action = || format!("load {}", path.display());
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(fail(action()))?;
        let typed = model.into_optimized().map_err(fail(action()))?;
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
    decoder_past: Graph,
    layers: usize,
    vocab: usize,
    names: IoNames,
}

/// Decoding state: the encoder mask, the encoder output (until the first step) and the per-layer
/// [decoder key, decoder value, encoder key, encoder value] cache.
pub struct TractState {
    rows: usize,
    mask: TValue,
    hidden: Option<TValue>,
    cache: Vec<[TValue; 4]>,
}

impl TractSeq2Seq {
    /// Load and optimise the three graphs of `dir`.
    pub fn load(dir: &OnnxDir) -> Result<Self> {
        let layers = dir.config.decoder_layers();
        let names = IoNames::new(layers);
        let encoder = Graph::load(&dir.graph(ENCODER))?;
        let (i, o) = names.encoder();
        encoder.check(&i, &o)?;
        let decoder = Graph::load(&dir.graph(DECODER))?;
        let (i, o) = names.decoder();
        decoder.check(&i, &o)?;
        let decoder_past = Graph::load(&dir.graph(DECODER_WITH_PAST))?;
        let (i, o) = names.decoder_with_past();
        decoder_past.check(&i, &o)?;
        Ok(TractSeq2Seq {
            encoder,
            decoder,
            decoder_past,
            layers,
            vocab: dir.config.vocab_size,
            names,
        })
    }

    /// Run one graph of the export (`encoder_model.onnx`, ...) on named inputs, through the
    /// same plan decoding uses; returns every output by name.
    pub fn run_graph(
        &self,
        graph: &str,
        inputs: Vec<(String, GraphInput)>,
    ) -> Result<GraphOutputs> {
        let plan = match graph {
            ENCODER => &self.encoder,
            DECODER => &self.decoder,
            DECODER_WITH_PAST => &self.decoder_past,
            _ => {
                return Err(Error::input(
                    graph,
                    "not a graph the tract backend loads (encoder, decoder, decoder-with-past)",
                ))
            }
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
            return Ok((logits, state));
        }

        let mut inputs: Vec<(&str, TValue)> = vec![
            (INPUT_IDS, ids),
            (ENCODER_ATTENTION_MASK, state.mask.clone()),
        ];
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
        Ok((logits, state))
    }

    fn select(&self, state: TractState, rows: &[usize]) -> Result<TractState> {
        if super::is_identity(rows, state.rows) {
            return Ok(state);
        }
        super::check_rows(rows, state.rows)?;
        let hidden = match &state.hidden {
            Some(h) => Some(gather(h, rows)?),
            None => None,
        };
        let mut cache = Vec::with_capacity(state.cache.len());
        for l in &state.cache {
            cache.push([
                gather(&l[0], rows)?,
                gather(&l[1], rows)?,
                gather(&l[2], rows)?,
                gather(&l[3], rows)?,
            ]);
        }
        Ok(TractState {
            rows: rows.len(),
            mask: gather(&state.mask, rows)?,
            hidden,
            cache,
        })
    }

    fn rows(&self, state: &TractState) -> usize {
        state.rows
    }

    fn describe(&self) -> String {
        "tract (cpu)".into()
    }
}
