//! Pre-training corpora, read as a stream of documents (never a whole file in memory):
//!
//! - plain text (any other extension): one document per non-blank line;
//! - JSON lines (`.jsonl`, `.json`): `{"text": str}`, optionally with salient spans
//!   `"spans": [{"start": s, "end": e, "type": str}]`, offsets in Unicode code points as Python
//!   string indices (what spaCy and most taggers emit), `end` exclusive;
//! - REALM's annotated Wikipedia (`.tfrecord`, `.tfrecord.gz`), see [`super::tfrecord`].
//!
//! File arguments may be shard patterns: `name@N.ext` (the files `name-00000-of-0000N.ext` …)
//! or globs (`*` and `?` in the file name).

use crate::data::DataError;
use crate::error::{Error, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// A salient span of a document, in UTF-8 byte offsets into its text, `end` exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    /// What the tagger called it (`PERSON`, `DATE`, …; empty when not given).
    pub kind: String,
}

/// One document (for SSM, one sentence) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub text: String,
    pub spans: Vec<Span>,
    /// `file:line` (or `file: record N`), for messages.
    pub origin: String,
    /// Why salient span masking cannot use this sentence (e.g. REALM spans that overlap): it
    /// is counted as a skip, with its origin, instead of stopping the run. Span corruption,
    /// which ignores spans, still uses the text.
    pub skip: Option<String>,
}

/// How a corpus file is read, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpusFormat {
    Text,
    JsonLines,
    TfRecord,
}

impl CorpusFormat {
    /// The format a file name implies.
    pub fn of(path: &Path) -> CorpusFormat {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".tfrecord") || name.ends_with(".tfrecord.gz") {
            CorpusFormat::TfRecord
        } else if name.ends_with(".jsonl") || name.ends_with(".json") {
            CorpusFormat::JsonLines
        } else {
            CorpusFormat::Text
        }
    }
}

/// The files a list of arguments names, shard patterns and globs expanded, in order. A pattern
/// that matches nothing, or a shard that is missing, is an error.
pub fn expand_patterns(patterns: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in patterns {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Some(shards) = shard_names(&name) {
            let shards = shards.map_err(|msg| Error::input(p.display().to_string(), msg))?;
            for s in shards {
                let f = dir.join(s);
                if !f.is_file() {
                    let msg = "a shard of the pattern is missing";
                    return Err(Error::input(f.display().to_string(), msg));
                }
                files.push(f);
            }
        } else if name.contains(['*', '?']) {
            files.extend(glob_dir(dir, &name)?);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// `name@N.ext` → `name-00000-of-0000N.ext` …; `None` when `name` is no shard pattern.
fn shard_names(name: &str) -> Option<std::result::Result<Vec<String>, String>> {
    let (stem, rest) = name.rsplit_once('@')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let ext = &rest[digits.len()..];
    let n: usize = match digits.parse() {
        Ok(n) if n > 0 && n <= 100_000 => n,
        _ => return Some(Err(format!("shard count {digits} must be in 1..=100000"))),
    };
    Some(Ok((0..n)
        .map(|k| format!("{stem}-{k:05}-of-{n:05}{ext}"))
        .collect()))
}

/// The files of `dir` whose names match `pattern` (`*`: any run, `?`: one character), sorted.
fn glob_dir(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if wildcard_match(pattern.as_bytes(), name.as_bytes()) && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    if out.is_empty() {
        let what = dir.join(pattern).display().to_string();
        return Err(Error::input(what, "the pattern matches no file"));
    }
    out.sort();
    Ok(out)
}

/// `*`/`?` matching (iterative, backtracking to the last `*`).
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// One JSON line of a corpus.
#[derive(serde::Deserialize)]
struct JsonDocument {
    text: String,
    #[serde(default)]
    spans: Vec<JsonSpan>,
}

#[derive(serde::Deserialize)]
struct JsonSpan {
    start: u64,
    end: u64,
    #[serde(default, rename = "type")]
    kind: String,
}

/// Check spans given in code points, sort-independent: inside the text, non-empty, not
/// overlapping; converted to byte offsets (in the given order).
fn spans_from_code_points(
    text: &str,
    spans: Vec<JsonSpan>,
) -> std::result::Result<Vec<Span>, String> {
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    // byte offset of every code point, and of the end
    let bytes: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain([text.len()])
        .collect();
    let chars = bytes.len() as u64 - 1;
    let mut out = Vec::with_capacity(spans.len());
    for (k, s) in spans.into_iter().enumerate() {
        if s.start >= s.end || s.end > chars {
            return Err(format!(
                "span {k} [{}, {}) is empty or outside the text ({chars} code points)",
                s.start, s.end
            ));
        }
        out.push(Span {
            start: bytes[s.start as usize],
            end: bytes[s.end as usize],
            kind: s.kind,
        });
    }
    check_overlaps(&out)?;
    Ok(out)
}

/// Spans must not overlap (in any order).
pub(crate) fn check_overlaps(spans: &[Span]) -> std::result::Result<(), String> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&k| (spans[k].start, spans[k].end));
    for w in order.windows(2) {
        let (a, b) = (&spans[w[0]], &spans[w[1]]);
        if b.start < a.end {
            return Err(format!("spans {} and {} overlap", w[0], w[1]));
        }
    }
    Ok(())
}

/// A stream of the documents of line-based corpus files (plain text and JSON lines).
pub struct LineDocuments {
    path: PathBuf,
    format: CorpusFormat,
    reader: Box<dyn BufRead>,
    line: usize,
    buf: String,
}

impl LineDocuments {
    /// Open `path` as `format` (text or JSON lines).
    pub fn open(path: &Path, format: CorpusFormat) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        Ok(LineDocuments {
            path: path.to_path_buf(),
            format,
            reader: Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
            line: 0,
            buf: String::new(),
        })
    }

    fn malformed(&self, message: String) -> Error {
        Error::Data(DataError::Malformed {
            path: self.path.clone(),
            line: self.line,
            message,
        })
    }

    /// The document of the current line (`None` for a blank one).
    fn parse(&self) -> Result<Option<Document>> {
        let text = self.buf.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return Ok(None);
        }
        let origin = format!("{}:{}", self.path.display(), self.line);
        if self.format == CorpusFormat::Text {
            return Ok(Some(Document {
                text: text.to_string(),
                spans: Vec::new(),
                origin,
                skip: None,
            }));
        }
        let doc: JsonDocument = serde_json::from_str(text).map_err(|e| {
            self.malformed(format!("expected {{\"text\": str, \"spans\": [...]}}: {e}"))
        })?;
        let spans = spans_from_code_points(&doc.text, doc.spans).map_err(|m| self.malformed(m))?;
        Ok(Some(Document {
            text: doc.text,
            spans,
            origin,
            skip: None,
        }))
    }
}

impl Iterator for LineDocuments {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line += 1;
            match self.reader.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Some(Err(self.malformed("the line is not UTF-8".into())));
                }
                Err(e) => return Some(Err(Error::io("read", &self.path, e))),
            }
            match self.parse() {
                Ok(None) => continue,
                other => return other.transpose(),
            }
        }
    }
}

/// Every document of `files` in order, each file read as its name says.
pub fn documents(files: &[PathBuf]) -> impl Iterator<Item = Result<Document>> + '_ {
    files
        .iter()
        .flat_map(|f| -> Box<dyn Iterator<Item = Result<Document>>> {
            let opened = match CorpusFormat::of(f) {
                CorpusFormat::TfRecord => super::tfrecord::sentences(f),
                format => LineDocuments::open(f, format)
                    .map(|d| Box::new(d) as Box<dyn Iterator<Item = Result<Document>>>),
            };
            match opened {
                Ok(it) => it,
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, content: &str) -> (tempfile::TempDir, Vec<Result<Document>>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let docs = documents(&[p]).collect();
        (dir, docs)
    }

    #[test]
    fn plain_text_is_a_document_per_line() {
        let (_d, docs) = read("c.txt", "first doc\n\n  \nsecond doc\r\n");
        let docs: Vec<Document> = docs.into_iter().map(|d| d.unwrap()).collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].text, "second doc");
        assert!(docs[1].origin.ends_with("c.txt:4"), "{}", docs[1].origin);
    }

    #[test]
    fn code_point_offsets_become_byte_offsets() {
        // "Zoë Ångström" : ë and Å are two bytes each; spans in code points.
        let line = r#"{"text": "Zoë met Ångström in 1907.", "spans": [{"start": 8, "end": 16, "type": "PERSON"}, {"start": 0, "end": 3}]}"#;
        let (_d, docs) = read("c.jsonl", &format!("{line}\n"));
        let doc = docs.into_iter().next().unwrap().unwrap();
        let texts: Vec<&str> = doc
            .spans
            .iter()
            .map(|s| &doc.text[s.start..s.end])
            .collect();
        assert_eq!(texts, ["Ångström", "Zoë"]);
        assert_eq!(doc.spans[0].kind, "PERSON");
    }

    #[test]
    fn bad_spans_name_the_line() {
        let cases = [
            (
                r#"{"text": "abc", "spans": [{"start": 1, "end": 4}]}"#,
                "outside the text",
            ),
            (
                r#"{"text": "abcdef", "spans": [{"start": 3, "end": 5}, {"start": 1, "end": 4}]}"#,
                "overlap",
            ),
            (
                r#"{"text": "abc", "spans": [{"start": 2, "end": 2}]}"#,
                "empty",
            ),
            (
                r#"{"text": "abc", "spans": [{"start": -1, "end": 2}]}"#,
                "expected",
            ),
            (r#"{"txt": "abc"}"#, "expected"),
        ];
        for (line, what) in cases {
            let (_d, docs) = read("c.jsonl", &format!("{{\"text\": \"ok\"}}\n{line}\n"));
            assert!(docs[0].is_ok());
            let e = docs[1].as_ref().unwrap_err().to_string();
            assert!(e.contains("c.jsonl:2:") && e.contains(what), "{line}: {e}");
        }
        let (_d, docs) = read("c.txt", "ok\n\u{0}\u{ff}\n");
        assert_eq!(docs.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin.txt");
        std::fs::write(&p, b"ok\n\xff\xfe\n").unwrap();
        let docs: Vec<Result<Document>> = documents(&[p]).collect();
        let e = docs[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("bin.txt:2:") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn shard_patterns_and_globs_expand() {
        let dir = tempfile::tempdir().unwrap();
        for k in 0..3 {
            std::fs::write(dir.path().join(format!("wiki-{k:05}-of-00003.txt")), "x\n").unwrap();
        }
        let files = expand_patterns(&[dir.path().join("wiki@3.txt")]).unwrap();
        assert_eq!(files.len(), 3);
        assert!(files[2].ends_with("wiki-00002-of-00003.txt"));
        let globbed = expand_patterns(&[dir.path().join("wiki-*-of-0000?.txt")]).unwrap();
        assert_eq!(globbed, files);
        let e = expand_patterns(&[dir.path().join("wiki@4.txt")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wiki-00000-of-00004.txt") && e.contains("missing"),
            "{e}"
        );
        let e = expand_patterns(&[dir.path().join("none*.txt")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("matches no file"), "{e}");
        assert!(wildcard_match(b"a*b*c", b"aXbYbc"));
        assert!(!wildcard_match(b"a*b?c", b"abc"));
    }
}
