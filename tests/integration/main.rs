//! cbqa's integration tests: one binary, one module per area.

mod common;
mod data_files;
mod eval_oracle;
mod foundation;
mod runtime;
mod support;
