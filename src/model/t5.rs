//! `T5ForConditionalGeneration`, and [`T5`]: the model together with the `VarStore` that owns its
//! parameters, loaded from and saved to Hugging Face's layout.

use super::layers::{linear, var, Ctx, Linear};
use super::stack::{KvCache, T5Stack};
use crate::checkpoint::{expected_tensors, OwnedTensor, Weights};
use crate::config::T5Config;
use crate::error::{Error, Result};
use safetensors::Dtype;
use std::collections::BTreeMap;
use tch::nn::{Path, VarStore};
use tch::{Device, Kind, Tensor};

/// The decoder's inputs for one call: new token ids after whatever `cache` holds.
#[derive(Debug)]
pub struct DecoderInput<'a> {
    /// `[B, T]` i64: the new decoder positions (all target positions when there is no cache).
    pub input_ids: &'a Tensor,
    /// `[B, S, D]`: the encoder's last hidden state.
    pub encoder_hidden_states: &'a Tensor,
    /// `[B, S]` i64: 1 for real encoder tokens, 0 for padding.
    pub encoder_attention_mask: &'a Tensor,
    /// The cache returned by the previous call, or `None` on the first call.
    pub cache: Option<KvCache>,
}

/// The decoder's outputs: logits of the new positions and the grown cache.
#[derive(Debug)]
pub struct DecoderOutput {
    /// `[B, T, vocab_size]`.
    pub logits: Tensor,
    pub cache: KvCache,
}

/// Cross-entropy of a batch, summed over its target tokens (so micro-batches can be accumulated
/// into a token-weighted mean over the effective batch).
#[derive(Debug)]
pub struct LossOutput {
    /// Scalar: the summed negative log-likelihood of the non-ignored labels.
    pub sum: Tensor,
    /// Number of labels that count (not -100).
    pub tokens: i64,
}

/// `T5ForConditionalGeneration`: shared embeddings, encoder, decoder and LM head.
#[derive(Debug)]
pub struct T5ForConditionalGeneration {
    shared: Tensor,
    encoder: T5Stack,
    decoder: T5Stack,
    /// `None` when the LM head is tied to `shared` (T5 v1.0).
    lm_head: Option<Linear>,
    compute: Option<Kind>,
    d_model: f64,
    decoder_start_id: i64,
    pad_id: i64,
}

impl T5ForConditionalGeneration {
    /// Builds the module tree under `p` (normally the var store's root); parameter names are the
    /// Hugging Face names by construction.
    pub fn new(p: Path, cfg: &T5Config) -> Result<Self> {
        Self::with_compute(p, cfg, None)
    }

    /// As [`T5ForConditionalGeneration::new`], with the matmuls in `compute` precision (e.g.
    /// `Some(Kind::BFloat16)`: mixed precision with fp32 parameters).
    pub fn with_compute(p: Path, cfg: &T5Config, compute: Option<Kind>) -> Result<Self> {
        Self::build(p, cfg, compute, true)
    }

    /// The module tree, its weights drawn (`draw`) or zero until a checkpoint's are copied in.
    fn build(p: Path, cfg: &T5Config, compute: Option<Kind>, draw: bool) -> Result<Self> {
        let ctx = Ctx { cfg, compute, draw };
        let cfg = &ctx;
        let shared = var(&(&p / "shared"), &[cfg.vocab_size, cfg.d_model], cfg)?;
        let lm_head = match cfg.tie_word_embeddings {
            false => Some(Linear::new(
                &p / "lm_head",
                cfg.d_model,
                cfg.vocab_size,
                cfg,
            )?),
            true => None,
        };
        Ok(T5ForConditionalGeneration {
            compute,
            encoder: T5Stack::new(&p / "encoder", cfg, &shared, false)?,
            decoder: T5Stack::new(&p / "decoder", cfg, &shared, true)?,
            shared,
            lm_head,
            d_model: cfg.d_model as f64,
            decoder_start_id: i64::from(cfg.decoder_start_id()),
            pad_id: i64::from(cfg.pad_id()),
        })
    }

    /// The encoder's last hidden state `[B, S, D]`.
    pub fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        self.encoder.encode(input_ids, attention_mask, train)
    }

    /// Decoder and LM head on the new positions of `input`, returning the grown cache.
    pub fn decode(&self, input: DecoderInput<'_>, train: bool) -> Result<DecoderOutput> {
        let (hidden, cache) = self.decoder.decode(
            input.input_ids,
            input.encoder_hidden_states,
            input.encoder_attention_mask,
            input.cache,
            train,
        )?;
        Ok(DecoderOutput {
            logits: self.lm_head(&hidden)?,
            cache,
        })
    }

    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            // Tied embeddings: rescale before projecting on the vocabulary, as Mesh TensorFlow
            // does (transformers' T5ForConditionalGeneration.forward).
            None => linear(
                &hidden.f_mul_scalar(self.d_model.powf(-0.5))?,
                &self.shared,
                self.compute,
            ),
        }
    }

    /// Full forward pass without cache: logits `[B, T, V]` for `decoder_input_ids`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        decoder_input_ids: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let encoder_hidden_states = self.encode(input_ids, attention_mask, train)?;
        let out = self.decode(
            DecoderInput {
                input_ids: decoder_input_ids,
                encoder_hidden_states: &encoder_hidden_states,
                encoder_attention_mask: attention_mask,
                cache: None,
            },
            train,
        )?;
        Ok(out.logits)
    }

    /// `_shift_right`: the decoder input for `labels` `[B, T]` (-100 = ignored): the start token
    /// followed by the labels, with ignored positions replaced by the pad id.
    pub fn shift_right(&self, labels: &Tensor) -> Result<Tensor> {
        let (b, t) = labels.size2()?;
        let start = Tensor::f_full(
            [b, 1],
            self.decoder_start_id,
            (Kind::Int64, labels.device()),
        )?;
        let body = labels.f_narrow(1, 0, t - 1)?;
        let shifted = Tensor::f_cat(&[&start, &body], 1)?;
        Ok(shifted.f_masked_fill(&shifted.f_eq(-100)?, self.pad_id)?)
    }

    /// Summed cross-entropy of `labels` (-100 ignored), as `CrossEntropyLoss(ignore_index=-100)`
    /// but summed rather than averaged.
    pub fn loss(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> Result<LossOutput> {
        let decoder_input_ids = self.shift_right(labels)?;
        let logits = self.forward(input_ids, attention_mask, &decoder_input_ids, train)?;
        let (_, _, v) = logits.size3()?;
        let sum = logits
            .f_view([-1, v])?
            .f_to_kind(Kind::Float)?
            .f_cross_entropy_loss::<Tensor>(
                &labels.f_view([-1])?,
                None,
                tch::Reduction::Sum,
                -100,
                0.0,
            )?;
        let tokens = labels.f_ne(-100)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        Ok(LossOutput { sum, tokens })
    }
}

/// A T5 with its parameters: the module tree and the `VarStore` that owns the tensors.
pub struct T5 {
    pub config: T5Config,
    vs: VarStore,
    model: T5ForConditionalGeneration,
}

impl std::fmt::Debug for T5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5")
            .field("device", &self.vs.device())
            .field("parameters", &self.vs.len())
            .finish()
    }
}

fn st_kind(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        _ => None,
    }
}

impl T5 {
    /// A randomly initialised T5 (transformers' initialisation) on `device`, in fp32.
    pub fn new(config: &T5Config, device: Device) -> Result<Self> {
        Self::with_compute(config, device, None)
    }

    /// As [`T5::new`], with the matmuls in `compute` precision (fp32 parameters).
    pub fn with_compute(config: &T5Config, device: Device, compute: Option<Kind>) -> Result<Self> {
        Self::built(config, device, compute, true)
    }

    /// A T5 on `device` whose weights are drawn (`draw`) or zero until a checkpoint's are loaded.
    fn built(config: &T5Config, device: Device, compute: Option<Kind>, draw: bool) -> Result<Self> {
        let vs = VarStore::new(device);
        let model = T5ForConditionalGeneration::build(vs.root(), config, compute, draw)?;
        Ok(T5 {
            config: config.clone(),
            vs,
            model,
        })
    }

    /// A T5 with the weights of a checkpoint, converted to `kind` (fp32 for training).
    pub fn from_weights(
        config: &T5Config,
        weights: &Weights,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        Self::from_weights_with_compute(config, weights, device, kind, None)
    }

    /// As [`T5::from_weights`], with the matmuls in `compute` precision.
    pub fn from_weights_with_compute(
        config: &T5Config,
        weights: &Weights,
        device: Device,
        kind: Kind,
        compute: Option<Kind>,
    ) -> Result<Self> {
        // nothing drawn: every parameter is copied from `weights` below
        let mut t5 = T5::built(config, device, compute, false)?;
        if kind != Kind::Float {
            t5.convert_parameters(kind)?;
        }
        t5.load_weights(weights)?;
        Ok(t5)
    }

    /// Every parameter converted to `kind` in place, through libtorch's fallible calls (tch's
    /// `VarStore::set_kind` panics on an allocation failure, e.g. out of device memory).
    fn convert_parameters(&mut self, kind: Kind) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (_, mut var) in self.vs.variables() {
            let converted = var.f_to_kind(kind)?;
            var.f_set_data(&converted)?;
        }
        Ok(())
    }

    /// Open a model directory's weights into a new T5.
    pub fn from_model_dir(dir: &crate::ModelDir, device: Device, kind: Kind) -> Result<Self> {
        T5::from_weights(&dir.config, &dir.weights, device, kind)
    }

    /// Copy every parameter from `weights` (checked against the config when it was opened).
    pub fn load_weights(&mut self, weights: &Weights) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (name, var) in self.named_parameters() {
            let raw = weights.raw(&name)?;
            let kind = st_kind(raw.dtype).ok_or_else(|| Error::Tensor {
                path: "model.safetensors".into(),
                name: name.clone(),
                msg: format!("dtype {:?} is not a float type", raw.dtype),
            })?;
            let shape: Vec<i64> = raw.shape.iter().map(|&d| d as i64).collect();
            if shape != var.size() {
                return Err(Error::Tensor {
                    path: "model.safetensors".into(),
                    name,
                    msg: format!("shape {:?}, expected {:?}", shape, var.size()),
                });
            }
            let src = Tensor::f_from_data_size(raw.bytes, &shape, kind)?;
            let mut dst = var;
            dst.f_copy_(&src.f_to_kind(dst.kind())?)?;
        }
        Ok(())
    }

    /// The module tree.
    pub fn model(&self) -> &T5ForConditionalGeneration {
        &self.model
    }

    /// The var store (device, kind, trainable variables).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Mutable access to the var store (e.g. to change its kind).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Every parameter with its Hugging Face name, sorted by name.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The parameters as tensors to write, in their own dtype, with Hugging Face names in the
    /// order of [`expected_tensors`].
    pub fn state_dict(&self) -> Result<BTreeMap<String, OwnedTensor>> {
        let vars = self.vs.variables();
        let mut out = BTreeMap::new();
        for spec in expected_tensors(&self.config) {
            let t = vars.get(&spec.name).ok_or_else(|| Error::Tensor {
                path: "<model>".into(),
                name: spec.name.clone(),
                msg: "no such parameter in the model".into(),
            })?;
            out.insert(spec.name, tensor_to_owned(t)?);
        }
        Ok(out)
    }

    /// Write `model.safetensors` (atomically) in Hugging Face's layout.
    pub fn save_safetensors(&self, path: &std::path::Path) -> Result<()> {
        crate::checkpoint::save_safetensors(path, &self.state_dict()?)
    }
}

/// A tensor's values as an [`OwnedTensor`] on the CPU, keeping fp32/fp16/bf16.
pub fn tensor_to_owned(t: &Tensor) -> Result<OwnedTensor> {
    let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let (dtype, kind) = match t.kind() {
        Kind::Half => (Dtype::F16, Kind::Half),
        Kind::BFloat16 => (Dtype::BF16, Kind::BFloat16),
        _ => (Dtype::F32, Kind::Float),
    };
    let t = t.f_to_kind(kind)?;
    let n = t.numel() * kind.elt_size_in_bytes();
    let mut bytes = vec![0u8; n];
    t.f_copy_data_u8(&mut bytes, t.numel())?;
    Ok(OwnedTensor {
        dtype,
        shape,
        bytes,
    })
}
