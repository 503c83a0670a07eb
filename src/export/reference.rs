//! A plain-Rust float32 forward pass of T5, the reference the exported graphs are validated
//! against without libtorch. It is written for clarity, not speed (one batch item and one head at a
//! time), and is itself checked against transformers' outputs in the test fixtures.
//!
//! Mirrors `T5ForConditionalGeneration.forward` in transformers 4.57
//! (<https://github.com/huggingface/transformers/blob/v4.57.6/src/transformers/models/t5/modeling_t5.py>).

use super::position::BucketTable;
use crate::checkpoint::{TensorPath, Weights};
use crate::config::{FeedForward, T5Config};
use crate::error::{Error, Result};
use crate::onnx::layout::{Kv, Part};
use ndarray::{s, Array1, Array2, Array3, Array4, ArrayView2, Axis};

/// A decoder pass over a whole target prefix: logits and every block's keys and values.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// `[B, T, vocab]`.
    pub logits: Array3<f32>,
    /// Per block: self-attention key and value, `[B, H, T, d_kv]`.
    pub self_kv: Vec<(Array4<f32>, Array4<f32>)>,
    /// Per block: cross-attention key and value, `[B, H, S, d_kv]`.
    pub cross_kv: Vec<(Array4<f32>, Array4<f32>)>,
}

impl DecoderOutput {
    /// The reference for one cache tensor of `layer` (as the graphs name them, see
    /// [`crate::onnx::layout::present`]).
    pub(crate) fn cache(&self, layer: usize, part: Part, kv: Kv) -> &Array4<f32> {
        let (key, value) = match part {
            Part::Decoder => &self.self_kv[layer],
            Part::Encoder => &self.cross_kv[layer],
        };
        match kv {
            Kv::Key => key,
            Kv::Value => value,
        }
    }
}

/// The reference model: a config and the checkpoint's tensors (converted to f32 when used).
pub struct ReferenceT5<'a> {
    cfg: &'a T5Config,
    weights: &'a Weights,
}

fn matrix(weights: &Weights, name: &str) -> Result<Array2<f32>> {
    let (v, shape) = weights.f32(name)?;
    match shape.as_slice() {
        [r, c] => Array2::from_shape_vec((*r, *c), v)
            .map_err(|e| Error::input(format!("tensor `{name}`"), e.to_string())),
        _ => Err(Error::input(
            format!("tensor `{name}`"),
            format!("shape {shape:?}, expected a matrix"),
        )),
    }
}

fn vector(weights: &Weights, name: &str) -> Result<Array1<f32>> {
    Ok(Array1::from(weights.f32(name)?.0))
}

fn softmax_rows(x: &mut Array2<f32>) {
    for mut row in x.rows_mut() {
        let m = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
}

/// HF's `gelu_new`.
fn gelu_new(x: f32) -> f32 {
    let k = (2.0f64 / std::f64::consts::PI).sqrt() as f32;
    0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
}

impl<'a> ReferenceT5<'a> {
    pub fn new(cfg: &'a T5Config, weights: &'a Weights) -> Self {
        ReferenceT5 { cfg, weights }
    }

    fn rms_norm(&self, x: &Array2<f32>, w: &TensorPath) -> Result<Array2<f32>> {
        let w = vector(self.weights, (w / "weight").as_str())?;
        let eps = self.cfg.layer_norm_epsilon as f32;
        let mut out = x.clone();
        for mut row in out.rows_mut() {
            let var = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
            let inv = 1.0 / (var + eps).sqrt();
            row.iter_mut()
                .zip(w.iter())
                .for_each(|(v, g)| *v = g * (*v * inv));
        }
        Ok(out)
    }

    fn linear(&self, x: &Array2<f32>, module: &TensorPath) -> Result<Array2<f32>> {
        let w = matrix(self.weights, (module / "weight").as_str())?;
        Ok(x.dot(&w.t()))
    }

    /// One attention for one batch item: `q_in [Lq, d]`, keys/values `[Lk, inner]` already
    /// projected, `bias [H, Lq, Lk]`. Returns the output `[Lq, d]`.
    /// One pre-norm attention sub-layer of the decoder for batch item `bi` (without the
    /// residual): queries from the normed `x`, keys and values from `kv_src` (the encoder output
    /// for cross-attention; the normed `x` itself when `None`). The keys and values are stored
    /// in `kv` as `[H, L, d_kv]` in the item's slot, to compare with the graphs' presents.
    #[allow(clippy::too_many_arguments)]
    fn attention_sublayer(
        &self,
        x: &Array2<f32>,
        layer: &TensorPath,
        attention: &str,
        kv_src: Option<&Array2<f32>>,
        bias: &Array3<f32>,
        kv: &mut (Array4<f32>, Array4<f32>),
        bi: usize,
    ) -> Result<Array2<f32>> {
        let n = self.rms_norm(x, &(layer / "layer_norm"))?;
        let att = layer / attention;
        let src = kv_src.unwrap_or(&n);
        let q = self.linear(&n, &(&att / "q"))?;
        let k = self.linear(src, &(&att / "k"))?;
        let v = self.linear(src, &(&att / "v"))?;
        let dkv = self.cfg.d_kv;
        for (dst, x) in [(&mut kv.0, &k), (&mut kv.1, &v)] {
            for hh in 0..self.cfg.num_heads {
                dst.slice_mut(s![bi, hh, .., ..])
                    .assign(&x.slice(s![.., hh * dkv..(hh + 1) * dkv]));
            }
        }
        self.attend(&q, k.view(), v.view(), bias, &att)
    }

    fn attend(
        &self,
        q: &Array2<f32>,
        k: ArrayView2<f32>,
        v: ArrayView2<f32>,
        bias: &Array3<f32>,
        module: &TensorPath,
    ) -> Result<Array2<f32>> {
        let dkv = self.cfg.d_kv;
        let mut ctx = Array2::<f32>::zeros((q.nrows(), self.cfg.inner_dim()));
        for h in 0..self.cfg.num_heads {
            let cols = s![.., h * dkv..(h + 1) * dkv];
            let mut scores = q.slice(cols).dot(&k.slice(cols).t());
            scores += &bias.index_axis(Axis(0), h);
            softmax_rows(&mut scores);
            ctx.slice_mut(cols).assign(&scores.dot(&v.slice(cols)));
        }
        self.linear(&ctx, &(module / "o"))
    }

    fn feed_forward(&self, x: &Array2<f32>, layer: &TensorPath) -> Result<Array2<f32>> {
        let n = self.rms_norm(x, &(layer / "layer_norm"))?;
        let d = layer / "DenseReluDense";
        let h = match self.cfg.ff() {
            FeedForward::Relu => self.linear(&n, &(&d / "wi"))?.mapv(|v| v.max(0.0)),
            g => {
                let a = self.linear(&n, &(&d / "wi_0"))?;
                let a = if g == FeedForward::GatedGelu {
                    a.mapv(gelu_new)
                } else {
                    a.mapv(|v| v.max(0.0))
                };
                a * self.linear(&n, &(&d / "wi_1"))?
            }
        };
        Ok(x + &self.linear(&h, &(&d / "wo"))?)
    }

    /// `[H, Lq, Lk]` relative position bias of `stack` for the given positions.
    fn position_bias(
        &self,
        stack: &str,
        q_pos: &[i64],
        k_pos: &[i64],
        bidirectional: bool,
    ) -> Result<Array3<f32>> {
        let table = BucketTable::new(self.cfg, bidirectional)?;
        let w = matrix(
            self.weights,
            &format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        )?;
        let mut out = Array3::zeros((self.cfg.num_heads, q_pos.len(), k_pos.len()));
        for (i, q) in q_pos.iter().enumerate() {
            for (j, k) in k_pos.iter().enumerate() {
                let b = table.bucket(k - q) as usize;
                for h in 0..self.cfg.num_heads {
                    out[[h, i, j]] = w[[b, h]];
                }
            }
        }
        Ok(out)
    }

    fn embed(&self, ids: &[i64]) -> Result<Array2<f32>> {
        let shared = matrix(self.weights, "shared.weight")?;
        let mut x = Array2::zeros((ids.len(), self.cfg.d_model));
        for (i, &id) in ids.iter().enumerate() {
            if id < 0 || id as usize >= shared.nrows() {
                return Err(Error::input(
                    "token ids",
                    format!(
                        "token id {id} is outside the vocabulary (size {})",
                        shared.nrows()
                    ),
                ));
            }
            x.row_mut(i).assign(&shared.row(id as usize));
        }
        Ok(x)
    }

    /// The encoder's `last_hidden_state` `[B, S, d_model]`.
    pub fn encode(&self, ids: &Array2<i64>, mask: &Array2<i64>) -> Result<Array3<f32>> {
        let (b, s) = ids.dim();
        let pos: Vec<i64> = (0..s as i64).collect();
        let pos_bias = self.position_bias("encoder", &pos, &pos, true)?;
        let root = TensorPath::root() / "encoder";
        let mut out = Array3::zeros((b, s, self.cfg.d_model));
        for bi in 0..b {
            let mut bias = pos_bias.clone();
            for j in 0..s {
                if mask[[bi, j]] == 0 {
                    bias.slice_mut(s![.., .., j]).mapv_inplace(|v| v + f32::MIN);
                }
            }
            let row: Vec<i64> = ids.row(bi).to_vec();
            let mut x = self.embed(&row)?;
            for i in 0..self.cfg.num_layers {
                let block = &root / "block" / i;
                let sa = &block / "layer" / 0;
                let n = self.rms_norm(&x, &(&sa / "layer_norm"))?;
                let att = &sa / "SelfAttention";
                let q = self.linear(&n, &(&att / "q"))?;
                let k = self.linear(&n, &(&att / "k"))?;
                let v = self.linear(&n, &(&att / "v"))?;
                x = x + self.attend(&q, k.view(), v.view(), &bias, &att)?;
                x = self.feed_forward(&x, &(&block / "layer" / 1))?;
            }
            let x = self.rms_norm(&x, &(&root / "final_layer_norm"))?;
            out.index_axis_mut(Axis(0), bi).assign(&x);
        }
        Ok(out)
    }

    /// The decoder over a whole prefix `ids [B, T]` (teacher forcing, as `decoder_model.onnx`).
    pub fn decode(
        &self,
        ids: &Array2<i64>,
        enc: &Array3<f32>,
        enc_mask: &Array2<i64>,
    ) -> Result<DecoderOutput> {
        let cfg = self.cfg;
        let (b, t) = ids.dim();
        let s = enc.dim().1;
        let (h, dkv) = (cfg.num_heads, cfg.d_kv);
        let pos: Vec<i64> = (0..t as i64).collect();
        let mut self_bias = self.position_bias("decoder", &pos, &pos, false)?;
        for i in 0..t {
            for j in i + 1..t {
                self_bias
                    .slice_mut(s![.., i, j])
                    .mapv_inplace(|v| v + f32::MIN);
            }
        }
        let n_layers = cfg.decoder_layers();
        let kv = |len| Array4::<f32>::zeros((b, h, len, dkv));
        let mut self_kv: Vec<_> = (0..n_layers).map(|_| (kv(t), kv(t))).collect();
        let mut cross_kv: Vec<_> = (0..n_layers).map(|_| (kv(s), kv(s))).collect();
        let mut logits = Array3::zeros((b, t, cfg.vocab_size));
        let root = TensorPath::root() / "decoder";
        let head = if cfg.tie_word_embeddings {
            "shared.weight"
        } else {
            "lm_head.weight"
        };
        let head = matrix(self.weights, head)?;
        for bi in 0..b {
            let mut cross_bias = Array3::<f32>::zeros((h, t, s));
            for j in 0..s {
                if enc_mask[[bi, j]] == 0 {
                    cross_bias.slice_mut(s![.., .., j]).fill(f32::MIN);
                }
            }
            let e = enc.index_axis(Axis(0), bi).to_owned();
            let row: Vec<i64> = ids.row(bi).to_vec();
            let mut x = self.embed(&row)?;
            for i in 0..n_layers {
                let block = &root / "block" / i;
                let sa = &block / "layer" / 0;
                x += &self.attention_sublayer(
                    &x,
                    &sa,
                    "SelfAttention",
                    None,
                    &self_bias,
                    &mut self_kv[i],
                    bi,
                )?;
                let ca = &block / "layer" / 1;
                x += &self.attention_sublayer(
                    &x,
                    &ca,
                    "EncDecAttention",
                    Some(&e),
                    &cross_bias,
                    &mut cross_kv[i],
                    bi,
                )?;
                x = self.feed_forward(&x, &(&block / "layer" / 2))?;
            }
            let mut x = self.rms_norm(&x, &(&root / "final_layer_norm"))?;
            if cfg.tie_word_embeddings {
                x.mapv_inplace(|v| v * (cfg.d_model as f32).powf(-0.5));
            }
            logits.index_axis_mut(Axis(0), bi).assign(&x.dot(&head.t()));
        }
        Ok(DecoderOutput {
            logits,
            self_kv,
            cross_kv,
        })
    }
}
