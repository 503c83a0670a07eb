//! `cbqa._native`: the Python bindings of the cbqa library (the `cbqa` package re-exports them).
//!
//! Answering ([`answerer`]), scoring and datasets ([`scoring`]), and the evaluation report
//! ([`report`]) are the library's own code; this crate only converts arguments and results and
//! turns a `cbqa::Error` into a `cbqa.CbqaError` whose message is the whole error chain
//! ([`errors`]).

use pyo3::prelude::*;

mod answerer;
mod errors;
mod report;
mod scoring;

/// The module `cbqa._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CbqaError", m.py().get_type::<errors::CbqaError>())?;
    m.add("__version__", cbqa::VERSION)?;
    m.add("GIT_COMMIT", cbqa::GIT_COMMIT)?;
    m.add("EVAL_CHUNK_BATCHES", cbqa::eval::journal::CHUNK_BATCHES)?;
    m.add(
        "DEFAULT_BATCH_SIZE",
        cbqa::generate::BatchPolicy::default().max_batch_size,
    )?;
    m.add_class::<answerer::Answerer>()?;
    m.add_class::<answerer::Answer>()?;
    m.add_class::<answerer::Candidate>()?;
    m.add_class::<scoring::Example>()?;
    m.add_function(wrap_pyfunction!(answerer::plan_batches, m)?)?;
    m.add_function(wrap_pyfunction!(scoring::score, m)?)?;
    m.add_function(wrap_pyfunction!(scoring::normalize_answer, m)?)?;
    m.add_function(wrap_pyfunction!(scoring::read_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(report::write_eval, m)?)?;
    m.add_function(wrap_pyfunction!(use_onnxruntime_package, m)?)?;
    Ok(())
}

/// Use the ONNX Runtime library of the `onnxruntime` package in directory `package` (the
/// package's `__init__` calls it with the installed package's location); returns the library.
#[pyfunction]
fn use_onnxruntime_package(package: std::path::PathBuf) -> PyResult<std::path::PathBuf> {
    cbqa::native::use_onnxruntime_package(&package).map_err(errors::to_py)
}
