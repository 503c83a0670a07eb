//! Task mixtures (the paper's multi-task runs on NQ, TriviaQA and WebQuestions): seqio's
//! examples-proportional mixing. Each source has the rate `mixing_rate_num_examples` gives —
//! `min(examples, maximum) ^ (1 / temperature)` — or 1 each for equal mixing; every example of
//! an epoch is drawn from a source chosen with probability proportional to its rate (seqio's
//! `sample_from_datasets`), taking that source's next example from its own shuffled order, which
//! starts again (reshuffled) when it runs out, as a repeated, shuffled task does.
//!
//! An epoch of a mixture is as many draws as the sources have items together; everything is a
//! function of (seed, epoch), so a resumed run plans the same batches.

use super::batching::{cut_batches, epoch_rng, AnswerChoice, EpochPlan, ExampleLengths};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// How the sources of a mixture are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixingRates {
    /// seqio's `maximum`: a source counts at most this many examples (None: no cap).
    pub maximum: Option<f64>,
    /// seqio's `temperature` (1: proportional to the examples).
    pub temperature: f64,
    /// Every source with rate 1 (ignores `maximum` and `temperature`).
    pub equal: bool,
}

impl Default for MixingRates {
    fn default() -> Self {
        MixingRates {
            maximum: None,
            temperature: 1.0,
            equal: false,
        }
    }
}

impl MixingRates {
    /// Settings the rates cannot be computed with, named by their field.
    pub fn check(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            let msg = format!("must be positive, got {}", self.temperature);
            return Err(Error::setting("mixing_temperature", msg));
        }
        if let Some(m) = self.maximum.filter(|m| m.is_nan() || *m <= 0.0) {
            return Err(Error::setting(
                "mixing_max",
                format!("must be positive, got {m}"),
            ));
        }
        Ok(())
    }

    /// seqio's `mixing_rate_num_examples` of a source with `examples` examples.
    pub fn rate(&self, examples: usize) -> f64 {
        if self.equal {
            return 1.0;
        }
        let mut rate = examples as f64;
        if let Some(m) = self.maximum {
            rate = rate.min(m);
        }
        if self.temperature != 1.0 {
            rate = rate.powf(1.0 / self.temperature);
        }
        rate
    }
}

/// One source of training examples: a name for messages and dumps, and its examples (a range
/// of the training data).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    pub range: Range<usize>,
    /// Its mixing rate (unused with one source).
    pub rate: f64,
}

/// The (example, answer) items of one source for `answer` (`Random` draws later, per draw).
fn source_items<D: ExampleLengths + ?Sized>(
    data: &D,
    range: Range<usize>,
    answer: AnswerChoice,
) -> Vec<(usize, usize)> {
    match answer {
        AnswerChoice::All => range
            .flat_map(|i| (0..data.answers(i)).map(move |a| (i, a)))
            .collect(),
        AnswerChoice::First | AnswerChoice::Random => range.map(|i| (i, 0)).collect(),
    }
}

/// One epoch of a mixture, cut into effective batches of at most `batch_tokens` tokens.
pub fn plan_mixture_epoch<D: ExampleLengths + ?Sized>(
    data: &D,
    sources: &[Source],
    seed: u64,
    epoch: u64,
    answer: AnswerChoice,
    batch_tokens: usize,
) -> EpochPlan {
    let mut rng = epoch_rng(seed, epoch);
    let pools: Vec<Vec<(usize, usize)>> = sources
        .iter()
        .map(|s| source_items(data, s.range.clone(), answer))
        .collect();
    let total_rate: f64 = sources.iter().map(|s| s.rate).sum();
    let draws: usize = pools.iter().map(Vec::len).sum();
    let mut orders: Vec<Vec<(usize, usize)>> = vec![Vec::new(); pools.len()];
    let mut items = Vec::with_capacity(draws);
    for _ in 0..draws {
        let k = choose(&mut rng, sources, total_rate);
        if orders[k].is_empty() {
            // The source starts again, in a new order (kept reversed: pop takes the next).
            orders[k] = pools[k].clone();
            orders[k].shuffle(&mut rng);
        }
        let (i, mut a) = orders[k].pop().expect("a source has examples");
        if answer == AnswerChoice::Random {
            a = rng.random_range(0..data.answers(i));
        }
        items.push((i, a));
    }
    let batches = cut_batches(data, &items, batch_tokens);
    EpochPlan { items, batches }
}

/// A source index drawn with probability rate / total.
fn choose(rng: &mut impl Rng, sources: &[Source], total_rate: f64) -> usize {
    let mut x = rng.random::<f64>() * total_rate;
    for (k, s) in sources.iter().enumerate() {
        if x < s.rate {
            return k;
        }
        x -= s.rate;
    }
    sources.len() - 1
}

/// The source of item `i` of the training data.
pub fn source_of(sources: &[Source], i: usize) -> Option<&Source> {
    sources.iter().find(|s| s.range.contains(&i))
}

#[cfg(test)]
mod tests {
    use super::super::data::Tokenized;
    use super::*;

    #[test]
    fn rates_are_seqios() {
        let r = MixingRates::default();
        assert_eq!(r.rate(87_925), 87_925.0);
        let capped = MixingRates {
            maximum: Some(10_000.0),
            ..r
        };
        assert_eq!(capped.rate(87_925), 10_000.0);
        assert_eq!(capped.rate(3_417), 3_417.0);
        let hot = MixingRates {
            temperature: 2.0,
            ..capped
        };
        assert_eq!(hot.rate(87_925), 100.0);
        let equal = MixingRates { equal: true, ..r };
        assert_eq!(equal.rate(5), 1.0);
        assert!(MixingRates {
            temperature: 0.0,
            ..r
        }
        .check()
        .is_err());
        assert!(MixingRates {
            maximum: Some(0.0),
            ..r
        }
        .check()
        .is_err());
    }

    fn data(sizes: &[usize]) -> (Vec<Tokenized>, Vec<Source>) {
        let mut data = Vec::new();
        let mut sources = Vec::new();
        for (k, &n) in sizes.iter().enumerate() {
            let start = data.len();
            data.extend((0..n).map(|i| Tokenized {
                input: vec![3; 2 + i % 3],
                targets: vec![vec![4; 2], vec![5; 3]],
            }));
            sources.push(Source {
                name: format!("s{k}"),
                range: start..data.len(),
                rate: 0.0,
            });
        }
        (data, sources)
    }

    /// Examples drawn per source over many epochs match seqio's rates (within 5 standard
    /// deviations of the binomial count).
    #[test]
    fn examples_per_source_follow_the_rates() {
        let sizes = [800, 240, 40];
        let (data, mut sources) = data(&sizes);
        let settings = [
            MixingRates::default(),
            MixingRates {
                maximum: Some(300.0),
                temperature: 1.0,
                equal: false,
            },
            MixingRates {
                maximum: None,
                temperature: 3.0,
                equal: false,
            },
            MixingRates {
                equal: true,
                ..MixingRates::default()
            },
        ];
        for rates in settings {
            for (s, &n) in sources.iter_mut().zip(&sizes) {
                s.rate = rates.rate(n);
            }
            let total: f64 = sources.iter().map(|s| s.rate).sum();
            let mut counts = [0usize; 3];
            let mut draws = 0usize;
            for epoch in 0..30 {
                let plan = plan_mixture_epoch(&data, &sources, 11, epoch, AnswerChoice::First, 60);
                assert_eq!(plan.items.len(), 1080);
                assert_eq!(plan.batches.iter().map(|r| r.len()).sum::<usize>(), 1080);
                for &(i, _) in &plan.items {
                    counts[sources.iter().position(|s| s.range.contains(&i)).unwrap()] += 1;
                }
                draws += plan.items.len();
            }
            for (k, s) in sources.iter().enumerate() {
                let p = s.rate / total;
                let expected = p * draws as f64;
                let sd = (draws as f64 * p * (1.0 - p)).sqrt();
                let got = counts[k] as f64;
                assert!(
                    (got - expected).abs() < 5.0 * sd,
                    "{rates:?}: source {k} drew {got}, expected {expected:.0} ± {sd:.0}"
                );
            }
        }
    }

    #[test]
    fn small_sources_repeat_and_random_answers_are_drawn_per_draw() {
        let (data, mut sources) = data(&[100, 10]);
        for s in &mut sources {
            s.rate = 1.0;
        }
        let plan = plan_mixture_epoch(&data, &sources, 5, 0, AnswerChoice::Random, 1000);
        // Equal rates over 110 draws: the small source comes round several times, each time
        // every example once before any repeats.
        let small: Vec<usize> = plan
            .items
            .iter()
            .map(|x| x.0)
            .filter(|&i| i >= 100)
            .collect();
        assert!(small.len() > 20, "{}", small.len());
        let mut first_round = small[..10].to_vec();
        first_round.sort();
        assert_eq!(first_round, (100..110).collect::<Vec<_>>());
        let answers: std::collections::BTreeSet<usize> = plan.items.iter().map(|x| x.1).collect();
        assert_eq!(answers.len(), 2);
        // The plan is a function of (seed, epoch): a resumed run recomputes it.
        assert_eq!(
            plan,
            plan_mixture_epoch(&data, &sources, 5, 0, AnswerChoice::Random, 1000)
        );
        let all = plan_mixture_epoch(&data, &sources, 5, 0, AnswerChoice::All, 1000);
        assert_eq!(all.items.len(), 220);
    }
}
