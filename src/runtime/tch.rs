//! The tch backend (feature `train`): the eager libtorch model behind the same trait, used as the
//! reference, for evaluating checkpoints without exporting them, and for the trainer's dev set.

use super::{EncoderInput, Logits, Seq2Seq};
use crate::error::{Error, Result};
use crate::model::{DecoderInput, KvCache, T5};
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

/// Decoding state: encoder output and mask, and the model's explicit KV cache.
pub struct TchState {
    rows: usize,
    hidden: Tensor,
    mask: Tensor,
    cache: Option<KvCache>,
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
            },
        ))
    }

    fn select(&self, state: TchState, rows: &[usize]) -> Result<TchState> {
        if super::is_identity(rows, state.rows) {
            return Ok(state);
        }
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let index = Tensor::f_from_slice(&idx)?.f_to_device(self.device)?;
        let cache = match state.cache {
            Some(c) => Some(c.index_select(&index)?),
            None => None,
        };
        Ok(TchState {
            rows: rows.len(),
            hidden: state.hidden.f_index_select(0, &index)?,
            mask: state.mask.f_index_select(0, &index)?,
            cache,
        })
    }

    fn rows(&self, state: &TchState) -> usize {
        state.rows
    }

    fn describe(&self) -> String {
        format!("tch (libtorch) {:?}", self.device)
    }
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
