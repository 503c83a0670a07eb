//! `T5Attention` and the two attention sub-layers (`T5LayerSelfAttention`,
//! `T5LayerCrossAttention`), mirroring transformers' `modeling_t5.py` (4.57).
//!
//! T5 specifics: no 1/sqrt(d_kv) scaling of the scores (it is folded into the initialisation of
//! `q`), a learned relative position bias that only the first block of each stack owns (the other
//! blocks reuse the bias it computed, padding mask included), and the softmax computed in fp32.

use super::layers::{var, Ctx, Linear, T5LayerNorm};
use crate::error::Result;
use tch::nn::Path;
use tch::{Kind, Tensor};

/// transformers' `T5Attention._relative_position_bucket`: maps `memory - context` positions to
/// bucket ids. Half the buckets are exact distances, the other half logarithmically wider up to
/// `max_distance`; bidirectional (encoder) attention splits the buckets between the two signs,
/// causal (decoder) attention only sees the past. Computed with the same fp32 tensor ops as the
/// Python code so that bucket boundaries round identically.
pub(crate) fn relative_position_bucket(
    relative_position: &Tensor,
    bidirectional: bool,
    num_buckets: i64,
    max_distance: i64,
) -> Result<Tensor> {
    let mut num_buckets = num_buckets;
    let (buckets, position) = if bidirectional {
        num_buckets /= 2;
        (
            relative_position
                .f_gt(0)?
                .f_to_kind(Kind::Int64)?
                .f_mul_scalar(num_buckets)?,
            relative_position.f_abs()?,
        )
    } else {
        (
            relative_position.f_zeros_like()?,
            relative_position.f_clamp_max(0)?.f_neg()?,
        )
    };
    let max_exact = num_buckets / 2;
    let is_small = position.f_lt(max_exact)?;
    let large = position
        .f_to_kind(Kind::Float)?
        .f_div_scalar(max_exact as f64)?
        .f_log()?
        .f_div_scalar((max_distance as f64 / max_exact as f64).ln())?
        .f_mul_scalar((num_buckets - max_exact) as f64)?;
    let large = large
        .f_to_kind(Kind::Int64)?
        .f_add_scalar(max_exact)?
        .f_clamp_max(num_buckets - 1)?;
    Ok(buckets.f_add(&position.f_where_self(&is_small, &large)?)?)
}

/// `T5Attention`: multi-head attention with `num_heads` heads of `d_kv` (not d_model/num_heads).
#[derive(Debug)]
pub(crate) struct T5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// `[num_buckets, num_heads]`, only in block 0.
    relative_attention_bias: Option<Tensor>,
    n_heads: i64,
    d_kv: i64,
    num_buckets: i64,
    max_distance: i64,
    bidirectional: bool,
    dropout: f64,
}

impl T5Attention {
    pub(crate) fn new(p: Path, cfg: &Ctx<'_>, has_bias: bool, is_decoder: bool) -> Result<Self> {
        let (d, inner) = (cfg.d_model, cfg.inner_dim());
        let relative_attention_bias = match has_bias {
            true => Some(var(
                &(&p / "relative_attention_bias"),
                &[cfg.relative_attention_num_buckets, cfg.num_heads],
                cfg,
            )?),
            false => None,
        };
        Ok(T5Attention {
            q: Linear::new(&p / "q", d, inner, cfg)?,
            k: Linear::new(&p / "k", d, inner, cfg)?,
            v: Linear::new(&p / "v", d, inner, cfg)?,
            o: Linear::new(&p / "o", inner, d, cfg)?,
            relative_attention_bias,
            n_heads: cfg.num_heads as i64,
            d_kv: cfg.d_kv as i64,
            num_buckets: cfg.relative_attention_num_buckets as i64,
            max_distance: cfg.relative_attention_max_distance as i64,
            bidirectional: !is_decoder,
            dropout: cfg.dropout_rate,
        })
    }

    /// `[B, L, H*d_kv]` → `[B, H, L, d_kv]`.
    fn heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, _, _) = xs.size3()?;
        Ok(xs
            .f_view([b, -1, self.n_heads, self.d_kv])?
            .f_transpose(1, 2)?)
    }

    /// Keys and values of `states`, each `[B, H, L, d_kv]` (the cache layout).
    pub(crate) fn key_value(&self, states: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.heads(&self.k.forward(states)?)?,
            self.heads(&self.v.forward(states)?)?,
        ))
    }

    /// `compute_bias`: `[1, H, T, K]` for queries at absolute positions `query_positions` (i64
    /// `[T]`) over keys `0..key_len`. `None` when this layer has no bias table (blocks > 0).
    pub(crate) fn compute_bias(
        &self,
        query_positions: &Tensor,
        key_len: i64,
    ) -> Result<Option<Tensor>> {
        let Some(table) = self.relative_attention_bias.as_ref() else {
            return Ok(None);
        };
        let memory =
            Tensor::f_arange(key_len, (Kind::Int64, query_positions.device()))?.f_unsqueeze(0)?;
        let relative = memory.f_sub(&query_positions.f_unsqueeze(1)?)?;
        let buckets = relative_position_bucket(
            &relative,
            self.bidirectional,
            self.num_buckets,
            self.max_distance,
        )?;
        let values = Tensor::f_embedding(table, &buckets, -1, false, false)?;
        Ok(Some(values.f_permute([2, 0, 1])?.f_unsqueeze(0)?))
    }

    /// Attention of `hidden` `[B, T, D]` over `key`/`value` `[B, H, K, d_kv]`; `bias` is the
    /// position bias with the mask already added (broadcastable to `[B, H, T, K]`).
    pub(crate) fn forward(
        &self,
        hidden: &Tensor,
        key: &Tensor,
        value: &Tensor,
        bias: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (b, _, _) = hidden.size3()?;
        let query = self.heads(&self.q.forward(hidden)?)?;
        // No 1/sqrt(d_kv): T5 folds it into the initialisation of `q`.
        let mut scores = query.f_matmul(&key.f_transpose(3, 2)?)?;
        // In place, as transformers does, so the scores keep their dtype under autocast.
        let _ = scores.f_add_(bias)?;
        let weights = scores
            .f_to_kind(Kind::Float)?
            .f_softmax(-1, Kind::Float)?
            .f_to_kind(scores.kind())?
            .f_dropout(self.dropout, train)?;
        let out = weights
            .f_matmul(value)?
            .f_transpose(1, 2)?
            .f_contiguous()?
            .f_view([b, -1, self.n_heads * self.d_kv])?;
        self.o.forward(&out)
    }
}

/// `T5LayerSelfAttention`: pre-norm self-attention with a residual connection.
#[derive(Debug)]
pub(crate) struct T5LayerSelfAttention {
    pub(crate) attention: T5Attention,
    layer_norm: T5LayerNorm,
    dropout: f64,
    is_decoder: bool,
}

impl T5LayerSelfAttention {
    pub(crate) fn new(p: Path, cfg: &Ctx<'_>, has_bias: bool, is_decoder: bool) -> Result<Self> {
        Ok(T5LayerSelfAttention {
            attention: T5Attention::new(&p / "SelfAttention", cfg, has_bias, is_decoder)?,
            layer_norm: T5LayerNorm::new(&p / "layer_norm", cfg)?,
            dropout: cfg.dropout_rate,
            is_decoder,
        })
    }

    /// Returns the new hidden states and this layer's keys and values (past ones first).
    pub(crate) fn forward(
        &self,
        hidden: &Tensor,
        bias: &Tensor,
        past: Option<(&Tensor, &Tensor)>,
        train: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let normed = self.layer_norm.forward(hidden)?;
        let (mut key, mut value) = self.attention.key_value(&normed)?;
        if let Some((past_key, past_value)) = past {
            key = Tensor::f_cat(&[past_key, &key], 2)?;
            value = Tensor::f_cat(&[past_value, &value], 2)?;
        } else if self.is_decoder {
            // The decoder's keys and values live in the cache, contiguous `[B, H, T, d_kv]`
            // (transformers' DynamicCache concatenates even on the first call). The layout
            // changes how the matmul rounds, so we keep transformers' to match it bit for bit.
            key = key.f_contiguous()?;
            value = value.f_contiguous()?;
        }
        let out = self.attention.forward(&normed, &key, &value, bias, train)?;
        let hidden = hidden.f_add(&out.f_dropout(self.dropout, train)?)?;
        Ok((hidden, key, value))
    }
}

/// `T5LayerCrossAttention`: pre-norm attention over the encoder output. Only the queries are
/// normalised; keys and values come straight from the encoder's last hidden state.
#[derive(Debug)]
pub(crate) struct T5LayerCrossAttention {
    pub(crate) attention: T5Attention,
    layer_norm: T5LayerNorm,
    dropout: f64,
}

impl T5LayerCrossAttention {
    pub(crate) fn new(p: Path, cfg: &Ctx<'_>) -> Result<Self> {
        Ok(T5LayerCrossAttention {
            attention: T5Attention::new(&p / "EncDecAttention", cfg, false, true)?,
            layer_norm: T5LayerNorm::new(&p / "layer_norm", cfg)?,
            dropout: cfg.dropout_rate,
        })
    }

    pub(crate) fn forward(
        &self,
        hidden: &Tensor,
        key: &Tensor,
        value: &Tensor,
        bias: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let normed = self.layer_norm.forward(hidden)?;
        let out = self.attention.forward(&normed, key, value, bias, train)?;
        Ok(hidden.f_add(&out.f_dropout(self.dropout, train)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(rel: &[i64], bidirectional: bool, n: i64, max: i64) -> Vec<i64> {
        let t = Tensor::from_slice(rel);
        Vec::<i64>::try_from(relative_position_bucket(&t, bidirectional, n, max).unwrap()).unwrap()
    }

    #[test]
    fn buckets_match_transformers() {
        // Values printed by transformers 4.57's T5Attention._relative_position_bucket.
        let rel = [
            -200, -128, -64, -20, -9, -8, -7, -1, 0, 1, 7, 8, 9, 20, 64, 128, 200,
        ];
        assert_eq!(
            buckets(&rel, true, 32, 128),
            [15, 15, 14, 10, 8, 8, 7, 1, 0, 17, 23, 24, 24, 26, 30, 31, 31]
        );
        assert_eq!(
            buckets(&rel, false, 32, 128),
            [31, 31, 26, 17, 9, 8, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            buckets(&rel, true, 8, 20),
            [3, 3, 3, 3, 3, 3, 3, 1, 0, 5, 7, 7, 7, 7, 7, 7, 7]
        );
        assert_eq!(
            buckets(&rel, false, 8, 20),
            [7, 7, 7, 7, 6, 5, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
