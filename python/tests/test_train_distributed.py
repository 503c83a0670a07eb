"""scripts/train_distributed.py under torchrun (2 processes, gloo, 127.0.0.1) from a cbqa
checkpoint: the first batch's loss is `cbqa train`'s for the same weights and batch, and the
checkpoint it writes exports and evaluates with cbqa."""

import csv
import os
import socket

import pytest

from conftest import ROOT, run

FIXTURE = ROOT / "tests" / "fixtures" / "t5_v1_1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(path):
    with open(path, newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture
def train_file(data_dir, tmp_path):
    """32 real NQ-open questions: one effective batch holds them all, so cbqa's first batch is
    the whole file whatever its shuffle."""
    lines = (data_dir / "nq-open" / "NQ-open.dev.jsonl").read_text(encoding="utf-8").splitlines()
    path = tmp_path / "train32.jsonl"
    path.write_text("\n".join(lines[:32]) + "\n", encoding="utf-8")
    return path


def test_torchrun_first_loss_is_cbqa_trains_and_its_checkpoint_evaluates(
    cbqa_bin, python, train_file, tmp_path
):
    doctor = run([cbqa_bin, "doctor"])
    if "not built in" in doctor:
        pytest.fail(f"{cbqa_bin} has no libtorch (cbqa train): build it with default features",
                    pytrace=False)
    run([cbqa_bin, "train", "--model", FIXTURE, "--train", train_file, "--out", tmp_path / "cbqa",
         "--max-steps", "2", "--dropout", "0", "--log-every", "1", "--device", "cpu"])
    expected = losses(tmp_path / "cbqa" / "train_log.csv")

    out = tmp_path / "dist"
    run([python, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
         "127.0.0.1", "--master_port", free_port(), ROOT / "scripts" / "train_distributed.py",
         "--model", FIXTURE, "--train", train_file, "--out", out, "--steps", "3",
         "--dropout", "0", "--backend", "gloo"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
             "TRANSFORMERS_VERBOSITY": "error"})
    got = losses(out / "train_log.csv")
    assert len(got) == 3
    assert abs(got[0] - expected[0]) < 1e-4, (got, expected)
    # the same Adafactor: the second step's batch (the whole file again) after one update
    assert abs(got[1] - expected[1]) < 1e-3, (got, expected)
    assert got[2] < got[0]

    ckpt = out / "checkpoint-3"
    run([cbqa_bin, "export", "--model", ckpt, "--out", tmp_path / "onnx", "--no-tract"])
    run([cbqa_bin, "eval", "--model", tmp_path / "onnx", "--data", train_file, "--limit", "8",
         "--out", tmp_path / "eval"])
    with open(tmp_path / "eval" / "metrics.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["n"] == "8" and row["errors"] == "0"
