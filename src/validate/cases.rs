//! The validation batches and the comparisons: random padded cases, the reference outputs of
//! a case, and the differences and argmax agreement of a runtime's outputs with them.

use crate::config::T5Config;
use crate::export::DecoderOutput;
use crate::onnx::layout::{Kv, Part};
use ndarray::{s, Array2, Array3, Array4, ArrayD};
use rand::Rng;

/// A random right-padded batch: encoder ids and mask, and a decoder prefix starting with the
/// decoder start token.
pub(super) struct Case {
    pub ids: Array2<i64>,
    pub mask: Array2<i64>,
    pub dec: Array2<i64>,
}

pub(super) fn random_case(
    rng: &mut impl Rng,
    cfg: &T5Config,
    b: usize,
    s: usize,
    t: usize,
) -> Case {
    let vocab = cfg.vocab_size as i64;
    let mut ids = Array2::<i64>::zeros((b, s));
    let mut mask = Array2::<i64>::zeros((b, s));
    for i in 0..b {
        // The first row is full, the others shorter: padding is always exercised.
        let len = if i == 0 { s } else { rng.random_range(1..=s) };
        for j in 0..len {
            ids[[i, j]] = if j + 1 == len {
                cfg.eos_id() as i64
            } else {
                rng.random_range(3.min(vocab - 1)..vocab)
            };
            mask[[i, j]] = 1;
        }
    }
    let mut dec = Array2::<i64>::zeros((b, t));
    for i in 0..b {
        dec[[i, 0]] = cfg.decoder_start_id() as i64;
        for j in 1..t {
            dec[[i, j]] = rng.random_range(0..vocab);
        }
    }
    Case { ids, mask, dec }
}

pub(super) fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    if a.shape() != b.shape() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f32::max)
}

pub(super) fn max_abs(a: &ArrayD<f32>) -> f32 {
    a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Per row: the argmax and the margin between the best and the second-best logit.
fn argmax_rows(logits: &ArrayD<f32>) -> Vec<(usize, f32)> {
    let v = logits.shape().last().copied().unwrap_or(1).max(1);
    logits
        .as_slice()
        .map(|s| s.to_vec())
        .unwrap_or_else(|| logits.iter().copied().collect())
        .chunks(v)
        .map(|row| {
            let (mut best, mut first, mut second) = (0, f32::NEG_INFINITY, f32::NEG_INFINITY);
            for (i, &x) in row.iter().enumerate() {
                if x > first {
                    (second, first, best) = (first, x, i);
                } else if x > second {
                    second = x;
                }
            }
            (best, first - second)
        })
        .collect()
}

/// Argmax agreement at the positions where the reference is decisive: its best logit leads the
/// second by more than `margin` (the decisive margin at the logits' scale). Where the
/// reference's own top two are closer than that, reduced precision may legitimately pick
/// either; those positions are counted apart as near-ties. Returns (same, decisive, near-ties).
pub(super) fn argmax_agreement(
    got: &ArrayD<f32>,
    want: &ArrayD<f32>,
    margin: f32,
) -> (usize, usize, usize) {
    let (a, b) = (argmax_rows(got), argmax_rows(want));
    let mut out = (0, 0, 0);
    for ((g, _), (w, lead)) in a.iter().zip(&b) {
        if *lead > margin {
            out.1 += 1;
            out.0 += (g == w) as usize;
        } else {
            out.2 += 1;
        }
    }
    out
}

/// The reference outputs of one case, by graph and output name.
pub(super) struct Expected {
    pub encoder: ArrayD<f32>,
    pub dec: DecoderOutput,
}

/// The reference cache of layer `i` as a decoder-with-past gets it before target position
/// `t - 1`: the self-attention keys/values of positions `0..t-1`, the cross-attention ones whole.
pub(super) fn past_before_last(
    exp: &Expected,
    i: usize,
    part: Part,
    kv: Kv,
    t: usize,
) -> ArrayD<f32> {
    let x = exp.dec.cache(i, part, kv);
    match part {
        Part::Decoder => x.slice(s![.., .., ..t - 1, ..]).to_owned().into_dyn(),
        Part::Encoder => x.clone().into_dyn(),
    }
}

/// What a left-padded cache row holds before its real keys/values: any value works, since the
/// masked decoder must ignore it (not zero, so that a missing mask changes the outputs).
pub(super) const PADDING_FILLER: f32 = 0.5;

/// The left padding of row `i` of a case with `t` target positions in the masked decoder's check:
/// 0 for the first row, others 2, 4, ... (mod `t`): row `i` holds only its first `t - pad`
/// positions, as a row that joined a longer-running batch.
pub(super) fn left_padding(rows: usize, t: usize) -> Vec<usize> {
    (0..rows).map(|i| (2 * i) % t.max(1)).collect()
}

/// Self-attention keys or values `x` `[B, H, T, d]` as a left-padded cache of length `len`: row
/// `i` holds `pads[i]` columns of [`PADDING_FILLER`], then its first `len - pads[i]` positions.
pub(super) fn left_padded(x: &Array4<f32>, pads: &[usize], len: usize) -> ArrayD<f32> {
    let (b, h, _, d) = x.dim();
    let mut out = Array4::from_elem((b, h, len, d), PADDING_FILLER);
    for (i, &pad) in pads.iter().enumerate() {
        out.slice_mut(s![i, .., pad.., ..])
            .assign(&x.slice(s![i, .., ..len - pad, ..]));
    }
    out.into_dyn()
}

/// The decoder's self-attention key mask of a left-padded cache of length `len` plus one new
/// position: `pads[i]` zeros, then ones.
pub(super) fn padding_mask(pads: &[usize], len: usize) -> Array2<i64> {
    Array2::from_shape_fn((pads.len(), len + 1), |(i, j)| i64::from(j >= pads[i]))
}

/// Per row `i`, the reference logits at its last real position `t - 1 - pads[i]`, `[B, 1, V]`.
pub(super) fn logits_at_last_real(logits: &Array3<f32>, pads: &[usize]) -> ArrayD<f32> {
    let (b, t, v) = logits.dim();
    let mut out = Array3::zeros((b, 1, v));
    for (i, &pad) in pads.iter().enumerate() {
        out.slice_mut(s![i, 0, ..])
            .assign(&logits.slice(s![i, t - 1 - pad, ..]));
    }
    out.into_dyn()
}
