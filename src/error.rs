//! The library's one error type. Every variant carries the file (and where it applies the tensor or
//! line) it is about, so the binary can print a message the user can act on.

use std::path::PathBuf;

/// Errors of the cbqa library. The binary prints the whole `source()` chain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while touching `path`.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file that does not parse.
    #[error("{}: invalid JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A config.json that parses but is not a T5 config we can use.
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    /// A checkpoint tensor that is missing, has the wrong shape or dtype, or cannot be read.
    #[error("{}: tensor `{name}`: {msg}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        msg: String,
    },
    /// A checkpoint file that is unreadable as a whole (truncated, bad header, bad index).
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    /// A tokenizer.json that does not load or lacks what T5 needs.
    #[error("{}: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },
    /// A dataset file problem (reported as file:line by the data readers).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A scoring problem.
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    /// An output location that would overwrite the user's files.
    #[error("{}: {msg}", path.display())]
    Output { path: PathBuf, msg: String },
    /// An export that could not be written or whose graphs a runtime rejects.
    #[error("{}: {msg}", path.display())]
    Export { path: PathBuf, msg: String },
    /// An exported graph whose output differs from the reference forward pass.
    #[error("{}: output `{output}`: {msg}", path.display())]
    Validation {
        path: PathBuf,
        output: String,
        msg: String,
    },
    /// A request that cannot be satisfied as given (bad option combination, absent device, ...).
    #[error("{0}")]
    Invalid(String),
    /// A failure inside an inference backend (ONNX Runtime, tract), with what was being done.
    #[error("{backend}: {msg}")]
    Backend { backend: &'static str, msg: String },
    /// A native library (libtorch, ONNX Runtime) that cannot be found or loaded.
    #[error("{0}")]
    Library(String),
    /// An error raised inside libtorch.
    #[cfg(feature = "train")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
