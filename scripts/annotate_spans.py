"""Find salient spans in raw text for `cbqa pretrain --objective ssm`: named entities and dates,
written as the spans JSON lines cbqa reads: {"text": str, "spans": [{"start", "end", "type"}]},
offsets in code points (Python string indices), non-overlapping (of two overlapping spans the
earlier, then the longer, is kept: an entity overlapping a date is dropped).

    python scripts/annotate_spans.py IN OUT.jsonl [--ner spacy|heuristic|none] [--model NAME_OR_DIR]

IN is plain text (one document per line) or JSON lines with "text" (.jsonl/.json); it is read
and written a batch at a time, so a corpus larger than memory works. OUT is written to a
temporary file and renamed when complete.

Dates: the regular expression of cbqa's `pretrain::dates` (as REALM found dates).

Named entities (`--ner`):
- `spacy` (the default): a trained spaCy English pipeline, as REALM used a trained tagger.
  Entity types kept: PERSON, NORP, FAC, ORG, GPE, LOC, PRODUCT, EVENT, WORK_OF_ART, LAW,
  LANGUAGE, DATE. spaCy installs from PyPI (`pip install spacy`; `scripts/requirements.txt` pins
  it), but its trained pipelines do not: `en_core_web_sm` (MIT, trained on OntoNotes 5 by
  Explosion) comes from spaCy's own release, `python -m spacy download en_core_web_sm`, after
  which it runs offline. `--model` takes a package name or a pipeline directory.
- `heuristic`: the documented fallback when no trained pipeline can be installed. It tags runs
  of capitalised words (joined by "of", "the", "de", "von", … inside a name) as type ENTITY,
  dropping function words that are capitalised only because they start a sentence, and month
  and weekday names (dates are the regular expression's). It finds proper names well and types
  nothing; expect false positives on headings and title-case phrases and misses on lower-case
  entities ("iPhone"). Measured against a trained tagger it is a stand-in, not an equal.
- `none` (also `--dates-only`): dates alone (`cbqa pretrain --tag-dates` does the same without
  this script).
"""

import argparse
import itertools
import json
import os
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


# Words capitalised only because they start a sentence (or a clause), never a name on their own.
FUNCTION_WORDS = set("""
a an the this that these those there here it its he she his her him they them their we our i you
your my me us in on at by for from with without of to into onto over under after before during
since until while when where which who whom whose what why how if but and or nor so yet as than
then though although because also however thus hence all some many most each every any no not
one two three several both either neither such other another few more less much is was are were
be been being has have had do does did can could will would shall should may might must
""".split())
MONTHS_AND_DAYS = set("""
january february march april may june july august september october november december monday
tuesday wednesday thursday friday saturday sunday
""".split())
# Lower-case words that may join the capitalised words of one name ("Bank of England").
CONNECTORS = {"of", "the", "de", "del", "della", "da", "di", "du", "des", "la", "le", "van",
              "von", "der", "den", "al", "bin", "y"}
WORD = re.compile(r"[^\W\d_][\w'\u2019.-]*", re.UNICODE)


def capitalised(word):
    return word[:1].isupper()


def heuristic_entities(text):
    """Runs of capitalised words as (start, end, "ENTITY"), in code points."""
    words = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text)]
    out = []
    i = 0
    while i < len(words):
        if not capitalised(words[i][2]):
            i += 1
            continue
        j = i + 1  # words[i:j] is the run; connectors only count when a capitalised word follows
        k = j
        while k < len(words) and text[words[k - 1][1]:words[k][0]].strip() == "":
            if capitalised(words[k][2]):
                j = k = k + 1
            elif words[k][2] in CONNECTORS:
                k += 1
            else:
                break
        run = words[i:j]
        while run and (run[0][2].lower() in FUNCTION_WORDS or run[0][2].lower() in CONNECTORS):
            run = run[1:]
        if run and not (len(run) == 1 and run[0][2].lower().rstrip(".") in MONTHS_AND_DAYS):
            start, end = run[0][0], run[-1][1]
            while end > start and text[end - 1] in ".-'\u2019":
                end -= 1
            out.append((start, end, "ENTITY"))
        i = j
    return out


def read(path):
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        yield json.loads(line)["text"] if path.endswith((".jsonl", ".json")) else line


def load_spacy(model):
    try:
        import spacy
    except ImportError as e:
        raise SystemExit(f"spaCy is not installed ({e}): pip install spacy (scripts/requirements.txt "
                         "pins it), or pass --ner heuristic or --ner none")
    try:
        return spacy.load(model, disable=["lemmatizer"])
    except OSError as e:
        raise SystemExit(f"cannot load spaCy pipeline {model!r} ({e}): install a trained one "
                         "(python -m spacy download en_core_web_sm), give a pipeline directory, "
                         "or pass --ner heuristic (the documented fallback) or --ner none")


def spans_of(text, doc, ner):
    spans = list(dates(text))
    if ner == "spacy":
        spans += [(e.start_char, e.end_char, e.label_) for e in doc.ents if e.label_ in KEEP]
    elif ner == "heuristic":
        spans += heuristic_entities(text)
    return non_overlapping(spans)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--ner", choices=["spacy", "heuristic", "none"], default="spacy")
    ap.add_argument("--model", default="en_core_web_sm", help="spaCy package name or directory")
    ap.add_argument("--dates-only", action="store_true", help="the same as --ner none")
    ap.add_argument("--batch", type=int, default=1000, help="documents read and tagged at a time")
    args = ap.parse_args()
    ner = "none" if args.dates_only else args.ner
    nlp = load_spacy(args.model) if ner == "spacy" else None
    texts = read(args.input)
    tmp = f"{args.output}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        while batch := list(itertools.islice(texts, max(1, args.batch))):
            docs = nlp.pipe(batch, batch_size=256) if nlp else [None] * len(batch)
            for text, doc in zip(batch, docs):
                spans = spans_of(text, doc, ner)
                out.write(json.dumps({"text": text, "spans": [
                    {"start": s, "end": e, "type": t} for s, e, t in spans]},
                    ensure_ascii=False) + "\n")
    os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
