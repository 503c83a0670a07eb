//! The tch backend (feature `train`): the eager libtorch model behind the same trait, used as the
//! reference and for evaluating checkpoints without exporting them.

use super::{EncoderInput, Logits, Seq2Seq};
use crate::error::{Error, Result};
use crate::model::{DecoderInput, KvCache, T5};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// A checkpoint loaded into the tch model.
pub struct TchSeq2Seq {
    // tch tensors are Send but not Sync; calls are serialised (libtorch parallelises inside).
    t5: Mutex<T5>,
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
        Ok(TchSeq2Seq {
            t5: Mutex::new(T5::from_model_dir(dir, device, Kind::Float)?),
            device,
        })
    }

    /// Wrap a model already in memory (e.g. the one being trained).
    pub fn from_model(t5: T5) -> Self {
        let device = t5.device();
        TchSeq2Seq {
            t5: Mutex::new(t5),
            device,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, T5> {
        self.t5.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ids(data: &[i64], rows: usize, cols: usize, device: Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(data)
        .f_view([rows as i64, cols as i64])?
        .to_device(device))
}

impl Seq2Seq for TchSeq2Seq {
    type State = TchState;

    fn encode(&self, input: &EncoderInput) -> Result<TchState> {
        let _g = tch::no_grad_guard();
        let input_ids = ids(&input.ids, input.batch, input.len, self.device)?;
        let mask = ids(&input.mask, input.batch, input.len, self.device)?;
        let hidden = self.lock().model().encode(&input_ids, &mask, false);
        Ok(TchState {
            rows: input.batch,
            hidden,
            mask,
            cache: None,
        })
    }

    fn step(&self, state: TchState, tokens: &[i64]) -> Result<(Logits, TchState)> {
        if tokens.len() != state.rows {
            return Err(Error::Invalid(format!(
                "{} tokens for {} rows",
                tokens.len(),
                state.rows
            )));
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
        );
        let last = out
            .logits
            .select(1, -1)
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .contiguous();
        let vocab = last.size().last().copied().unwrap_or(0) as usize;
        let data = Vec::<f32>::try_from(last.view([-1]))?;
        Ok((
            Logits {
                data,
                rows: state.rows,
                vocab,
            },
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
        let index = Tensor::from_slice(&idx).to_device(self.device);
        Ok(TchState {
            rows: rows.len(),
            hidden: state.hidden.index_select(0, &index),
            mask: state.mask.index_select(0, &index),
            cache: state.cache.map(|c| c.index_select(&index)),
        })
    }

    fn rows(&self, state: &TchState) -> usize {
        state.rows
    }

    fn describe(&self) -> String {
        format!("tch (libtorch) {:?}", self.device)
    }
}
