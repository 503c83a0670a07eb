//! Beam search with the semantics of transformers 4.57's vectorised `_beam_search`
//! (`generation/utils.py`): at every step the top `2·num_beams` continuations over all beams
//! (`beams_to_keep` with one EOS id), the best `num_beams` that did not stop become the running
//! beams, and those among the first `num_beams` that stopped (EOS, or the length limit) are scored
//! `sum_logprobs / generated_len ** length_penalty` and kept if they are among the best
//! `num_beams` finished hypotheses. The early-stop heuristic and `early_stopping` modes follow
//! `_check_early_stop_heuristic` and `_beam_search_has_unfinished_sequences`.
//!
//! transformers runs every question until the whole batch is done; a question's result only
//! depends on its own beams, so here a finished question leaves the batch at once, and each
//! question counts its own steps (questions may join a running batch: [`super::stream`]). And
//! where transformers expands every question to `num_beams` identical rows before the first step,
//! here the first step runs once per question (its beams would all see the same logits) and the
//! state is expanded after it: the cross-attention keys/values are computed once per question.
//!
//! This file holds one question's search; [`super::stream::Stream`] runs the steps.

use super::{log_softmax, EarlyStopping, GenerateOptions, Hypothesis};
use crate::runtime::Logits;

/// transformers' stand-in for minus infinity in beam scores.
const NEG: f32 = -1.0e9;

struct Beam {
    tokens: Vec<u32>,
    score: f32,
}

/// One question's beams.
pub(super) struct Item {
    running: Vec<Beam>,
    /// Finished hypotheses, best first, at most `num_beams`.
    finished: Vec<Hypothesis>,
    /// `is_early_stop_heuristic_unsatisfied`: improvement still possible.
    improvable: bool,
}

#[derive(Clone, Copy)]
struct Cand {
    score: f32,
    beam: usize,
    token: usize,
}

/// Top `k` entries of `lp` (index, value), best first, ties by lower index.
fn top_k(lp: &[f32], k: usize, out: &mut Vec<(usize, f32)>) {
    out.clear();
    let mut idx: Vec<usize> = (0..lp.len()).collect();
    let k = k.min(lp.len());
    if k < lp.len() {
        idx.select_nth_unstable_by(k, |&a, &b| lp[b].total_cmp(&lp[a]).then(a.cmp(&b)));
        idx.truncate(k + 1);
    }
    idx.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]).then(a.cmp(&b)));
    out.extend(idx.into_iter().take(k).map(|i| (i, lp[i])));
}

fn length_norm(len: usize, penalty: f32) -> f32 {
    (len as f64).powf(penalty as f64) as f32
}

/// The search's fixed quantities and scratch buffers, shared by its steps and questions.
pub(super) struct Search {
    opts: GenerateOptions,
    /// `num_beams`.
    nb: usize,
    /// Continuations kept per question and step: max(2, 1 + number of EOS ids) · num_beams.
    keep: usize,
    /// Log-probabilities of one beam's next token.
    lp: Vec<f32>,
    /// The best continuations of one beam.
    best: Vec<(usize, f32)>,
}

/// The lengths of one step.
struct StepFacts {
    /// Generated length after this step.
    gen_len: usize,
    /// Whether `gen_len` reaches `max_new_tokens`.
    at_limit: bool,
}

impl Item {
    /// A question at the start: one live beam (score 0), the others at minus infinity.
    pub(super) fn new(nb: usize, max_new: usize) -> Self {
        Item {
            running: (0..nb)
                .map(|b| Beam {
                    tokens: Vec::with_capacity(max_new),
                    score: if b == 0 { 0.0 } else { NEG },
                })
                .collect(),
            finished: Vec::with_capacity(nb),
            improvable: true,
        }
    }

    /// The last token of every running beam: the next step's input.
    pub(super) fn next_tokens(&self) -> impl Iterator<Item = i64> + '_ {
        self.running
            .iter()
            .map(|b| *b.tokens.last().unwrap_or(&0) as i64)
    }

    /// The tokens of beam `beam` followed by `token`.
    fn extended(&self, beam: usize, token: usize) -> Vec<u32> {
        let mut t = self.running[beam].tokens.clone();
        t.push(token as u32);
        t
    }
}

/// Where a question's logits are: `rows` rows from `first` (`num_beams`, or one — every beam's —
/// at the first step).
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub first: usize,
    pub rows: usize,
}

impl Search {
    /// The search of `opts` (with `num_beams` ≥ 2).
    pub(super) fn new(opts: &GenerateOptions) -> Self {
        let nb = opts.num_beams;
        Search {
            opts: opts.clone(),
            nb,
            keep: 2 * nb,
            lp: Vec::new(),
            best: Vec::new(),
        }
    }

    /// Step 1: the top `keep` continuations over all beams of the question at `at`, best first
    /// (ties by the flat `beam · vocab + token` index, as transformers' `topk` over the
    /// flattened scores).
    fn candidates(&mut self, item: &Item, logits: &Logits, at: Rows, step: usize) -> Vec<Cand> {
        let opts = &self.opts;
        let mut cands: Vec<Cand> = Vec::with_capacity(self.nb * self.keep);
        for (b, beam) in item.running.iter().enumerate() {
            log_softmax(logits.row(at.first + b.min(at.rows - 1)), &mut self.lp);
            if step < opts.min_new_tokens {
                // applied to the log-probabilities, as transformers' logits processors are
                if let Some(x) = self.lp.get_mut(opts.eos_token_id as usize) {
                    *x = f32::NEG_INFINITY;
                }
            }
            for x in self.lp.iter_mut() {
                *x += beam.score;
            }
            top_k(&self.lp, self.keep, &mut self.best);
            cands.extend(self.best.iter().map(|&(t, s)| Cand {
                score: s,
                beam: b,
                token: t,
            }));
        }
        let vocab = logits.vocab;
        cands.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then((a.beam * vocab + a.token).cmp(&(b.beam * vocab + b.token)))
        });
        cands.truncate(self.keep);
        cands
    }

    /// Step 2: the next running beams, the best `num_beams` candidates that did not stop (`hits`),
    /// with the beam each came from.
    fn next_running(&self, item: &Item, cands: &[Cand], hits: &[bool]) -> (Vec<Beam>, Vec<usize>) {
        let mut order: Vec<usize> = (0..cands.len()).collect();
        let run_score = |j: usize| cands[j].score + if hits[j] { NEG } else { 0.0 };
        order.sort_by(|&a, &b| run_score(b).total_cmp(&run_score(a)).then(a.cmp(&b)));
        let chosen = &order[..self.nb.min(order.len())];
        let running = chosen
            .iter()
            .map(|&j| Beam {
                tokens: item.extended(cands[j].beam, cands[j].token),
                score: run_score(j),
            })
            .collect();
        let parents = chosen.iter().map(|&j| cands[j].beam).collect();
        (running, parents)
    }

    /// Step 3: among the first `num_beams` candidates, those that stopped join the finished
    /// hypotheses (length-normalised), unless the question can no longer take any.
    fn add_finished(&self, item: &mut Item, cands: &[Cand], hits: &[bool], facts: &StepFacts) {
        let opts = &self.opts;
        let full = item.finished.len() == self.nb;
        let blocked = (full && opts.early_stopping == EarlyStopping::True) || !item.improvable;
        if blocked {
            return;
        }
        let norm = length_norm(facts.gen_len, opts.length_penalty);
        for (j, c) in cands.iter().enumerate().take(self.nb) {
            if hits[j] {
                let tokens = item.extended(c.beam, c.token);
                item.finished.push(Hypothesis {
                    tokens,
                    score: c.score / norm,
                });
            }
        }
        item.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
        item.finished.truncate(self.nb);
    }

    /// Step 4: whether the question can still improve (`_check_early_stop_heuristic`), and
    /// whether it is done.
    fn is_done(&self, item: &mut Item, facts: &StepFacts) -> bool {
        let opts = &self.opts;
        let best_len = if opts.early_stopping == EarlyStopping::Never && opts.length_penalty > 0.0 {
            opts.max_new_tokens
        } else {
            facts.gen_len
        };
        let best_possible = item.running[0].score / length_norm(best_len, opts.length_penalty);
        let full = item.finished.len() == self.nb;
        let worst = if full {
            item.finished
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min)
        } else {
            NEG
        };
        item.improvable &= best_possible > worst;
        !item.improvable || (full && opts.early_stopping == EarlyStopping::True) || facts.at_limit
    }

    /// Step `step` (from 0) of the question at `at`: its new running beams (with the beam each
    /// came from) and finished hypotheses; true when the question is done.
    pub(super) fn advance(
        &mut self,
        item: &mut Item,
        logits: &Logits,
        at: Rows,
        step: usize,
    ) -> (bool, Vec<usize>) {
        let max_new = self.opts.max_new_tokens;
        let facts = StepFacts {
            gen_len: step + 1,
            at_limit: step + 1 >= max_new,
        };
        let cands = self.candidates(item, logits, at, step);
        let eos = self.opts.eos_token_id;
        let hits: Vec<bool> = cands
            .iter()
            .map(|c| c.token as u32 == eos || facts.at_limit)
            .collect();
        let (running, parents) = self.next_running(item, &cands, &hits);
        self.add_finished(item, &cands, &hits, &facts);
        item.running = running;
        (self.is_done(item, &facts), parents)
    }
}

/// The finished hypotheses a question returns, best first.
pub(super) fn results_of(item: &mut Item, opts: &GenerateOptions) -> Vec<Hypothesis> {
    item.finished
        .drain(..)
        .take(opts.num_return_sequences)
        .collect()
}
