"""Write tests/fixtures/realm/: a tiny corpus in the layout of REALM's annotated Wikipedia
(`wikipedia_annotated_with_dates_public@5000.tfrecord.gz`: gzip TFRecords of tf.train.Example
with uid, title, text, span_byte_start, span_byte_limit, span_type, sentence_byte_start,
sentence_byte_limit; offsets in UTF-8 bytes), in two shards, written by a real TFRecord writer
(the `tfrecord` PyPI package: TF's Example proto and masked CRC-32C), and expected.jsonl: the
sentences TFDS's salient_span_wikipedia/sentences makes of them (each sentence's text, and the
spans that lie inside it, offsets relative to the sentence).

Run once in a throwaway venv (tensorflow is not in the project's .venv):
    python3 -m venv /tmp/tfrec && /tmp/tfrec/bin/pip install tfrecord==1.14.6
    /tmp/tfrec/bin/python scripts/make_realm_fixture.py tests/fixtures/realm
"""

import gzip
import json
import os
import sys

from tfrecord.writer import TFRecordWriter

ARTICLES = [
    ("Antonín Dvořák", [
        ("Antonín Dvořák was a Czech composer.", ["Antonín Dvořák"]),
        ("He was born in Nelahozeves on 8 September 1841.", ["Nelahozeves", "8 September 1841"]),
        ("His ninth symphony is called From the New World.", ["From the New World"]),
    ]),
    ("Sikorsky VS-300", [
        ("🚁 The VS-300 first flew in 1939.", ["1939"]),
        ("It was designed by Igor Sikorsky.", ["Igor Sikorsky"]),
    ]),
    ("Ærø", [
        ("Ærø is a Danish island.", ["Ærø"]),
        ("No span here.", []),
    ]),
    ("Paris", [
        ("Paris is the capital of France.", ["Paris", "France"]),
    ]),
]

# A span crossing two sentences (kept by REALM's annotation, dropped by TFDS's sentences).
CROSSING = ("Crossing", [("It ends in Port", []), (" Said. Then more.", [])], "Port Said")


def article(uid, title, sentences, crossing=None):
    text = ""
    starts, limits, span_starts, span_limits, types = [], [], [], [], []
    for sentence, spans in sentences:
        text += sentence if not text or sentence.startswith(" ") else " " + sentence
        start = len(text.encode("utf-8")) - len(sentence.encode("utf-8"))
        starts.append(start)
        limits.append(len(text.encode("utf-8")))
        for s in spans:
            b = sentence.encode("utf-8").index(s.encode("utf-8"))
            span_starts.append(start + b)
            span_limits.append(start + b + len(s.encode("utf-8")))
            types.append(b"DATE" if s[-1].isdigit() else b"ENT")
    if crossing:
        raw = text.encode("utf-8")
        b = raw.index(crossing.encode("utf-8"))
        span_starts.append(b)
        span_limits.append(b + len(crossing.encode("utf-8")))
        types.append(b"LOC")
    return {
        "uid": (str(uid).encode(), "byte"),
        "title": (title.encode("utf-8"), "byte"),
        "text": (text.encode("utf-8"), "byte"),
        "span_byte_start": (span_starts, "int"),
        "span_byte_limit": (span_limits, "int"),
        "span_type": (types, "byte"),
        "sentence_byte_start": (starts, "int"),
        "sentence_byte_limit": (limits, "int"),
    }


def expected(rec):
    text = rec["text"][0]
    for s, l in zip(rec["sentence_byte_start"][0], rec["sentence_byte_limit"][0]):
        spans = [
            {"start": a - s, "limit": b - s, "type": t.decode()}
            for a, b, t in zip(rec["span_byte_start"][0], rec["span_byte_limit"][0], rec["span_type"][0])
            if a >= s and b <= l
        ]
        yield {"text": text[s:l].decode("utf-8"), "spans": spans}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    records = [article(k, t, s) for k, (t, s) in enumerate(ARTICLES)]
    records.append(article(99, CROSSING[0], CROSSING[1], CROSSING[2]))
    shards = [records[:2], records[2:]]
    lines = []
    for k, shard in enumerate(shards):
        raw = os.path.join(out, "raw.tfrecord")
        w = TFRecordWriter(raw)
        for rec in shard:
            w.write(rec)
            lines.extend(expected(rec))
        w.close()
        name = f"wiki-{k:05d}-of-{len(shards):05d}.tfrecord.gz"
        with open(raw, "rb") as f, open(os.path.join(out, name), "wb") as g:
            g.write(gzip.compress(f.read(), mtime=0))
        os.remove(raw)
    with open(os.path.join(out, "expected.jsonl"), "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
