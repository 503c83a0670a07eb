"""The hand-off to torch.distributed: `cbqa train --export-examples` on the committed t5_v1_1
fixture and real NQ-open questions, then scripts/train_distributed.py under torchrun (2
processes, gloo, 127.0.0.1) on those files: its losses are `cbqa train`'s for the same weights
and batches (cbqa's order, random answers, two epochs), with DDP and with FSDP, and the
checkpoint it writes exports and evaluates with cbqa. `cbqa pretrain --export-examples` (span
corruption) holds exactly the examples `--dump-examples` prints."""

import csv
import json
import os
import socket
import subprocess

import pytest

from conftest import ROOT, run

FIXTURE = ROOT / "tests" / "fixtures" / "t5_v1_1"
# Small batches (about 10 questions each), a fresh random answer per epoch: the script must follow
# cbqa's batches, not only its examples, to see the same losses.
RUN = ["--batch-tokens", "300", "--answer", "random", "--dropout", "0", "--seed", "3"]
STEPS = 6  # two epochs of 3-4 batches: the second epoch's order and answers are cbqa's too


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(path):
    with open(path, newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def json_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def torchrun(python, examples, out, *extra):
    return run([python, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", free_port(),
                ROOT / "scripts" / "train_distributed.py", "--examples", examples, "--out", out,
                "--backend", "gloo", *extra],
               env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_VERBOSITY": "error"}, timeout=300)


@pytest.fixture
def train_file(data_dir, tmp_path):
    """32 real NQ-open questions."""
    lines = (data_dir / "nq-open" / "NQ-open.dev.jsonl").read_text(encoding="utf-8").splitlines()
    path = tmp_path / "train32.jsonl"
    path.write_text("\n".join(lines[:32]) + "\n", encoding="utf-8")
    return path


def need_libtorch(cbqa_bin):
    if "not built in" in run([cbqa_bin, "doctor"]):
        pytest.fail(f"{cbqa_bin} has no libtorch (cbqa train): build it with default features",
                    pytrace=False)


def test_exported_examples_train_under_torchrun_as_cbqa_does_and_evaluate(
    cbqa_bin, python, train_file, tmp_path
):
    need_libtorch(cbqa_bin)
    base = ["train", "--model", FIXTURE, "--train", train_file, *RUN]
    examples = tmp_path / "examples"
    printed = run([cbqa_bin, *base, "--out", tmp_path / "unused", "--max-steps", STEPS,
                   "--export-examples", examples])
    assert "to " + str(examples) in printed, printed
    assert not (tmp_path / "unused").exists()  # exported, not trained
    manifest = json.loads((examples / "manifest.json").read_text())
    assert manifest["format"] == "cbqa-examples" and manifest["format_version"] == 1
    assert manifest["examples"] == 32 and manifest["steps"] == STEPS and manifest["epochs"] == 2
    assert manifest["settings"]["answer"] == "random" and manifest["seed"] == 3
    batches = json_lines(examples / "batches.jsonl")
    assert [b["step"] for b in batches] == list(range(1, len(batches) + 1))
    # each epoch covers every example once, and some random draw is not the first answer
    for epoch in (0, 1):
        ids = sorted(i for b in batches if b["epoch"] == epoch for i, _ in b["items"])
        assert ids == list(range(32))
    assert any(a > 0 for b in batches for _, a in b["items"])
    # the directory is never overwritten without --force
    again = [cbqa_bin, *base, "--out", tmp_path / "unused", "--export-examples", examples]
    p = subprocess.run([str(c) for c in again], capture_output=True, text=True)
    assert p.returncode != 0 and "--force" in p.stderr, p.stderr
    run(again + ["--force", "--max-steps", STEPS])
    assert json_lines(examples / "batches.jsonl") == batches

    run([cbqa_bin, *base, "--out", tmp_path / "cbqa", "--max-steps", STEPS, "--log-every", "1",
         "--device", "cpu"])
    expected = losses(tmp_path / "cbqa" / "train_log.csv")
    assert len(expected) == STEPS

    out = tmp_path / "ddp"
    torchrun(python, examples, out)
    got = losses(out / "train_log.csv")
    assert len(got) == STEPS
    assert abs(got[0] - expected[0]) < 1e-4, (got, expected)
    # the same batches and the same Adafactor, step after step (fp32 rounding only)
    assert all(abs(g - e) < 1e-3 for g, e in zip(got, expected)), (got, expected)

    # FSDP (here on the CPU with gloo): the same first loss; later steps differ, since FSDP
    # hands Adafactor flattened shards (see the script's docstring)
    fsdp = tmp_path / "fsdp"
    torchrun(python, examples, fsdp, "--fsdp", "--steps", "2", "--micro-batch-tokens", "200")
    got_fsdp = losses(fsdp / "train_log.csv")
    assert len(got_fsdp) == 2 and abs(got_fsdp[0] - expected[0]) < 1e-4, (got_fsdp, expected)
    assert (fsdp / "checkpoint-2" / "model.safetensors").is_file()

    ckpt = out / f"checkpoint-{STEPS}"
    run([cbqa_bin, "export", "--model", ckpt, "--out", tmp_path / "onnx", "--no-tract"])
    run([cbqa_bin, "eval", "--model", tmp_path / "onnx", "--data", train_file, "--limit", "8",
         "--out", tmp_path / "eval"])
    with open(tmp_path / "eval" / "metrics.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["n"] == "8" and row["errors"] == "0"


def test_pretrain_export_holds_the_dumped_span_corruption_examples(cbqa_bin, tmp_path):
    need_libtorch(cbqa_bin)
    nq = ROOT / "eval" / "demo" / "nq-open-200.jsonl"
    model = tmp_path / "model"
    run([cbqa_bin, "init", "--out", model, "--train-tokenizer", nq, "--vocab-size", "1024",
         "--extra-ids", "100"])
    corpus = tmp_path / "facts.txt"
    pairs = [json.loads(line) for line in nq.read_text(encoding="utf-8").splitlines()]
    corpus.write_text("".join(f"{p['question']}? The answer is {p['answer'][0]}.\n"
                              for p in pairs), encoding="utf-8")
    base = ["pretrain", "--model", model, "--corpus", corpus, "--objective", "span-corruption",
            "--inputs-length", "64", "--out", tmp_path / "unused", "--batch-tokens", "2000",
            "--seed", "11"]
    dumped = [json.loads(line) for line in run([cbqa_bin, *base, "--dump-examples",
                                                "100000"]).splitlines()]
    examples = tmp_path / "examples"
    run([cbqa_bin, *base, "--export-examples", examples])
    records = json_lines(examples / "examples.jsonl")
    batches = json_lines(examples / "batches.jsonl")
    assert len(batches) > 1 and {b["epoch"] for b in batches} == {0}
    exported = [records[i] | {"answer": a} for b in batches for i, a in b["items"]]
    assert len(exported) == len(dumped) == len(records) > 10
    for d, e in zip(dumped, exported):
        assert e["input_ids"] == d["input_ids"]
        assert e["target_ids"][e["answer"]] == d["target_ids"]
        assert e["source"] == d["source"] and d["source"].startswith("span-corruption:")
    # sentinels in the inputs: span corruption, not plain text
    assert any("<extra_id_0>" in d["inputs"] for d in dumped), dumped[0]
    manifest = json.loads((examples / "manifest.json").read_text())
    assert manifest["settings"]["pretrain"]["objective"] == "span-corruption", manifest["settings"]
