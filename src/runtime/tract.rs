//! The tract backend: optimum's three unmerged graphs, optimised once with symbolic batch and
//! length dimensions and reused for every batch (plans are shared `Arc`s, so independent batches
//! can run on several threads at once).

use super::onnx_dir::{check_io, OnnxDir};
use super::{gather_rows, EncoderInput, Logits, Seq2Seq};
use crate::error::{Error, Result};
use crate::onnx::layout::{
    IoNames, ATTENTION_MASK, DECODER, DECODER_WITH_PAST, ENCODER, ENCODER_ATTENTION_MASK,
    ENCODER_HIDDEN_STATES, INPUT_IDS, LAST_HIDDEN_STATE, LOGITS,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

type Plan = Arc<TypedSimplePlan>;

fn err(msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("tract: {msg}"))
}

/// One optimised graph with its input and output positions by name.
struct Graph {
    plan: Plan,
    inputs: HashMap<String, usize>,
    outputs: HashMap<String, usize>,
    n_inputs: usize,
}

impl Graph {
    fn load(path: &Path) -> Result<Self> {
        let ctx = |e: &dyn std::fmt::Display| err(format!("{}: {e}", path.display()));
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| ctx(&format!("{e:#}")))?;
        let typed = model.into_optimized().map_err(|e| ctx(&format!("{e:#}")))?;
        let mut inputs = HashMap::new();
        for (i, o) in typed
            .input_outlets()
            .map_err(|e| ctx(&e))?
            .iter()
            .enumerate()
        {
            inputs.insert(typed.node(o.node).name.clone(), i);
        }
        let mut outputs = HashMap::new();
        for (i, o) in typed
            .output_outlets()
            .map_err(|e| ctx(&e))?
            .iter()
            .enumerate()
        {
            let name = typed
                .outlet_label(*o)
                .map(str::to_string)
                .unwrap_or_else(|| typed.node(o.node).name.clone());
            outputs.insert(name, i);
        }
        let n_inputs = inputs.len();
        let plan = typed.into_runnable().map_err(|e| ctx(&format!("{e:#}")))?;
        Ok(Graph {
            plan,
            inputs,
            outputs,
            n_inputs,
        })
    }

    fn check(&self, file: &Path, inputs: &[String], outputs: &[String]) -> Result<()> {
        check_io(
            file,
            inputs,
            outputs,
            |n| self.inputs.contains_key(n),
            |n| self.outputs.contains_key(n),
        )
    }

    /// Run with inputs given by name; returns the outputs in graph order.
    fn run(&self, named: Vec<(&str, TValue)>) -> Result<TVec<TValue>> {
        let mut slots: Vec<Option<TValue>> = vec![None; self.n_inputs];
        for (name, v) in named {
            let i = *self
                .inputs
                .get(name)
                .ok_or_else(|| err(format!("graph has no input {name}")))?;
            slots[i] = Some(v);
        }
        let inputs: TVec<TValue> = slots
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| err(format!("input #{i} not provided"))))
            .collect::<Result<_>>()?;
        self.plan.run(inputs).map_err(|e| err(format!("{e:#}")))
    }

    fn output(&self, outs: &TVec<TValue>, name: &str) -> Result<TValue> {
        let i = *self
            .outputs
            .get(name)
            .ok_or_else(|| err(format!("graph has no output {name}")))?;
        Ok(outs[i].clone())
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
        let (ep, dp, pp) = (
            dir.graph(ENCODER),
            dir.graph(DECODER),
            dir.graph(DECODER_WITH_PAST),
        );
        let encoder = Graph::load(&ep)?;
        let (i, o) = names.encoder();
        encoder.check(&ep, &i, &o)?;
        let decoder = Graph::load(&dp)?;
        let (i, o) = names.decoder();
        decoder.check(&dp, &i, &o)?;
        let decoder_past = Graph::load(&pp)?;
        let (i, o) = names.decoder_with_past();
        decoder_past.check(&pp, &i, &o)?;
        Ok(TractSeq2Seq {
            encoder,
            decoder,
            decoder_past,
            layers,
            vocab: dir.config.vocab_size,
            names,
        })
    }
}

fn i64_tensor(shape: &[usize], data: &[i64]) -> Result<TValue> {
    Ok(Tensor::from_shape(shape, data).map_err(err)?.into_tvalue())
}

fn logits_of(v: &TValue, rows: usize, vocab: usize) -> Result<Logits> {
    let data = v
        .try_as_plain_ram()
        .map_err(err)?
        .as_slice::<f32>()
        .map_err(err)?;
    super::last_position(v.shape(), data, rows, vocab).map_err(err)
}

fn gather(v: &TValue, rows: &[usize]) -> Result<TValue> {
    let mut shape = v.shape().to_vec();
    let n = shape.first().copied().unwrap_or(0).max(1);
    let t = match v.datum_type() {
        DatumType::I64 => {
            let d = v
                .try_as_plain_ram()
                .map_err(err)?
                .as_slice::<i64>()
                .map_err(err)?;
            shape[0] = rows.len();
            Tensor::from_shape(&shape, &gather_rows(d, d.len() / n, rows)).map_err(err)?
        }
        _ => {
            let d = v
                .try_as_plain_ram()
                .map_err(err)?
                .as_slice::<f32>()
                .map_err(err)?;
            shape[0] = rows.len();
            Tensor::from_shape(&shape, &gather_rows(d, d.len() / n, rows)).map_err(err)?
        }
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
        if tokens.len() != state.rows {
            return Err(err(format!(
                "{} tokens for {} rows",
                tokens.len(),
                state.rows
            )));
        }
        let ids = i64_tensor(&[state.rows, 1], tokens)?;
        if let Some(hidden) = state.hidden.take() {
            let outs = self.decoder.run(vec![
                (INPUT_IDS, ids),
                (ENCODER_ATTENTION_MASK, state.mask.clone()),
                (ENCODER_HIDDEN_STATES, hidden),
            ])?;
            let logits = logits_of(&self.decoder.output(&outs, LOGITS)?, state.rows, self.vocab)?;
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
        if let Some(&bad) = rows.iter().find(|&&r| r >= state.rows) {
            return Err(err(format!("row {bad} selected from {} rows", state.rows)));
        }
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
