"""cbqa.score / normalize_answer / read_dataset against `cbqa score` and
scripts/official_metrics.py on the real benchmark files."""

import csv
import json

import pytest

import cbqa
from conftest import ROOT, run

# (file under the data folder, its normaliser as cbqa picks it)
BENCHMARKS = [
    ("nq-open/NQ-open.dev.jsonl", "squad"),
    ("triviaqa/topics.dpr.trivia.test.txt", "trivia_qa"),
    ("webquestions/brmson-main/test.json", "squad"),
]


def variants(examples):
    """Predictions that exercise the normalisers: exact, decorated, partial, wrong."""
    out = []
    for i, e in enumerate(examples):
        a = e.answers[0]
        out.append([a, f"The {a.upper()}!", " ".join(a.split()[:1]) + " x", "nothing"][i % 4])
    return out


def official(python, tmp_path, preds, refs, normalizer, candidates):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for p, r, c in zip(preds, refs, candidates):
            f.write(json.dumps({"prediction": p, "references": r, "candidates": c}) + "\n")
    run([python, ROOT / "scripts" / "official_metrics.py", "--normalizer", normalizer, src, dst])
    lines = [json.loads(x) for x in dst.read_text(encoding="utf-8").splitlines()]
    return lines[:-1], lines[-1]["summary"]


@pytest.mark.parametrize("rel,normalizer", BENCHMARKS)
def test_score_equals_cbqa_score_and_the_official_metrics(
    cbqa_bin, data_dir, python, tmp_path, rel, normalizer
):
    path = data_dir / rel
    if not path.exists():
        pytest.fail(f"{path} missing from the shared data folder", pytrace=False)
    examples = cbqa.read_dataset(path)
    preds = variants(examples)
    refs = [e.answers for e in examples]
    cands = [[p, e.answers[-1]] for p, e in zip(preds, examples)]
    got = cbqa.score(preds, refs, normalizer, candidates=cands)
    assert got["n"] == len(examples) and got["normalizer"] == normalizer

    rows, summary = official(python, tmp_path, preds, refs, normalizer, cands)
    assert got["em"] == float(summary["em"]) and got["f1"] == float(summary["f1"])
    assert got["has_answer"] == float(summary["has_answer"])
    assert got["efficientqa_em"] == float(summary["efficientqa_em"])
    recall2 = sum(any(r["candidate_em"][:2]) for r in rows) / len(rows) * 100
    assert got["recall@2"] == pytest.approx(recall2, abs=1e-9)
    for e, p, r in list(zip(examples, preds, rows))[:300]:
        assert cbqa.normalize_answer(p, normalizer) == r["norm_prediction"], e.id

    # `cbqa score` on the same predictions: the same numbers in metrics.csv, and the records it
    # read (predictions.csv: id, question, references) are read_dataset's
    pred_file = tmp_path / "preds.jsonl"
    with open(pred_file, "w", encoding="utf-8") as f:
        for e, p, c in zip(examples, preds, cands):
            f.write(json.dumps({"id": e.id, "prediction": p, "candidates": c}) + "\n")
    out = tmp_path / "scored"
    run([cbqa_bin, "score", "--data", path, "--predictions", pred_file, "--out", out])
    with open(out / "metrics.csv", newline="", encoding="utf-8") as f:
        (metrics,) = list(csv.DictReader(f))
    for k in ["n", "normalizer", "em", "f1", "recall@1", "recall@2", "has_answer",
              "efficientqa_em"]:
        assert str(got[k]) == metrics[k] or float(got[k]) == float(metrics[k]), k
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [(r["id"], r["question"], json.loads(r["references"])) for r in table] == [
        (e.id, e.question, e.answers) for e in examples
    ]


def test_normalizers_follow_qa_utils():
    assert cbqa.normalize_answer("The  Beatles!") == "beatles"
    assert cbqa.normalize_answer("rock’n’roll", "trivia_qa") == "rock n roll"
    assert cbqa.normalize_answer("rock’n’roll", "squad") == "rock’n’roll"
    with pytest.raises(ValueError, match="normalizer"):
        cbqa.normalize_answer("x", "bleu")


def test_score_and_read_errors(tmp_path):
    with pytest.raises(cbqa.CbqaError, match="2 predictions.*1 reference|length"):
        cbqa.score(["a", "b"], [["a"]])
    with pytest.raises(cbqa.CbqaError):
        cbqa.score(["a"], [[]])  # an example without references: the official max() raises
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q1", "answer": ["a"]}\n{"question": 3, "answer": ["b"]}\n')
    with pytest.raises(cbqa.CbqaError, match=r"bad\.jsonl:2.*question.*must be a string"):
        cbqa.read_dataset(bad)
    (ex,) = cbqa.read_dataset(bad, skip_bad=True)
    assert (ex.id, ex.question, ex.answers) == ("0", "q1", ["a"])
    with pytest.raises(cbqa.CbqaError, match=r"cannot read .*absent\.jsonl|absent\.jsonl"):
        cbqa.read_dataset(tmp_path / "absent.jsonl")
    with pytest.raises(cbqa.CbqaError, match="yaml"):
        cbqa.read_dataset(bad, format="yaml")
