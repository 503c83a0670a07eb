"""The dev loss as transformers computes it, the oracle of cbqa's dev loss
(tests/integration/pretrain.rs).

  dev_loss_reference.py MODEL_DIR EXAMPLES.jsonl

EXAMPLES.jsonl holds `{"input_ids": [...], "target_ids": [...]}` lines (what
`cbqa pretrain/train --dump-examples` prints). Prints the token-mean cross-entropy of every target
token under T5ForConditionalGeneration in eval mode (no dropout), without gradients: one padded
batch, labels padded with -100, so `outputs.loss` is the mean over all real target tokens.
"""

import json
import sys

import torch
from transformers import T5ForConditionalGeneration


def main(model_dir, examples):
    rows = [json.loads(line) for line in open(examples, encoding="utf-8") if line.strip()]
    model = T5ForConditionalGeneration.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    pad = model.config.pad_token_id
    width = max(len(r["input_ids"]) for r in rows)
    tlen = max(len(r["target_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
    labels = torch.tensor([r["target_ids"] + [-100] * (tlen - len(r["target_ids"])) for r in rows])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    print(repr(float(out.loss)))


if __name__ == "__main__":
    main(*sys.argv[1:])
