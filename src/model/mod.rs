//! T5 in tch (feature `train`), mirroring transformers' `modeling_t5.py` module by module:
//! `T5LayerNorm`, `T5DenseActDense`/`T5DenseGatedActDense` ([`layers`]), `T5Attention` and its
//! sub-layers ([`attention`]), `T5Block`/`T5Stack` ([`stack`]) and `T5ForConditionalGeneration`
//! ([`t5`]). Parameter names are composed from the module path (`p / "encoder" / "block" / i`), so
//! they are Hugging Face's names by construction and checkpoints load and save without renaming.
//!
//! The decoder's KV cache is an explicit value ([`KvCache`]) passed in and returned, laid out as
//! optimum's ONNX `past_key_values` (`[B, H, T, d_kv]` per layer for self- and cross-attention).

pub(crate) mod attention;
pub mod device;
pub(crate) mod layers;
pub(crate) mod stack;
pub mod t5;

pub use device::{cuda_device, resolve_device};
pub use stack::{KvCache, LayerCache};
pub use t5::{
    tensor_to_owned, DecoderInput, DecoderOutput, LossOutput, T5ForConditionalGeneration, T5,
};
