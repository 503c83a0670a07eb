//! Delimited text: DPR's headerless `question<TAB>answers` files and generic CSV/TSV with a
//! header row.

use super::error::DataError;
use super::pylist::parse_python_str_list;
use super::record::{decode_answer_cell, finish, Fields};
use super::{AnswerEncoding, Collector, ReadOptions};

/// Reads DPR's `*.qa.csv` layout, one record per line.
///
/// DPR reads these files with Python's `csv.reader(f, delimiter="\t")` and `eval(row[1])`
/// ([`CsvQASrc`](https://github.com/facebookresearch/DPR/blob/main/dpr/data/retriever_data.py));
/// they were written by pandas, so a field that contains `"` is wrapped in quotes with inner
/// quotes doubled. No field of the real files contains a newline, so we split lines first and
/// unquote each line on its own: a broken quote is then reported at its own line and
/// `skip_bad` can step over it (a multi-line CSV reader would swallow the rest of the file).
///
/// Unlike Python's lenient `csv` module we reject text after a closing quote (`"a"b`) instead
/// of silently gluing it on. The answers column is always parsed as a Python list literal,
/// unless `answer_encoding` says otherwise.
pub(crate) fn read_dpr_tsv(
    text: &str,
    opts: &ReadOptions,
    out: &mut Collector<'_>,
) -> Result<(), DataError> {
    let encoding = match opts.answer_encoding {
        AnswerEncoding::Auto => AnswerEncoding::PythonList,
        other => other,
    };
    let mut index = 0;
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let record = split_quoted_line(line, '\t').and_then(|fields| {
            let [question, answers] = <[String; 2]>::try_from(fields).map_err(|f| {
                format!(
                    "expected 2 tab-separated fields (question, answers), got {}",
                    f.len()
                )
            })?;
            let answers = match encoding {
                AnswerEncoding::PythonList => parse_python_str_list(&answers)
                    .map_err(|e| format!("column 2: invalid Python list literal: {e}"))?,
                other => {
                    decode_answer_cell(&answers, other).map_err(|e| format!("column 2: {e}"))?
                }
            };
            finish(
                index.to_string(),
                question,
                answers,
                "column 1 (question)",
                "column 2 (answers)",
                opts,
            )
        });
        index += 1;
        out.push(i + 1, record)?;
    }
    Ok(())
}

/// Splits one line into fields with CSV quoting (`"` quote, `""` inside quotes for a literal
/// quote). Quotes in the middle of an unquoted field are literal, as in Python's `csv`.
fn split_quoted_line(line: &str, delimiter: char) -> Result<Vec<String>, String> {
    let mut fields = Vec::with_capacity(2);
    let mut chars = line.char_indices().peekable();
    loop {
        let mut field = String::new();
        if chars.peek().map(|&(_, c)| c) == Some('"') {
            let (open, _) = chars.next().unwrap_or((0, '"'));
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "field {} has an unterminated quote (opened at character {})",
                            fields.len() + 1,
                            line[..open].chars().count() + 1
                        ));
                    }
                    Some((_, '"')) => {
                        if chars.peek().map(|&(_, c)| c) == Some('"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some((_, c)) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some((_, c)) if c == delimiter => fields.push(field),
                Some((pos, c)) => {
                    return Err(format!(
                        "field {}: unexpected {c:?} after the closing quote at character {}",
                        fields.len() + 1,
                        line[..pos].chars().count() + 1
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some((_, c)) if c == delimiter => break,
                    Some((_, c)) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// Reads CSV (`delimiter = b','`) or TSV (`b'\t'`) with a header row naming the columns.
///
/// Standard CSV quoting applies and quoted fields may span lines; errors name the line where
/// the record starts.
pub(crate) fn read_with_header(
    text: &str,
    delimiter: u8,
    fields: &Fields,
    opts: &ReadOptions,
    out: &mut Collector<'_>,
) -> Result<(), DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| DataError::Malformed {
            path: out.path.to_path_buf(),
            line: 1,
            message: format!("cannot read the header row: {e}"),
        })?
        .clone();
    let find = |name: &str| header.iter().position(|h| h.trim() == name);
    let column = |name: &str| {
        find(name).ok_or_else(|| DataError::MissingColumn {
            path: out.path.to_path_buf(),
            column: name.to_string(),
            available: header.iter().collect::<Vec<_>>().join(", "),
        })
    };
    let question_col = column(&fields.question)?;
    let answers_col = column(&fields.answers)?;
    let id_col = if fields.id_required {
        Some(column(&fields.id)?)
    } else {
        find(&fields.id)
    };
    for (index, result) in reader.records().enumerate() {
        let (line, record) = match result {
            Ok(row) => {
                let line = row.position().map_or(index + 2, |p| p.line() as usize);
                let cell = |i: usize| row.get(i).unwrap_or_default().to_string();
                let id = id_col.map_or_else(|| index.to_string(), cell);
                let record = decode_answer_cell(&cell(answers_col), opts.answer_encoding)
                    .map_err(|e| format!("column {:?}: {e}", fields.answers))
                    .and_then(|answers| {
                        finish(
                            id,
                            cell(question_col),
                            answers,
                            &format!("column {:?}", fields.question),
                            &format!("column {:?}", fields.answers),
                            opts,
                        )
                    });
                (line, record)
            }
            Err(e) => {
                let line = e.position().map_or(index + 2, |p| p.line() as usize);
                let message = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => format!("expected {expected_len} fields like the header, got {len}"),
                    _ => format!("invalid CSV: {e}"),
                };
                (line, Err(message))
            }
        };
        out.push(line, record)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_quoted_line;

    #[test]
    fn splits_pandas_quoting() {
        let s = |l: &str| split_quoted_line(l, '\t');
        assert_eq!(s("q\t['a']"), Ok(vec!["q".into(), "['a']".into()]));
        assert_eq!(
            s("\"\"\"Who?\"\"\"\t\"['a', \"\"b's\"\"]\""),
            Ok(vec!["\"Who?\"".into(), "['a', \"b's\"]".into()])
        );
        assert_eq!(
            s("say \"hi\"\tx"),
            Ok(vec!["say \"hi\"".into(), "x".into()])
        );
        assert_eq!(s("a\t\tb"), Ok(vec!["a".into(), "".into(), "b".into()]));
        assert_eq!(s("\"\"\t"), Ok(vec!["".into(), "".into()]));
        assert_eq!(s("a \\\tb"), Ok(vec!["a \\".into(), "b".into()]));
    }

    #[test]
    fn rejects_broken_quoting() {
        let e = split_quoted_line("\"abc\tdef", '\t')
            .err()
            .unwrap_or_default();
        assert!(e.contains("unterminated quote"), "{e}");
        let e = split_quoted_line("\"abc\"def\tx", '\t')
            .err()
            .unwrap_or_default();
        assert!(e.contains("after the closing quote at character 6"), "{e}");
    }
}
