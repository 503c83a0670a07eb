#!/usr/bin/env python3
"""Interleaved rounds of the 64-client load test, for a machine whose speed drifts: each round
runs offline `cbqa eval` (batch 32), then `cbqa serve` with continuous batching, then with
`--batching dynamic`, so drift hits all three alike; prints every round and the medians and
ratios. Uses scripts/load_test.py's scenario and offline eval. With `--compare-bin B`, each round
also runs continuous batching with binary B (a before/after of a change in one run).

    scripts/load_test_rounds.py --bin target/infer/release/cbqa --model runs/bench-t5-small/onnx \\
        [--rounds 5] [--seconds 10] [--clients 64] [--compare-bin /tmp/cbqa-before]
"""

import argparse
import json
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import load_test  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    load_test.add_run_args(ap, seconds=10.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--compare-bin", help="also run continuous batching with this binary each round")
    a = ap.parse_args()
    qs = load_test.read_questions(a.data, a.questions)
    res = {"offline-b32": [], "continuous": [], "dynamic": []}
    if a.compare_bin:
        res["continuous-compare-bin"] = []
    for r in range(a.rounds):
        res["offline-b32"].append(load_test.offline_eval(a, 32, len(qs)))
        for name, extra in (("continuous", []), ("dynamic", ["--batching", "dynamic"])):
            row = load_test.scenario(a, name, a.clients, 256, qs, extra)
            res[name].append(row["questions_per_s"])
            print(f"  {name}: {row['questions_per_s']} q/s, mean running batch {row['mean_running_batch']}, "
                  f"mean join {row['mean_join']}", flush=True)
        if a.compare_bin:
            other = argparse.Namespace(**{**vars(a), "bin": a.compare_bin})
            row = load_test.scenario(other, "continuous-compare-bin", a.clients, 256, qs, [])
            res["continuous-compare-bin"].append(row["questions_per_s"])
            print(f"  continuous-compare-bin: {row['questions_per_s']} q/s, mean running batch "
                  f"{row['mean_running_batch']}, mean join {row['mean_join']}", flush=True)
        print(r, {k: v[-1] for k, v in res.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(json.dumps({"rounds": res, "median": med}))
    print(f"continuous/offline {med['continuous'] / med['offline-b32']:.2f}, dynamic/offline "
          f"{med['dynamic'] / med['offline-b32']:.2f}, continuous/dynamic "
          f"{med['continuous'] / med['dynamic']:.2f}")
    if a.compare_bin:
        print(f"continuous with {a.compare_bin}: {med['continuous-compare-bin'] / med['offline-b32']:.2f}x "
              f"offline, {med['continuous'] / med['continuous-compare-bin']:.2f}x ({a.bin} over it)")


if __name__ == "__main__":
    main()
