//! REALM's annotated Wikipedia as released (`wikipedia_annotated_with_dates_public@5000.tfrecord.gz`):
//! gzip TFRecords (each record: length u64 LE, masked CRC-32C of the length, the bytes, masked
//! CRC-32C of the bytes) of `tf.train.Example`s with `text`, `span_byte_start`,
//! `span_byte_limit`, `span_type`, `sentence_byte_start` and `sentence_byte_limit` (UTF-8 byte
//! offsets; `uid` and `title` are not used). Each article is split into its sentences and only
//! the spans that lie inside one sentence are kept, offsets made relative to it, as TFDS's
//! `salient_span_wikipedia/sentences` does. Records stream one at a time.

use super::corpus::{check_overlaps, Document, Span};
use crate::checkpoint::tf_bundle::crc32c;
use crate::error::{Error, Result};
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// No record may be longer than this (a Wikipedia article is at most a few MB).
pub const MAX_RECORD_BYTES: u64 = 1 << 28;

#[derive(Clone, PartialEq, Message)]
struct Example {
    #[prost(message, optional, tag = "1")]
    features: Option<Features>,
}

#[derive(Clone, PartialEq, Message)]
struct Features {
    #[prost(map = "string, message", tag = "1")]
    feature: HashMap<String, Feature>,
}

#[derive(Clone, PartialEq, Message)]
struct Feature {
    #[prost(oneof = "Kind", tags = "1, 2, 3")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Bytes(BytesList),
    #[prost(message, tag = "2")]
    Floats(FloatList),
    #[prost(message, tag = "3")]
    Ints(Int64List),
}

#[derive(Clone, PartialEq, Message)]
struct BytesList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    value: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct FloatList {
    #[prost(float, repeated, tag = "1")]
    value: Vec<f32>,
}

#[derive(Clone, PartialEq, Message)]
struct Int64List {
    #[prost(int64, repeated, tag = "1")]
    value: Vec<i64>,
}

/// The records of a TFRecord stream, checked against their CRCs.
pub struct Records<R: Read> {
    reader: R,
    path: PathBuf,
    /// 1-based number of the last record read.
    index: usize,
}

impl Records<Box<dyn Read>> {
    /// Open `path`, gunzipping it when its name ends in `.gz`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let file = BufReader::with_capacity(1 << 20, file);
        let gz = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
        let reader: Box<dyn Read> = match gz {
            true => Box::new(flate2::read::MultiGzDecoder::new(file)),
            false => Box::new(file),
        };
        Ok(Records::new(reader, path))
    }
}

impl<R: Read> Records<R> {
    /// Records read from `reader`; `path` names them in errors.
    pub fn new(reader: R, path: &Path) -> Self {
        Records {
            reader,
            path: path.to_path_buf(),
            index: 0,
        }
    }

    /// An error about the current record.
    fn error(&self, msg: impl Into<String>) -> Error {
        Error::input(
            format!("{}: record {}", self.path.display(), self.index),
            msg,
        )
    }

    /// Fill `buf`; returns how many bytes there were before the end of the stream.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error(format!("cannot read: {e}"))),
            }
        }
        Ok(got)
    }

    /// The next record's bytes; `None` at the end of the stream.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>> {
        self.index += 1;
        let mut header = [0u8; 12];
        match self.fill(&mut header)? {
            0 => return Ok(None),
            12 => {}
            n => return Err(self.error(format!("truncated: {n} of the 12 header bytes"))),
        }
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let stored = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        if crc32c::unmask(stored) != crc32c::value(&header[..8]) {
            return Err(self.error("the CRC of the record length does not match"));
        }
        if len > MAX_RECORD_BYTES {
            let msg = format!("a record of {len} bytes is longer than {MAX_RECORD_BYTES}");
            return Err(self.error(msg));
        }
        let mut data = vec![0u8; len as usize + 4];
        let got = self.fill(&mut data)?;
        if got < data.len() {
            let msg = format!("truncated: {got} of its {} bytes", data.len());
            return Err(self.error(msg));
        }
        let stored = u32::from_le_bytes(data[len as usize..].try_into().expect("4 bytes"));
        data.truncate(len as usize);
        if crc32c::unmask(stored) != crc32c::value(&data) {
            return Err(self.error("the CRC of the record data does not match"));
        }
        Ok(Some(data))
    }
}

/// The features of one example.
struct Article {
    features: HashMap<String, Feature>,
}

impl Article {
    fn ints(&self, name: &str) -> std::result::Result<Vec<i64>, String> {
        match self.features.get(name).and_then(|f| f.kind.as_ref()) {
            Some(Kind::Ints(l)) => Ok(l.value.clone()),
            None => Ok(Vec::new()),
            Some(_) => Err(format!("feature `{name}` is not an int64 list")),
        }
    }

    fn bytes(&self, name: &str) -> std::result::Result<Vec<Vec<u8>>, String> {
        match self.features.get(name).and_then(|f| f.kind.as_ref()) {
            Some(Kind::Bytes(l)) => Ok(l.value.clone()),
            None => Ok(Vec::new()),
            Some(_) => Err(format!("feature `{name}` is not a bytes list")),
        }
    }
}

/// Byte ranges `[start, limit)` from two parallel lists, each inside `text` on character
/// boundaries.
fn ranges(
    text: &str,
    starts: &[i64],
    limits: &[i64],
    what: &str,
) -> std::result::Result<Vec<(usize, usize)>, String> {
    if starts.len() != limits.len() {
        return Err(format!(
            "{} {what} starts but {} limits",
            starts.len(),
            limits.len()
        ));
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, (&s, &l)) in starts.iter().zip(limits).enumerate() {
        let ok = 0 <= s && s <= l && l as u64 <= text.len() as u64;
        let (s, l) = (s as usize, l as usize);
        if !ok || !text.is_char_boundary(s) || !text.is_char_boundary(l) {
            return Err(format!(
                "{what} {k} [{s}, {l}) is not inside the text's {} bytes on character boundaries",
                text.len()
            ));
        }
        out.push((s, l));
    }
    Ok(out)
}

/// The sentences of one article with the spans inside each.
fn split_sentences(bytes: &[u8], origin: &str) -> std::result::Result<Vec<Document>, String> {
    let example = Example::decode(bytes).map_err(|e| format!("not a tf.train.Example: {e}"))?;
    let article = Article {
        features: example.features.map(|f| f.feature).unwrap_or_default(),
    };
    let text = article.bytes("text")?;
    let [text] = text.as_slice() else {
        return Err(format!(
            "feature `text` has {} values, expected 1",
            text.len()
        ));
    };
    let text = std::str::from_utf8(text).map_err(|e| format!("`text` is not UTF-8: {e}"))?;
    let sentences = ranges(
        text,
        &article.ints("sentence_byte_start")?,
        &article.ints("sentence_byte_limit")?,
        "sentence",
    )?;
    let spans = ranges(
        text,
        &article.ints("span_byte_start")?,
        &article.ints("span_byte_limit")?,
        "span",
    )?;
    let types = article.bytes("span_type")?;
    let mut out = Vec::with_capacity(sentences.len());
    for (k, &(s, l)) in sentences.iter().enumerate() {
        let inside: Vec<Span> = spans
            .iter()
            .enumerate()
            .filter(|(_, &(a, b))| a >= s && b <= l && a < b)
            .map(|(j, &(a, b))| Span {
                start: a - s,
                end: b - s,
                kind: types
                    .get(j)
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .unwrap_or_default(),
            })
            .collect();
        // Overlapping spans cannot all be masked in one sentence: a counted skip (SSM).
        let skip = check_overlaps(&inside).err();
        out.push(Document {
            text: text[s..l].to_string(),
            spans: if skip.is_some() { Vec::new() } else { inside },
            origin: format!("{origin}, sentence {k}"),
            skip,
        });
    }
    Ok(out)
}

/// The sentences of a TFRecord file of REALM's annotated Wikipedia, streamed.
pub fn sentences(path: &Path) -> Result<Box<dyn Iterator<Item = Result<Document>>>> {
    let mut records = Records::open(path)?;
    let mut pending: VecDeque<Document> = VecDeque::new();
    let mut failed = false;
    Ok(Box::new(std::iter::from_fn(move || loop {
        if let Some(d) = pending.pop_front() {
            return Some(Ok(d));
        }
        if failed {
            return None;
        }
        let record = match records.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                failed = true;
                return Some(Err(e));
            }
        };
        let origin = format!("{}: record {}", records.path.display(), records.index);
        match split_sentences(&record, &origin) {
            Ok(docs) => pending.extend(docs),
            Err(msg) => {
                failed = true;
                return Some(Err(records.error(msg)));
            }
        }
    })))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ints(v: &[i64]) -> Feature {
        Feature {
            kind: Some(Kind::Ints(Int64List { value: v.to_vec() })),
        }
    }

    fn bytes(v: &[&str]) -> Feature {
        let value = v.iter().map(|s| s.as_bytes().to_vec()).collect();
        Feature {
            kind: Some(Kind::Bytes(BytesList { value })),
        }
    }

    /// A TFRecord file of one article: `text`, its sentences and spans (byte offsets).
    pub(crate) fn write_article(
        path: &Path,
        text: &str,
        sentences: &[(i64, i64)],
        spans: &[(i64, i64)],
    ) {
        let feature: HashMap<String, Feature> = [
            ("text", bytes(&[text])),
            (
                "sentence_byte_start",
                ints(&sentences.iter().map(|s| s.0).collect::<Vec<_>>()),
            ),
            (
                "sentence_byte_limit",
                ints(&sentences.iter().map(|s| s.1).collect::<Vec<_>>()),
            ),
            (
                "span_byte_start",
                ints(&spans.iter().map(|s| s.0).collect::<Vec<_>>()),
            ),
            (
                "span_byte_limit",
                ints(&spans.iter().map(|s| s.1).collect::<Vec<_>>()),
            ),
            ("span_type", bytes(&vec!["ENT"; spans.len()])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let data = Example {
            features: Some(Features { feature }),
        }
        .encode_to_vec();
        // TFRecord framing with TF's masked CRC-32C.
        let mask = |c: u32| c.rotate_right(15).wrapping_add(0xa282_ead8);
        let len = (data.len() as u64).to_le_bytes();
        let mut out = len.to_vec();
        out.extend(mask(crc32c::value(&len)).to_le_bytes());
        out.extend(&data);
        out.extend(mask(crc32c::value(&data)).to_le_bytes());
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn overlapping_spans_make_the_sentence_a_counted_skip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.tfrecord");
        let text = "Ada Lovelace wrote notes. Paris is big.";
        // "Ada Lovelace" and "Lovelace" overlap in sentence 0; "Paris" is fine.
        write_article(
            &p,
            text,
            &[(0, 25), (26, 39)],
            &[(0, 12), (4, 12), (26, 31)],
        );
        let docs: Vec<Document> = sentences(&p).unwrap().map(|d| d.unwrap()).collect();
        assert_eq!(docs.len(), 2);
        let skip = docs[0].skip.as_deref().unwrap_or_default();
        assert!(skip.contains("overlap"), "{skip}");
        assert!(docs[0].origin.ends_with("w.tfrecord: record 1, sentence 0"));
        assert!(docs[0].spans.is_empty());
        assert_eq!((docs[1].skip.clone(), docs[1].spans.len()), (None, 1));
        // A span outside the text stops the run, naming the record.
        write_article(&p, "short", &[(0, 5)], &[(2, 9)]);
        let e = sentences(&p)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("record 1") && e.contains("span 0 [2, 9)"), "{e}");
    }
}
