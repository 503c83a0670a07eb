//! `T5Block` and `T5Stack` (encoder and decoder), and the decoder's explicit KV cache.

use super::attention::{T5LayerCrossAttention, T5LayerSelfAttention};
use super::layers::{clamp_fp16, Ctx, T5LayerFF, T5LayerNorm};
use crate::error::Result;
use tch::nn::Path;
use tch::{Kind, Tensor};

/// The cached keys and values of one decoder block, in optimum's ONNX layout
/// (`past_key_values.{i}.decoder.{key,value}` and `past_key_values.{i}.encoder.{key,value}`).
#[derive(Debug)]
pub struct LayerCache {
    /// Self-attention keys `[B, H, T, d_kv]` of every decoded position so far.
    pub self_key: Tensor,
    /// Self-attention values `[B, H, T, d_kv]`.
    pub self_value: Tensor,
    /// Cross-attention keys `[B, H, S, d_kv]` of the encoder output (computed once).
    pub cross_key: Tensor,
    /// Cross-attention values `[B, H, S, d_kv]`.
    pub cross_value: Tensor,
}

/// The decoder's KV cache: one [`LayerCache`] per decoder block. A value passed into
/// [`super::T5ForConditionalGeneration::decode`] and returned, grown by the new positions.
#[derive(Debug, Default)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    /// Which cached self-attention positions are real keys (1) and which are padding (0),
    /// `[B, past_len]` i64; `None`: all are real (training, and decoding of one batch). Set when
    /// decoding states at different positions are joined (the shorter cache padded on the left,
    /// see `runtime::Seq2Seq::concat`): the decoder then masks the padding out of self-attention
    /// as transformers masks padding (`(1 - mask) * finfo.min`), and extends the mask by the new
    /// positions.
    pub key_mask: Option<Tensor>,
}

impl KvCache {
    /// Number of decoder positions already in the cache.
    pub fn past_len(&self) -> i64 {
        self.layers
            .first()
            .and_then(|l| l.self_key.size().get(2).copied())
            .unwrap_or(0)
    }

    /// Keep only the batch rows `index` (i64 `[N]`), in that order (beam search reordering,
    /// dropping finished sequences).
    pub fn index_select(&self, index: &Tensor) -> Result<KvCache> {
        let key_mask = match &self.key_mask {
            Some(m) => Some(m.f_index_select(0, index)?),
            None => None,
        };
        let sel = |t: &Tensor| t.f_index_select(0, index);
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerCache {
                    self_key: sel(&l.self_key)?,
                    self_value: sel(&l.self_value)?,
                    cross_key: sel(&l.cross_key)?,
                    cross_value: sel(&l.cross_value)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(KvCache { layers, key_mask })
    }
}

/// The most negative finite value of `kind` (`torch.finfo(dtype).min`), used for masking.
pub(crate) fn dtype_min(kind: Kind) -> f64 {
    match kind {
        Kind::Half => f64::from(half::f16::MIN),
        Kind::BFloat16 => f64::from(half::bf16::MIN),
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// transformers' extended padding mask: `(1 - mask[:, None, None, :]) * finfo(kind).min`.
pub(crate) fn extended_mask(mask: &Tensor, kind: Kind) -> Result<Tensor> {
    Ok(mask
        .f_unsqueeze(1)?
        .f_unsqueeze(1)?
        .f_to_kind(kind)?
        .f_neg()?
        .f_add_scalar(1.0)?
        .f_mul_scalar(dtype_min(kind))?)
}

/// `T5Block`: self-attention, cross-attention (decoder only) and feed-forward sub-layers.
#[derive(Debug)]
pub(crate) struct T5Block {
    pub(crate) self_attention: T5LayerSelfAttention,
    cross_attention: Option<T5LayerCrossAttention>,
    ff: T5LayerFF,
}

impl T5Block {
    pub(crate) fn new(p: Path, cfg: &Ctx<'_>, has_bias: bool, is_decoder: bool) -> Result<Self> {
        let layer = &p / "layer";
        let self_attention = T5LayerSelfAttention::new(&layer / 0, cfg, has_bias, is_decoder)?;
        let (cross_attention, ff) = if is_decoder {
            (
                Some(T5LayerCrossAttention::new(&layer / 1, cfg)?),
                T5LayerFF::new(&layer / 2, cfg)?,
            )
        } else {
            (None, T5LayerFF::new(&layer / 1, cfg)?)
        };
        Ok(T5Block {
            self_attention,
            cross_attention,
            ff,
        })
    }
}

/// What one decoder block sees besides its hidden states.
struct DecoderContext<'a> {
    self_bias: &'a Tensor,
    cross_bias: &'a Tensor,
    encoder_hidden_states: &'a Tensor,
    train: bool,
}

impl T5Block {
    fn forward_encoder(&self, hidden: &Tensor, bias: &Tensor, train: bool) -> Result<Tensor> {
        let (hidden, _, _) = self.self_attention.forward(hidden, bias, None, train)?;
        let hidden = clamp_fp16(hidden)?;
        clamp_fp16(self.ff.forward(&hidden, train)?)
    }

    fn forward_decoder(
        &self,
        hidden: &Tensor,
        past: Option<LayerCache>,
        ctx: &DecoderContext<'_>,
    ) -> Result<(Tensor, LayerCache)> {
        let past_self = past.as_ref().map(|l| (&l.self_key, &l.self_value));
        let (hidden, self_key, self_value) =
            self.self_attention
                .forward(hidden, ctx.self_bias, past_self, ctx.train)?;
        let mut hidden = clamp_fp16(hidden)?;
        let mut cross = None;
        if let Some(layer) = &self.cross_attention {
            let (cross_key, cross_value) = match past {
                Some(l) => (l.cross_key, l.cross_value),
                None => {
                    // Cached, hence contiguous, as in transformers (see T5LayerSelfAttention).
                    let (k, v) = layer.attention.key_value(ctx.encoder_hidden_states)?;
                    (k.f_contiguous()?, v.f_contiguous()?)
                }
            };
            hidden = clamp_fp16(layer.forward(
                &hidden,
                &cross_key,
                &cross_value,
                ctx.cross_bias,
                ctx.train,
            )?)?;
            cross = Some((cross_key, cross_value));
        }
        let hidden = clamp_fp16(self.ff.forward(&hidden, ctx.train)?)?;
        // Decoder blocks always have cross-attention; an encoder block never gets here.
        let (cross_key, cross_value) = cross.unwrap_or_else(|| (Tensor::new(), Tensor::new()));
        let cache = LayerCache {
            self_key,
            self_value,
            cross_key,
            cross_value,
        };
        Ok((hidden, cache))
    }
}

/// `T5Stack`: embeddings (shared with the other stack), blocks, final layer norm, dropout.
#[derive(Debug)]
pub(crate) struct T5Stack {
    embed_tokens: Tensor,
    pub(crate) blocks: Vec<T5Block>,
    final_layer_norm: T5LayerNorm,
    dropout: f64,
}

impl T5Stack {
    pub(crate) fn new(p: Path, cfg: &Ctx<'_>, shared: &Tensor, is_decoder: bool) -> Result<Self> {
        let layers = if is_decoder {
            cfg.decoder_layers()
        } else {
            cfg.num_layers
        };
        let blocks = (0..layers)
            .map(|i| T5Block::new(&p / "block" / i, cfg, i == 0, is_decoder))
            .collect::<Result<_>>()?;
        Ok(T5Stack {
            embed_tokens: shared.shallow_clone(),
            blocks,
            final_layer_norm: T5LayerNorm::new(&p / "final_layer_norm", cfg)?,
            dropout: cfg.dropout_rate,
        })
    }

    fn embed(&self, ids: &Tensor, train: bool) -> Result<Tensor> {
        Ok(
            Tensor::f_embedding(&self.embed_tokens, ids, -1, false, false)?
                .f_dropout(self.dropout, train)?,
        )
    }

    fn position_bias(&self, query_positions: &Tensor, key_len: i64) -> Result<Tensor> {
        // Only block 0 owns the table; the stack is never empty (the config is validated).
        let bias = match self.blocks.first() {
            Some(block) => block
                .self_attention
                .attention
                .compute_bias(query_positions, key_len)?,
            None => None,
        };
        match bias {
            Some(bias) => Ok(bias),
            None => Ok(Tensor::f_zeros(
                [1],
                (Kind::Float, query_positions.device()),
            )?),
        }
    }

    /// The encoder: `input_ids`, `attention_mask` `[B, S]` (i64) → last hidden state `[B, S, D]`.
    pub(crate) fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let mut hidden = self.embed(input_ids, train)?;
        let (_, s) = input_ids.size2()?;
        let positions = Tensor::f_arange(s, (Kind::Int64, input_ids.device()))?;
        // Block 0's bias plus the padding mask, reused by every block (as transformers does).
        let bias = self
            .position_bias(&positions, s)?
            .f_add(&extended_mask(attention_mask, hidden.kind())?)?;
        for block in &self.blocks {
            hidden = block.forward_encoder(&hidden, &bias, train)?;
        }
        Ok(self
            .final_layer_norm
            .forward(&hidden)?
            .f_dropout(self.dropout, train)?)
    }

    /// The decoder on new positions `input_ids` `[B, T]` after the cached ones.
    pub(crate) fn decode(
        &self,
        input_ids: &Tensor,
        encoder_hidden_states: &Tensor,
        encoder_attention_mask: &Tensor,
        cache: Option<KvCache>,
        train: bool,
    ) -> Result<(Tensor, KvCache)> {
        let mut hidden = self.embed(input_ids, train)?;
        let kind = hidden.kind();
        let device = input_ids.device();
        let past = cache.as_ref().map_or(0, KvCache::past_len);
        let (b, t) = input_ids.size2()?;
        let key_len = past + t;
        let key_mask = match cache.as_ref().and_then(|c| c.key_mask.as_ref()) {
            Some(m) => Some(Tensor::f_cat(
                &[m, &Tensor::f_ones([b, t], (Kind::Int64, device))?],
                1,
            )?),
            None => None,
        };
        let positions = Tensor::f_arange_start(past, key_len, (Kind::Int64, device))?;
        // Causal mask: query at absolute position p sees keys 0..=p.
        let keys = Tensor::f_arange(key_len, (Kind::Int64, device))?.f_unsqueeze(0)?;
        let causal = keys
            .f_gt_tensor(&positions.f_unsqueeze(1)?)?
            .f_to_kind(kind)?
            .f_mul_scalar(dtype_min(kind))?;
        let mut self_bias = self
            .position_bias(&positions, key_len)?
            .f_add(&causal.f_unsqueeze(0)?.f_unsqueeze(0)?)?;
        if let Some(m) = &key_mask {
            // Padding keys of a joined state, `[B, 1, 1, key_len]`.
            self_bias = self_bias.f_add(&extended_mask(m, kind)?)?;
        }
        // Cross-attention has no position bias: only the encoder padding mask.
        let cross_bias = extended_mask(encoder_attention_mask, kind)?;
        let ctx = DecoderContext {
            self_bias: &self_bias,
            cross_bias: &cross_bias,
            encoder_hidden_states,
            train,
        };
        let mut past_layers = cache.map(|c| c.layers.into_iter());
        let mut layers = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let past = past_layers.as_mut().and_then(Iterator::next);
            let (h, layer) = block.forward_decoder(&hidden, past, &ctx)?;
            hidden = h;
            layers.push(layer);
        }
        let hidden = self
            .final_layer_norm
            .forward(&hidden)?
            .f_dropout(self.dropout, train)?;
        Ok((hidden, KvCache { layers, key_mask }))
    }
}
