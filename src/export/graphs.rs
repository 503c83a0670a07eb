//! The three T5 graphs in optimum's seq2seq layout (`encoder_model.onnx`, `decoder_model.onnx`,
//! `decoder_with_past_model.onnx`), built node by node from `T5Config`.
//!
//! Mirrors `T5ForConditionalGeneration` in transformers 4.57
//! (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/t5/modeling_t5.py>)
//! and the input/output names, dtypes and dynamic axes of optimum's `T5OnnxConfig`
//! (<https://github.com/huggingface/optimum-onnx/blob/main/optimum/exporters/onnx/model_configs.py>):
//! RMS layer norm without mean or bias, attention without the 1/sqrt(d_kv) scale, a relative
//! position bias from block 0's table shared by all blocks, the padding mask added as
//! `(1 - mask) * finfo(float32).min`, and for T5 v1.0 (tied embeddings) the decoder output scaled
//! by `d_model^-0.5` before the LM head.
//!
//! Graph inputs and outputs are float32 at every precision. With `--precision fp16` the residual
//! stream, layer norms, softmax, position bias and the FFN after `wi` (activation and `wo`) stay in
//! float32 — the parts where T5 overflows float16 (HF keeps `wo` in float32 through
//! `_keep_in_fp32_modules`; CTranslate2 does the same).

use super::position::BucketTable;
use super::weights::{Params, Precision, Quantize};
use crate::checkpoint::TensorPath;
use crate::config::{FeedForward, T5Config};
use crate::error::Result;
use crate::onnx::builder::{model, Attr, Dim, Graph, Value};
use crate::onnx::layout::{
    self, Part, ATTENTION_MASK, CACHE_ORDER, DECODER_ATTENTION_MASK, ENCODER_ATTENTION_MASK,
    ENCODER_HIDDEN_STATES, INPUT_IDS, LAST_HIDDEN_STATE, LOGITS,
};
use crate::onnx::proto::{data_type, ModelProto};

pub(crate) const F32: i32 = data_type::FLOAT;
pub(crate) const I64: i32 = data_type::INT64;

/// The sub-layer scopes of the node names (`/encoder/block.0/self_attention/MatMul_node_12`): one
/// per phase a profile is summed into. `cross_kv` is the cross-attention keys and values, computed
/// from the encoder output in the first decoder step only.
const SELF_ATTENTION: &str = "self_attention";
const CROSS_ATTENTION: &str = "cross_attention";
const CROSS_KV: &str = "cross_kv";
const FEED_FORWARD: &str = "feed_forward";

/// optimum's dynamic axis names.
pub(crate) const BATCH: Dim = Dim::Sym("batch_size");
pub(crate) const ENC_LEN: Dim = Dim::Sym("encoder_sequence_length");
pub(crate) const DEC_LEN: Dim = Dim::Sym("decoder_sequence_length");
pub(crate) const PAST_LEN: Dim = Dim::Sym("past_decoder_sequence_length");
pub(crate) const TOTAL_LEN: Dim =
    Dim::Sym("past_decoder_sequence_length + decoder_sequence_length");

/// Graph-building context: the graph, the shared weight file and the config.
struct Ctx<'a, 'w> {
    g: Graph,
    p: &'a mut Params<'w>,
    cfg: &'a T5Config,
}

/// Self-attention keys and values of one decoder block, `[B, H, len, d_kv]`.
struct Kv {
    key: Value,
    value: Value,
}

impl Ctx<'_, '_> {
    fn fp16(&self) -> bool {
        self.p.precision == Precision::Fp16
    }

    fn cast(&mut self, x: &Value, to: i32) -> Value {
        self.g.op("Cast", &[x], vec![Attr::Int("to", to as i64)])
    }

    /// float32 → the compute type.
    fn as_compute(&mut self, x: &Value) -> Value {
        if self.fp16() {
            self.cast(x, data_type::FLOAT16)
        } else {
            x.clone()
        }
    }

    /// The compute type → float32.
    fn as_f32(&mut self, x: &Value) -> Value {
        if self.fp16() {
            self.cast(x, F32)
        } else {
            x.clone()
        }
    }

    /// `x.shape[axis]` as a scalar.
    fn dim(&mut self, x: &Value, axis: i64) -> Value {
        let shape = self.g.op("Shape", &[x], vec![]);
        let idx = self.g.scalar_i64(axis);
        self.g
            .op("Gather", &[&shape, &idx], vec![Attr::Int("axis", 0)])
    }

    fn unsqueeze(&mut self, x: &Value, axes: &[i64]) -> Value {
        let axes = self.g.ints(axes);
        self.g.op("Unsqueeze", &[x, &axes], vec![])
    }

    /// T5LayerNorm (RMS, no mean, no bias), computed in float32 on the float32 residual stream;
    /// returns the compute type.
    fn rms_norm(&mut self, x: &Value, weight: &TensorPath) -> Result<Value> {
        // Pow(x, 2), not Mul(x, x): ONNX Runtime fuses Pow → ReduceMean → Add → Sqrt → Div → Mul
        // into one SimplifiedLayerNormalization kernel only in this form.
        let two = self.g.scalar_f(2.0, F32);
        let sq = self.g.op("Pow", &[x, &two], vec![]);
        let var = self.g.op(
            "ReduceMean",
            &[&sq],
            vec![Attr::Ints("axes", vec![-1]), Attr::Int("keepdims", 1)],
        );
        let eps = self.g.scalar_f(self.cfg.layer_norm_epsilon as f32, F32);
        let var = self.g.op("Add", &[&var, &eps], vec![]);
        let std = self.g.op("Sqrt", &[&var], vec![]);
        let normed = self.g.op("Div", &[x, &std], vec![]);
        let w = self.p.plain((weight / "weight").as_str(), true)?;
        let w = self.g.weight(&w);
        let y = self.g.op("Mul", &[&w, &normed], vec![]);
        Ok(self.as_compute(&y))
    }

    /// `x @ W^T` for the `nn.Linear` at `module` (compute type in and out, or float32 with
    /// `keep_f32`).
    fn linear(&mut self, x: &Value, module: &TensorPath, keep_f32: bool) -> Result<Value> {
        let name = (module / "weight").as_str().to_string();
        let w = match self.p.quantize {
            Quantize::Int8 => {
                // Dynamic quantization as ONNX Runtime's quantize_dynamic writes it: activations
                // quantized per tensor at run time (uint8), int8 weights per output channel,
                // an integer GEMM (MatMulInteger, which ORT fuses into DynamicQuantizeMatMul and
                // runs on its u8s8 kernels; tract runs it too), then one float rescale.
                let (q, s) = self.p.linear_q(&name)?;
                let q = self.g.weight(&q);
                let s = self.g.weight(&s);
                let xf = self.as_f32(x);
                let (xq, xs, xz) = (self.g.fresh("xq"), self.g.fresh("xs"), self.g.fresh("xz"));
                self.g
                    .node("DynamicQuantizeLinear", &[&xf], &[&xq, &xs, &xz], vec![]);
                let acc = self.g.op("MatMulInteger", &[&xq, &q, &xz], vec![]);
                let acc = self.cast(&acc, F32);
                let scale = self.g.op("Mul", &[&xs, &s], vec![]);
                let y = self.g.op("Mul", &[&acc, &scale], vec![]);
                return Ok(if keep_f32 { y } else { self.as_compute(&y) });
            }
            Quantize::None => {
                let t = self.p.linear_t(&name, keep_f32)?;
                self.g.weight(&t)
            }
        };
        Ok(self.g.op("MatMul", &[x, &w], vec![]))
    }

    /// `[B, L, H*d_kv]` → `[B, H, L, d_kv]`.
    fn split_heads(&mut self, x: &Value) -> Value {
        let shape = self
            .g
            .ints(&[0, 0, self.cfg.num_heads as i64, self.cfg.d_kv as i64]);
        let r = self.g.op("Reshape", &[x, &shape], vec![]);
        self.g.op(
            "Transpose",
            &[&r],
            vec![Attr::Ints("perm", vec![0, 2, 1, 3])],
        )
    }

    /// Project `x` with the `nn.Linear` at `module` and split heads.
    fn heads(&mut self, x: &Value, module: &TensorPath) -> Result<Value> {
        let y = self.linear(x, module, false)?;
        Ok(self.split_heads(&y))
    }

    /// softmax(q k^T + bias) v, then the output projection; returns float32 `[B, Lq, d_model]`.
    /// No 1/sqrt(d_kv) scaling: T5 folds it into the initialisation.
    fn attend(
        &mut self,
        q: &Value,
        k: &Value,
        v: &Value,
        bias: &Value,
        o: &TensorPath,
    ) -> Result<Value> {
        let kt = self.g.op(
            "Transpose",
            &[k],
            vec![Attr::Ints("perm", vec![0, 1, 3, 2])],
        );
        let scores = self.g.op("MatMul", &[q, &kt], vec![]);
        let scores = self.as_f32(&scores);
        let scores = self.g.op("Add", &[&scores, bias], vec![]);
        let probs = self
            .g
            .op("Softmax", &[&scores], vec![Attr::Int("axis", -1)]);
        let probs = self.as_compute(&probs);
        let ctx = self.g.op("MatMul", &[&probs, v], vec![]);
        let ctx = self.g.op(
            "Transpose",
            &[&ctx],
            vec![Attr::Ints("perm", vec![0, 2, 1, 3])],
        );
        let shape = self.g.ints(&[0, 0, self.cfg.inner_dim() as i64]);
        let ctx = self.g.op("Reshape", &[&ctx, &shape], vec![]);
        let out = self.linear(&ctx, &(o / "o"), false)?;
        Ok(self.as_f32(&out))
    }

    /// HF's NewGELUActivation (`gelu_new`, the tanh approximation), in float32.
    fn gelu_new(&mut self, x: &Value) -> Value {
        let x3 = self.g.op("Mul", &[x, x], vec![]);
        let x3 = self.g.op("Mul", &[&x3, x], vec![]);
        let c = self.g.scalar_f(0.044715, F32);
        let t = self.g.op("Mul", &[&x3, &c], vec![]);
        let t = self.g.op("Add", &[x, &t], vec![]);
        let k = self
            .g
            .scalar_f((2.0f64 / std::f64::consts::PI).sqrt() as f32, F32);
        let t = self.g.op("Mul", &[&t, &k], vec![]);
        let t = self.g.op("Tanh", &[&t], vec![]);
        let one = self.g.scalar_f(1.0, F32);
        let t = self.g.op("Add", &[&t, &one], vec![]);
        let half = self.g.scalar_f(0.5, F32);
        let h = self.g.op("Mul", &[x, &half], vec![]);
        self.g.op("Mul", &[&h, &t], vec![])
    }

    /// Name the nodes made from now on after their sub-layer (`/decoder/block.3/cross_kv/…`), so
    /// that ONNX Runtime's per-node profile can be summed by phase (`scripts/ort_profile.py`).
    fn sublayer_scope(&mut self, stack: &str, block: usize, sublayer: &str) {
        let scope = format!("/{stack}/block.{block}/{sublayer}");
        self.g.set_scope(scope);
    }

    /// T5LayerFF: `x + wo(act(wi(norm(x))))` (or the gated form), float32 in and out.
    fn feed_forward(&mut self, x: &Value, layer: &TensorPath) -> Result<Value> {
        let n = self.rms_norm(x, &(layer / "layer_norm"))?;
        let dense = layer / "DenseReluDense";
        let h = match self.cfg.ff() {
            FeedForward::Relu => {
                let h = self.linear(&n, &(&dense / "wi"), false)?;
                let h = self.as_f32(&h);
                self.g.op("Relu", &[&h], vec![])
            }
            gated => {
                let a = self.linear(&n, &(&dense / "wi_0"), false)?;
                let a = self.as_f32(&a);
                let a = if gated == FeedForward::GatedGelu {
                    self.gelu_new(&a)
                } else {
                    self.g.op("Relu", &[&a], vec![])
                };
                let b = self.linear(&n, &(&dense / "wi_1"), false)?;
                let b = self.as_f32(&b);
                self.g.op("Mul", &[&a, &b], vec![])
            }
        };
        // `wo` in float32: T5's FFN output overflows float16.
        let y = self.linear(&h, &(&dense / "wo"), true)?;
        Ok(self.g.op("Add", &[x, &y], vec![]))
    }

    /// `(1 - mask) * finfo(float32).min` as `[B, 1, 1, S]` (HF's extended attention mask).
    fn padding_bias(&mut self, mask: &Value) -> Value {
        let m = self.cast(mask, F32);
        let one = self.g.scalar_f(1.0, F32);
        let inv = self.g.op("Sub", &[&one, &m], vec![]);
        let min = self.g.scalar_f(f32::MIN, F32);
        let b = self.g.op("Mul", &[&inv, &min], vec![]);
        self.unsqueeze(&b, &[1, 2])
    }

    /// Block 0's relative position bias for query positions `q_pos` and key positions `k_pos`
    /// (1-D int64), as float32 `[1, H, Lq, Lk]`.
    fn position_bias(
        &mut self,
        stack: &str,
        q_pos: &Value,
        k_pos: &Value,
        bidirectional: bool,
    ) -> Result<Value> {
        let table = BucketTable::new(self.cfg, bidirectional)?;
        let ctx = self.unsqueeze(q_pos, &[1]);
        let mem = self.unsqueeze(k_pos, &[0]);
        let rel = self.g.op("Sub", &[&mem, &ctx], vec![]);
        let (dist, base) = if bidirectional {
            let zero = self.g.scalar_i64(0);
            let fwd = self.g.op("Greater", &[&rel, &zero], vec![]);
            let fwd = self.cast(&fwd, I64);
            let off = self.g.scalar_i64(table.forward_offset);
            let base = self.g.op("Mul", &[&fwd, &off], vec![]);
            (self.g.op("Abs", &[&rel], vec![]), Some(base))
        } else {
            let zero = self.g.scalar_i64(0);
            let neg = self.g.op("Neg", &[&rel], vec![]);
            (self.g.op("Max", &[&neg, &zero], vec![]), None)
        };
        let last = self.g.scalar_i64(table.table.len() as i64 - 1);
        let dist = self.g.op("Min", &[&dist, &last], vec![]);
        let t = self.g.ints(&table.table);
        let mut bucket = self
            .g
            .op("Gather", &[&t, &dist], vec![Attr::Int("axis", 0)]);
        if let Some(base) = base {
            bucket = self.g.op("Add", &[&bucket, &base], vec![]);
        }
        let name = format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
        let w = self.p.plain(&name, true)?;
        let w = self.g.weight(&w);
        let vals = self
            .g
            .op("Gather", &[&w, &bucket], vec![Attr::Int("axis", 0)]);
        let vals = self.g.op(
            "Transpose",
            &[&vals],
            vec![Attr::Ints("perm", vec![2, 0, 1])],
        );
        Ok(self.unsqueeze(&vals, &[0]))
    }

    /// `Range(start, start + len)`.
    fn range(&mut self, start: &Value, len: &Value) -> Value {
        let end = self.g.op("Add", &[start, len], vec![]);
        let one = self.g.scalar_i64(1);
        self.g.op("Range", &[start, &end, &one], vec![])
    }

    /// Token embeddings (float32 residual stream).
    fn embed(&mut self, ids: &Value) -> Result<Value> {
        let w = self.p.plain("shared.weight", false)?;
        let w = self.g.weight(&w);
        let h = self.g.op("Gather", &[&w, ids], vec![Attr::Int("axis", 0)]);
        Ok(self.as_f32(&h))
    }
}

fn finish(ctx: Ctx<'_, '_>, doc: &str) -> ModelProto {
    finish_graph(ctx.g, ctx.cfg, doc)
}

pub(crate) fn finish_graph(g: Graph, cfg: &T5Config, doc: &str) -> ModelProto {
    let meta = [
        ("model_type", "t5".to_string()),
        ("feed_forward_proj", cfg.feed_forward_proj.clone()),
        ("d_model", cfg.d_model.to_string()),
        ("num_heads", cfg.num_heads.to_string()),
        ("d_kv", cfg.d_kv.to_string()),
    ];
    model(g.into_proto(), doc, &meta)
}

/// `encoder_model.onnx`: `input_ids`, `attention_mask` (int64 `[B, S]`) → `last_hidden_state`.
pub(crate) fn encoder(cfg: &T5Config, p: &mut Params<'_>) -> Result<ModelProto> {
    let mut c = Ctx {
        g: Graph::new("t5_encoder"),
        p,
        cfg,
    };
    let ids = c.g.input(INPUT_IDS, I64, &[BATCH, ENC_LEN]);
    let mask = c.g.input(ATTENTION_MASK, I64, &[BATCH, ENC_LEN]);
    c.g.set_scope("/encoder/bias");
    let len = c.dim(&ids, 1);
    let zero = c.g.scalar_i64(0);
    let pos = c.range(&zero, &len);
    let pos_bias = c.position_bias("encoder", &pos, &pos, true)?;
    let pad = c.padding_bias(&mask);
    let bias = c.g.op("Add", &[&pos_bias, &pad], vec![]);
    let mut h = c.embed(&ids)?;
    let root = TensorPath::root() / "encoder";
    for i in 0..cfg.num_layers {
        c.sublayer_scope("encoder", i, SELF_ATTENTION);
        let block = &root / "block" / i;
        let sa = &block / "layer" / 0;
        let n = c.rms_norm(&h, &(&sa / "layer_norm"))?;
        let att = &sa / "SelfAttention";
        let q = c.heads(&n, &(&att / "q"))?;
        let k = c.heads(&n, &(&att / "k"))?;
        let v = c.heads(&n, &(&att / "v"))?;
        let a = c.attend(&q, &k, &v, &bias, &att)?;
        h = c.g.op("Add", &[&h, &a], vec![]);
        c.sublayer_scope("encoder", i, FEED_FORWARD);
        h = c.feed_forward(&h, &(&block / "layer" / 1))?;
    }
    c.g.set_scope("/encoder/final");
    let out = c.rms_norm(&h, &(&root / "final_layer_norm"))?;
    let out = c.as_f32(&out);
    let d = Dim::Fixed(cfg.d_model as i64);
    c.g.output(&out, LAST_HIDDEN_STATE, F32, &[BATCH, ENC_LEN, d]);
    Ok(finish(c, "T5 encoder (cbqa export, optimum layout)"))
}

/// Which decoder graph to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecoderStep {
    /// `decoder_model.onnx`: computes the cross-attention keys and values from
    /// `encoder_hidden_states` and outputs them.
    First,
    /// `decoder_with_past_model.onnx`: takes `past_key_values.*`; the query position is the past
    /// length.
    WithPast,
    /// `decoder_with_past_masked_model.onnx`: as [`DecoderStep::WithPast`], with the
    /// self-attention key mask `decoder_attention_mask` (cbqa's, for joining decoding states).
    WithPastMasked,
}

impl DecoderStep {
    fn with_past(self) -> bool {
        self != DecoderStep::First
    }
}

/// One of the decoder graphs (see [`DecoderStep`]).
pub(crate) fn decoder(cfg: &T5Config, p: &mut Params<'_>, step: DecoderStep) -> Result<ModelProto> {
    let g = decoder_graph(cfg, p, step, None)?;
    let doc = match step {
        DecoderStep::First => "T5 decoder (cbqa export, optimum layout)",
        DecoderStep::WithPast => {
            "T5 decoder step with past key/values (cbqa export, optimum layout)"
        }
        DecoderStep::WithPastMasked => {
            "T5 decoder step with past key/values and a self-attention key mask (cbqa export)"
        }
    };
    Ok(finish_graph(g, cfg, doc))
}

/// The decoder's graph inputs.
struct DecoderInputs {
    enc_mask: Value,
    ids: Value,
    /// `encoder_hidden_states` (the decoder without past).
    enc_states: Option<Value>,
    /// Per layer, the four `past_key_values` in [`CACHE_ORDER`] (the decoder with past).
    past: Vec<Vec<Value>>,
    /// `decoder_attention_mask` (the masked decoder with past).
    self_mask: Option<Value>,
}

/// The two attention biases of every decoder block.
struct DecoderBiases {
    /// Relative position bias plus the causal mask.
    self_attention: Value,
    /// The encoder padding mask.
    cross_attention: Value,
}

/// The decoder graph. As a `branch` of the merged decoder, every name starts with the given
/// prefix (outputs included) and the with-past branch also outputs the encoder keys and values
/// it was given, so both branches have the same outputs.
pub(crate) fn decoder_graph(
    cfg: &T5Config,
    p: &mut Params<'_>,
    step: DecoderStep,
    branch: Option<&str>,
) -> Result<Graph> {
    let with_past = step.with_past();
    let name = match step {
        DecoderStep::First => "t5_decoder",
        DecoderStep::WithPast => "t5_decoder_with_past",
        DecoderStep::WithPastMasked => "t5_decoder_with_past_masked",
    };
    let prefix = branch.unwrap_or("");
    let mut c = Ctx {
        g: Graph::with_prefix(name, prefix),
        p,
        cfg,
    };
    let inputs = decoder_inputs(&mut c, step);
    let biases = decoder_biases(&mut c, &inputs)?;
    let enc_states_c = inputs.enc_states.as_ref().map(|e| c.as_compute(e));
    let mut h = c.embed(&inputs.ids)?;
    let mut presents: Vec<(Value, Value)> = Vec::new();
    for i in 0..cfg.decoder_layers() {
        let cross = match (&enc_states_c, inputs.past.get(i)) {
            (Some(e), _) => CrossInput::States(e),
            (None, Some(four)) => CrossInput::Past(&four[2], &four[3]),
            (None, None) => {
                return Err(crate::error::Error::Export {
                    path: name.into(),
                    msg: format!(
                        "decoder block {i}: neither encoder states nor past keys/values \
                         (internal error)"
                    ),
                })
            }
        };
        let past = inputs.past.get(i).map(|four| (&four[0], &four[1]));
        h = decoder_block(&mut c, i, &h, &biases, cross, past, &mut presents)?;
    }
    let logits = lm_head(&mut c, &h, &inputs.ids)?;
    decoder_outputs(&mut c, &inputs, &logits, &presents, with_past, branch);
    Ok(c.g)
}

/// The graph inputs: the encoder mask and decoder ids (and the self-attention key mask of the
/// masked step), then the past keys/values (with past) or the encoder states (without).
fn decoder_inputs(c: &mut Ctx<'_, '_>, step: DecoderStep) -> DecoderInputs {
    let cfg = c.cfg;
    let h_dim = Dim::Fixed(cfg.num_heads as i64);
    let kv_dim = Dim::Fixed(cfg.d_kv as i64);
    let enc_mask = c.g.input(ENCODER_ATTENTION_MASK, I64, &[BATCH, ENC_LEN]);
    let ids = c.g.input(INPUT_IDS, I64, &[BATCH, DEC_LEN]);
    let self_mask = (step == DecoderStep::WithPastMasked)
        .then(|| c.g.input(DECODER_ATTENTION_MASK, I64, &[BATCH, TOTAL_LEN]));
    let mut enc_states = None;
    let mut past = Vec::new();
    if step.with_past() {
        for i in 0..cfg.decoder_layers() {
            let mut four = Vec::new();
            for (part, kv) in CACHE_ORDER {
                let dims = [BATCH, h_dim.clone(), cache_len(part), kv_dim.clone()];
                four.push(c.g.input(&layout::past(i, part, kv), F32, &dims));
            }
            past.push(four);
        }
    } else {
        let d = Dim::Fixed(cfg.d_model as i64);
        enc_states = Some(c.g.input(ENCODER_HIDDEN_STATES, F32, &[BATCH, ENC_LEN, d]));
    }
    DecoderInputs {
        enc_mask,
        ids,
        enc_states,
        past,
        self_mask,
    }
}

/// The self-attention bias (relative positions from the past length on, causal mask) and the
/// cross-attention padding bias.
fn decoder_biases(c: &mut Ctx<'_, '_>, inputs: &DecoderInputs) -> Result<DecoderBiases> {
    c.g.set_scope("/decoder/bias");
    let len = c.dim(&inputs.ids, 1);
    let zero = c.g.scalar_i64(0);
    let past_len = match inputs.past.first() {
        Some(four) => c.dim(&four[0], 2),
        None => zero.clone(),
    };
    let q_pos = c.range(&past_len, &len);
    let total = c.g.op("Add", &[&past_len, &len], vec![]);
    let k_pos = c.range(&zero, &total);
    let pos_bias = c.position_bias("decoder", &q_pos, &k_pos, false)?;
    // Causal mask: key position after the query position → finfo.min.
    let qc = c.unsqueeze(&q_pos, &[1]);
    let kr = c.unsqueeze(&k_pos, &[0]);
    let future = c.g.op("Greater", &[&kr, &qc], vec![]);
    let future = c.cast(&future, F32);
    let min = c.g.scalar_f(f32::MIN, F32);
    let causal = c.g.op("Mul", &[&future, &min], vec![]);
    let mut self_attention = c.g.op("Add", &[&pos_bias, &causal], vec![]);
    if let Some(mask) = &inputs.self_mask {
        // Padding keys of a joined state: `[B, 1, 1, past + len]`, as the encoder mask.
        let padding = c.padding_bias(mask);
        self_attention = c.g.op("Add", &[&self_attention, &padding], vec![]);
    }
    let cross_attention = c.padding_bias(&inputs.enc_mask);
    Ok(DecoderBiases {
        self_attention,
        cross_attention,
    })
}

/// Where a decoder block's cross-attention keys and values come from.
enum CrossInput<'a> {
    /// Computed from the encoder states (compute type); they become outputs.
    States(&'a Value),
    /// Given as past key and value (float32).
    Past(&'a Value, &'a Value),
}

/// Decoder block `i` on the residual stream `h`; pushes its present keys/values (self, then
/// cross when computed) to `presents`. `past` is the block's cached self-attention key/value.
fn decoder_block(
    c: &mut Ctx<'_, '_>,
    i: usize,
    h: &Value,
    biases: &DecoderBiases,
    cross: CrossInput<'_>,
    past: Option<(&Value, &Value)>,
    presents: &mut Vec<(Value, Value)>,
) -> Result<Value> {
    c.sublayer_scope("decoder", i, SELF_ATTENTION);
    let block = TensorPath::root() / "decoder" / "block" / i;
    let sa = &block / "layer" / 0;
    let n = c.rms_norm(h, &(&sa / "layer_norm"))?;
    let att = &sa / "SelfAttention";
    let q = c.heads(&n, &(&att / "q"))?;
    let mut kv = Kv {
        key: c.heads(&n, &(&att / "k"))?,
        value: c.heads(&n, &(&att / "v"))?,
    };
    if let Some((past_key, past_value)) = past {
        let pk = c.as_compute(past_key);
        let pv = c.as_compute(past_value);
        kv.key =
            c.g.op("Concat", &[&pk, &kv.key], vec![Attr::Int("axis", 2)]);
        kv.value =
            c.g.op("Concat", &[&pv, &kv.value], vec![Attr::Int("axis", 2)]);
    }
    let a = c.attend(&q, &kv.key, &kv.value, &biases.self_attention, &att)?;
    let h = c.g.op("Add", &[h, &a], vec![]);
    let pk = c.as_f32(&kv.key);
    let pv = c.as_f32(&kv.value);
    presents.push((pk, pv));

    let ca = &block / "layer" / 1;
    c.sublayer_scope("decoder", i, CROSS_ATTENTION);
    let n = c.rms_norm(&h, &(&ca / "layer_norm"))?;
    let att = &ca / "EncDecAttention";
    let q = c.heads(&n, &(&att / "q"))?;
    let (ek, ev) = match cross {
        CrossInput::States(e) => {
            c.sublayer_scope("decoder", i, CROSS_KV);
            let kv = (c.heads(e, &(&att / "k"))?, c.heads(e, &(&att / "v"))?);
            c.sublayer_scope("decoder", i, CROSS_ATTENTION);
            kv
        }
        CrossInput::Past(k, v) => (c.as_compute(k), c.as_compute(v)),
    };
    let a = c.attend(&q, &ek, &ev, &biases.cross_attention, &att)?;
    let h = c.g.op("Add", &[&h, &a], vec![]);
    if let CrossInput::States(_) = cross {
        let ek = c.as_f32(&ek);
        let ev = c.as_f32(&ev);
        presents.push((ek, ev));
    }
    c.sublayer_scope("decoder", i, FEED_FORWARD);
    c.feed_forward(&h, &(&block / "layer" / 2))
}

/// The final norm and the LM head: float32 logits `[B, T, vocab]`.
fn lm_head(c: &mut Ctx<'_, '_>, h: &Value, ids: &Value) -> Result<Value> {
    let cfg = c.cfg;
    c.g.set_scope("/decoder/lm_head");
    let root = TensorPath::root() / "decoder";
    let mut out = c.rms_norm(h, &(&root / "final_layer_norm"))?;
    let head = if cfg.tie_word_embeddings {
        // T5 v1.0 rescales before the tied projection (modeling_t5.py: `sequence_output *
        // (self.model_dim**-0.5)`).
        let elem = c.p.elem();
        let s = c.g.scalar_f((cfg.d_model as f32).powf(-0.5), elem);
        out = c.g.op("Mul", &[&out, &s], vec![]);
        "shared.weight"
    } else {
        "lm_head.weight"
    };
    let logits = if c.p.quantize == Quantize::Int8 {
        // The LM head is the largest matmul of every decoding step: quantized like the other
        // linears (an int8 copy of the tied embedding, transposed, in the int8 export only).
        let module = TensorPath::root() / head.trim_end_matches(".weight");
        c.linear(&out, &module, true)?
    } else {
        // Gemm with transB reads the [V, d] matrix as stored, so the tied embedding is kept once.
        let w = c.p.plain(head, false)?;
        let w = c.g.weight(&w);
        let flat = c.g.ints(&[-1, cfg.d_model as i64]);
        let flat = c.g.op("Reshape", &[&out, &flat], vec![]);
        let logits = c.g.op("Gemm", &[&flat, &w], vec![Attr::Int("transB", 1)]);
        let bt = c.g.op("Shape", &[ids], vec![]);
        let v = c.g.ints(&[cfg.vocab_size as i64]);
        let shape = c.g.op("Concat", &[&bt, &v], vec![Attr::Int("axis", 0)]);
        c.g.op("Reshape", &[&logits, &shape], vec![])
    };
    Ok(c.as_f32(&logits))
}

/// The graph outputs: logits, then per layer the present keys/values (the cross-attention ones
/// where computed, or passed through as a merged branch).
fn decoder_outputs(
    c: &mut Ctx<'_, '_>,
    inputs: &DecoderInputs,
    logits: &Value,
    presents: &[(Value, Value)],
    with_past: bool,
    branch: Option<&str>,
) {
    let cfg = c.cfg;
    let prefix = branch.unwrap_or("");
    let h_dim = Dim::Fixed(cfg.num_heads as i64);
    let kv_dim = Dim::Fixed(cfg.d_kv as i64);
    let vocab = Dim::Fixed(cfg.vocab_size as i64);
    c.g.output(
        logits,
        &format!("{prefix}{LOGITS}"),
        F32,
        &[BATCH, DEC_LEN, vocab],
    );
    for i in 0..cfg.decoder_layers() {
        let per_layer = if with_past { 1 } else { 2 };
        let self_kv = presents[i * per_layer].clone();
        let cross_kv = match inputs.past.get(i) {
            None => Some(presents[i * 2 + 1].clone()),
            Some(four) if branch.is_some() => Some((four[2].clone(), four[3].clone())),
            Some(_) => None,
        };
        for (part, pair) in [(Part::Decoder, Some(self_kv)), (Part::Encoder, cross_kv)] {
            let Some((k, v)) = pair else { continue };
            let dims = [BATCH, h_dim.clone(), present_len(part), kv_dim.clone()];
            for (value, kv) in [(k, layout::Kv::Key), (v, layout::Kv::Value)] {
                let name = format!("{prefix}{}", layout::present(i, part, kv));
                c.g.output(&value, &name, F32, &dims);
            }
        }
    }
}

/// The length axis of a `past_key_values` input: the steps so far for the self-attention cache,
/// the encoder length for the cross-attention keys and values.
pub(crate) fn cache_len(part: Part) -> Dim {
    match part {
        Part::Decoder => PAST_LEN,
        Part::Encoder => ENC_LEN,
    }
}

/// The length axis of a `present` output: past plus new steps for the self-attention cache.
pub(crate) fn present_len(part: Part) -> Dim {
    match part {
        Part::Decoder => TOTAL_LEN,
        Part::Encoder => ENC_LEN,
    }
}
