//! The training examples of a pre-training corpus kept on disk, so a corpus larger than memory
//! trains. As the corpus is read (streamed, [`build_examples_into`]), the token ids are written
//! once to one file, `RUN/train_examples.bin` ([`EXAMPLES_FILE`]): little-endian u16 when the
//! vocabulary fits (T5's 32,128 ids do), else u32 — 2 or 4 bytes a token where the in-memory
//! examples cost 8. What stays in memory is the index: per example where its ids start, how many
//! there are, and its input and target lengths (24 bytes an example; a 568-token piece is
//! 1,136 bytes on disk), which is all that planning batches needs ([`ExampleLengths`]). The ids
//! of a micro-batch are read back when it is collated.
//!
//! SSM examples are stored as their inputs then their targets. Span corruption stores the raw
//! pieces and masks each one when it is read, with the draws of its epoch
//! ([`epoch_seed`]`(seed, epoch)`, or the run's seed with [`MaskDraw::Fixed`]) — exactly the
//! examples [`super::data::Redraw`] makes in memory (the same [`Denoiser`]), so redrawn masks need
//! no second copy and a resumed run reads the same examples. Every epoch's example of a piece
//! has the lengths of its epoch-0 example (the noise and span counts follow from the length),
//! which the index records.

use super::batching::{collate, collate_rows, Batch, ExampleLengths};
use super::data::Tokenized;
use crate::error::{Error, Result};
use crate::pretrain::span_corruption::{epoch_seed, Denoiser, MaskDraw};
use crate::pretrain::{build_examples_into, CorpusCounts, Example, ExampleSink, PretrainSettings};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::Device;
use tokenizers::Tokenizer;

/// The token file of a run's pre-training examples, in the run directory.
pub const EXAMPLES_FILE: &str = "train_examples.bin";

/// Where one example's ids are in the file (in tokens) and its lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    offset: u64,
    stored: u32,
    input_len: u32,
    target_len: u32,
}

/// What an entry's stored ids are.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// Inputs then targets (SSM).
    Pairs,
    /// A raw span-corruption piece, masked when read.
    Pieces {
        denoiser: Denoiser,
        seed: u64,
        masks: MaskDraw,
    },
}

/// A run's training examples in a token file, indexed in memory.
#[derive(Debug)]
pub struct DiskExamples {
    path: PathBuf,
    file: Mutex<File>,
    /// Bytes per token id: 2 or 4.
    width: usize,
    index: Vec<Entry>,
    layout: Layout,
    /// The file is still the hidden temporary one, removed when this is dropped.
    temporary: bool,
}

/// Bytes per token id for a vocabulary of `vocab_size` ids.
fn width_for(vocab_size: usize) -> usize {
    match vocab_size <= usize::from(u16::MAX) + 1 {
        true => 2,
        false => 4,
    }
}

/// Builds the file as the corpus is read.
struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    width: usize,
    tokens: u64,
    index: Vec<Entry>,
    seed: u64,
    denoiser: Option<Denoiser>,
}

impl Writer {
    fn ids(&mut self, ids: &[u32]) -> Result<()> {
        for &id in ids {
            let written = match self.width {
                2 => u16::try_from(id).map(|v| self.out.write_all(&v.to_le_bytes())),
                _ => Ok(self.out.write_all(&id.to_le_bytes())),
            };
            let Ok(written) = written else {
                let msg = format!("token id {id} does not fit the file's u16 ids");
                return Err(Error::input(self.path.display().to_string(), msg));
            };
            written.map_err(|e| Error::io("write", &self.path, e))?;
        }
        self.tokens += ids.len() as u64;
        Ok(())
    }

    fn entry(&mut self, stored: usize, input_len: usize, target_len: usize) -> Result<()> {
        let len = |n: usize| {
            u32::try_from(n).map_err(|_| {
                let msg = format!("an example of {n} tokens is too long for the index");
                Error::input(self.path.display().to_string(), msg)
            })
        };
        let entry = Entry {
            offset: self.tokens,
            stored: len(stored)?,
            input_len: len(input_len)?,
            target_len: len(target_len)?,
        };
        self.index.push(entry);
        Ok(())
    }
}

impl ExampleSink for Writer {
    fn example(&mut self, example: Example) -> Result<()> {
        let (i, t) = (example.inputs.len(), example.targets.len());
        self.entry(i + t, i, t)?;
        self.ids(&example.inputs)?;
        self.ids(&example.targets)
    }

    fn piece(&mut self, raw: Vec<u32>, denoiser: &Denoiser) -> Result<()> {
        let first = denoiser.denoise(&raw, self.seed, self.index.len() as u64);
        self.entry(raw.len(), first.inputs.len(), first.targets.len())?;
        self.denoiser = Some(*denoiser);
        self.ids(&raw)
    }
}

impl DiskExamples {
    /// The examples of the corpus `p` (masks as `p.masks` says, from `seed`) written to a new
    /// file at `path` (removed again on error or when the result is dropped before
    /// [`DiskExamples::move_into`]), ids of `vocab_size` ids; with what reading it counted.
    pub fn write(
        p: &PretrainSettings,
        tok: &Tokenizer,
        eos: u32,
        seed: u64,
        vocab_size: usize,
        path: &Path,
    ) -> Result<(DiskExamples, CorpusCounts)> {
        let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        let mut w = Writer {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            width: width_for(vocab_size),
            tokens: 0,
            index: Vec::new(),
            seed,
            denoiser: None,
        };
        let built = build_examples_into(p, tok, eos, seed, &mut w);
        let finished = built.and_then(|counts| {
            w.out.flush().map_err(|e| Error::io("write", path, e))?;
            Ok(counts)
        });
        let counts = match finished {
            Ok(counts) => counts,
            Err(e) => {
                drop(w);
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        let layout = match w.denoiser {
            Some(denoiser) => Layout::Pieces {
                denoiser,
                seed,
                masks: p.masks,
            },
            None => Layout::Pairs,
        };
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let store = DiskExamples {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            width: w.width,
            index: w.index,
            layout,
            temporary: true,
        };
        Ok((store, counts))
    }

    /// Move the file into `dir` as [`EXAMPLES_FILE`] (replacing one there); it is kept then.
    pub fn move_into(&mut self, dir: &Path) -> Result<()> {
        let target = dir.join(EXAMPLES_FILE);
        std::fs::rename(&self.path, &target).map_err(|e| Error::io("move", &self.path, e))?;
        self.path = target;
        self.temporary = false;
        Ok(())
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes per token id in the file (2: u16, 4: u32).
    pub fn id_width(&self) -> usize {
        self.width
    }

    /// The ids of example `i` as stored.
    fn stored(&self, i: usize) -> Result<Vec<u32>> {
        let e = self.index[i];
        let mut bytes = vec![0u8; e.stored as usize * self.width];
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.seek(SeekFrom::Start(e.offset * self.width as u64))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|err| Error::io("read", &self.path, err))?;
        Ok(match self.width {
            2 => bytes
                .chunks_exact(2)
                .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        })
    }

    /// Example `i` of epoch `epoch`: its input and target ids.
    pub fn example(&self, i: usize, epoch: u64) -> Result<(Vec<i64>, Vec<i64>)> {
        let ids = self.stored(i)?;
        let wide = |v: &[u32]| v.iter().map(|&t| i64::from(t)).collect::<Vec<i64>>();
        Ok(match self.layout {
            Layout::Pairs => {
                let (input, target) = ids.split_at(self.index[i].input_len as usize);
                (wide(input), wide(target))
            }
            Layout::Pieces {
                denoiser,
                seed,
                masks,
            } => {
                let seed = match masks {
                    MaskDraw::PerEpoch => epoch_seed(seed, epoch),
                    MaskDraw::Fixed => seed,
                };
                let d = denoiser.denoise(&ids, seed, i as u64);
                (wide(&d.inputs), wide(&d.targets))
            }
        })
    }
}

impl Drop for DiskExamples {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ExampleLengths for DiskExamples {
    fn count(&self) -> usize {
        self.index.len()
    }
    fn answers(&self, _i: usize) -> usize {
        1
    }
    fn input_len(&self, i: usize) -> usize {
        self.index[i].input_len as usize
    }
    fn target_len(&self, i: usize, _answer: usize) -> usize {
        self.index[i].target_len as usize
    }
}

/// The training examples of a run: in memory (QA sources), or in a token file (a pre-training
/// corpus).
#[derive(Debug)]
pub enum TrainExamples {
    Memory(Vec<Tokenized>),
    Disk(DiskExamples),
}

impl TrainExamples {
    /// The padded batch of `items` of epoch `epoch` on `device`.
    pub fn collate(
        &self,
        items: &[(usize, usize)],
        epoch: u64,
        pad: i64,
        device: Device,
    ) -> Result<Batch> {
        let disk = match self {
            TrainExamples::Memory(examples) => return collate(examples, items, pad, device),
            TrainExamples::Disk(disk) => disk,
        };
        let rows = items
            .iter()
            .map(|&(i, _)| disk.example(i, epoch))
            .collect::<Result<Vec<_>>>()?;
        let inputs: Vec<&[i64]> = rows.iter().map(|(i, _)| i.as_slice()).collect();
        let targets: Vec<&[i64]> = rows.iter().map(|(_, t)| t.as_slice()).collect();
        collate_rows(&inputs, &targets, pad, device)
    }

    fn lengths(&self) -> &dyn ExampleLengths {
        match self {
            TrainExamples::Memory(examples) => examples,
            TrainExamples::Disk(disk) => disk,
        }
    }
}

impl ExampleLengths for TrainExamples {
    fn count(&self) -> usize {
        self.lengths().count()
    }
    fn answers(&self, i: usize) -> usize {
        self.lengths().answers(i)
    }
    fn input_len(&self, i: usize) -> usize {
        self.lengths().input_len(i)
    }
    fn target_len(&self, i: usize, answer: usize) -> usize {
        self.lengths().target_len(i, answer)
    }
}
