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
    Eval(#[from] EvalError),
    /// An output location that would overwrite the user's files.
    #[error("{}: {msg}", path.display())]
    Output { path: PathBuf, msg: String },
    /// An output directory that exists and is not empty, which only the setting `setting`
    /// (`force` replaces it, `resume` continues a training run in it) may touch.
    #[error("{} exists and is not empty (the `{setting}` setting would use it)", path.display())]
    OutputExists {
        path: PathBuf,
        setting: &'static str,
    },
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
    /// A library setting whose value cannot be used. `setting` is the settings field's name
    /// (`num_beams`, `lr`); the binary translates it to its flag (`--num-beams`, `--lr`).
    #[error("{setting}: {msg}")]
    Setting { setting: &'static str, msg: String },
    /// A device that is unknown, absent, or not compiled into this build.
    #[error("device `{device}`: {msg}")]
    Device { device: String, msg: String },
    /// An input a call cannot take: an empty question, token ids of the wrong length, a decoding
    /// state of another backend. `what` names the input.
    #[error("{what}: {msg}")]
    Input { what: String, msg: String },
    /// Training stopped because the loss or a parameter stopped being finite.
    #[error("{what} at step {step}: the update diverged; the last good checkpoint is {last_good}")]
    Diverged {
        step: u64,
        what: String,
        last_good: String,
    },
    /// A failure inside an inference backend (ONNX Runtime, tract): what was being done, and the
    /// engine's own error as `source` (an `ort::Error` keeps its code; downcast to get it).
    #[error("{backend}: {action}")]
    Backend {
        backend: &'static str,
        action: String,
        #[source]
        source: BoxError,
    },
    /// The tokenizer failed on a text or while being built (`source` is the tokenizers error).
    #[error("tokenizer: {action}")]
    Tokenize {
        action: String,
        #[source]
        source: BoxError,
    },
    /// A native library (libtorch, ONNX Runtime) that cannot be found or loaded.
    #[error("{0}")]
    Library(String),
    /// An error raised inside libtorch.
    #[cfg(feature = "train")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Errors of the scoring API ([`crate::eval`]); defined here, beside [`Error`] that wraps them,
/// so that `eval`, which also returns [`Error`], does not form a cycle with this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error(
        "{predictions} predictions for {references} references; they must be aligned one to one"
    )]
    LengthMismatch {
        predictions: usize,
        references: usize,
    },
    #[error("prediction {index} has id {prediction:?} but reference {index} has id {reference:?}")]
    IdMismatch {
        index: usize,
        prediction: String,
        reference: String,
    },
    #[error("reference {index} (id {id:?}) has no answers to compare with")]
    NoReferences { index: usize, id: String },
    #[error("nothing to score: no examples")]
    NoExamples,
    #[error("recall@k needs k >= 1")]
    InvalidK,
    #[error("unknown normalizer {0:?} (expected squad or trivia_qa)")]
    UnknownNormalizer(String),
}

/// An engine's own error, kept as the `source` of [`Error::Backend`] and [`Error::Tokenize`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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

    /// A backend failure while doing `action`, keeping the engine's error.
    pub(crate) fn backend(
        backend: &'static str,
        action: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            action: action.into(),
            source: source.into(),
        }
    }

    /// A setting `setting` that cannot take the value it was given.
    pub(crate) fn setting(setting: &'static str, msg: impl Into<String>) -> Self {
        Error::Setting {
            setting,
            msg: msg.into(),
        }
    }

    /// An input `what` that the call cannot take.
    pub(crate) fn input(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Input {
            what: what.into(),
            msg: msg.into(),
        }
    }

    /// A tokenizer failure while doing `action`.
    pub(crate) fn tokenize(action: impl Into<String>, source: BoxError) -> Self {
        Error::Tokenize {
            action: action.into(),
            source,
        }
    }
}
