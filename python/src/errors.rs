//! `cbqa.CbqaError`: every failure of the library, with the whole error chain as its message.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    cbqa,
    CbqaError,
    PyException,
    "A cbqa failure: the message is the whole error chain (`what failed: why: the engine's error`), \
     naming the file, line, tensor or argument it is about."
);

/// The Python argument a library setting is given by (`num_beams` is `beams=`); `None` where
/// the setting has no argument of its own.
pub fn argument_of_setting(setting: &str) -> Option<&'static str> {
    Some(match setting {
        "num_beams" => "beams",
        "num_return_sequences" => "candidates",
        "max_new_tokens" => "max_new_tokens",
        "length_penalty" => "length_penalty",
        "max_batch_size" => "batch_size",
        "max_batch_tokens" | "batch_tokens" => "batch_tokens",
        "max_input_tokens" => "max_input_tokens",
        "prefix" => "prefix",
        "kind" | "backend" => "backend",
        "device" => "device",
        "threads" => "threads",
        "normalizer" => "normalizer",
        "limit" => "limit",
        _ => return None,
    })
}

/// One error of a chain; a library setting is named by its Python argument.
fn message(err: &(dyn std::error::Error + 'static)) -> String {
    let lib = err.downcast_ref::<cbqa::Error>().or_else(|| {
        err.downcast_ref::<std::sync::Arc<cbqa::Error>>()
            .map(|shared| shared.as_ref())
    });
    match lib {
        Some(cbqa::Error::Setting { setting, msg }) => {
            let name = argument_of_setting(setting).unwrap_or(setting);
            format!("{name}: {msg}")
        }
        _ => err.to_string(),
    }
}

/// An error and its causes on one line: `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = message(err);
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&message(c));
        cause = c.source();
    }
    text
}

/// A library error as a `cbqa.CbqaError`.
pub fn to_py(err: cbqa::Error) -> PyErr {
    CbqaError::new_err(chain(&err))
}

/// A `cbqa.CbqaError` with `context` before the chain of `err`.
pub fn to_py_in(context: &str, err: &(dyn std::error::Error + 'static)) -> PyErr {
    CbqaError::new_err(format!("{context}: {}", chain(err)))
}
