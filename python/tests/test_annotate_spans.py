"""scripts/annotate_spans.py, the salient-span tagger for `cbqa pretrain --objective ssm`: its
heuristic fallback on hand-checked sentences (code-point offsets through non-ASCII text), its
spaCy path through a real spaCy pipeline (a rule-based entity ruler saved to disk, since spaCy's
trained pipelines do not install from PyPI: only the label filter and offset handling are under
test, not a model's accuracy), and the spans it writes read by `cbqa pretrain` into one SSM
example per span."""

import json
import subprocess

import pytest

from conftest import ROOT, run

SCRIPT = ROOT / "scripts" / "annotate_spans.py"
TEXT = [
    "The Bank of England was founded in 1694 by William Paterson.",
    "In March 1815 Napoleon Bonaparte returned from Elba to Paris.",
    "She studied at the University of São Paulo with José María Aznar and Ludwig van Beethoven.",
    "However, the company moved to New York City on 4 July 1976, two days later.",
]
HEURISTIC = [
    [("Bank of England", "ENTITY"), ("1694", "DATE"), ("William Paterson", "ENTITY")],
    [("March 1815", "DATE"), ("Napoleon Bonaparte", "ENTITY"), ("Elba", "ENTITY"),
     ("Paris", "ENTITY")],
    [("University of São Paulo", "ENTITY"), ("José María Aznar", "ENTITY"),
     ("Ludwig van Beethoven", "ENTITY")],
    [("New York City", "ENTITY"), ("4 July 1976", "DATE")],
]


def annotate(python, tmp_path, *flags):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    run([python, SCRIPT, src, out, *flags])
    assert not (tmp_path / "out.jsonl.tmp").exists()
    return out, [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def spans(doc):
    return [(doc["text"][s["start"]:s["end"]], s["type"]) for s in doc["spans"]]


def test_heuristic_tags_names_and_dates_at_code_point_offsets(python, tmp_path):
    _, docs = annotate(python, tmp_path, "--ner", "heuristic", "--batch", "3")
    assert [d["text"] for d in docs] == TEXT
    assert [spans(d) for d in docs] == HEURISTIC
    # "São" and "María": offsets count code points, not UTF-8 bytes
    third = docs[2]["spans"][0]
    assert (third["start"], third["end"]) == (TEXT[2].index("University"), TEXT[2].index(" with"))


def test_spacy_path_keeps_salient_labels_and_drops_overlaps(python, tmp_path):
    try:
        import spacy
    except ImportError:
        pytest.fail("spaCy is not installed: run scripts/setup.sh (scripts/requirements.txt pins "
                    "it)", pytrace=False)
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([
        {"label": "ORG", "pattern": "Bank of England"},
        {"label": "PERSON", "pattern": "Napoleon Bonaparte"},
        {"label": "GPE", "pattern": "Paris"},
        {"label": "DATE", "pattern": "1815"},  # inside the regex's "March 1815": dropped
        {"label": "CARDINAL", "pattern": "two"},  # not a salient type: dropped
        {"label": "GPE", "pattern": [{"TEXT": "São"}, {"TEXT": "Paulo"}]},
    ])
    pipeline = tmp_path / "pipeline"
    nlp.to_disk(pipeline)
    _, docs = annotate(python, tmp_path, "--ner", "spacy", "--model", pipeline)
    assert [spans(d) for d in docs] == [
        [("Bank of England", "ORG"), ("1694", "DATE")],
        [("March 1815", "DATE"), ("Napoleon Bonaparte", "PERSON"), ("Paris", "GPE")],
        [("São Paulo", "GPE")],
        [("4 July 1976", "DATE")],
    ]


def test_a_missing_pipeline_names_the_fallbacks(python, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text(TEXT[0] + "\n", encoding="utf-8")
    p = subprocess.run([str(python), str(SCRIPT), str(src), str(tmp_path / "o.jsonl"), "--model",
                        str(tmp_path / "no-such-pipeline")], capture_output=True, text=True)
    assert p.returncode != 0
    assert "--ner heuristic" in p.stderr and "no-such-pipeline" in p.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_cbqa_pretrain_makes_one_ssm_example_per_span(cbqa_bin, python, tmp_path):
    out, docs = annotate(python, tmp_path, "--ner", "heuristic")
    dumped = run([cbqa_bin, "pretrain", "--model", ROOT / "tests" / "fixtures" / "t5_v1_1",
                  "--corpus", out, "--objective", "ssm", "--dump-examples", "100"])
    examples = [json.loads(line) for line in dumped.splitlines()]
    want = sorted(text for d in docs for text, _ in spans(d))
    assert sorted(e["targets"].removesuffix("</s>") for e in examples) == want
    for e in examples:
        assert e["inputs"].startswith("nem: ") and e["inputs"].count("_X_") == 1
        doc = e["inputs"].removeprefix("nem: ").removesuffix("</s>")
        assert doc.replace("_X_", e["targets"].removesuffix("</s>")) in TEXT
