"""Shared fixtures of the Python package's tests: the cbqa binary they compare with, a cbqa
export of the tiny committed t5_v1_1 fixture, the real benchmark files. A missing part fails
with the command that makes it; nothing is skipped."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _need(path, how):
    if not path.exists():
        pytest.fail(f"{path} not found: {how}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def cbqa_bin():
    """The cbqa binary (``CBQA_BIN``, else target/debug/cbqa of the checkout)."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = pathlib.Path(os.environ.get("CBQA_BIN", target / "debug" / "cbqa"))
    return _need(path, "build it with `cargo build` (or set CBQA_BIN)")


@pytest.fixture(scope="session")
def data_dir():
    """The real benchmark files: ``CBQA_DATA_DIR``, else ../shared/data beside the checkout."""
    d = pathlib.Path(os.environ.get("CBQA_DATA_DIR", ROOT.parent / "shared" / "data"))
    return _need(d / "nq-open", "set CBQA_DATA_DIR to the shared data folder").parent


def run(cmd, **kw):
    """Run a command; its stdout, or a failure with its stderr."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        pytest.fail(f"{cmd} failed ({p.returncode}):\n{p.stderr}", pytrace=False)
    return p.stdout


@pytest.fixture(scope="session")
def export(cbqa_bin, tmp_path_factory):
    """``cbqa export`` of the committed t5_v1_1 fixture (48-wide, 400-token vocabulary)."""
    out = tmp_path_factory.mktemp("export") / "t5_v1_1"
    run([cbqa_bin, "export", "--model", ROOT / "tests" / "fixtures" / "t5_v1_1", "--out", out,
         "--no-tract"])
    return out


@pytest.fixture(scope="session")
def python():
    return pathlib.Path(sys.executable)
