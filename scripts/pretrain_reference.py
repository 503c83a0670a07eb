"""The paper's pre-training preprocessors, re-stated with transformers' tokenizer, as the oracle
of cbqa's tests (tests/integration/pretrain.rs).

  ssm MODEL_DIR CORPUS.jsonl     one JSON line per example of `mask_salient_spans`
                                 (google-research t5_closed_book_qa/t5_cbqa/preprocessors.py):
                                 offsets are code points in the JSON, converted to UTF-8 bytes
                                 and cut as tf.strings.substr cuts bytes; ids from the tokenizer
                                 with </s>, as seqio's tokenize + append_eos.
  tokens MODEL_DIR CORPUS.txt    the ids of every non-blank line without special tokens (what
                                 span corruption concatenates), one JSON list per line.
"""

import json
import sys

from transformers import AutoTokenizer


def ssm(tok, corpus):
    for line in open(corpus, encoding="utf-8"):
        if not line.strip():
            continue
        doc = json.loads(line)
        text = doc["text"]
        data = text.encode("utf-8")
        for span in doc.get("spans", []):
            start = len(text[: span["start"]].encode("utf-8"))
            limit = len(text[: span["end"]].encode("utf-8"))
            inputs = b"nem" + b": " + data[:start] + b"_X_" + data[limit:]
            targets = data[start:limit]
            inputs, targets = inputs.decode("utf-8"), targets.decode("utf-8")
            print(json.dumps({
                "inputs": inputs,
                "targets": targets,
                "input_ids": tok(inputs).input_ids,
                "target_ids": tok(targets).input_ids,
            }))


def tokens(tok, corpus):
    for line in open(corpus, encoding="utf-8"):
        line = line.rstrip("\r\n")
        if line.strip():
            print(json.dumps(tok(line, add_special_tokens=False).input_ids))


def main():
    mode, model, corpus = sys.argv[1:4]
    tok = AutoTokenizer.from_pretrained(model)
    {"ssm": ssm, "tokens": tokens}[mode](tok, corpus)


if __name__ == "__main__":
    main()
