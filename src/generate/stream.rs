//! Decoding as a stream of questions: questions join the running batch at a step boundary
//! ([`Stream::admit`]: encoded and given their first step together, then joined onto the running
//! state with [`Seq2Seq::concat`]) and leave it as soon as they are done — continuous batching.
//! Offline decoding ([`super::greedy`], [`super::beam_search`]) is the same stream with every
//! question admitted at once.
//!
//! Each question counts its own steps, so its result does not depend on when it joined or what
//! else runs beside it (up to the backend's floating-point summation order over padded batches).

use super::beam::{self, Rows, Search};
use super::greedy;
use super::{GenerateOptions, Hypothesis};
use crate::error::{Error, Result};
use crate::runtime::{EncoderInput, Logits, Seq2Seq};

/// A question's search: one greedy hypothesis, or its beams.
enum Progress {
    Greedy(Hypothesis),
    Beam(beam::Item),
}

/// A question in the running batch, known to the caller by `key`.
struct Question<K> {
    key: K,
    /// Steps taken so far.
    step: usize,
    progress: Progress,
}

/// A finished question: its key and its hypotheses, best first (one for greedy decoding, up to
/// `num_return_sequences` for beam search).
pub type Finished<K> = (K, Vec<Hypothesis>);

/// What one step decided for the questions it advanced.
struct Advanced<K> {
    /// The questions still running, in state order.
    running: Vec<Question<K>>,
    /// The rows of the stepped state they continue from, in order (a beam's parent may repeat).
    rows: Vec<usize>,
    /// The next input token of each of those rows.
    tokens: Vec<i64>,
    finished: Vec<Finished<K>>,
}

/// A running batch of questions over a backend, stepped one token at a time.
pub struct Stream<'b, B: Seq2Seq, K> {
    backend: &'b B,
    opts: GenerateOptions,
    /// Beam search's settings and scratch buffers (`None` for greedy decoding).
    beams: Option<Search>,
    /// Scratch log-probabilities of greedy decoding.
    lp: Vec<f32>,
    /// The backend's state of the running questions; `None` when none runs.
    state: Option<B::State>,
    /// The running questions, in the order of their rows in `state`.
    questions: Vec<Question<K>>,
    /// The next input token of every row of `state`.
    tokens: Vec<i64>,
}

impl<'b, B: Seq2Seq, K> Stream<'b, B, K> {
    /// An empty stream decoding with `opts` (checked).
    pub fn new(backend: &'b B, opts: &GenerateOptions) -> Result<Self> {
        opts.check()?;
        Ok(Stream {
            backend,
            opts: opts.clone(),
            beams: (opts.num_beams > 1).then(|| Search::new(opts)),
            lp: Vec::new(),
            state: None,
            questions: Vec::new(),
            tokens: Vec::new(),
        })
    }

    /// The decoding settings of this stream.
    pub fn options(&self) -> &GenerateOptions {
        &self.opts
    }

    /// Questions running.
    pub fn len(&self) -> usize {
        self.questions.len()
    }

    /// Whether no question runs.
    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }

    /// Decoder rows running (questions × beams).
    pub fn rows(&self) -> usize {
        self.tokens.len()
    }

    /// Whether [`admit`](Self::admit) can add questions now: when none runs, or when the backend
    /// joins states at different positions.
    pub fn can_admit(&self) -> bool {
        self.state.is_none() || self.backend.joins_any_position()
    }

    /// Add the questions of `input` (one per row, known by `keys`, in order) to the running
    /// batch: they are encoded and take their first step together, then join the running state.
    /// Returns those already done after that first step.
    pub fn admit(&mut self, input: &EncoderInput, keys: Vec<K>) -> Result<Vec<Finished<K>>> {
        if keys.len() != input.batch {
            return Err(Error::input(
                "questions",
                format!("{} keys for {} encoder rows", keys.len(), input.batch),
            ));
        }
        if !self.can_admit() {
            return Err(Error::input(
                "decoding state",
                format!(
                    "{} cannot add questions to a running batch",
                    self.backend.describe()
                ),
            ));
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let state = self.backend.encode(input)?;
        let start = vec![self.opts.decoder_start_token_id as i64; input.batch];
        let (mut logits, state) = self.backend.step(state, &start)?;
        let new = keys.into_iter().map(|key| self.question(key)).collect();
        let advanced = self.advance(&mut logits, 1, new);
        if !advanced.running.is_empty() {
            let state = self.backend.select(state, &advanced.rows)?;
            self.state = Some(match self.state.take() {
                Some(running) => self.backend.concat(running, state)?,
                None => state,
            });
            self.questions.extend(advanced.running);
            self.tokens.extend(advanced.tokens);
        }
        Ok(advanced.finished)
    }

    /// One decoder step of every running question; returns those that finished.
    pub fn step(&mut self) -> Result<Vec<Finished<K>>> {
        let Some(state) = self.state.take() else {
            return Ok(Vec::new());
        };
        let (mut logits, state) = self.backend.step(state, &self.tokens)?;
        let per_question = self.opts.num_beams;
        let questions = std::mem::take(&mut self.questions);
        let advanced = self.advance(&mut logits, per_question, questions);
        self.keep(state, advanced.running, &advanced.rows, advanced.tokens)?;
        Ok(advanced.finished)
    }

    /// Drop the running questions whose key `leaves` says so, without results (a request that
    /// timed out or whose client went away); returns their keys.
    pub fn remove(&mut self, leaves: impl Fn(&K) -> bool) -> Result<Vec<K>> {
        if !self.questions.iter().any(|q| leaves(&q.key)) {
            return Ok(Vec::new());
        }
        let per_question = self.opts.num_beams;
        let mut running = Vec::with_capacity(self.questions.len());
        let (mut rows, mut tokens, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for (i, q) in std::mem::take(&mut self.questions).into_iter().enumerate() {
            if leaves(&q.key) {
                gone.push(q.key);
                continue;
            }
            let own = i * per_question..(i + 1) * per_question;
            tokens.extend_from_slice(&self.tokens[own.clone()]);
            rows.extend(own);
            running.push(q);
        }
        if let Some(state) = self.state.take() {
            self.keep(state, running, &rows, tokens)?;
        }
        Ok(gone)
    }

    /// A question about to take its first step.
    fn question(&self, key: K) -> Question<K> {
        let progress = match self.opts.num_beams {
            1 => Progress::Greedy(Hypothesis {
                tokens: Vec::with_capacity(self.opts.max_new_tokens),
                score: 0.0,
            }),
            nb => Progress::Beam(beam::Item::new(nb, self.opts.max_new_tokens)),
        };
        Question {
            key,
            step: 0,
            progress,
        }
    }

    /// Keep rows `rows` of the stepped `state` for the questions `running`, with their next
    /// tokens.
    fn keep(
        &mut self,
        state: B::State,
        running: Vec<Question<K>>,
        rows: &[usize],
        tokens: Vec<i64>,
    ) -> Result<()> {
        self.state = match running.is_empty() {
            true => None,
            false => Some(self.backend.select(state, rows)?),
        };
        self.questions = running;
        self.tokens = tokens;
        Ok(())
    }

    /// Advance every question of `questions` (which own `per_question` consecutive rows of
    /// `logits` each, in order) by one step.
    fn advance(
        &mut self,
        logits: &mut Logits,
        per_question: usize,
        questions: Vec<Question<K>>,
    ) -> Advanced<K> {
        let mut out = Advanced {
            running: Vec::with_capacity(questions.len()),
            rows: Vec::with_capacity(logits.rows),
            tokens: Vec::with_capacity(logits.rows),
            finished: Vec::new(),
        };
        for (i, mut q) in questions.into_iter().enumerate() {
            let at = Rows {
                first: i * per_question,
                rows: per_question,
            };
            let (done, parents) = match &mut q.progress {
                Progress::Greedy(hyp) => {
                    let row = greedy_row(logits, at.first, q.step, &self.opts);
                    let done = greedy::advance(hyp, row, &self.opts, &mut self.lp);
                    (done, vec![0])
                }
                Progress::Beam(item) => match self.beams.as_mut() {
                    Some(search) => search.advance(item, logits, at, q.step),
                    None => (true, Vec::new()),
                },
            };
            q.step += 1;
            if done {
                out.finished.push((q.key, self.results(q.progress)));
                continue;
            }
            out.rows
                .extend(parents.iter().map(|&p| at.first + p.min(per_question - 1)));
            match &q.progress {
                Progress::Greedy(hyp) => out.tokens.push(*hyp.tokens.last().unwrap_or(&0) as i64),
                Progress::Beam(item) => out.tokens.extend(item.next_tokens()),
            }
            out.running.push(q);
        }
        out
    }

    /// The hypotheses a finished question returns.
    fn results(&self, progress: Progress) -> Vec<Hypothesis> {
        match progress {
            Progress::Greedy(hyp) => vec![hyp],
            Progress::Beam(mut item) => beam::results_of(&mut item, &self.opts),
        }
    }
}

/// Row `r` of `logits` for a greedy question at step `step`, with EOS suppressed while fewer than
/// `min_new_tokens` were generated (transformers' `MinNewTokensLengthLogitsProcessor`).
fn greedy_row<'l>(
    logits: &'l mut Logits,
    r: usize,
    step: usize,
    opts: &GenerateOptions,
) -> &'l [f32] {
    let v = logits.vocab;
    let row = &mut logits.data[r * v..(r + 1) * v];
    if step < opts.min_new_tokens {
        if let Some(x) = row.get_mut(opts.eos_token_id as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
    row
}

/// Decode a padded batch offline: every row admitted at once, stepped until all are done.
/// Per input row, its hypotheses.
pub(super) fn run<B: Seq2Seq>(
    backend: &B,
    input: &EncoderInput,
    opts: &GenerateOptions,
) -> Result<Vec<Vec<Hypothesis>>> {
    let mut stream = Stream::new(backend, opts)?;
    let mut out = vec![Vec::new(); input.batch];
    let mut finished = stream.admit(input, (0..input.batch).collect())?;
    loop {
        for (row, hyps) in finished {
            out[row] = hyps;
        }
        if stream.is_empty() {
            return Ok(out);
        }
        finished = stream.step()?;
    }
}
