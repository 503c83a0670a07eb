"""Find salient spans in raw text for `cbqa pretrain --objective ssm`: named entities from a
spaCy English pipeline (a trained NER model, as REALM used a trained tagger) and dates from the
regular expression of cbqa's `pretrain::dates` (as REALM found dates), written as the spans
JSON lines cbqa reads: {"text": str, "spans": [{"start", "end", "type"}]}, offsets in code
points (Python string indices), non-overlapping (an entity overlapping a date is dropped).

    python scripts/annotate_spans.py IN.txt OUT.jsonl [--model en_core_web_sm] [--dates-only]

IN is plain text (one document per line) or JSON lines with "text". Install the pipeline from
spaCy's own release (MIT-licensed, trained on OntoNotes 5): `pip install spacy` then
`python -m spacy download en_core_web_sm`; it then runs offline. Without spaCy, --dates-only
tags dates alone (cbqa pretrain --tag-dates does the same without this script).

Entity types kept (REALM's salient spans are named entities and dates): PERSON, NORP, FAC, ORG,
GPE, LOC, PRODUCT, EVENT, WORK_OF_ART, LAW, LANGUAGE, DATE.
"""

import argparse
import json
import re

MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|"
         r"December|Jan\.?|Feb\.?|Mar\.?|Apr\.?|Jun\.?|Jul\.?|Aug\.?|Sept?\.?|Oct\.?|Nov\.?|Dec\.?)")
# The same expression as src/pretrain/dates.rs (DATE_PATTERN).
DATE = re.compile(r"""\b(?:
        \d{1,2}\s+MONTH,?\s+\d{4}
      | MONTH\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}
      | MONTH,?\s+\d{4}
      | \d{1,2}\s+MONTH
      | MONTH\s+\d{1,2}(?:st|nd|rd|th)?
      | \d{4}-\d{2}-\d{2}
      | (?:1\d{3}|20\d{2})
    )\b""".replace("MONTH", MONTH), re.X | re.A)

KEEP = {"PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW",
        "LANGUAGE", "DATE"}


def dates(text):
    for m in DATE.finditer(text):
        s, e = m.span()
        glued = (text[e:e + 1] in (".", ",") and text[e + 1:e + 2].isdigit()) or (
            text[s - 1:s] in (".", ",") and text[s - 2:s - 1].isdigit())
        if not glued:
            yield (s, e, "DATE")


def non_overlapping(spans):
    out = []
    for s, e, t in sorted(spans, key=lambda x: (x[0], -(x[1] - x[0]))):
        if not out or s >= out[-1][1]:
            out.append((s, e, t))
    return out


def read(path):
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        yield json.loads(line)["text"] if path.endswith((".jsonl", ".json")) else line


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--model", default="en_core_web_sm")
    ap.add_argument("--dates-only", action="store_true")
    args = ap.parse_args()
    nlp = None
    if not args.dates_only:
        try:
            import spacy
            nlp = spacy.load(args.model, disable=["lemmatizer"])
        except (ImportError, OSError) as e:
            raise SystemExit(f"cannot load spaCy pipeline {args.model!r} ({e}); install it "
                             "(pip install spacy; python -m spacy download en_core_web_sm) "
                             "or pass --dates-only")
    texts = list(read(args.input))
    docs = nlp.pipe(texts, batch_size=256) if nlp else [None] * len(texts)
    with open(args.output, "w", encoding="utf-8") as out:
        for text, doc in zip(texts, docs):
            spans = list(dates(text))
            if doc is not None:
                spans += [(e.start_char, e.end_char, e.label_) for e in doc.ents
                          if e.label_ in KEEP]
            spans = non_overlapping(spans)
            out.write(json.dumps({"text": text, "spans": [
                {"start": s, "end": e, "type": t} for s, e, t in spans]},
                ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
