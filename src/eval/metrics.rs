//! Exact match and token F1 over *normalised* strings, and their corpus means, mirroring
//! [`t5/evaluation/qa_utils.py`](https://github.com/google-research/text-to-text-transfer-transformer/blob/main/t5/evaluation/qa_utils.py)
//! (`_exact_match_score`, `_f1_score`, `_metric_max_over_ground_truths`, `qa_metrics`).
//!
//! `qa_metrics` averages with `np.mean`, which sums float64 arrays with NumPy's pairwise
//! summation; a naive left-to-right sum differs in the last bits for thousands of F1 values,
//! so [`numpy_mean`] reproduces NumPy's algorithm exactly.

use super::EvalError;
use crate::data::is_py_space;

/// `_exact_match_score(target, prediction)`: plain string equality of normalised text.
pub fn exact_match(target: &str, prediction: &str) -> bool {
    target == prediction
}

/// `_f1_score(target, prediction)`: SQuAD token F1 of two normalised strings.
///
/// Tokens are `str.split()` tokens; the overlap is the size of the multiset intersection
/// (`Counter(prediction) & Counter(target)`). As in Python, the score is 0 when nothing is in
/// common, which includes an empty prediction or target (also when *both* are empty, where
/// exact match is 1).
pub fn f1_score(target: &str, prediction: &str) -> f64 {
    let mut p = py_split(prediction);
    let mut t = py_split(target);
    p.sort_unstable();
    t.sort_unstable();
    f1_sorted(&t, &p)
}

/// `str.split()` with no argument.
pub(crate) fn py_split(s: &str) -> Vec<&str> {
    s.split(is_py_space).filter(|t| !t.is_empty()).collect()
}

/// F1 from token lists that are already sorted (so the multiset intersection is a merge).
pub(crate) fn f1_sorted(target: &[&str], prediction: &[&str]) -> f64 {
    let (mut i, mut j, mut num_same) = (0, 0, 0usize);
    while i < target.len() && j < prediction.len() {
        match target[i].cmp(prediction[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                num_same += 1;
                i += 1;
                j += 1;
            }
        }
    }
    if num_same == 0 {
        return 0.0;
    }
    // Same operation order as the Python: `1.0 * num_same / len(...)`, then
    // `(2 * precision * recall) / (precision + recall)`.
    let precision = num_same as f64 / prediction.len() as f64;
    let recall = num_same as f64 / target.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// `_metric_max_over_ground_truths(metric_fn, ground_truths, prediction)`; `None` where Python's
/// `max()` would raise on an empty list.
pub fn metric_max_over_ground_truths<S, T, F>(
    metric_fn: F,
    ground_truths: &[S],
    prediction: &str,
) -> Option<T>
where
    S: AsRef<str>,
    T: PartialOrd,
    F: Fn(&str, &str) -> T,
{
    let mut best: Option<T> = None;
    for gt in ground_truths {
        let score = metric_fn(gt.as_ref(), prediction);
        // Python's max keeps the first of equal maxima; `>` does the same.
        if best.as_ref().is_none_or(|b| score > *b) {
            best = Some(score);
        }
    }
    best
}

/// Corpus-level EM and F1, ×100.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QaMetrics {
    pub em: f64,
    pub f1: f64,
}

/// `qa_metrics(targets, predictions)`: expects pre-normalised text, returns the means ×100.
///
/// Errors where the Python raises (length mismatch, an example without targets) and, unlike
/// `np.mean([])` (which warns and returns NaN), on an empty corpus.
pub fn qa_metrics<S: AsRef<str>, P: AsRef<str>>(
    targets: &[Vec<S>],
    predictions: &[P],
) -> Result<QaMetrics, EvalError> {
    if targets.len() != predictions.len() {
        return Err(EvalError::LengthMismatch {
            predictions: predictions.len(),
            references: targets.len(),
        });
    }
    if targets.is_empty() {
        return Err(EvalError::NoExamples);
    }
    let mut em = Vec::with_capacity(targets.len());
    let mut f1 = Vec::with_capacity(targets.len());
    for (index, (t, p)) in targets.iter().zip(predictions).enumerate() {
        let p = p.as_ref();
        let no_refs = || EvalError::NoReferences {
            index,
            id: index.to_string(),
        };
        let e = metric_max_over_ground_truths(exact_match, t, p).ok_or_else(no_refs)?;
        let f = metric_max_over_ground_truths(f1_score, t, p).ok_or_else(no_refs)?;
        em.push(if e { 1.0 } else { 0.0 });
        f1.push(f);
    }
    Ok(QaMetrics {
        em: numpy_mean(&em) * 100.0,
        f1: numpy_mean(&f1) * 100.0,
    })
}

/// `np.mean` of a float64 vector: NumPy's pairwise sum divided by the length (NaN when empty).
///
/// Checked against NumPy 2.3 on random vectors of 1..20 000 values: `np.add.reduce` starts
/// from the identity and hands the whole contiguous array to one pairwise call (no 8192-element
/// buffering for float64 input).
pub fn numpy_mean(values: &[f64]) -> f64 {
    pairwise_sum(values) / values.len() as f64
}

/// NumPy's `DOUBLE_pairwise_sum` (`numpy/_core/src/umath/loops_utils.h.src`): plain loop below
/// 8 values, 8 accumulators up to 128, otherwise split at a multiple of 8 near the middle.
pub fn pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}
