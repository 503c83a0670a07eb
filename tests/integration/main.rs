//! cbqa's integration tests: one binary, one module per area.

mod bench;
mod cli_eval;
mod common;
mod data_files;
mod eval_oracle;
mod export;
mod foundation;
mod model_parity;
mod optim;
mod runtime;
mod serve;
mod support;
mod train;
