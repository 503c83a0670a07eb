"""scripts/ort_profile.py (issue 17: which phase is short of its roofline): ONNX Runtime's per-node
profile of a `cbqa bench` run sums into the roofline's phases through the export's sub-layer node
names, and the phases with ONNX Runtime's time outside kernels and the host's add up to the bench's
own encoder and decoder times (warm-up batch left out)."""

import csv
import json

import pytest

from conftest import ROOT, run

SCRIPT = ROOT / "scripts" / "ort_profile.py"


@pytest.fixture(scope="module")
def profile(cbqa_bin, python, export, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    run([python, SCRIPT, "--bin", cbqa_bin, "--model", export, "--batch-size", "4",
         "--questions", "8", "--force-steps", "3", "--out", out], timeout=300)
    return out


def test_every_phase_of_the_export_is_found_in_the_profile(profile):
    rows = {r["phase"]: r for r in csv.DictReader(open(profile / "phases.csv"))}
    for phase in ("encoder", "cross-attention K/V", "self-attention", "cross-attention",
                  "feed-forward", "LM head"):
        assert float(rows[phase]["profiled_kernel_s"]) > 0, (phase, rows.keys())
    # every decoder node carries its sub-layer's scope (or follows one that does)
    assert "decoder, other" not in rows, rows["decoder, other"]
    # the warm-up batch is left out: no part's time is negative (kernels summed over the warm-up
    # too would exceed the bench's timed encoder and decoder)
    for r in rows.values():
        assert float(r["seconds"]) >= 0, r
        if r["roofline_phase"]:
            assert 0 < float(r["achieved"]), r


def test_phases_and_host_time_add_up_to_the_bench_times(profile):
    rows = list(csv.DictReader(open(profile / "phases.csv")))
    plain = json.loads((profile / "plain" / "roofline.json").read_text())[0]

    def kind_of(r):
        if not r["roofline_phase"]:  # "host (decoder)", "ONNX Runtime outside kernels (encoder)"
            return r["phase"].rsplit("(", 1)[1].rstrip(")")
        return "encoder" if r["roofline_phase"] == "encoder" else "decoder"

    for kind in ("encoder", "decoder"):
        total = sum(float(r["seconds"]) for r in rows if kind_of(r) == kind)
        assert total == pytest.approx(plain[kind]["measured_s"], rel=1e-6), kind
    md = (profile / "phases.md").read_text()
    assert "| LM head |" in md and "| encoder |" in md
