//! Beam search with the semantics of transformers 4.57's vectorised `_beam_search`
//! (`generation/utils.py`): at every step the top `2·num_beams` continuations over all beams
//! (`beams_to_keep` with one EOS id), the best `num_beams` that did not stop become the running
//! beams, and those among the first `num_beams` that stopped (EOS, or the length limit) are scored
//! `sum_logprobs / generated_len ** length_penalty` and kept if they are among the best
//! `num_beams` finished hypotheses. The early-stop heuristic and `early_stopping` modes follow
//! `_check_early_stop_heuristic` and `_beam_search_has_unfinished_sequences`.
//!
//! transformers runs every question until the whole batch is done; a question's result only
//! depends on its own beams, so here a finished question leaves the batch at once.

use super::{log_softmax, EarlyStopping, GenerateOptions, Hypothesis};
use crate::error::Result;
use crate::runtime::{EncoderInput, Seq2Seq};

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

/// Beam search over a padded batch; per input row up to `num_return_sequences` hypotheses.
pub fn beam_search<B: Seq2Seq>(
    backend: &B,
    input: &EncoderInput,
    opts: &GenerateOptions,
) -> Result<Vec<Vec<Hypothesis>>> {
    let nb = opts.num_beams;
    let keep = 2 * nb; // max(2, 1 + number of EOS ids) * num_beams
    let max_new = opts.max_new_tokens;
    let mut results: Vec<Vec<Hypothesis>> = vec![Vec::new(); input.batch];
    let mut items: Vec<Item> = (0..input.batch)
        .map(|row| Item {
            row,
            running: (0..nb)
                .map(|b| Beam {
                    tokens: Vec::with_capacity(max_new),
                    score: if b == 0 { 0.0 } else { NEG },
                })
                .collect(),
            finished: Vec::with_capacity(nb),
            improvable: true,
        })
        .collect();
    let state = backend.encode(input)?;
    let expand: Vec<usize> = (0..input.batch)
        .flat_map(|r| std::iter::repeat_n(r, nb))
        .collect();
    let mut state = backend.select(state, &expand)?;
    let mut tokens: Vec<i64> = vec![opts.decoder_start_token_id as i64; input.batch * nb];
    let mut lp = Vec::new();
    let mut best = Vec::new();
    for step in 0..max_new {
        let (logits, next) = backend.step(state, &tokens)?;
        state = next;
        // generated length after this step, and whether it hits the length limit
        let gen_len = step + 1;
        let at_limit = gen_len >= max_new;
        let mut select_rows = Vec::with_capacity(items.len() * nb);
        let mut still: Vec<Item> = Vec::with_capacity(items.len());
        tokens.clear();
        for (i, mut item) in items.into_iter().enumerate() {
            // 1. the top `keep` continuations over all beams of this question
            let mut cands: Vec<Cand> = Vec::with_capacity(nb * keep);
            for (b, beam) in item.running.iter().enumerate() {
                log_softmax(logits.row(i * nb + b), &mut lp);
                if step < opts.min_new_tokens {
                    // applied to the log-probabilities, as transformers' logits processors are
                    if let Some(x) = lp.get_mut(opts.eos_token_id as usize) {
                        *x = f32::NEG_INFINITY;
                    }
                }
                for x in lp.iter_mut() {
                    *x += beam.score;
                }
                top_k(&lp, keep, &mut best);
                cands.extend(best.iter().map(|&(t, s)| Cand {
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
            cands.truncate(keep);
            let hits: Vec<bool> = cands
                .iter()
                .map(|c| c.token as u32 == opts.eos_token_id || at_limit)
                .collect();
            // 2. the next running beams: the best `num_beams` that did not stop
            let mut order: Vec<usize> = (0..cands.len()).collect();
            let run_score = |j: usize| cands[j].score + if hits[j] { NEG } else { 0.0 };
            order.sort_by(|&a, &b| run_score(b).total_cmp(&run_score(a)).then(a.cmp(&b)));
            let running: Vec<Beam> = order
                .iter()
                .take(nb)
                .map(|&j| {
                    let mut t = item.running[cands[j].beam].tokens.clone();
                    t.push(cands[j].token as u32);
                    Beam {
                        tokens: t,
                        score: run_score(j),
                    }
                })
                .collect();
            let parents: Vec<usize> = order.iter().take(nb).map(|&j| cands[j].beam).collect();
            // 3. finished hypotheses: among the first `num_beams` candidates, those that stopped
            let full = item.finished.len() == nb;
            let blocked = (full && opts.early_stopping == EarlyStopping::True) || !item.improvable;
            if !blocked {
                let norm = length_norm(gen_len, opts.length_penalty);
                for (j, c) in cands.iter().enumerate().take(nb) {
                    if !hits[j] {
                        continue;
                    }
                    let mut t = item.running[c.beam].tokens.clone();
                    t.push(c.token as u32);
                    item.finished.push(Hypothesis {
                        tokens: t,
                        score: c.score / norm,
                    });
                }
                item.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
                item.finished.truncate(nb);
            }
            item.running = running;
            // 4. can this question still improve? (`_check_early_stop_heuristic`)
            let best_len =
                if opts.early_stopping == EarlyStopping::Never && opts.length_penalty > 0.0 {
                    max_new
                } else {
                    gen_len
                };
            let best_possible = item.running[0].score / length_norm(best_len, opts.length_penalty);
            let full = item.finished.len() == nb;
            let worst = if full {
                item.finished
                    .iter()
                    .map(|h| h.score)
                    .fold(f32::INFINITY, f32::min)
            } else {
                NEG
            };
            item.improvable &= best_possible > worst;
            let done = !item.improvable
                || (full && opts.early_stopping == EarlyStopping::True)
                || at_limit;
            if done {
                results[item.row] = item
                    .finished
                    .drain(..)
                    .take(opts.num_return_sequences)
                    .collect();
            } else {
                let base = i * nb;
                select_rows.extend(parents.iter().map(|p| base + p));
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
