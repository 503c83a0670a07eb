//! Greedy decoding, as transformers' `_sample` with `do_sample=False`: the argmax token at every
//! step until EOS or `max_new_tokens`. This file holds one question's step;
//! [`super::stream::Stream`] runs the steps.

use super::{log_softmax, GenerateOptions, Hypothesis};

/// Index of the largest value; the first one on ties, like `torch.argmax`.
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// One greedy step of a question whose next-token logits are `row` (EOS already suppressed while
/// fewer than `min_new_tokens` were generated): the argmax token joins `hyp` (its log-probability
/// the score, with `output_scores`); true when the question is done (EOS, or `max_new_tokens`).
pub(super) fn advance(
    hyp: &mut Hypothesis,
    row: &[f32],
    opts: &GenerateOptions,
    lp: &mut Vec<f32>,
) -> bool {
    let t = argmax(row);
    hyp.tokens.push(t as u32);
    if opts.output_scores {
        log_softmax(row, lp);
        hyp.score += lp[t];
    }
    t as u32 == opts.eos_token_id || hyp.tokens.len() >= opts.max_new_tokens
}
