"""python -m cbqa.ray_eval on a local Ray cluster (127.0.0.1, 2 workers): predictions.csv
byte-identical to `cbqa eval`, the metrics row column for column, and a worker killed mid-job
retried without losing or duplicating a question."""

import csv
import os
import pathlib
import signal
import sys

import pytest

import cbqa
import cbqa.ray_eval as ray_eval
from conftest import run

DATA = "triviaqa/topics.dpr.trivia.test.txt"
FLAGS = ["--limit", "48", "--beams", "2", "--threads", "1", "--batch-size", "4"]
# what differs between any two runs: speed, memory, time; and the commit each build was stamped
# with (checked against the package's own below: builds sharing a target directory across
# worktrees can carry another checkout's stamp)
RUN_DEPENDENT = {"questions_per_s", "wall_s", "peak_rss_mb", "timestamp", "git_commit", "run_id"}


def cbqa_eval(cbqa_bin, export, data, out):
    run([cbqa_bin, "eval", "--model", export, "--data", data, *FLAGS, "--out", out])
    return out


def metrics(out):
    with open(out / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 2, rows
    return rows[0], rows[1]


def assert_same_as_cbqa_eval(expected, got):
    assert (got / "predictions.csv").read_bytes() == (expected / "predictions.csv").read_bytes()
    (h1, r1), (h2, r2) = metrics(expected), metrics(got)
    assert h1 == h2
    for col, a, b in zip(h1, r1, r2):
        if col not in RUN_DEPENDENT:
            assert a == b, f"metrics.csv column {col}: cbqa eval {a!r}, ray_eval {b!r}"
    assert dict(zip(h2, r2))["git_commit"] == cbqa.GIT_COMMIT


class DiesOnce(ray_eval.AnswerActor):
    """An actor that SIGKILLs its own process at its second batch, once per test (a marker
    file says it happened), and records every start."""

    marker = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pathlib.Path(f"{self.marker}.start-{os.getpid()}").touch()
        self.calls = 0

    def answer(self, questions):
        self.calls += 1
        if self.calls == 2 and not os.path.exists(self.marker):
            pathlib.Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().answer(questions)


def test_ray_eval_matches_cbqa_eval(cbqa_bin, export, data_dir, python, tmp_path):
    data = data_dir / DATA
    expected = cbqa_eval(cbqa_bin, export, data, tmp_path / "cli")
    got = tmp_path / "ray"
    out = run([python, "-m", "cbqa.ray_eval", "--model", export, "--data", data, *FLAGS,
               "--workers", "2", "--out", got])
    assert "on 2 Ray workers" in out
    assert_same_as_cbqa_eval(expected, got)


def test_a_killed_worker_is_retried_without_loss_or_duplication(
    cbqa_bin, export, data_dir, tmp_path
):
    import ray

    data = data_dir / DATA
    expected = cbqa_eval(cbqa_bin, export, data, tmp_path / "cli")
    got = tmp_path / "ray"
    DiesOnce.marker = str(tmp_path / "killed")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    args = ray_eval.parse_args(["--model", str(export), "--data", str(data), *FLAGS,
                                "--workers", "2", "--out", str(got)])
    try:
        row = ray_eval.run(args, actor_cls=DiesOnce)
    finally:
        ray.shutdown()
    assert os.path.exists(DiesOnce.marker), "no worker was killed"
    starts = list(tmp_path.glob("killed.start-*"))
    assert len(starts) >= 3, f"{len(starts)} actor starts: the killed one was not replaced"
    assert row["n"] == "48" and row["errors"] == "0"
    assert_same_as_cbqa_eval(expected, got)
