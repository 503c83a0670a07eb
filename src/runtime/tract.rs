//! The tract backend: optimum's three unmerged graphs, optimised once with symbolic batch and
//! length dimensions and reused for every batch (plans are shared `Arc`s, so independent batches
//! can run on several threads at once).

use super::onnx_dir::{past_name, present_name, OnnxDir};
use super::{gather_rows, EncoderInput, Logits, Seq2Seq};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

type Plan = Arc<TypedSimplePlan>;

fn err(msg: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: "tract",
        msg: msg.to_string(),
    }
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
        for (names, map, what) in [
            (inputs, &self.inputs, "input"),
            (outputs, &self.outputs, "output"),
        ] {
            for n in names {
                if !map.contains_key(n) {
                    return Err(Error::Tensor {
                        path: file.to_path_buf(),
                        name: n.clone(),
                        msg: format!(
                            "{what} missing from the graph (expected optimum's seq2seq names)"
                        ),
                    });
                }
            }
        }
        Ok(())
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
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (ep, dp, pp) = (
            dir.graph("encoder_model.onnx"),
            dir.graph("decoder_model.onnx"),
            dir.graph("decoder_with_past_model.onnx"),
        );
        let encoder = Graph::load(&ep)?;
        encoder.check(
            &ep,
            &s(&["input_ids", "attention_mask"]),
            &s(&["last_hidden_state"]),
        )?;
        let decoder = Graph::load(&dp)?;
        let decoder_past = Graph::load(&pp)?;
        let mut dec_out = s(&["logits"]);
        let mut past_in = s(&["input_ids", "encoder_attention_mask"]);
        let mut past_out = s(&["logits"]);
        for i in 0..layers {
            for kv in ["key", "value"] {
                dec_out.push(present_name(i, "decoder", kv));
                dec_out.push(present_name(i, "encoder", kv));
                past_in.push(past_name(i, "decoder", kv));
                past_in.push(past_name(i, "encoder", kv));
                past_out.push(present_name(i, "decoder", kv));
            }
        }
        decoder.check(
            &dp,
            &s(&[
                "input_ids",
                "encoder_attention_mask",
                "encoder_hidden_states",
            ]),
            &dec_out,
        )?;
        decoder_past.check(&pp, &past_in, &past_out)?;
        Ok(TractSeq2Seq {
            encoder,
            decoder,
            decoder_past,
            layers,
            vocab: dir.config.vocab_size,
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
            .run(vec![("input_ids", ids), ("attention_mask", mask.clone())])?;
        let hidden = self.encoder.output(&outs, "last_hidden_state")?;
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
                ("input_ids", ids),
                ("encoder_attention_mask", state.mask.clone()),
                ("encoder_hidden_states", hidden),
            ])?;
            let logits = logits_of(
                &self.decoder.output(&outs, "logits")?,
                state.rows,
                self.vocab,
            )?;
            let mut cache = Vec::with_capacity(self.layers);
            for i in 0..self.layers {
                cache.push([
                    self.decoder
                        .output(&outs, &present_name(i, "decoder", "key"))?,
                    self.decoder
                        .output(&outs, &present_name(i, "decoder", "value"))?,
                    self.decoder
                        .output(&outs, &present_name(i, "encoder", "key"))?,
                    self.decoder
                        .output(&outs, &present_name(i, "encoder", "value"))?,
                ]);
            }
            state.cache = cache;
            return Ok((logits, state));
        }
        let names: Vec<[String; 4]> = (0..self.layers)
            .map(|i| {
                [
                    past_name(i, "decoder", "key"),
                    past_name(i, "decoder", "value"),
                    past_name(i, "encoder", "key"),
                    past_name(i, "encoder", "value"),
                ]
            })
            .collect();
        let mut inputs: Vec<(&str, TValue)> = vec![
            ("input_ids", ids),
            ("encoder_attention_mask", state.mask.clone()),
        ];
        for (layer, n) in state.cache.iter().zip(&names) {
            for (v, name) in layer.iter().zip(n) {
                inputs.push((name.as_str(), v.clone()));
            }
        }
        let outs = self.decoder_past.run(inputs)?;
        let logits = logits_of(
            &self.decoder_past.output(&outs, "logits")?,
            state.rows,
            self.vocab,
        )?;
        for (i, layer) in state.cache.iter_mut().enumerate() {
            layer[0] = self
                .decoder_past
                .output(&outs, &present_name(i, "decoder", "key"))?;
            layer[1] = self
                .decoder_past
                .output(&outs, &present_name(i, "decoder", "value"))?;
        }
        Ok((logits, state))
    }

    fn select(&self, state: TractState, rows: &[usize]) -> Result<TractState> {
        if rows.len() == state.rows && rows.iter().enumerate().all(|(i, &r)| i == r) {
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
