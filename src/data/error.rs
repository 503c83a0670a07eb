//! Errors and warnings of the dataset readers.
//!
//! Every problem with the *content* of a file names `file:line` so that a user can open the
//! file at the right place; problems that concern the whole file (unreadable, unknown format,
//! missing header column) name the file only.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while reading a question/answer file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// One record (line) of the file is malformed: bad JSON, wrong field type, empty question,
    /// empty answer list, a bad Python list literal, ...
    #[error("{path}:{line}: {message}")]
    Malformed {
        path: PathBuf,
        /// 1-based line number where the record starts.
        line: usize,
        message: String,
    },

    /// The format was not given and could not be detected from the extension and content.
    #[error("{path}: cannot detect the data format ({reason}); choose one explicitly")]
    UnknownFormat { path: PathBuf, reason: String },

    /// A CSV/TSV header lacks a column that the options ask for.
    #[error("{path}:1: no column named {column:?} in the header (columns: {available})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
    },

    /// The file holds no usable example at all (after skipping bad records, if asked to).
    #[error("{path}: no examples found{detail}")]
    Empty { path: PathBuf, detail: String },

    /// A format name given by the user (e.g. on the command line) is not one we know.
    #[error("unknown data format {name:?} (expected one of: {expected})")]
    UnknownFormatName { name: String, expected: String },
}

/// A malformed record that was skipped because [`super::ReadOptions::skip_bad`] was set.
///
/// It carries the same `file:line: message` text that the corresponding
/// [`DataError::Malformed`] would have had, so callers can log it verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataWarning {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for DataWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}
