//! JSON lines (NQ-open, EfficientQA, DPR WebQuestions, generic) and JSON arrays (brmson
//! WebQuestions).

use serde_json::Value;

use super::error::DataError;
use super::record::{from_json_object, json_type, strip_position, Fields};
use super::{Collector, ReadOptions};

/// Reads one JSON object per line. Blank lines are ignored (they do not count as records);
/// record ids default to the 0-based index among the non-blank lines.
pub(crate) fn read_jsonl(
    text: &str,
    fields: &Fields,
    opts: &ReadOptions,
    out: &mut Collector<'_>,
) -> Result<(), DataError> {
    let mut index = 0;
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let record = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) => from_json_object(&obj, fields, index, opts),
            Ok(other) => Err(format!("expected a JSON object, got {}", json_type(&other))),
            Err(e) => Err(format!("invalid JSON: {}", strip_position(&e))),
        };
        index += 1;
        out.push(i + 1, record)?;
    }
    Ok(())
}

/// Reads a JSON array of objects, reporting each element's errors at the line where the
/// element starts (brmson puts one object per line).
///
/// The array is first split into element slices by a small structural scanner, so one bad
/// element does not hide the position of the others and `skip_bad` can skip it; a broken
/// array structure (unbalanced brackets, unterminated string) is always fatal.
pub(crate) fn read_json_array(
    text: &str,
    fields: &Fields,
    opts: &ReadOptions,
    out: &mut Collector<'_>,
) -> Result<(), DataError> {
    let mut lines = LineCounter::default();
    let elements = split_array(text).map_err(|(offset, message)| DataError::Malformed {
        path: out.path.to_path_buf(),
        line: lines.line_at(text, offset),
        message,
    })?;
    for (index, (start, slice)) in elements.into_iter().enumerate() {
        let line = lines.line_at(text, start);
        let record = match serde_json::from_str::<Value>(slice) {
            Ok(Value::Object(obj)) => from_json_object(&obj, fields, index, opts),
            Ok(other) => Err(format!(
                "array element {index}: expected a JSON object, got {}",
                json_type(&other)
            )),
            Err(e) => {
                // Report the line inside the element, relative to the file.
                let line = line + e.line().saturating_sub(1);
                out.push(line, Err(format!("invalid JSON: {}", strip_position(&e))))?;
                continue;
            }
        };
        out.push(line, record)?;
    }
    Ok(())
}

/// Converts byte offsets to 1-based line numbers; offsets must be non-decreasing.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: usize,
}

impl LineCounter {
    fn line_at(&mut self, text: &str, offset: usize) -> usize {
        let offset = offset.min(text.len());
        if offset < self.offset {
            self.offset = 0;
            self.line = 0;
        }
        self.line += text.as_bytes()[self.offset..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.offset = offset;
        self.line + 1
    }
}

/// Splits a top-level JSON array into (byte offset, element text) pairs without parsing the
/// elements. Errors carry the byte offset where the structure broke.
fn split_array(text: &str) -> Result<Vec<(usize, &str)>, (usize, String)> {
    let bytes = text.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(if text.starts_with('\u{feff}') { 3 } else { 0 });
    if bytes.get(i) != Some(&b'[') {
        return Err((i, "expected a JSON array starting with '['".to_string()));
    }
    i = skip_ws(i + 1);
    let mut elements = Vec::new();
    if bytes.get(i) == Some(&b']') {
        i = skip_ws(i + 1);
    } else {
        loop {
            let start = i;
            let mut depth = 0usize;
            let mut in_string = false;
            let mut escaped = false;
            loop {
                let Some(&b) = bytes.get(i) else {
                    let what = if in_string {
                        "unterminated string"
                    } else {
                        "unterminated array: missing ']'"
                    };
                    return Err((start, what.to_string()));
                };
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' if depth > 0 => depth -= 1,
                        b',' | b']' if depth == 0 => break,
                        b'}' => return Err((i, "unbalanced '}'".to_string())),
                        _ => {}
                    }
                }
                i += 1;
            }
            let slice = text[start..i].trim_end();
            if slice.is_empty() {
                return Err((start, "empty array element (stray ',')".to_string()));
            }
            elements.push((start, slice));
            let sep = bytes[i];
            i = skip_ws(i + 1);
            if sep == b']' {
                break;
            }
        }
    }
    if i < bytes.len() {
        return Err((i, "unexpected text after the closing ']'".to_string()));
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::split_array;

    #[test]
    fn splits_elements_with_nested_values_and_strings() {
        let text = "[\n {\"a\": [1, {\"b\": \"],}\"}]},\n {\"c\": \"x\\\"y\"}\n]\n";
        let parts = split_array(text).unwrap_or_default();
        let slices: Vec<&str> = parts.iter().map(|p| p.1).collect();
        assert_eq!(
            slices,
            ["{\"a\": [1, {\"b\": \"],}\"}]}", "{\"c\": \"x\\\"y\"}"]
        );
        assert_eq!(split_array("[]").map(|v| v.len()), Ok(0));
        assert_eq!(split_array(" [ ] \n").map(|v| v.len()), Ok(0));
    }

    #[test]
    fn structural_errors() {
        for (text, want) in [
            ("{}", "expected a JSON array"),
            ("[{}", "missing ']'"),
            ("[{\"a\": \"x}]", "unterminated string"),
            ("[{}, ]", "empty array element"),
            ("[{}] x", "after the closing"),
            ("[}]", "unbalanced"),
        ] {
            match split_array(text) {
                Ok(v) => panic!("{text:?} split as {v:?}"),
                Err((_, msg)) => assert!(msg.contains(want), "{text:?}: {msg}"),
            }
        }
    }
}
