//! Batching: questions are tokenised, sorted by length and packed into batches under a padded
//! token budget, so little compute goes to padding; results come back in input order.

use super::{generate, GenerateOptions, Hypothesis};
use crate::error::{Error, Result};
use crate::runtime::{EncoderInput, Seq2Seq};
use rayon::prelude::*;

/// How questions are grouped into batches.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPolicy {
    /// At most this many decoder rows per batch: questions × beams (see
    /// [`BatchPolicy::for_beams`]), so beam search holds as much state as greedy decoding of the
    /// same batch size.
    pub max_batch_size: usize,
    /// At most this many padded encoder tokens (`questions × longest`) per batch.
    pub max_batch_tokens: usize,
    /// Sort by length first (keeps padding low); off keeps input order.
    pub sort_by_length: bool,
    /// Run independent batches on several threads (for backends whose state is per call, such
    /// as tract; ONNX Runtime parallelises inside each call instead).
    pub parallel: bool,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_batch_size: 32,
            max_batch_tokens: 4096,
            sort_by_length: true,
            parallel: false,
        }
    }
}

impl BatchPolicy {
    /// The policy in questions for `num_beams` beams: `max_batch_size` rows make
    /// `max_batch_size / num_beams` questions, at least one. (Counting questions instead put 128
    /// rows in a beam-4 batch of 32 and took t5-small's `cbqa eval` to 880 MB peak RSS.)
    pub fn for_beams(&self, num_beams: usize) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: (self.max_batch_size / num_beams.max(1)).max(1),
            ..self.clone()
        }
    }
}

/// A tokenised question, ready for the encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Token ids, ending with EOS.
    pub ids: Vec<u32>,
    /// Whether the question was cut to the model's input limit.
    pub truncated: bool,
}

/// Tokenise `prefix + question` for every question (T5 appends `</s>`). An empty question is an
/// error for that item only; a question longer than `max_len` tokens (at least 2: one token and
/// EOS) is cut, keeping the EOS.
pub fn encode_questions(
    tokenizer: &tokenizers::Tokenizer,
    questions: &[&str],
    prefix: &str,
    max_len: usize,
    eos: u32,
) -> Vec<Result<Prepared>> {
    let max_len = max_len.max(2);
    questions
        .iter()
        .map(|q| encode_question(tokenizer, &format!("{prefix}{q}"), q, max_len, eos))
        .collect()
}

/// One question's ids, cut to `max_len` tokens with the EOS kept.
fn encode_question(
    tokenizer: &tokenizers::Tokenizer,
    text: &str,
    question: &str,
    max_len: usize,
    eos: u32,
) -> Result<Prepared> {
    if question.trim().is_empty() {
        return Err(Error::input("question", "empty question"));
    }
    let enc = tokenizer
        .encode(text, true)
        .map_err(|e| Error::tokenize("encoding a question", e))?;
    let mut ids = enc.get_ids().to_vec();
    let truncated = ids.len() > max_len;
    if truncated {
        ids.truncate(max_len - 1);
        ids.push(eos);
    }
    Ok(Prepared { ids, truncated })
}

/// Group item indices into batches under `policy` (longest first when sorting).
pub fn plan_batches(lengths: &[usize], policy: &BatchPolicy) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    if policy.sort_by_length {
        order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    }
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let l = lengths[i].max(1);
        let new_longest = longest.max(l);
        let fits = cur.len() < policy.max_batch_size.max(1)
            && (cur.is_empty() || new_longest * (cur.len() + 1) <= policy.max_batch_tokens);
        if !fits {
            batches.push(std::mem::take(&mut cur));
            longest = 0;
        }
        longest = longest.max(l);
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

/// Called as each batch finishes with the item indices of the batch and their hypotheses.
pub type OnBatch<'a> = &'a (dyn Fn(&[usize], &[Vec<Hypothesis>]) + Sync);

/// Generate for every prepared question; `on_batch(done, total)` is called as batches finish
/// (in completion order). Results are in input order.
pub fn run_batches<B: Seq2Seq>(
    backend: &B,
    items: &[Prepared],
    policy: &BatchPolicy,
    opts: &GenerateOptions,
    on_batch: OnBatch<'_>,
) -> Result<Vec<Vec<Hypothesis>>> {
    let lengths: Vec<usize> = items.iter().map(|p| p.ids.len()).collect();
    let policy = policy.for_beams(opts.num_beams);
    let batches = plan_batches(&lengths, &policy);
    let run = |batch: &Vec<usize>| -> Result<(Vec<usize>, Vec<Vec<Hypothesis>>)> {
        let seqs: Vec<Vec<u32>> = batch.iter().map(|&i| items[i].ids.clone()).collect();
        let input = EncoderInput::from_sequences(&seqs, opts.pad_token_id);
        let hyps = generate(backend, &input, opts)?;
        on_batch(batch, &hyps);
        Ok((batch.clone(), hyps))
    };
    let done: Vec<(Vec<usize>, Vec<Vec<Hypothesis>>)> = if policy.parallel {
        batches.par_iter().map(run).collect::<Result<_>>()?
    } else {
        batches.iter().map(run).collect::<Result<_>>()?
    };
    let mut out = vec![Vec::new(); items.len()];
    for (idx, hyps) in done {
        for (i, h) in idx.into_iter().zip(hyps) {
            out[i] = h;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_the_budget_and_cover_every_item() {
        let lengths = [5, 30, 12, 7, 30, 2, 9, 18];
        let policy = BatchPolicy {
            max_batch_size: 3,
            max_batch_tokens: 60,
            sort_by_length: true,
            parallel: false,
        };
        let batches = plan_batches(&lengths, &policy);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() <= 3);
            assert!(b.len() == 1 || longest * b.len() <= 60, "{b:?}");
        }
        // longest first
        assert_eq!(batches[0], vec![1, 4]);
        // a single item longer than the budget still gets its own batch
        let b = plan_batches(&[100], &policy);
        assert_eq!(b, vec![vec![0]]);
    }

    #[test]
    fn the_batch_size_counts_rows_of_every_beam() {
        let policy = BatchPolicy {
            max_batch_size: 32,
            ..BatchPolicy::default()
        };
        assert_eq!(policy.for_beams(1).max_batch_size, 32);
        assert_eq!(policy.for_beams(4).max_batch_size, 8);
        assert_eq!(policy.for_beams(5).max_batch_size, 6);
        // more beams than rows: still one question per batch
        assert_eq!(policy.for_beams(64).max_batch_size, 1);
        assert_eq!(policy.for_beams(0).max_batch_size, 32);
        let lengths = vec![4; 20];
        let batches = plan_batches(&lengths, &policy.for_beams(4));
        assert!(batches.iter().all(|b| b.len() <= 8), "{batches:?}");
        assert_eq!(batches.len(), 3);
    }
}
