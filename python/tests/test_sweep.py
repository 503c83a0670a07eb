"""scripts/sweep.py --quick (issue 17's sweep, its short version): every configuration of the tiny
grid is one `cbqa bench` row with the grid's columns, ms per generated token follows from the
bench's own wall time and token count, and the report's plots and tables hold every engine."""

import csv
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT, run

SCRIPT = ROOT / "scripts" / "sweep.py"


@pytest.fixture(scope="module")
def quick(cbqa_bin, python, export, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    run([python, SCRIPT, "--quick", "--model-dir", export, "--bin", cbqa_bin, "--engines",
         "ort,tract", "--out", out], timeout=300)
    return out


def test_every_configuration_is_one_row_with_its_grid_values(quick):
    rows = list(csv.DictReader(open(quick / "sweep.csv")))
    grid = {(r["engine_label"], int(r["batch_size"]), int(r["question_tokens"]),
             int(r["answer_tokens"])) for r in rows}
    want = {(e, b, q, a) for e in ("ort", "tract") for b in (1, 4) for q in (8, 16) for a in (2, 4)}
    assert grid == want and len(rows) == len(want)
    for r in rows:
        questions = int(r["questions"])
        assert questions == max(16, 2 * int(r["batch_size"]))
        # forced steps: every question generates exactly the answer length
        assert int(r["generated_tokens"]) == questions * int(r["answer_tokens"]), r
        ms = 1000 * float(r["wall_s"]) / int(r["generated_tokens"])
        assert abs(float(r["ms_per_token"]) - ms) <= 1e-3 * ms + 1e-4, r
        assert r["engine"] == f"cbqa-{r['engine_label']}"
        assert f"questions of {r['question_tokens']}-{r['question_tokens']} tokens" in r["workload"]


def test_plots_and_tables_show_every_engine(quick):
    for name in ("qps_by_batch", "ms_by_answer", "ms_by_question"):
        root = ET.parse(quick / f"{name}.svg").getroot()
        lines = root.findall("{http://www.w3.org/2000/svg}polyline")
        assert len(lines) == 2, name
        for line in lines:
            assert len(line.get("points").split()) == 2, name
    md = (quick / "sweep.md").read_text()
    assert md.count("| given ort |") == 3 and md.count("| given tract |") == 3
