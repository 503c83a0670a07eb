//! Readers for the closed-book QA benchmark files (NQ-open, TriviaQA, WebQuestions).
//!
//! Every reader yields the same record, [`QaExample`], which mirrors NQ-open's canonical JSON
//! line `{"question": str, "answer": [str, ...]}` plus an id. The layouts of the real files and
//! their pitfalls (pandas quoting, Python list literals, U+00A0 in answers, answers that
//! normalise to nothing) are described in `shared/data/README.md`; see [`DataFormat`] for the
//! formats and [`ReadOptions`] for the knobs.
//!
//! Malformed input is an error that names `file:line` and what is wrong. With
//! [`ReadOptions::skip_bad`] the same messages are collected as [`DataWarning`]s instead.
//!
//! Typical use: `Dataset::read(path, &ReadOptions::default())` for evaluation files (format
//! detected), [`ReadOptions::for_training`] for training files.

mod delimited;
mod error;
mod format;
mod json;
mod pylist;
mod record;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{DataError, DataWarning};
pub use format::{Benchmark, DataFormat};
pub use pylist::{parse_python_str_list, PyListError};
pub use record::is_py_space;

use record::Fields;

/// One question with its reference answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaExample {
    /// The file's own id when it has one (brmson `qId`, an `id` column), otherwise the 0-based
    /// index of the record in the file (blank lines not counted), as a string.
    pub id: String,
    pub question: String,
    /// Reference answers (aliases), verbatim. Never empty; may contain empty strings unless
    /// [`AnswerPolicy::DropBlank`] is used.
    pub answers: Vec<String>,
}

/// How an answers value that is a *string* (a CSV cell, or a JSON string) is decoded.
/// JSON arrays are always taken as the list itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerEncoding {
    /// A cell that looks like `[...]` is a JSON list, else a Python list literal; any other
    /// cell is one answer. DPR TSV files always use Python list literals under `Auto`.
    #[default]
    Auto,
    /// A JSON list of strings.
    JsonList,
    /// A Python list literal of strings (parsed, never evaluated).
    PythonList,
    /// The whole cell is one answer.
    Single,
    /// Answers separated by this character (e.g. `|`), each trimmed of surrounding whitespace.
    Separated(char),
}

/// What to do with answers that are empty or whitespace-only.
///
/// Evaluation must keep them: they are real references (and the official scripts take the max
/// over all of them). Training should not learn to emit nothing, so it can drop them and reject
/// the examples that have no answer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerPolicy {
    /// Keep every answer verbatim (evaluation).
    #[default]
    KeepAll,
    /// Drop blank answers; an example left without answers is a bad record (training).
    DropBlank,
}

/// Options for [`Dataset::read`]. The defaults read every real benchmark file as-is.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// `None` detects the format from extension and content ([`DataFormat::detect`]).
    pub format: Option<DataFormat>,
    /// Question field/column; default `question` (`qText` for [`DataFormat::JsonArray`]).
    pub question_field: Option<String>,
    /// Answers field/column; default `answer` (`answers` for [`DataFormat::JsonArray`]). Use
    /// `answer_and_def_correct_predictions` to score EfficientQA test the way the ORQA script
    /// does with `--answer_field`.
    pub answer_field: Option<String>,
    /// Id field/column; default `id` (`qId` for [`DataFormat::JsonArray`]), used when present.
    /// Setting it explicitly makes it required in every record.
    pub id_field: Option<String>,
    /// How string-valued answers are decoded.
    pub answer_encoding: AnswerEncoding,
    /// Collect malformed records as warnings instead of failing on the first one.
    pub skip_bad: bool,
    /// Keep or drop blank answers.
    pub answer_policy: AnswerPolicy,
}

impl ReadOptions {
    /// Options for training data: blank answers dropped, answerless examples rejected.
    pub fn for_training() -> Self {
        ReadOptions {
            answer_policy: AnswerPolicy::DropBlank,
            ..ReadOptions::default()
        }
    }
}

/// A whole file of examples.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    pub format: DataFormat,
    /// Guessed from the file name; chooses the default metric normalisation.
    pub benchmark: Benchmark,
    pub examples: Vec<QaExample>,
    /// Bad records skipped under [`ReadOptions::skip_bad`] (empty otherwise).
    pub warnings: Vec<DataWarning>,
}

impl Dataset {
    /// Reads and validates a file.
    pub fn read(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<Dataset, DataError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count();
            DataError::Malformed {
                path: path.to_path_buf(),
                line,
                message: format!("invalid UTF-8 at byte {valid}"),
            }
        })?;
        Dataset::from_text(path, &text, opts)
    }

    /// Parses already loaded text; `path` is used for format detection and messages only.
    pub fn from_text(
        path: impl Into<PathBuf>,
        text: &str,
        opts: &ReadOptions,
    ) -> Result<Dataset, DataError> {
        let path = path.into();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let format = match opts.format {
            Some(f) => f,
            None => DataFormat::detect(&path, text)?,
        };
        let fields = Fields::resolve(opts, format.default_fields());
        let mut out = Collector {
            path: &path,
            skip_bad: opts.skip_bad,
            examples: Vec::new(),
            warnings: Vec::new(),
        };
        match format {
            DataFormat::Jsonl => json::read_jsonl(text, &fields, opts, &mut out)?,
            DataFormat::JsonArray => json::read_json_array(text, &fields, opts, &mut out)?,
            DataFormat::DprTsv => delimited::read_dpr_tsv(text, opts, &mut out)?,
            DataFormat::Csv => delimited::read_with_header(text, b',', &fields, opts, &mut out)?,
            DataFormat::Tsv => delimited::read_with_header(text, b'\t', &fields, opts, &mut out)?,
        }
        let Collector {
            examples, warnings, ..
        } = out;
        if examples.is_empty() {
            let detail = if warnings.is_empty() {
                String::new()
            } else {
                format!(" ({} bad records skipped)", warnings.len())
            };
            return Err(DataError::Empty { path, detail });
        }
        let benchmark = Benchmark::guess(&path, format);
        Ok(Dataset {
            path,
            format,
            benchmark,
            examples,
            warnings,
        })
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}

/// Gathers examples, turning per-record errors into `file:line` errors or warnings.
pub(crate) struct Collector<'a> {
    pub path: &'a Path,
    skip_bad: bool,
    examples: Vec<QaExample>,
    warnings: Vec<DataWarning>,
}

impl Collector<'_> {
    fn push(&mut self, line: usize, record: Result<QaExample, String>) -> Result<(), DataError> {
        match record {
            Ok(example) => self.examples.push(example),
            Err(message) if self.skip_bad => self.warnings.push(DataWarning {
                path: self.path.to_path_buf(),
                line,
                message,
            }),
            Err(message) => {
                return Err(DataError::Malformed {
                    path: self.path.to_path_buf(),
                    line,
                    message,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
