#!/usr/bin/env python3
"""Reference implementation of the closed-book QA metrics, for cross-checking `cbqa`.

A faithful transcription, in plain Python (``re``, ``string``, ``collections``,
``unicodedata``; no pip packages), of:

* T5's ``t5/evaluation/qa_utils.py``
  (https://github.com/google-research/text-to-text-transfer-transformer/blob/main/t5/evaluation/qa_utils.py):
  ``_normalize_answer``, ``normalize_trivia_qa``, ``normalize_squad``,
  ``_metric_max_over_ground_truths``, ``_exact_match_score``, ``_f1_score``, ``qa_metrics``;
  and ``t5.evaluation.metrics.squad`` / ``trivia_qa`` (normalise every target and prediction,
  then ``qa_metrics``).
* DPR's ``has_answer(..., match_type="string")`` with ``SimpleTokenizer``
  (https://github.com/facebookresearch/DPR/blob/main/dpr/data/qa_validation.py,
  https://github.com/facebookresearch/DPR/blob/main/dpr/utils/tokenizers.py).
* ORQA/EfficientQA's ``normalize_answer`` (NFD first), from
  https://github.com/google-research/language/blob/master/language/orqa/utils/eval_utils.py

Two substitutions keep it dependency-free, and both are checked against the real thing when
it is importable:

* ``np.mean`` -> ``_np_mean``: NumPy's pairwise summation re-implemented (asserted equal to
  ``numpy.mean`` bit for bit if numpy is installed);
* DPR's ``regex``-module tokenizer -> ``_simple_tokenize`` on ``unicodedata.category``
  (asserted equal to the ``regex`` pattern if that package is installed).

Usage::

    official_metrics.py --normalizer {squad,trivia_qa} INPUT.jsonl OUTPUT.jsonl

INPUT lines: ``{"id": ..., "prediction": str, "references": [str, ...],
"candidates": [str, ...]}`` (``id`` and ``candidates`` optional). OUTPUT has one line per
input line (``norm_prediction``, ``norm_references``, ``em``, ``f1``, ``has_answer``,
``efficientqa_em``, ``norm_prediction_efficientqa``, ``candidate_em``) and a final
``{"summary": {...}}`` line with ``qa_metrics``' ``em`` and ``f1`` and the other means x100.
Floats (``f1`` and the means) are written as ``repr()`` strings so they round-trip exactly.
"""

import argparse
import collections
import json
import re
import string
import sys
import unicodedata


# --- t5/evaluation/qa_utils.py ------------------------------------------------------------


def _normalize_answer(text, punc_chars, punc_repl):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(s):
        return re.sub(r"\b(a|an|the)\b", " ", s)

    def replace_punctuation(s):
        to_replace = set(punc_chars)
        return "".join(punc_repl if ch in to_replace else ch for ch in s)

    def white_space_fix(s):
        return " ".join(s.split())

    text = text.lower()
    text = replace_punctuation(text)
    text = remove_articles(text)
    text = white_space_fix(text)

    return text


def normalize_trivia_qa(answer):
    """Normalization used in official TriviaQA evaluation script."""
    return _normalize_answer(
        answer, punc_chars=string.punctuation + "‘’´`_", punc_repl=" "
    ).strip()


def normalize_squad(answer):
    """Normalization used in official SQuAD evaluation script."""
    return _normalize_answer(answer, punc_chars=string.punctuation, punc_repl="")


def _metric_max_over_ground_truths(metric_fn, ground_truths, prediction):
    """Computes the maximum of the metric over all ground truths."""
    return max(metric_fn(ground_truth, prediction) for ground_truth in ground_truths)


def _exact_match_score(target, prediction):
    return target == prediction


def _f1_score(target, prediction):
    """Computes token f1 score for a single target and prediction."""
    prediction_tokens = prediction.split()
    target_tokens = target.split()
    common = collections.Counter(prediction_tokens) & collections.Counter(target_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(target_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def qa_metrics(targets, predictions):
    """Computes exact match and f1 QA scores, expecting pre-normalized text."""
    if len(targets) != len(predictions):
        raise ValueError("Number of targets and predictions must match.")
    em = _np_mean(
        [
            _metric_max_over_ground_truths(_exact_match_score, t, p)
            for p, t in zip(predictions, targets)
        ]
    )
    f1 = _np_mean(
        [_metric_max_over_ground_truths(_f1_score, t, p) for p, t in zip(predictions, targets)]
    )
    em *= 100
    f1 *= 100
    return {"em": em, "f1": f1}


# --- np.mean without numpy ------------------------------------------------------------------


def _pairwise_sum(a):
    """NumPy's DOUBLE_pairwise_sum (numpy/_core/src/umath/loops_utils.h.src)."""
    n = len(a)
    if n < 8:
        res = 0.0
        for x in a:
            res += x
        return res
    if n <= 128:
        r = [float(x) for x in a[:8]]
        i = 8
        while i < n - (n % 8):
            for j in range(8):
                r[j] += a[i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a[:n2]) + _pairwise_sum(a[n2:])


def _np_mean(values):
    """``np.mean`` of a list of bools / ints / floats, as float64."""
    values = [float(v) for v in values]
    mean = _pairwise_sum(values) / len(values)
    try:
        import numpy as np
    except ImportError:
        return mean
    ref = float(np.mean(values))
    if ref != mean:
        raise AssertionError(f"_np_mean {mean!r} != numpy.mean {ref!r}")
    return mean


# --- DPR has_answer --------------------------------------------------------------------------


def _simple_tokenize(text):
    """DPR SimpleTokenizer: ``([\\p{L}\\p{N}\\p{M}]+)|([^\\p{Z}\\p{C}])`` via unicodedata."""
    tokens = []
    i, n = 0, len(text)
    while i < n:
        cat = unicodedata.category(text[i])[0]
        if cat in "LNM":
            j = i + 1
            while j < n and unicodedata.category(text[j])[0] in "LNM":
                j += 1
            tokens.append(text[i:j])
            i = j
        else:
            if cat not in "ZC":
                tokens.append(text[i])
            i += 1
    return tokens


try:
    import regex as _regex  # the package DPR uses; optional here, for a self-check only

    _DPR_RE = _regex.compile(
        r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])",
        flags=_regex.IGNORECASE + _regex.UNICODE + _regex.MULTILINE,
    )
except ImportError:
    _DPR_RE = None


def _words_uncased(text):
    """``tokenizer.tokenize(text).words(uncased=True)``."""
    tokens = _simple_tokenize(text)
    if _DPR_RE is not None:
        ref = [m.group() for m in _DPR_RE.finditer(text)]
        if ref != tokens:
            raise AssertionError(f"tokenizer mismatch on {text!r}: {tokens!r} != {ref!r}")
    return [t.lower() for t in tokens]


def _normalize(text):
    return unicodedata.normalize("NFD", text)


def has_answer(answers, text):
    """DPR ``has_answer(answers, text, SimpleTokenizer(), "string")``."""
    text = _normalize(text)
    text = _words_uncased(text)
    for single_answer in answers:
        single_answer = _normalize(single_answer)
        single_answer = _words_uncased(single_answer)
        for i in range(0, len(text) - len(single_answer) + 1):
            if single_answer == text[i : i + len(single_answer)]:
                return True
    return False


# --- ORQA / EfficientQA -----------------------------------------------------------------------


def normalize_efficientqa(s):
    """language/orqa/utils/eval_utils.py ``normalize_answer``."""
    s = unicodedata.normalize("NFD", s)

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


# --- driver -------------------------------------------------------------------------------------

NORMALIZERS = {"squad": normalize_squad, "trivia_qa": normalize_trivia_qa}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--normalizer", choices=sorted(NORMALIZERS), required=True)
    ap.add_argument("input")
    ap.add_argument("output")
    args = ap.parse_args()
    normalize = NORMALIZERS[args.normalizer]

    with open(args.input, encoding="utf-8") as f:
        examples = [json.loads(line) for line in f if line.strip()]

    # As t5.evaluation.metrics.squad / trivia_qa: normalise, then qa_metrics.
    targets = [[normalize(t) for t in ex["references"]] for ex in examples]
    predictions = [normalize(ex["prediction"]) for ex in examples]
    summary = qa_metrics(targets, predictions)

    rows = []
    for ex, t, p in zip(examples, targets, predictions):
        eqa_p = normalize_efficientqa(ex["prediction"])
        eqa_t = [normalize_efficientqa(r) for r in ex["references"]]
        cand = [normalize(c) for c in ex.get("candidates", [])]
        rows.append(
            {
                "id": ex.get("id"),
                "norm_prediction": p,
                "norm_references": t,
                "em": bool(_metric_max_over_ground_truths(_exact_match_score, t, p)),
                "f1": repr(float(_metric_max_over_ground_truths(_f1_score, t, p))),
                "has_answer": has_answer(ex["references"], ex["prediction"]),
                "norm_prediction_efficientqa": eqa_p,
                "efficientqa_em": any(eqa_p == r for r in eqa_t),
                "candidate_em": [any(c == r for r in t) for c in cand],
            }
        )
    summary["has_answer"] = _np_mean([r["has_answer"] for r in rows]) * 100
    summary["efficientqa_em"] = _np_mean([r["efficientqa_em"] for r in rows]) * 100
    # Floats travel as repr() strings: exact in any correctly rounding parser (some JSON
    # libraries, e.g. serde_json without `float_roundtrip`, round number literals loosely).
    summary = {k: repr(v) for k, v in summary.items()}
    summary["count"] = len(rows)
    summary["numpy_checked"] = _has_module("numpy")
    summary["regex_checked"] = _DPR_RE is not None

    with open(args.output, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.write(json.dumps({"summary": summary}) + "\n")
    return 0


def _has_module(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
