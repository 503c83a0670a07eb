//! T5's span corruption (`t5.data.preprocessors.span_corruption`), with the same semantics:
//!
//! 1. each document's tokens (no EOS) — a random chunk of at most [`MAX_DOCUMENT_TOKENS`] when
//!    longer (`select_random_chunk`), empty documents dropped;
//! 2. groups of [`DOCUMENTS_PER_GROUP`] documents concatenated (`reduce_concat_tokens`);
//! 3. each group split into pieces of the raw length [`random_spans_helper`] gives for the
//!    requested input length, the last piece of a group possibly shorter (`split_tokens`);
//! 4. each piece masked by [`random_spans_noise_mask`] (non-noise first), every noise span
//!    replaced by one sentinel in the inputs ([`noise_span_to_unique_sentinel`]) and every
//!    non-noise span by one in the targets ([`nonnoise_span_to_unique_sentinel`]), sentinels
//!    counting down from `<extra_id_0>`, then EOS on both (`append_eos_after_trim`).
//!
//! Python's and TensorFlow's `round` round half to even; so does everything here. The random
//! draws are ours (ChaCha8, seeded per document and per piece), not TensorFlow's stateless ones.

use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `select_random_chunk`'s `max_length` in `span_corruption`.
pub const MAX_DOCUMENT_TOKENS: usize = 65_536;
/// `reduce_concat_tokens`' `batch_size` in `span_corruption`.
pub const DOCUMENTS_PER_GROUP: usize = 128;

/// The settings of span corruption.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpanCorruptionSettings {
    /// Length of the inputs, EOS included (T5: 512).
    pub inputs_length: usize,
    /// Fraction of tokens masked (T5: 0.15).
    pub noise_density: f64,
    /// Mean length of a masked span (T5: 3.0).
    pub mean_noise_span: f64,
}

impl Default for SpanCorruptionSettings {
    fn default() -> Self {
        SpanCorruptionSettings {
            inputs_length: 512,
            noise_density: 0.15,
            mean_noise_span: 3.0,
        }
    }
}

impl SpanCorruptionSettings {
    /// Settings span corruption cannot run with, named by their field.
    pub fn check(&self) -> Result<()> {
        if !(self.noise_density > 0.0 && self.noise_density < 1.0) {
            let msg = format!("must be in (0, 1), got {}", self.noise_density);
            return Err(Error::setting("noise_density", msg));
        }
        if !(self.mean_noise_span >= 1.0 && self.mean_noise_span.is_finite()) {
            let msg = format!("must be at least 1, got {}", self.mean_noise_span);
            return Err(Error::setting("mean_noise_span", msg));
        }
        if self.inputs_length < 2 {
            let msg = format!("must be at least 2, got {}", self.inputs_length);
            return Err(Error::setting("inputs_length", msg));
        }
        Ok(())
    }
}

/// Python's `int(round(x))`: to the nearest integer, ties to even.
fn py_round(x: f64) -> usize {
    x.round_ties_even().max(0.0) as usize
}

/// Inputs and targets lengths (EOS included) of a raw piece of `tokens` tokens, one sentinel per
/// span on each side.
fn lengths_of(tokens: usize, s: &SpanCorruptionSettings) -> (usize, usize) {
    let noise = py_round(tokens as f64 * s.noise_density);
    let nonnoise = tokens - noise.min(tokens);
    let spans = py_round(noise as f64 / s.mean_noise_span);
    (nonnoise + spans + 1, noise + spans + 1)
}

/// `random_spans_helper`: the raw piece length whose inputs fill `inputs_length` exactly (the
/// longest that fits) and the targets length that follows. 512 → (568, 114) at 0.15 / 3.0.
pub fn random_spans_helper(s: &SpanCorruptionSettings) -> (usize, usize) {
    let mut tokens = s.inputs_length - 1;
    while lengths_of(tokens + 1, s).0 <= s.inputs_length {
        tokens += 1;
    }
    let (inputs, mut targets) = lengths_of(tokens, s);
    // T5's hack: at density 0.5 keep the targets no longer than the inputs.
    if s.noise_density == 0.5 && targets > inputs {
        tokens -= 1;
        targets -= 1;
    }
    (tokens, targets)
}

/// Partition `items` items into `segments` non-empty segments, uniformly at random (T5's
/// `_random_segmentation`: a shuffled vector of `segments - 1` ones among `items - 1` slots
/// marks the first item of each segment after the first).
fn random_segmentation(items: usize, segments: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut first = vec![false; items.saturating_sub(1)];
    for f in first.iter_mut().take(segments.saturating_sub(1)) {
        *f = true;
    }
    first.shuffle(rng);
    let mut lengths = vec![1usize];
    for starts_segment in first {
        match starts_segment {
            true => lengths.push(1),
            false => *lengths.last_mut().expect("one segment at least") += 1,
        }
    }
    lengths
}

/// `random_spans_noise_mask`: `length` booleans, `true` for noise, about `noise_density` of
/// them in spans of mean length `mean_noise_span`, the first span non-noise and the last noise
/// (for a length of 1, one non-noise token).
pub fn random_spans_noise_mask(
    length: usize,
    noise_density: f64,
    mean_noise_span: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<bool> {
    let orig_length = length;
    let length = length.max(2);
    let noise = py_round(length as f64 * noise_density).clamp(1, length - 1);
    let nonnoise = length - noise;
    // T5 fails where a span would be empty; we never make more spans than either side has.
    let spans = py_round(noise as f64 / mean_noise_span).clamp(1, noise.min(nonnoise));
    let noise_lengths = random_segmentation(noise, spans, rng);
    let nonnoise_lengths = random_segmentation(nonnoise, spans, rng);
    let mut mask = Vec::with_capacity(length);
    for (keep, drop) in nonnoise_lengths.into_iter().zip(noise_lengths) {
        mask.extend(std::iter::repeat_n(false, keep));
        mask.extend(std::iter::repeat_n(true, drop));
    }
    mask.truncate(orig_length);
    mask
}

/// `noise_span_to_unique_sentinel`: each run of `true` in `mask` replaced by one sentinel,
/// `sentinel0` (`<extra_id_0>`, the top id) for the first, one less for each next.
pub fn noise_span_to_unique_sentinel(tokens: &[u32], mask: &[bool], sentinel0: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut spans = 0u32;
    for (k, (&t, &noise)) in tokens.iter().zip(mask).enumerate() {
        let prev_noise = k > 0 && mask[k - 1];
        match (noise, prev_noise) {
            (false, _) => out.push(t),
            (true, false) => {
                out.push(sentinel0 - spans);
                spans += 1;
            }
            (true, true) => {}
        }
    }
    out
}

/// `nonnoise_span_to_unique_sentinel`: the same with the mask inverted (the targets).
pub fn nonnoise_span_to_unique_sentinel(tokens: &[u32], mask: &[bool], sentinel0: u32) -> Vec<u32> {
    let inverted: Vec<bool> = mask.iter().map(|m| !m).collect();
    noise_span_to_unique_sentinel(tokens, &inverted, sentinel0)
}

/// The number of noise spans of a piece of `length` tokens (what the sentinels must cover).
pub fn noise_spans_of(length: usize, s: &SpanCorruptionSettings) -> usize {
    let length = length.max(2);
    let noise = py_round(length as f64 * s.noise_density).clamp(1, length - 1);
    py_round(noise as f64 / s.mean_noise_span).clamp(1, noise.min(length - noise))
}

/// One denoising example as token ids, EOS included on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denoised {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

/// The RNG of item `index` of kind `salt` in a run seeded `seed`.
fn item_rng(seed: u64, salt: u64, index: u64) -> ChaCha8Rng {
    let mixed = seed
        ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93)
        ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ChaCha8Rng::seed_from_u64(mixed)
}

/// How the noise masks of a run's training pieces are drawn over its epochs. (A dev set's masks
/// are always those of the run's seed, so its loss compares across epochs.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskDraw {
    /// Epoch `e` masks every piece with masks drawn from [`epoch_seed`]`(seed, e)`, so no
    /// epoch repeats another's examples (as T5's pipeline, which never repeats an example).
    PerEpoch,
    /// Every epoch repeats the masks of the run's seed (epoch 0's): a small corpus is then
    /// memorised. What runs made before this setting existed trained with.
    Fixed,
}

/// The seed of epoch `epoch`'s masks in a run seeded `seed`: `seed` itself for epoch 0 (so the
/// first epoch, `--dump-examples` and [`MaskDraw::Fixed`] agree), a SplitMix64 mix of both for
/// the others.
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    if epoch == 0 {
        return seed;
    }
    let mut z = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What turns a raw piece into an example: the settings, `<extra_id_0>` and EOS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Denoiser {
    settings: SpanCorruptionSettings,
    sentinel0: u32,
    eos: u32,
}

impl Denoiser {
    /// Piece `index`'s example with the mask drawn from (`seed`, `index`) (`denoise` with the
    /// span corruption functions, then EOS).
    pub fn denoise(&self, piece: &[u32], seed: u64, index: u64) -> Denoised {
        let mut rng = item_rng(seed, 2, index);
        let s = &self.settings;
        let mask =
            random_spans_noise_mask(piece.len(), s.noise_density, s.mean_noise_span, &mut rng);
        let mut inputs = noise_span_to_unique_sentinel(piece, &mask, self.sentinel0);
        let mut targets = nonnoise_span_to_unique_sentinel(piece, &mask, self.sentinel0);
        inputs.push(self.eos);
        targets.push(self.eos);
        Denoised { inputs, targets }
    }
}

/// Span corruption's raw pieces over a stream of tokenized documents: [`SpanCorruptor::push`]
/// each document, [`SpanCorruptor::finish`] at the end; each returns the pieces completed,
/// which [`Denoiser::denoise`] (from [`SpanCorruptor::denoiser`]) makes into examples.
pub struct SpanCorruptor {
    denoiser: Denoiser,
    /// Raw tokens per piece (568 for 512 inputs).
    piece_length: usize,
    seed: u64,
    documents: u64,
    group: Vec<u32>,
    group_documents: usize,
}

impl SpanCorruptor {
    /// A corruptor with `<extra_id_0>` = `sentinel0` (the sentinels below it must exist down to
    /// `sentinel0 - max_sentinels() + 1`) and `eos`; `seed` draws the chunks of long documents.
    pub fn new(settings: SpanCorruptionSettings, sentinel0: u32, eos: u32, seed: u64) -> Self {
        SpanCorruptor {
            piece_length: random_spans_helper(&settings).0,
            denoiser: Denoiser {
                settings,
                sentinel0,
                eos,
            },
            seed,
            documents: 0,
            group: Vec::new(),
            group_documents: 0,
        }
    }

    /// What makes this corruptor's pieces into examples.
    pub fn denoiser(&self) -> Denoiser {
        self.denoiser
    }

    /// The raw tokens of a full piece and the targets length of its example (EOS included).
    pub fn lengths(&self) -> (usize, usize) {
        random_spans_helper(&self.denoiser.settings)
    }

    /// The most sentinels one piece needs.
    pub fn max_sentinels(&self) -> usize {
        noise_spans_of(self.piece_length, &self.denoiser.settings)
    }

    /// Add one document's tokens (no EOS); returns the pieces of a group it completed.
    pub fn push(&mut self, tokens: &[u32]) -> Vec<Vec<u32>> {
        if tokens.is_empty() {
            return Vec::new();
        }
        let chunk = self.random_chunk(tokens);
        // reduce_concat_tokens drops padding (id 0) when it concatenates.
        self.group.extend(chunk.iter().copied().filter(|&t| t != 0));
        self.documents += 1;
        self.group_documents += 1;
        match self.group_documents == DOCUMENTS_PER_GROUP {
            true => self.flush(),
            false => Vec::new(),
        }
    }

    /// The pieces of the last, partial group.
    pub fn finish(&mut self) -> Vec<Vec<u32>> {
        self.flush()
    }

    /// `select_random_chunk`: a document longer than [`MAX_DOCUMENT_TOKENS`] gives one of its
    /// aligned chunks, drawn uniformly.
    fn random_chunk<'t>(&self, tokens: &'t [u32]) -> &'t [u32] {
        if tokens.len() <= MAX_DOCUMENT_TOKENS {
            return tokens;
        }
        let chunks = tokens.len().div_ceil(MAX_DOCUMENT_TOKENS);
        let mut rng = item_rng(self.seed, 1, self.documents);
        let start = MAX_DOCUMENT_TOKENS * rng.random_range(0..chunks);
        &tokens[start..(start + MAX_DOCUMENT_TOKENS).min(tokens.len())]
    }

    /// Split the group into pieces (`split_tokens`).
    fn flush(&mut self) -> Vec<Vec<u32>> {
        let group = std::mem::take(&mut self.group);
        self.group_documents = 0;
        group
            .chunks(self.piece_length)
            .map(<[u32]>::to_vec)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t5() -> SpanCorruptionSettings {
        SpanCorruptionSettings::default()
    }

    #[test]
    fn the_helper_gives_t5s_lengths() {
        assert_eq!(random_spans_helper(&t5()), (568, 114));
        // 568 raw tokens: 85 noise in 28 spans; 483 + 28 + EOS inputs, 85 + 28 + EOS targets.
        assert_eq!(lengths_of(568, &t5()), (512, 114));
        assert_eq!(lengths_of(569, &t5()), (513, 114));
        let short = SpanCorruptionSettings {
            inputs_length: 128,
            ..t5()
        };
        // 142 raw: round(21.3) = 21 noise, round(7) = 7 spans: 121 + 7 + 1 = 129 > 128, so 141.
        assert_eq!(random_spans_helper(&short), (141, 29));
        let half = SpanCorruptionSettings {
            inputs_length: 512,
            noise_density: 0.5,
            mean_noise_span: 3.0,
        };
        let (tokens, targets) = random_spans_helper(&half);
        let (inputs, _) = lengths_of(tokens + 1, &half);
        assert!(targets <= inputs, "{tokens} {targets}");
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        assert_eq!(py_round(0.5), 0);
        assert_eq!(py_round(1.5), 2);
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(2.6), 3);
    }

    #[test]
    fn sentinels_count_down_from_extra_id_0() {
        let tokens = [10, 11, 12, 13, 14, 15, 16, 17];
        let mask = [false, true, true, false, false, true, false, true];
        let s0 = 399;
        assert_eq!(
            noise_span_to_unique_sentinel(&tokens, &mask, s0),
            [10, 399, 13, 14, 398, 16, 397]
        );
        assert_eq!(
            nonnoise_span_to_unique_sentinel(&tokens, &mask, s0),
            [399, 11, 12, 398, 15, 397, 17]
        );
    }

    #[test]
    fn hand_computed_masks() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // Length 1 is padded to 2 (one noise token), then cut back: the non-noise token.
        assert_eq!(random_spans_noise_mask(1, 0.15, 3.0, &mut rng), [false]);
        // Length 2: one non-noise, then one noise token.
        assert_eq!(
            random_spans_noise_mask(2, 0.15, 3.0, &mut rng),
            [false, true]
        );
        // Length 10 at 0.15: round(1.5) = 2 noise tokens in round(0.67) = 1 span, which ends
        // the sequence: 8 non-noise then 2 noise.
        let m = random_spans_noise_mask(10, 0.15, 3.0, &mut rng);
        assert_eq!(m, [[false; 8].as_slice(), &[true; 2]].concat());
        // Length 20 at 0.5, mean 1: 10 noise tokens in 10 spans and 10 non-noise in 10 spans:
        // strictly alternating.
        let m = random_spans_noise_mask(20, 0.5, 1.0, &mut rng);
        let alternating: Vec<bool> = (0..20).map(|k| k % 2 == 1).collect();
        assert_eq!(m, alternating);
    }

    #[test]
    fn mask_statistics_over_many_pieces() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut noise, mut spans, mut total) = (0usize, 0usize, 0usize);
        for _ in 0..2000 {
            let m = random_spans_noise_mask(568, 0.15, 3.0, &mut rng);
            assert_eq!(m.len(), 568);
            assert!(!m[0] && m[567], "non-noise first, noise last");
            let n = m.iter().filter(|&&x| x).count();
            // Exactly round(568 * 0.15) noise tokens in exactly 28 spans, every time.
            assert_eq!(n, 85);
            let s = (0..568).filter(|&k| m[k] && (k == 0 || !m[k - 1])).count();
            assert_eq!(s, 28);
            noise += n;
            spans += s;
            total += 568;
        }
        let density = noise as f64 / total as f64;
        assert!((density - 0.15).abs() < 0.001, "{density}");
        let mean_span = noise as f64 / spans as f64;
        assert!((mean_span - 3.0).abs() < 0.05, "{mean_span}");
        // Span lengths vary (the segmentation is random), and their distribution is the one of
        // a uniform composition: P(length 1) = C(83, 26) / C(84, 27) = 27/84 for 85 tokens.
        let mut ones = 0usize;
        let mut all = 0usize;
        for _ in 0..2000 {
            let lengths = random_segmentation(85, 28, &mut rng);
            assert_eq!(lengths.iter().sum::<usize>(), 85);
            assert_eq!(lengths.len(), 28);
            ones += lengths.iter().filter(|&&l| l == 1).count();
            all += lengths.len();
        }
        let p1 = ones as f64 / all as f64;
        assert!((p1 - 27.0 / 84.0).abs() < 0.01, "{p1}");
    }

    #[test]
    fn a_full_piece_gives_512_inputs_and_114_targets() {
        let mut c = SpanCorruptor::new(t5(), 32_099, 1, 3);
        assert_eq!(c.lengths(), (568, 114));
        assert_eq!(c.max_sentinels(), 28);
        // 200 documents of 7 tokens: a group of 128 (896 tokens: one piece of 568 and one of
        // 328), then the rest at the end (504 tokens).
        let mut pieces = Vec::new();
        for d in 0..200u32 {
            pieces.extend(c.push(&[100 + d, 5, 6, 7, 8, 9, 10]));
        }
        assert_eq!(pieces.len(), 2);
        pieces.extend(c.finish());
        assert_eq!(pieces.len(), 3);
        let d = c.denoiser();
        let examples: Vec<Denoised> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| d.denoise(p, 3, i as u64))
            .collect();
        let full = &examples[0];
        assert_eq!(full.inputs.len(), 512);
        assert_eq!(full.targets.len(), 114);
        assert_eq!(full.inputs[511], 1);
        assert_eq!(full.targets[113], 1);
        assert_eq!(full.targets[0], 32_099, "targets start with <extra_id_0>");
        let sentinels: Vec<u32> = full
            .inputs
            .iter()
            .copied()
            .filter(|&t| t > 30_000)
            .collect();
        let expected: Vec<u32> = (0..28).map(|k| 32_099 - k).collect();
        assert_eq!(sentinels, expected);
        // Inputs and targets together hold every raw token once, in order.
        let raw: Vec<u32> = (0..128u32)
            .flat_map(|d| [100 + d, 5, 6, 7, 8, 9, 10])
            .take(568)
            .collect();
        assert_eq!(merge(&full.inputs, &full.targets), raw);
        // Seeded: the same documents give the same pieces, the same seed the same examples.
        let mut again = SpanCorruptor::new(t5(), 32_099, 1, 3);
        let first: Vec<Vec<u32>> = (0..128u32)
            .flat_map(|d| again.push(&[100 + d, 5, 6, 7, 8, 9, 10]))
            .collect();
        assert_eq!(first[0], pieces[0]);
        assert_eq!(again.denoiser().denoise(&first[0], 3, 0), examples[0]);
    }

    /// The noise mask an example was made with, for a piece of distinct tokens (`100 + k`): the
    /// raw tokens in the targets are the noise.
    fn mask_of(example: &Denoised, length: usize) -> Vec<bool> {
        let mut mask = vec![false; length];
        for &t in example
            .targets
            .iter()
            .filter(|&&t| (100..30_000).contains(&t))
        {
            mask[(t - 100) as usize] = true;
        }
        mask
    }

    #[test]
    fn every_epoch_draws_new_masks_with_the_same_statistics() {
        let d = SpanCorruptor::new(t5(), 32_099, 1, 11).denoiser();
        let piece: Vec<u32> = (100..668).collect();
        let pieces = 600u64;
        let masks_of = |epoch: u64| -> Vec<(Vec<bool>, Denoised)> {
            (0..pieces)
                .map(|i| {
                    let ex = d.denoise(&piece, epoch_seed(11, epoch), i);
                    (mask_of(&ex, 568), ex)
                })
                .collect()
        };
        assert_eq!(epoch_seed(11, 0), 11, "epoch 0 keeps the run's masks");
        let epochs: Vec<Vec<(Vec<bool>, Denoised)>> = (0..3).map(masks_of).collect();
        for (e, masks) in epochs.iter().enumerate() {
            let (mut ones, mut spans_all) = (0usize, 0usize);
            for (m, ex) in masks {
                // The statistics of `random_spans_noise_mask` (see above), every epoch.
                assert_eq!((ex.inputs.len(), ex.targets.len()), (512, 114), "epoch {e}");
                assert!(!m[0] && m[567], "epoch {e}: non-noise first, noise last");
                assert_eq!(m.iter().filter(|&&x| x).count(), 85, "epoch {e}");
                let starts: Vec<usize> = (0..568)
                    .filter(|&k| m[k] && (k == 0 || !m[k - 1]))
                    .collect();
                assert_eq!(starts.len(), 28, "epoch {e}");
                for &k in &starts {
                    let len = (k..568).take_while(|&j| m[j]).count();
                    ones += usize::from(len == 1);
                }
                spans_all += starts.len();
            }
            let p1 = ones as f64 / spans_all as f64;
            assert!((p1 - 27.0 / 84.0).abs() < 0.015, "epoch {e}: {p1}");
        }
        // The same piece gets other masks in another epoch, drawn independently: a noise token
        // of epoch 0 is noise again in epoch 1 about as often as any token is (15%).
        let (mut same, mut both, mut noise0) = (0usize, 0usize, 0usize);
        for ((m0, ex0), (m1, ex1)) in epochs[0].iter().zip(&epochs[1]) {
            same += usize::from(ex0 == ex1);
            noise0 += m0.iter().filter(|&&x| x).count();
            both += m0.iter().zip(m1).filter(|(a, b)| **a && **b).count();
        }
        assert_eq!(same, 0, "an epoch repeated another's example");
        let again = both as f64 / noise0 as f64;
        assert!((again - 0.15).abs() < 0.02, "{again}");
        // Seeded: the same epoch gives the same masks.
        assert_eq!(masks_of(1)[5].1, epochs[1][5].1);
    }

    /// The original tokens back from inputs and targets (sentinels > 30000 in these tests).
    fn merge(inputs: &[u32], targets: &[u32]) -> Vec<u32> {
        let spans = |ids: &[u32]| -> Vec<Vec<u32>> {
            let mut out: Vec<Vec<u32>> = vec![Vec::new()];
            for &t in &ids[..ids.len() - 1] {
                match t > 30_000 {
                    true => out.push(Vec::new()),
                    false => out.last_mut().unwrap().push(t),
                }
            }
            out
        };
        let (kept, dropped) = (spans(inputs), spans(targets));
        let mut out = kept[0].clone();
        for k in 1..kept.len().max(dropped.len()) {
            out.extend(dropped.get(k).into_iter().flatten());
            out.extend(kept.get(k).into_iter().flatten());
        }
        out
    }

    #[test]
    fn long_documents_give_one_random_chunk() {
        let mut c = SpanCorruptor::new(t5(), 32_099, 1, 0);
        let doc: Vec<u32> = (0..(MAX_DOCUMENT_TOKENS as u32 * 2 + 10))
            .map(|k| k + 3)
            .collect();
        let chunk = c.random_chunk(&doc).to_vec();
        let start = (chunk[0] - 3) as usize;
        assert_eq!(start % MAX_DOCUMENT_TOKENS, 0);
        assert_eq!(
            chunk,
            doc[start..(start + MAX_DOCUMENT_TOKENS).min(doc.len())]
        );
        // Over many documents every chunk is drawn.
        let starts: std::collections::BTreeSet<u32> = (0..40)
            .map(|_| {
                c.documents += 1;
                c.random_chunk(&doc)[0]
            })
            .collect();
        assert_eq!(starts.len(), 3);
        assert!(c.push(&[]).is_empty());
    }
}
