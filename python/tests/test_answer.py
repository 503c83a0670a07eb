"""cbqa.Answerer: the answers of `cbqa predict`, the GIL released while answering, errors as
CbqaError with the whole chain."""

import json
import threading
import time

import pytest

import cbqa
from conftest import run

QUESTIONS = [
    "who wrote hamlet",
    "when did the war end",
    "what is the capital of france",
    "how many legs does a spider have",
    "who painted the mona lisa in the sixteenth century",
]


def predict(cbqa_bin, export, *flags):
    out = run([cbqa_bin, "predict", "--model", export, "--format", "jsonl", *flags, *QUESTIONS])
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("backend", ["ort", "tract"])
def test_answers_are_those_of_cbqa_predict(cbqa_bin, export, backend):
    expected = predict(cbqa_bin, export, "--backend", backend, "--beams", "3", "--threads", "1")
    answerer = cbqa.Answerer(export, backend, beams=3, threads=1)
    got = answerer.answer(QUESTIONS)
    assert len(got) == len(expected) == len(QUESTIONS)
    for a, e in zip(got, expected):
        assert a.text == e["answer"]
        # f32 scores: the JSON holds the f32 widened to f64, exactly
        assert a.score == e["score"]
        assert [(c.text, c.score) for c in a.candidates] == [
            (c["text"], c["score"]) for c in e["candidates"]
        ]
        assert a.truncated == e["truncated"] and a.error is None
    assert len(got[0].candidates) == 3


def test_settings_reach_the_decoder(export):
    answerer = cbqa.Answerer(export, beams=4, candidates=2, max_new_tokens=3)
    a = answerer.answer(["who wrote hamlet"])[0]
    assert len(a.candidates) == 2
    short = cbqa.Answerer(export, max_input_tokens=3)
    assert short.answer(["who wrote the play hamlet in england"])[0].truncated
    assert short.truncations == 1


def test_serial_batches_answer_as_batches_at_once(export):
    """The default decodes a batch per thread on session copies; serial_batches=True one batch
    at a time on both threads; the answers are the same."""
    at_once = cbqa.Answerer(export, threads=2, batch_size=2)
    serial = cbqa.Answerer(export, threads=2, batch_size=2, serial_batches=True)
    assert "x 2 batches at once" in at_once.describe(), at_once.describe()
    assert "at once" not in serial.describe(), serial.describe()
    a, b = at_once.answer(QUESTIONS), serial.answer(QUESTIONS)
    assert [(x.text, x.score) for x in a] == [(x.text, x.score) for x in b]


def test_answer_releases_the_gil(export):
    """A Python thread keeps running while answer() works in native code."""
    answerer = cbqa.Answerer(export, beams=4, threads=1)
    questions = QUESTIONS * 40
    answerer.answer(questions[:2])  # warm up
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    time.sleep(0.05)
    start = time.perf_counter()
    answers = answerer.answer(questions)
    end = time.perf_counter()
    stop.set()
    t.join()
    assert len(answers) == len(questions)
    assert end - start > 0.1, f"answering took {end - start:.3f}s, too short to tell"
    # Held, the GIL would stop the thread for the whole call (it could only run at the edges,
    # within one 5 ms switch interval); released, it ticks all along.
    inside = [x for x in ticks if start + 0.02 < x < end - 0.02]
    assert len(inside) >= 10, f"{len(inside)} ticks during {end - start:.3f}s of answering"


def test_two_threads_answer_at_once(export):
    answerer = cbqa.Answerer(export, "tract", beams=2)
    expected = answerer.answer(QUESTIONS)
    results = [None, None]

    def work(k):
        results[k] = answerer.answer(QUESTIONS)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert [a.text for a in r] == [a.text for a in expected]
        assert [a.score for a in r] == [a.score for a in expected]


def test_errors_are_cbqa_errors_with_the_chain(export, tmp_path):
    with pytest.raises(cbqa.CbqaError) as e:
        cbqa.Answerer(tmp_path / "nothing")
    assert "loading" in str(e.value) and "not a directory" in str(e.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in export.iterdir():
        if f.name != "decoder_with_past_model.onnx":
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(cbqa.CbqaError, match=r"decoder_with_past_model\.onnx: missing"):
        cbqa.Answerer(broken)
    with pytest.raises(cbqa.CbqaError, match=r"^beams: must be at least 1"):
        cbqa.Answerer(export, beams=0)
    with pytest.raises(cbqa.CbqaError, match=r"^candidates: 3 requested"):
        cbqa.Answerer(export, beams=2, candidates=3)
    with pytest.raises(cbqa.CbqaError, match="device `gpu7`"):
        cbqa.Answerer(export, device="gpu7")
    with pytest.raises(ValueError, match="no libtorch"):
        cbqa.Answerer(export, "tch")
    answerer = cbqa.Answerer(export)
    with pytest.raises(cbqa.CbqaError, match=r"question 1 \"\s*\": question: empty question"):
        answerer.answer(["who wrote hamlet", "  "])
    ok, bad = answerer.answer(["who wrote hamlet", ""], errors="return")
    assert ok.error is None and ok.text == answerer.answer(["who wrote hamlet"])[0].text
    assert bad.error == "question: empty question" and bad.text == ""
    with pytest.raises(ValueError, match="errors="):
        answerer.answer(["x"], errors="ignore")
    with pytest.raises(TypeError):
        answerer.answer("who wrote hamlet")  # a str is not a list of questions


def test_onnx_runtime_is_the_installed_packages(export):
    """The library loaded is the installed onnxruntime package's, found without importing it."""
    import importlib.util
    import os
    import pathlib

    spec = importlib.util.find_spec("onnxruntime")
    assert spec is not None, "pip install onnxruntime==1.31.1"
    capi = pathlib.Path(spec.submodule_search_locations[0]) / "capi"
    chosen = pathlib.Path(cbqa._native.use_onnxruntime_package(capi.parent))
    assert chosen.parent == capi and chosen.name.startswith("libonnxruntime.so.")
    cbqa.Answerer(export, "ort").answer(["who wrote hamlet"])
    maps = pathlib.Path("/proc/self/maps").read_text()
    assert os.path.realpath(chosen) in maps
    with pytest.raises(cbqa.CbqaError, match="no libonnxruntime.so"):
        cbqa._native.use_onnxruntime_package(capi)  # a directory without the library
