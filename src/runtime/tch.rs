//! The tch backend (feature `train`): the eager libtorch model behind the same trait, used as the
//! reference, for evaluating checkpoints without exporting them, and for the trainer's dev set.

use super::{CachePadding, EncoderInput, JoinPads, Logits, Seq2Seq};
use crate::error::{Error, Result};
use crate::model::{DecoderInput, KvCache, LayerCache, T5};
use std::borrow::Borrow;
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind, Tensor};

/// The tch model behind [`Seq2Seq`]: a checkpoint it owns (`M = Mutex<T5>`), or a model that
/// stays someone else's (`M = &Mutex<T5>`, e.g. the one being trained, decoded without a copy).
///
/// tch tensors are Send but not Sync, so the model sits in a mutex and calls are serialised
/// (libtorch parallelises inside each call).
pub struct TchSeq2Seq<M = Mutex<T5>> {
    t5: M,
    device: Device,
}

/// Decoding state: encoder output and mask, the model's explicit KV cache, and on the host the
/// cache's length and each row's left padding (the cache's `key_mask` where there is any).
pub struct TchState {
    rows: usize,
    hidden: Tensor,
    mask: Tensor,
    cache: Option<KvCache>,
    padding: CachePadding,
}

impl TchState {
    /// The length of the self-attention cache (positions, padding included) as its tensors
    /// hold it: 0 before the first step.
    pub fn cache_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.past_len() as usize)
    }
}

impl TchSeq2Seq {
    /// Open a Hugging Face checkpoint directory on `device` (fp32).
    pub fn load(dir: &crate::ModelDir, device: Device) -> Result<Self> {
        Self::load_with_compute(dir, device, None)
    }

    /// As [`TchSeq2Seq::load`], with the matmuls in `compute` precision (`Some(BFloat16)`: fp32
    /// weights, bf16 matmuls, as training's mixed precision).
    pub fn load_with_compute(
        dir: &crate::ModelDir,
        device: Device,
        compute: Option<Kind>,
    ) -> Result<Self> {
        let t5 =
            T5::from_weights_with_compute(&dir.config, &dir.weights, device, Kind::Float, compute)?;
        Ok(TchSeq2Seq {
            t5: Mutex::new(t5),
            device,
        })
    }

    /// Take a model already in memory.
    pub fn from_model(t5: T5) -> Self {
        let device = t5.device();
        TchSeq2Seq {
            t5: Mutex::new(t5),
            device,
        }
    }
}

impl<'a> TchSeq2Seq<&'a Mutex<T5>> {
    /// Decode with a model that stays its owner's (the trainer keeps its model in a mutex).
    pub fn borrowing(t5: &'a Mutex<T5>) -> Self {
        let device = lock(t5).device();
        TchSeq2Seq { t5, device }
    }
}

impl<M: Borrow<Mutex<T5>>> TchSeq2Seq<M> {
    fn lock(&self) -> MutexGuard<'_, T5> {
        lock(self.t5.borrow())
    }
}

/// The model behind `t5`; a panic elsewhere while it was held leaves no half-done state in it
/// (every call only reads the parameters).
fn lock(t5: &Mutex<T5>) -> MutexGuard<'_, T5> {
    t5.lock().unwrap_or_else(|p| p.into_inner())
}

fn ids(data: &[i64], rows: usize, cols: usize, device: Device) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(data)?
        .f_view([rows as i64, cols as i64])?
        .f_to_device(device)?)
}

impl<M: Borrow<Mutex<T5>> + Send + Sync> Seq2Seq for TchSeq2Seq<M> {
    type State = TchState;

    fn encode(&self, input: &EncoderInput) -> Result<TchState> {
        let _g = tch::no_grad_guard();
        let input_ids = ids(&input.ids, input.batch, input.len, self.device)?;
        let mask = ids(&input.mask, input.batch, input.len, self.device)?;
        let hidden = self.lock().model().encode(&input_ids, &mask, false)?;
        Ok(TchState {
            rows: input.batch,
            hidden,
            mask,
            cache: None,
            padding: CachePadding::new(input.batch),
        })
    }

    fn step(&self, state: TchState, tokens: &[i64]) -> Result<(Logits, TchState)> {
        if tokens.len() != state.rows {
            return Err(Error::input(
                "tokens",
                format!("{} tokens for {} rows", tokens.len(), state.rows),
            ));
        }
        let _g = tch::no_grad_guard();
        let input_ids = ids(tokens, state.rows, 1, self.device)?;
        let out = self.lock().model().decode(
            DecoderInput {
                input_ids: &input_ids,
                encoder_hidden_states: &state.hidden,
                encoder_attention_mask: &state.mask,
                cache: state.cache,
            },
            false,
        )?;
        let logits = last_logits(&out.logits, state.rows)?;
        Ok((
            logits,
            TchState {
                rows: state.rows,
                hidden: state.hidden,
                mask: state.mask,
                cache: Some(out.cache),
                padding: state.padding.stepped(),
            },
        ))
    }

    fn select(&self, state: TchState, rows: &[usize]) -> Result<TchState> {
        if super::is_identity(rows, state.rows) {
            return Ok(state);
        }
        super::check_rows(rows, state.rows)?;
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let index = Tensor::f_from_slice(&idx)?.f_to_device(self.device)?;
        // Leading cache columns that are padding in every kept row are dropped.
        let (padding, trim) = state.padding.select(rows);
        let cache = match state.cache {
            Some(c) => Some(self.with_key_mask(trimmed(c.index_select(&index)?, trim)?, &padding)?),
            None => None,
        };
        Ok(TchState {
            rows: rows.len(),
            hidden: state.hidden.f_index_select(0, &index)?,
            mask: state.mask.f_index_select(0, &index)?,
            cache,
            padding,
        })
    }

    fn concat(&self, first: TchState, second: TchState) -> Result<TchState> {
        let export = std::path::Path::new("tch model");
        super::check_join(&first.padding, &second.padding, true, export)?;
        let (padding, left) = first.padding.join(&second.padding);
        let (_, right) = super::encoder_join(
            first.mask.size2()?.1 as usize,
            second.mask.size2()?.1 as usize,
        );
        let (Some(a), Some(b)) = (first.cache, second.cache) else {
            return Err(Error::input(
                "decoding state",
                "a stepped state without a cache",
            ));
        };
        let cache = self.with_key_mask(join_caches(a, b, left, right)?, &padding)?;
        let pad_right = |x: &Tensor, n: usize, axis_from_end: usize| {
            let mut spec = vec![0i64; 2 * axis_from_end + 2];
            spec[2 * axis_from_end + 1] = n as i64;
            x.f_constant_pad_nd(spec.as_slice())
        };
        let hidden = Tensor::f_cat(
            &[
                pad_right(&first.hidden, right.first, 1)?,
                pad_right(&second.hidden, right.second, 1)?,
            ],
            0,
        )?;
        let mask = Tensor::f_cat(
            &[
                pad_right(&first.mask, right.first, 0)?,
                pad_right(&second.mask, right.second, 0)?,
            ],
            0,
        )?;
        Ok(TchState {
            rows: first.rows + second.rows,
            hidden,
            mask,
            cache: Some(cache),
            padding,
        })
    }

    fn joins_any_position(&self) -> bool {
        true
    }

    fn rows(&self, state: &TchState) -> usize {
        state.rows
    }

    fn describe(&self) -> String {
        format!("tch (libtorch) {:?}", self.device)
    }
}

impl<M: Borrow<Mutex<T5>>> TchSeq2Seq<M> {
    /// `cache` with the key mask of `padding` (none where no row has padding: the decoder then
    /// runs exactly as without joining).
    fn with_key_mask(&self, mut cache: KvCache, padding: &CachePadding) -> Result<KvCache> {
        cache.key_mask = match padding.padded() {
            true => Some(ids(
                &padding.cache_mask(),
                padding.pads.len(),
                padding.len,
                self.device,
            )?),
            false => None,
        };
        Ok(cache)
    }
}

/// `cache` without the first `trim` self-attention positions.
fn trimmed(mut cache: KvCache, trim: usize) -> Result<KvCache> {
    if trim == 0 {
        return Ok(cache);
    }
    for l in &mut cache.layers {
        let len = l.self_key.size()[2];
        let keep = len - trim as i64;
        l.self_key = l.self_key.f_narrow(2, trim as i64, keep)?.f_contiguous()?;
        l.self_value = l
            .self_value
            .f_narrow(2, trim as i64, keep)?
            .f_contiguous()?;
    }
    Ok(cache)
}

/// Two caches joined on the batch axis: self-attention keys/values padded with zeros on the
/// left by `left`, cross-attention ones on the right by `right` (the key mask is set apart).
fn join_caches(a: KvCache, b: KvCache, left: JoinPads, right: JoinPads) -> Result<KvCache> {
    // constant_pad_nd's spec runs from the last axis: [d before, d after, len before, len after].
    let pad = |x: &Tensor, before: usize, after: usize| {
        x.f_constant_pad_nd([0, 0, before as i64, after as i64])
    };
    let join = |x: &Tensor, y: &Tensor, xp: (usize, usize), yp: (usize, usize)| {
        Tensor::f_cat(&[pad(x, xp.0, xp.1)?, pad(y, yp.0, yp.1)?], 0)
    };
    let (sa, sb) = ((left.first, 0), (left.second, 0));
    let (ca, cb) = ((0, right.first), (0, right.second));
    let layers = a
        .layers
        .iter()
        .zip(&b.layers)
        .map(|(x, y)| {
            Ok(LayerCache {
                self_key: join(&x.self_key, &y.self_key, sa, sb)?,
                self_value: join(&x.self_value, &y.self_value, sa, sb)?,
                cross_key: join(&x.cross_key, &y.cross_key, ca, cb)?,
                cross_value: join(&x.cross_value, &y.cross_value, ca, cb)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(KvCache {
        layers,
        key_mask: None,
    })
}

/// The fp32 logits of the last position of `[rows, steps, vocab]` decoder logits, on the CPU.
fn last_logits(logits: &Tensor, rows: usize) -> Result<Logits> {
    let last = logits
        .f_select(1, -1)?
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?;
    let vocab = last.size().last().copied().unwrap_or(0) as usize;
    let data = Vec::<f32>::try_from(last.f_view([-1])?)?;
    Ok(Logits { data, rows, vocab })
}
