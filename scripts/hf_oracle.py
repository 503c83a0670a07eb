#!/usr/bin/env python3
"""The transformers side of cbqa's interoperability tests (run with the project venv's python).

  hf_oracle.py load DIR
      T5ForConditionalGeneration.from_pretrained(DIR): prints JSON with missing/unexpected keys,
      the parameter count, and the state_dict's names and shapes.
  hf_oracle.py tokenize TOKENIZER_JSON QA_JSONL OUT_JSONL
      PreTrainedTokenizerFast(tokenizer_file=...) ids of every question, one JSON list per line.
  hf_oracle.py resave-config DIR OUT_DIR
      T5Config.from_pretrained(DIR).save_pretrained(OUT_DIR): transformers' own bytes for the config.
"""
import json
import sys


def load(d):
    from transformers import T5ForConditionalGeneration

    model, info = T5ForConditionalGeneration.from_pretrained(d, output_loading_info=True)
    sd = model.state_dict()
    print(json.dumps({
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "mismatched": [str(m) for m in info["mismatched_keys"]],
        "parameters": sum(p.numel() for p in model.parameters()),
        "tensors": {k: list(v.shape) for k, v in sd.items()},
    }))


def tokenize(tok_file, data, out):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=tok_file)
    with open(data, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as o:
        for line in f:
            if line.strip():
                q = json.loads(line)["question"]
                o.write(json.dumps(tok(q, return_token_type_ids=False)["input_ids"]) + "\n")


def resave_config(d, out):
    from transformers import T5Config

    T5Config.from_pretrained(d).save_pretrained(out)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"load": load, "tokenize": tokenize, "resave-config": resave_config}[cmd](*args)
