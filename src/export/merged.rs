//! `decoder_model_merged.onnx`: both decoders behind one `If` on `use_cache_branch`.
use super::proto::ModelProto;
use super::weights::Params;
use crate::config::T5Config;
use crate::error::{Error, Result};

/// Not written yet.
pub(crate) fn decoder_merged(_cfg: &T5Config, _p: &mut Params<'_>) -> Result<ModelProto> {
    Err(Error::Invalid("--merged is not implemented yet".into()))
}
