//! The journal of an evaluation in progress (`predictions.partial.<key>.jsonl`, the key a
//! fingerprint of the run's settings): a header line with the settings, then one JSON line per
//! answered question, appended and synced chunk by chunk in input order. A killed `cbqa eval`
//! loses at most the chunk it was answering; run again with the same settings, it continues after
//! the last whole chunk. Once the run is scored and its reports are written, the journal is
//! removed. While a run holds a journal it holds its lock file too, so a second run of the same
//! evaluation at the same time is refused instead of interleaving its lines.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// The first line of a journal: what run it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalHeader {
    /// Always `"cbqa eval journal"`, so a stray file is not mistaken for one.
    pub journal: String,
    /// Identifies the run in `metrics.csv` (its `run_id` column), so a run resumed after its
    /// metrics row was written does not add a second one.
    pub run_id: String,
    /// Questions of the whole run.
    pub questions: usize,
    /// Questions per chunk: the journal only ever keeps whole chunks (or the whole run), so a
    /// resumed run batches every question as an uninterrupted run does.
    pub chunk: usize,
    /// `(setting, value)` pairs that decide the answers; a resumed run must match them.
    pub settings: Vec<(String, String)>,
}

impl JournalHeader {
    /// The header of a new run; `run_id` is fresh.
    pub fn new(questions: usize, chunk: usize, settings: Vec<(String, String)>) -> Self {
        JournalHeader {
            journal: MAGIC.into(),
            run_id: new_run_id(),
            questions,
            chunk: chunk.max(1),
            settings,
        }
    }
}

const MAGIC: &str = "cbqa eval journal";

/// Batches per journal chunk: `cbqa eval` answers and journals its questions in chunks of this
/// many `--batch-size` batches, in input order (the Python package's Ray driver plans the same).
pub const CHUNK_BATCHES: usize = 8;

/// One answered question, as `predictions.csv` will show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Position in the run's question list.
    pub index: usize,
    pub id: String,
    pub prediction: String,
    pub candidates: Vec<String>,
    /// The best candidate's score as `predictions.csv` writes it (kept as text: `-inf` has no
    /// JSON number).
    pub score: Option<String>,
    pub truncated: bool,
    pub error: Option<String>,
}

/// An open journal, appended to chunk by chunk.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    header: JournalHeader,
    _lock: crate::fsutil::FileLock,
}

impl Journal {
    /// Continue the journal at `path` when there is one for the same run (same settings, count
    /// and chunk size), or start one. Returns the journal, the entries already done (whole chunks
    /// only; anything after them, such as a line torn by a kill, is cut off) and whether it was
    /// resumed. A journal of other settings is an error naming the first setting that differs.
    pub fn open(path: &Path, header: JournalHeader) -> Result<(Journal, Vec<JournalEntry>, bool)> {
        let lock_file = crate::fsutil::lock_path(path);
        let lock = crate::fsutil::FileLock::try_acquire(&lock_file)?.map_err(|pid| {
            let holder = pid.map_or("another process".into(), |p| format!("process {p}"));
            Error::Output {
                path: path.to_path_buf(),
                msg: format!(
                    "{holder} is running this same evaluation now (it holds {}); wait for it, \
                     or use another --out",
                    lock_file.display()
                ),
            }
        })?;
        if !path.exists() {
            return Ok((Self::create(path, header, lock)?, Vec::new(), false));
        }
        let (old, entries, keep_bytes) = read_journal(path)?;
        check_same_run(path, &old, &header)?;
        let keep = whole_chunks(entries.len(), old.chunk, old.questions);
        let cut = keep_bytes[keep];
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        file.set_len(cut)
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io("truncate", path, e))?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
            header: old,
            _lock: lock,
        };
        use std::io::Seek;
        journal
            .file
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| Error::io("seek", path, e))?;
        let mut entries = entries;
        entries.truncate(keep);
        Ok((journal, entries, true))
    }

    fn create(
        path: &Path,
        header: JournalHeader,
        lock: crate::fsutil::FileLock,
    ) -> Result<Journal> {
        let mut line = serde_json::to_vec(&header).map_err(|e| json_write(path, e))?;
        line.push(b'\n');
        // The header appears whole or not at all.
        crate::fsutil::write_atomic(path, &line)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            header,
            _lock: lock,
        })
    }

    /// The header (the resumed run's own when resumed: its `run_id`).
    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    /// Append `entries` (one chunk, in input order) in one write and sync them to disk.
    pub fn append(&mut self, entries: &[JournalEntry]) -> Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(|e| json_write(&self.path, e))?;
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("sync", &self.path, e))
    }

    /// Remove the journal once the run's reports are written (its lock file stays: removing a
    /// lock file another process may be opening would let two runs hold "the" lock).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_file(&self.path).map_err(|e| Error::io("remove", &self.path, e))
    }
}

fn json_write(path: &Path, e: serde_json::Error) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        msg: format!("cannot write a journal line: {e}"),
    }
}

/// The header, the entries in order up to the first line that is not a whole entry, and the
/// byte offset after the header and after each entry (`offsets[k]`: the end of entry k-1).
fn read_journal(path: &Path) -> Result<(JournalHeader, Vec<JournalEntry>, Vec<u64>)> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut lines = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    let not_journal = |msg: String| Error::Output {
        path: path.to_path_buf(),
        msg: format!("{msg}; not a journal of cbqa eval (remove it, or use another --out)"),
    };
    let n = lines
        .read_until(b'\n', &mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    let header: JournalHeader = serde_json::from_slice(&buf)
        .map_err(|e| not_journal(format!("line 1 is no journal header ({e})")))?;
    if header.journal != MAGIC || header.chunk == 0 {
        return Err(not_journal("line 1 is no journal header".into()));
    }
    let mut offsets = vec![n as u64];
    let mut entries = Vec::new();
    loop {
        buf.clear();
        let n = lines
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break; // the end, or a line torn by a kill
        }
        let Ok(e) = serde_json::from_slice::<JournalEntry>(&buf) else {
            break;
        };
        if e.index != entries.len() || entries.len() >= header.questions {
            return Err(Error::Output {
                path: path.to_path_buf(),
                msg: format!(
                    "line {}: entry {} where entry {} was expected; the journal is damaged \
                     (remove it to start the evaluation over)",
                    entries.len() + 2,
                    e.index,
                    entries.len()
                ),
            });
        }
        entries.push(e);
        offsets.push(offsets[offsets.len() - 1] + n as u64);
    }
    Ok((header, entries, offsets))
}

/// How many of `done` entries to keep: whole chunks, or all when the run is complete.
fn whole_chunks(done: usize, chunk: usize, questions: usize) -> usize {
    if done >= questions {
        questions
    } else {
        done / chunk * chunk
    }
}

/// A journal can only be continued by the same run.
fn check_same_run(path: &Path, old: &JournalHeader, new: &JournalHeader) -> Result<()> {
    let differs = |what: String, was: String, now: String| Error::Output {
        path: path.to_path_buf(),
        msg: format!(
            "this unfinished evaluation was started with {what} {was}, this run asks for {now}: \
             run with the same settings to continue it, or remove the file"
        ),
    };
    for (k, v) in &new.settings {
        let was = old.settings.iter().find(|(ok, _)| ok == k).map(|(_, v)| v);
        if was != Some(v) {
            let was = was.cloned().unwrap_or_else(|| "(unset)".into());
            return Err(differs(k.clone(), was, v.clone()));
        }
    }
    if old.settings.len() != new.settings.len() {
        return Err(differs(
            "settings".into(),
            format!("{:?}", old.settings),
            format!("{:?}", new.settings),
        ));
    }
    if old.questions != new.questions {
        let n = |q: usize| q.to_string();
        return Err(differs(
            "questions".into(),
            n(old.questions),
            n(new.questions),
        ));
    }
    if old.chunk != new.chunk {
        let c = |q: usize| q.to_string();
        return Err(differs("chunk size".into(), c(old.chunk), c(new.chunk)));
    }
    Ok(())
}

/// A run id unique enough for one machine: the time in nanoseconds and the process id.
fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{:x}", std::process::id())
}

/// FNV-1a, 64 bits: a stable fingerprint of bytes (the questions a run answers, the inputs a
/// score merges), written as 16 hex digits.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> JournalEntry {
        JournalEntry {
            index: i,
            id: format!("q{i}"),
            prediction: format!("answer {i}"),
            candidates: vec![format!("answer {i}")],
            score: Some("-inf".into()),
            truncated: false,
            error: None,
        }
    }

    fn header() -> JournalHeader {
        JournalHeader::new(10, 4, vec![("--beams".into(), "1".into())])
    }

    #[test]
    fn resumes_whole_chunks_and_cuts_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        let (mut j, done, resumed) = Journal::open(&p, header()).unwrap();
        assert!(done.is_empty() && !resumed);
        let id = j.header().run_id.clone();
        j.append(&(0..4).map(entry).collect::<Vec<_>>()).unwrap();
        j.append(&(4..6).map(entry).collect::<Vec<_>>()).unwrap();
        drop(j);
        // a torn line at the end, as a kill in the middle of a write leaves it
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"index\":6,\"id\":\"q").unwrap();
        drop(f);
        let (mut j, done, resumed) = Journal::open(&p, header()).unwrap();
        assert!(resumed);
        // the same evaluation cannot run twice at once
        let e = Journal::open(&p, header()).err().unwrap().to_string();
        assert!(e.contains("is running this same evaluation"), "{e}");
        assert_eq!(done, (0..4).map(entry).collect::<Vec<_>>());
        assert_eq!(j.header().run_id, id);
        j.append(&(4..8).map(entry).collect::<Vec<_>>()).unwrap();
        j.append(&(8..10).map(entry).collect::<Vec<_>>()).unwrap();
        drop(j);
        let (_, done, _) = Journal::open(&p, header()).unwrap();
        assert_eq!(done, (0..10).map(entry).collect::<Vec<_>>());
    }

    #[test]
    fn refuses_other_settings_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        drop(Journal::open(&p, header()).unwrap());
        let mut other = header();
        other.settings[0].1 = "4".into();
        let e = Journal::open(&p, other).err().unwrap().to_string();
        assert!(e.contains("--beams 1") && e.contains("asks for 4"), "{e}");
        std::fs::write(&p, "id,prediction\n").unwrap();
        let e = Journal::open(&p, header()).err().unwrap().to_string();
        assert!(e.contains("not a journal") && e.contains("j.jsonl"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"id,prediction\n");
    }

    #[test]
    fn fingerprint_separates_parts() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"x"]), fingerprint(&[b"x"]));
    }
}
