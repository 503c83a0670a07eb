//! cbqa's integration tests: one binary, one module per area. The modules that need libtorch
//! (feature `train`) are left out of the inference-only build
//! (`cargo test --no-default-features --features ort,tract`), which runs everything else.

mod architecture;
mod bench;
mod cli_eval;
mod common;
mod continuous;
mod convert;
mod data_files;
mod eval_oracle;
mod export;
mod foundation;
#[cfg(feature = "train")]
mod gpu_check;
mod malformed_inputs;
#[cfg(feature = "train")]
mod model_parity;
#[cfg(feature = "train")]
mod optim;
mod pickle;
#[cfg(feature = "train")]
mod pretrain;
#[cfg(feature = "train")]
mod pretrain_recipe;
mod reliability;
mod runtime;
mod serve;
mod spiece;
mod support;
mod tf_bundle;
#[cfg(feature = "train")]
mod train;
