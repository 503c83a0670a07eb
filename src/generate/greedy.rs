//! Greedy decoding, as transformers' `_sample` with `do_sample=False`: the argmax token at every
//! step until EOS or `max_new_tokens`.

use super::{log_softmax, GenerateOptions, Hypothesis};
use crate::error::Result;
use crate::runtime::{EncoderInput, Seq2Seq};

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

/// Set the logit of `token` to -inf in every row (transformers' min-length processors do the same).
pub(crate) fn suppress(logits: &mut crate::runtime::Logits, token: u32) {
    let v = logits.vocab;
    if (token as usize) < v {
        for r in 0..logits.rows {
            logits.data[r * v + token as usize] = f32::NEG_INFINITY;
        }
    }
}

/// Greedy decoding of a padded batch; one hypothesis per row.
pub fn greedy<B: Seq2Seq>(
    backend: &B,
    input: &EncoderInput,
    opts: &GenerateOptions,
) -> Result<Vec<Hypothesis>> {
    let mut out: Vec<Hypothesis> = (0..input.batch)
        .map(|_| Hypothesis {
            tokens: Vec::with_capacity(opts.max_new_tokens),
            score: 0.0,
        })
        .collect();
    let mut state = backend.encode(input)?;
    // `running[r]` is the input row that backend row r belongs to.
    let mut running: Vec<usize> = (0..input.batch).collect();
    let mut tokens: Vec<i64> = vec![opts.decoder_start_token_id as i64; input.batch];
    let mut lp = Vec::new();
    for step in 0..opts.max_new_tokens {
        let (mut logits, next) = backend.step(state, &tokens)?;
        state = next;
        if step < opts.min_new_tokens {
            suppress(&mut logits, opts.eos_token_id);
        }
        let mut keep = Vec::with_capacity(running.len());
        tokens.clear();
        for (r, &row) in running.iter().enumerate() {
            let l = logits.row(r);
            let t = argmax(l);
            let h = &mut out[row];
            h.tokens.push(t as u32);
            if opts.output_scores {
                log_softmax(l, &mut lp);
                h.score += lp[t];
            }
            if t as u32 != opts.eos_token_id {
                keep.push(r);
                tokens.push(t as i64);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() != running.len() {
            state = backend.select(state, &keep)?;
            running = keep.iter().map(|&r| running[r]).collect();
        }
    }
    Ok(out)
}
