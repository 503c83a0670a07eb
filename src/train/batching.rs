//! Batches by token budget, so the effective batch does not depend on the hardware: an epoch is a
//! seeded permutation of the examples, cut into effective batches of at most `batch_tokens`
//! tokens (input + target, the paper used 196,608), each cut into micro-batches that fit
//! `micro_batch_tokens` padded tokens in memory. Gradients are accumulated over the micro-batches
//! and the loss is the token-weighted mean over the effective batch, so how an effective batch is
//! split changes nothing but rounding.

use super::data::Tokenized;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ops::Range;
use tch::{Device, Tensor};

/// Which reference answer is the training target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerChoice {
    /// The first answer (the paper's default).
    First,
    /// One answer drawn at random, again each epoch (the paper's `sample_answer`).
    Random,
    /// One example per answer.
    All,
}

/// One epoch's order and its effective batches.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochPlan {
    /// `(example index, answer index)` in training order.
    pub items: Vec<(usize, usize)>,
    /// Ranges of `items`, one per optimizer step.
    pub batches: Vec<Range<usize>>,
}

/// The RNG of epoch `epoch` of a run seeded `seed` (independent of everything else, so a resumed
/// run recomputes the same order).
pub(crate) fn epoch_rng(seed: u64, epoch: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The lengths of a run's examples, all that planning batches needs: held in memory
/// ([`Tokenized`]) or indexed on disk ([`super::store::DiskExamples`]).
pub trait ExampleLengths {
    /// How many examples there are.
    fn count(&self) -> usize;
    /// How many targets (answers) example `i` has.
    fn answers(&self, i: usize) -> usize;
    /// The input length of example `i`, EOS included.
    fn input_len(&self, i: usize) -> usize;
    /// The length of target `answer` of example `i`, EOS included.
    fn target_len(&self, i: usize, answer: usize) -> usize;
}

impl ExampleLengths for [Tokenized] {
    fn count(&self) -> usize {
        self.len()
    }
    fn answers(&self, i: usize) -> usize {
        self[i].targets.len()
    }
    fn input_len(&self, i: usize) -> usize {
        self[i].input.len()
    }
    fn target_len(&self, i: usize, answer: usize) -> usize {
        self[i].targets[answer].len()
    }
}

impl ExampleLengths for Vec<Tokenized> {
    fn count(&self) -> usize {
        self.len()
    }
    fn answers(&self, i: usize) -> usize {
        self.as_slice().answers(i)
    }
    fn input_len(&self, i: usize) -> usize {
        self.as_slice().input_len(i)
    }
    fn target_len(&self, i: usize, answer: usize) -> usize {
        self.as_slice().target_len(i, answer)
    }
}

/// Tokens an example costs in the budget: its input and target lengths.
pub fn example_tokens(ex: &Tokenized, answer: usize) -> usize {
    ex.input.len() + ex.targets[answer].len()
}

/// Tokens item `(i, answer)` of `data` costs in the budget.
pub fn item_tokens<D: ExampleLengths + ?Sized>(data: &D, i: usize, answer: usize) -> usize {
    data.input_len(i) + data.target_len(i, answer)
}

/// Shuffle, choose answers and cut into effective batches of at most `batch_tokens` tokens (an
/// example longer than the budget gets a batch of its own).
pub fn plan_epoch<D: ExampleLengths + ?Sized>(
    data: &D,
    seed: u64,
    epoch: u64,
    answer: AnswerChoice,
    batch_tokens: usize,
) -> EpochPlan {
    let mut rng = epoch_rng(seed, epoch);
    let mut order: Vec<usize> = (0..data.count()).collect();
    order.shuffle(&mut rng);
    let items: Vec<(usize, usize)> = match answer {
        AnswerChoice::First => order.into_iter().map(|i| (i, 0)).collect(),
        AnswerChoice::Random => order
            .into_iter()
            .map(|i| (i, rng.random_range(0..data.answers(i))))
            .collect(),
        AnswerChoice::All => {
            let mut pairs: Vec<(usize, usize)> = (0..data.count())
                .flat_map(|i| (0..data.answers(i)).map(move |a| (i, a)))
                .collect();
            pairs.shuffle(&mut rng);
            pairs
        }
    };
    let batches = cut_batches(data, &items, batch_tokens);
    EpochPlan { items, batches }
}

/// Cut `items` (in order) into effective batches of at most `batch_tokens` tokens (an example
/// longer than the budget gets a batch of its own).
pub fn cut_batches<D: ExampleLengths + ?Sized>(
    data: &D,
    items: &[(usize, usize)],
    batch_tokens: usize,
) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (k, &(i, a)) in items.iter().enumerate() {
        let t = item_tokens(data, i, a);
        if k > start && used + t > batch_tokens {
            batches.push(start..k);
            start = k;
            used = 0;
        }
        used += t;
    }
    if start < items.len() {
        batches.push(start..items.len());
    }
    batches
}

/// Split one effective batch into micro-batches: sorted by input length (less padding), then cut
/// so that `rows × (longest input + longest target)` stays within `micro_batch_tokens`.
pub fn micro_batches<D: ExampleLengths + ?Sized>(
    data: &D,
    items: &[(usize, usize)],
    micro_batch_tokens: usize,
) -> Vec<Vec<(usize, usize)>> {
    let mut sorted = items.to_vec();
    sorted.sort_by_key(|&(i, a)| (data.input_len(i), data.target_len(i, a), i));
    let mut out: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut cur: Vec<(usize, usize)> = Vec::new();
    let (mut max_in, mut max_tgt) = (0, 0);
    for (i, a) in sorted {
        let (li, lt) = (data.input_len(i), data.target_len(i, a));
        let (ni, nt) = (max_in.max(li), max_tgt.max(lt));
        if !cur.is_empty() && (cur.len() + 1) * (ni + nt) > micro_batch_tokens {
            out.push(std::mem::take(&mut cur));
            max_in = li;
            max_tgt = lt;
        } else {
            max_in = ni;
            max_tgt = nt;
        }
        cur.push((i, a));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A padded batch on a device.
#[derive(Debug)]
pub struct Batch {
    /// `[B, S]` i64, right-padded with `pad`.
    pub input_ids: Tensor,
    /// `[B, S]` i64, 1 for real tokens.
    pub attention_mask: Tensor,
    /// `[B, T]` i64, -100 at padding.
    pub labels: Tensor,
    /// Real (unpadded) input + target tokens.
    pub tokens: usize,
}

fn pad_rows(rows: &[&[i64]], fill: i64) -> (Vec<i64>, i64) {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut flat = Vec::with_capacity(rows.len() * width);
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(fill, width - r.len()));
    }
    (flat, width as i64)
}

/// Pad and move `items` to `device`.
pub fn collate(
    data: &[Tokenized],
    items: &[(usize, usize)],
    pad: i64,
    device: Device,
) -> crate::error::Result<Batch> {
    let inputs: Vec<&[i64]> = items
        .iter()
        .map(|&(i, _)| data[i].input.as_slice())
        .collect();
    let targets: Vec<&[i64]> = items
        .iter()
        .map(|&(i, a)| data[i].targets[a].as_slice())
        .collect();
    collate_rows(&inputs, &targets, pad, device)
}

/// Pad and move rows of inputs and their targets to `device`.
pub fn collate_rows(
    inputs: &[&[i64]],
    targets: &[&[i64]],
    pad: i64,
    device: Device,
) -> crate::error::Result<Batch> {
    let b = inputs.len() as i64;
    let (ids, s) = pad_rows(inputs, pad);
    let mask: Vec<i64> = inputs
        .iter()
        .flat_map(|r| (0..s).map(move |k| i64::from(k < r.len() as i64)))
        .collect();
    let (labels, t) = pad_rows(targets, -100);
    let tokens = inputs.iter().map(|r| r.len()).sum::<usize>()
        + targets.iter().map(|r| r.len()).sum::<usize>();
    let matrix = |values: &[i64], cols: i64| -> crate::error::Result<Tensor> {
        Ok(Tensor::f_from_slice(values)?
            .f_view([b, cols])?
            .f_to_device(device)?)
    };
    Ok(Batch {
        input_ids: matrix(&ids, s)?,
        attention_mask: matrix(&mask, s)?,
        labels: matrix(&labels, t)?,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Vec<Tokenized> {
        (0..10)
            .map(|i| Tokenized {
                input: vec![5; 3 + i % 4],
                targets: vec![vec![7; 2], vec![8; 1 + i % 2]],
            })
            .collect()
    }

    #[test]
    fn plans_are_seeded_and_respect_the_budget() {
        let d = data();
        let a = plan_epoch(&d, 7, 0, AnswerChoice::Random, 20);
        assert_eq!(a, plan_epoch(&d, 7, 0, AnswerChoice::Random, 20));
        assert_ne!(
            a.items,
            plan_epoch(&d, 7, 1, AnswerChoice::Random, 20).items
        );
        let mut seen: Vec<usize> = a.items.iter().map(|x| x.0).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        for r in &a.batches {
            let t: usize = a.items[r.clone()]
                .iter()
                .map(|&(i, k)| example_tokens(&d[i], k))
                .sum();
            assert!(t <= 20 || r.len() == 1);
        }
        let covered: usize = a.batches.iter().map(|r| r.len()).sum();
        assert_eq!(covered, 10);
        let first = plan_epoch(&d, 7, 0, AnswerChoice::First, 20);
        assert!(first.items.iter().all(|&(_, k)| k == 0));
        // every answer once: 10 first answers and 10 second ones
        let all = plan_epoch(&d, 7, 0, AnswerChoice::All, 20);
        let mut pairs = all.items.clone();
        pairs.sort();
        let expected: Vec<(usize, usize)> = (0..10).flat_map(|i| [(i, 0), (i, 1)]).collect();
        assert_eq!(pairs, expected);
        assert_eq!(all.batches.iter().map(|r| r.len()).sum::<usize>(), 20);
    }

    #[test]
    fn micro_batches_cover_the_batch_within_memory() {
        let d = data();
        let items: Vec<(usize, usize)> = (0..10).map(|i| (i, 0)).collect();
        let mbs = micro_batches(&d, &items, 24);
        assert_eq!(mbs.iter().map(Vec::len).sum::<usize>(), 10);
        for mb in &mbs {
            let w = mb.iter().map(|&(i, _)| d[i].input.len()).max().unwrap() + 2;
            assert!(mb.len() * w <= 24 || mb.len() == 1);
        }
        let b = collate(&d, &mbs[0], 0, Device::Cpu).unwrap();
        assert_eq!(b.labels.size()[0], mbs[0].len() as i64);
    }
}
