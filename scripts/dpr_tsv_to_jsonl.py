#!/usr/bin/env python3
"""Dump a DPR ``question<TAB>answers`` file as JSON lines, the way DPR reads it.

DPR's ``CsvQASrc`` (https://github.com/facebookresearch/DPR/blob/main/dpr/data/retriever_data.py)
reads these files with ``csv.reader(f, delimiter="\\t")`` and ``eval(row[1])``; we use
``ast.literal_eval``, which gives the same list for these literals without evaluating code.
The Rust reader's output is compared with this, row by row.

Usage: dpr_tsv_to_jsonl.py INPUT.tsv OUTPUT.jsonl
"""

import ast
import csv
import json
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8", newline="") as f, open(dst, "w", encoding="utf-8") as out:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) != 2:
                raise SystemExit(f"{src}: expected 2 fields, got {len(row)}: {row!r}")
            answers = ast.literal_eval(row[1])
            out.write(json.dumps({"question": row[0], "answer": answers}, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
