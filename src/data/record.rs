//! Turning one parsed record (JSON object or CSV row) into a [`QaExample`], with the checks
//! that every format shares: non-empty question, a non-empty list of string answers, and the
//! answer policy.
//!
//! Errors here are plain messages; the readers attach `file:line`.

use serde_json::{Map, Value};

use super::pylist::parse_python_str_list;
use super::{AnswerEncoding, AnswerPolicy, QaExample, ReadOptions};

/// The field names a reader should use, resolved from the options and the format defaults.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub question: String,
    pub answers: String,
    pub id: String,
    /// `true` when the id field was set explicitly: then it must be present in every record.
    pub id_required: bool,
}

impl Fields {
    pub(crate) fn resolve(opts: &ReadOptions, defaults: (&str, &str, &str)) -> Fields {
        Fields {
            question: opts
                .question_field
                .clone()
                .unwrap_or_else(|| defaults.0.to_string()),
            answers: opts
                .answer_field
                .clone()
                .unwrap_or_else(|| defaults.1.to_string()),
            id: opts
                .id_field
                .clone()
                .unwrap_or_else(|| defaults.2.to_string()),
            id_required: opts.id_field.is_some(),
        }
    }
}

/// JSON's name for the type of `v`, as used in our messages (`got number`).
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Builds an example from a JSON object (JSONL line or JSON array element).
pub(crate) fn from_json_object(
    obj: &Map<String, Value>,
    fields: &Fields,
    index: usize,
    opts: &ReadOptions,
) -> Result<QaExample, String> {
    let question = match obj.get(&fields.question) {
        None => return Err(missing(&fields.question, obj.keys())),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "field {:?} must be a string, got {}",
                fields.question,
                json_type(other)
            ));
        }
    };
    let answers = match obj.get(&fields.answers) {
        None => return Err(missing(&fields.answers, obj.keys())),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(format!(
                            "field {:?} must be a list of strings, but item {i} is a {}",
                            fields.answers,
                            json_type(other)
                        ));
                    }
                }
            }
            out
        }
        Some(Value::String(s)) => decode_answer_cell(s, opts.answer_encoding)
            .map_err(|e| format!("field {:?}: {e}", fields.answers))?,
        Some(other) => {
            return Err(format!(
                "field {:?} must be a list of strings, got {}",
                fields.answers,
                json_type(other)
            ));
        }
    };
    let id = match obj.get(&fields.id) {
        None if fields.id_required => return Err(missing(&fields.id, obj.keys())),
        None => index.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(format!(
                "field {:?} must be a string or number, got {}",
                fields.id,
                json_type(other)
            ));
        }
    };
    finish(
        id,
        question,
        answers,
        &format!("field {:?}", fields.question),
        &format!("field {:?}", fields.answers),
        opts,
    )
}

fn missing<'a>(field: &str, keys: impl Iterator<Item = &'a String>) -> String {
    let keys: Vec<&str> = keys.map(String::as_str).collect();
    format!(
        "missing field {field:?} (fields present: {})",
        keys.join(", ")
    )
}

/// Decodes an answers cell that is a string: a JSON list, a Python list literal, a single
/// answer, or a separator-delimited list, according to `encoding`.
pub(crate) fn decode_answer_cell(
    cell: &str,
    encoding: AnswerEncoding,
) -> Result<Vec<String>, String> {
    match encoding {
        AnswerEncoding::Single => Ok(vec![cell.to_string()]),
        AnswerEncoding::Separated(sep) => {
            Ok(cell.split(sep).map(|s| s.trim().to_string()).collect())
        }
        AnswerEncoding::JsonList => decode_json_list(cell),
        AnswerEncoding::PythonList => {
            parse_python_str_list(cell).map_err(|e| format!("invalid Python list literal: {e}"))
        }
        AnswerEncoding::Auto => {
            let t = cell.trim();
            if !(t.starts_with('[') && t.ends_with(']')) {
                return Ok(vec![cell.to_string()]);
            }
            // JSON first (`["a"]` is also valid Python, and JSON escapes differ only in
            // `\/` and surrogate pairs, which JSON handles correctly); then Python.
            decode_json_list(t).or_else(|_| {
                parse_python_str_list(t).map_err(|e| {
                    format!("looks like a list but is neither a JSON list of strings nor a Python list literal: {e}")
                })
            })
        }
    }
}

fn decode_json_list(cell: &str) -> Result<Vec<String>, String> {
    match serde_json::from_str::<Value>(cell) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(format!(
                    "must be a list of strings, but item {i} is a {}",
                    json_type(&other)
                )),
            })
            .collect(),
        Ok(other) => Err(format!(
            "must be a JSON list of strings, got {}",
            json_type(&other)
        )),
        Err(e) => Err(format!("invalid JSON list: {}", strip_position(&e))),
    }
}

/// serde_json's message without its trailing "at line L column C", which would be relative to
/// the record rather than the file.
pub(crate) fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &s[..i], e.column()),
        None => s,
    }
}

/// Shared validation: question not blank, answer list not empty, answer policy applied. The
/// labels name the question and answers in messages (`field "answer"`, `column 2 (answers)`).
pub(crate) fn finish(
    id: String,
    question: String,
    mut answers: Vec<String>,
    question_label: &str,
    answers_label: &str,
    opts: &ReadOptions,
) -> Result<QaExample, String> {
    if question.chars().all(is_py_space) {
        return Err(format!("{question_label} is empty"));
    }
    if answers.is_empty() {
        return Err(format!("{answers_label} is an empty list"));
    }
    if opts.answer_policy == AnswerPolicy::DropBlank {
        answers.retain(|a| !a.chars().all(is_py_space));
        if answers.is_empty() {
            return Err(format!(
                "{answers_label} has only blank answers (rejected for training)"
            ));
        }
    }
    Ok(QaExample {
        id,
        question,
        answers,
    })
}

/// Python's `str.isspace()`: the separators of `str.split()` with no argument.
pub fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..='\u{20}'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}
