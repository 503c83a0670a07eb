//! Beam search with the semantics of transformers 4.57's vectorised `_beam_search`
//! (`generation/utils.py`): at every step the top `2·num_beams` continuations over all beams
//! (`beams_to_keep` with one EOS id), the best `num_beams` that did not stop become the running
//! beams, and those among the first `num_beams` that stopped (EOS, or the length limit) are scored
//! `sum_logprobs / generated_len ** length_penalty` and kept if they are among the best
//! `num_beams` finished hypotheses. The early-stop heuristic and `early_stopping` modes follow
//! `_check_early_stop_heuristic` and `_beam_search_has_unfinished_sequences`.
//!
//! transformers runs every question until the whole batch is done; a question's result only
//! depends on its own beams, so here a finished question leaves the batch at once. And where
//! transformers expands every question to `num_beams` identical rows before the first step, here
//! the first step runs once per question (its beams would all see the same logits) and the state
//! is expanded after it: the cross-attention keys/values are computed once per question.

use super::{log_softmax, EarlyStopping, GenerateOptions, Hypothesis};
use crate::error::Result;
use crate::runtime::{EncoderInput, Logits, Seq2Seq};

/// transformers' stand-in for minus infinity in beam scores.
const NEG: f32 = -1.0e9;

struct Beam {
    tokens: Vec<u32>,
    score: f32,
}

struct Item {
    /// Input row this question came from.
    row: usize,
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

/// The search's fixed quantities and scratch buffers, shared by its steps.
struct Search<'a> {
    opts: &'a GenerateOptions,
    /// `num_beams`.
    nb: usize,
    /// Continuations kept per question and step: max(2, 1 + number of EOS ids) · num_beams.
    keep: usize,
    /// Log-probabilities of one beam's next token.
    lp: Vec<f32>,
    /// The best continuations of one beam.
    best: Vec<(usize, f32)>,
    /// Questions still running in the current step.
    items_in_step: usize,
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
    fn new(row: usize, nb: usize, max_new: usize) -> Self {
        Item {
            row,
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

    /// The tokens of beam `beam` followed by `token`.
    fn extended(&self, beam: usize, token: usize) -> Vec<u32> {
        let mut t = self.running[beam].tokens.clone();
        t.push(token as u32);
        t
    }
}

impl Search<'_> {
    /// Step 1: the top `keep` continuations over all beams of question `i`, best first (ties by
    /// the flat `beam · vocab + token` index, as transformers' `topk` over the flattened scores).
    /// The logits hold `rows` rows per question: `num_beams`, or one (every beam's) at the first
    /// step.
    fn candidates(&mut self, item: &Item, logits: &Logits, i: usize, step: usize) -> Vec<Cand> {
        let opts = self.opts;
        let rows = logits.rows / self.items_in_step;
        let mut cands: Vec<Cand> = Vec::with_capacity(self.nb * self.keep);
        for (b, beam) in item.running.iter().enumerate() {
            log_softmax(logits.row(i * rows + b.min(rows - 1)), &mut self.lp);
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
        let opts = self.opts;
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
        let opts = self.opts;
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

    /// One step of question `i`: its new running beams (with their parents) and finished
    /// hypotheses; true when the question is done.
    fn advance(
        &mut self,
        item: &mut Item,
        logits: &Logits,
        i: usize,
        step: usize,
    ) -> (bool, Vec<usize>) {
        let max_new = self.opts.max_new_tokens;
        let facts = StepFacts {
            gen_len: step + 1,
            at_limit: step + 1 >= max_new,
        };
        let cands = self.candidates(item, logits, i, step);
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
fn results_of(item: &mut Item, opts: &GenerateOptions) -> Vec<Hypothesis> {
    item.finished
        .drain(..)
        .take(opts.num_return_sequences)
        .collect()
}

/// Beam search over a padded batch; per input row up to `num_return_sequences` hypotheses.
pub fn beam_search<B: Seq2Seq>(
    backend: &B,
    input: &EncoderInput,
    opts: &GenerateOptions,
) -> Result<Vec<Vec<Hypothesis>>> {
    let nb = opts.num_beams;
    let mut search = Search {
        opts,
        nb,
        keep: 2 * nb,
        lp: Vec::new(),
        best: Vec::new(),
        items_in_step: input.batch,
    };
    let mut results: Vec<Vec<Hypothesis>> = vec![Vec::new(); input.batch];
    let mut items: Vec<Item> = (0..input.batch)
        .map(|row| Item::new(row, nb, opts.max_new_tokens))
        .collect();
    let mut state = backend.encode(input)?;
    // one row per question at the first step, `nb` after it
    let mut tokens: Vec<i64> = vec![opts.decoder_start_token_id as i64; input.batch];
    for step in 0..opts.max_new_tokens {
        let (logits, next) = backend.step(state, &tokens)?;
        state = next;
        search.items_in_step = items.len();
        let rows = if step == 0 { 1 } else { nb };
        let mut select_rows = Vec::with_capacity(items.len() * nb);
        let mut still: Vec<Item> = Vec::with_capacity(items.len());
        tokens.clear();
        for (i, mut item) in items.into_iter().enumerate() {
            let (done, parents) = search.advance(&mut item, &logits, i, step);
            if done {
                results[item.row] = results_of(&mut item, opts);
            } else {
                select_rows.extend(parents.iter().map(|p| i * rows + p.min(&(rows - 1))));
                tokens.extend(
                    item.running
                        .iter()
                        .map(|b| *b.tokens.last().unwrap_or(&0) as i64),
                );
                still.push(item);
            }
        }
        items = still;
        if items.is_empty() {
            break;
        }
        state = backend.select(state, &select_rows)?;
    }
    Ok(results)
}
