"""scripts/ssm_reproduction.py --smoke: the synthetic corpus and its QA split keep the invariants
the experiment rests on (read back from the files it writes, not from the script's own check),
the check catches a broken split, and the three arms (no pre-training, span corruption, SSM) run
end to end through cbqa init / pretrain / train / eval. Bounded: the smoke run has 120 s."""

import importlib.util
import json

import pytest

from conftest import ROOT, run

SCRIPT = ROOT / "scripts" / "ssm_reproduction.py"
ARMS = ["none", "span-corruption", "ssm"]


def load_script():
    spec = importlib.util.spec_from_file_location("ssm_reproduction", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def smoke(cbqa_bin, python, tmp_path_factory):
    doctor = run([cbqa_bin, "doctor"])
    if "not built in" in doctor:
        pytest.fail(f"{cbqa_bin} has no libtorch (cbqa pretrain/train): build it with default "
                    "features", pytrace=False)
    out = tmp_path_factory.mktemp("ssm")
    run([python, SCRIPT, "--out", out, "--smoke", "--cbqa", cbqa_bin, "--no-nice"], timeout=120)
    return out


def test_no_person_is_on_both_sides(smoke):
    people = read_jsonl(smoke / "data" / "people.jsonl")
    a = {p["name"] for p in people if p["side"] == "a"}
    b = {p["name"] for p in people if p["side"] == "b"}
    assert a and b and not a & b
    for side, names in (("a", a), ("b", b)):
        for q in read_jsonl(smoke / "data" / f"qa_{side}.jsonl"):
            asked = [n for n in a | b if n in q["question"]]
            assert len(asked) == 1 and asked[0] in names, (side, q)


def test_every_answer_is_a_salient_span_about_its_person(smoke):
    corpus = read_jsonl(smoke / "data" / "corpus.jsonl")
    names = [p["name"] for p in read_jsonl(smoke / "data" / "people.jsonl")]
    spans_of = {}
    for doc in corpus:
        who = [n for n in names if n in doc["text"]]
        assert len(who) == 1, doc
        for s in doc["spans"]:
            assert 0 <= s["start"] < s["end"] <= len(doc["text"]), doc
            spans_of.setdefault(who[0], set()).add(doc["text"][s["start"]:s["end"]])
    qa = read_jsonl(smoke / "data" / "qa_a.jsonl") + read_jsonl(smoke / "data" / "qa_b.jsonl")
    assert len(qa) == 4 * len(names)
    for q in qa:
        who = next(n for n in names if n in q["question"])
        assert q["answer"][0] in spans_of[who], q


def test_the_split_check_catches_a_leak_and_a_missing_fact():
    script = load_script()
    data = script.make_dataset(seed=3, people_count=10)
    script.check_split(data)
    leaked = {**data, "people_b": data["people_b"] + data["people_a"][:1]}
    with pytest.raises(AssertionError, match="both A and B"):
        script.check_split(leaked)
    wrong = dict(data["qa_b"][0], answer=["Nowhere"])
    with pytest.raises(AssertionError, match="no salient span"):
        script.check_split({**data, "qa_b": [wrong] + data["qa_b"][1:]})


def test_the_three_arms_run_end_to_end(smoke):
    results = json.loads((smoke / "results.json").read_text())
    assert [r["arm"] for r in results["results"]] == ARMS
    for r in results["results"]:
        assert 0 <= r["em_b"] <= 100 and 0 <= r["em_a"] <= 100, r
        assert r["finetune"]["dev_em_curve"], r  # the trainer's EM on B was computed
        assert (r["pretrain"] is None) == (r["arm"] == "none"), r
    for arm in ARMS:
        rows = (smoke / arm / "eval_b" / "predictions.csv").read_text().splitlines()
        assert len(rows) == 1 + len(read_jsonl(smoke / "data" / "qa_b.jsonl"))
    assert "| ssm |" in (smoke / "summary.md").read_text()
