"""The transformers side of the `cbqa convert` tests (run with the project venv's python).

    python scripts/convert_check.py JOBS_JSON

JOBS_JSON is a list of checks, all run in this one process:
  {"out": DIR, "reference": FILE.safetensors, "cast": null | "bfloat16"}
      T5ForConditionalGeneration.from_pretrained(DIR, dtype="auto") holds every tensor of the
      reference file (cast first, if asked) bit for bit and in its dtype, and nothing else but
      the tied embeddings.
  {"out": DIR, "source": SRC_DIR, "questions": FILE.jsonl, "limit": N}
      T5TokenizerFast.from_pretrained(DIR) gives the same ids as T5TokenizerFast of SRC_DIR on the
      first N questions of FILE.
  {"greedy": DIR, "reference": FILE.safetensors}
      greedy generate (12 new tokens) of T5ForConditionalGeneration.from_pretrained(DIR) on the
      input_ids/attention_mask of the reference file.
Prints one JSON object per job, in order, as a JSON list.
"""

import json
import sys

import torch
from safetensors.torch import load_file
from transformers import T5ForConditionalGeneration, T5TokenizerFast
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

TIED = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}


def weights(job):
    want = load_file(job["reference"])
    if job.get("cast"):
        want = {k: v.to(getattr(torch, job["cast"])) for k, v in want.items()}
    model = T5ForConditionalGeneration.from_pretrained(job["out"], dtype="auto")
    got = model.state_dict()
    for k, v in want.items():
        assert k in got, f"{job['out']}: {k} not loaded"
        assert got[k].dtype == v.dtype, f"{job['out']}: {k} is {got[k].dtype}, expected {v.dtype}"
        assert torch.equal(got[k], v), f"{job['out']}: {k} differs from {job['reference']}"
    extra = sorted(set(got) - set(want) - TIED)
    assert not extra, f"{job['out']}: unexpected tensors {extra}"
    return {"out": job["out"], "tensors": len(want)}


def tokens(job):
    questions = []
    with open(job["questions"], encoding="utf-8") as f:
        for line in f:
            if line.strip() and len(questions) < job["limit"]:
                questions.append(json.loads(line)["question"])
    a = T5TokenizerFast.from_pretrained(job["out"])(questions)["input_ids"]
    b = T5TokenizerFast.from_pretrained(job["source"])(questions)["input_ids"]
    assert a == b, f"{job['out']}: token ids differ from {job['source']}"
    return {"out": job["out"], "questions": len(questions)}


def greedy(job):
    ref = load_file(job["reference"])
    model = T5ForConditionalGeneration.from_pretrained(job["greedy"]).eval()
    with torch.no_grad():
        seqs = model.generate(
            input_ids=ref["input_ids"],
            attention_mask=ref["attention_mask"],
            max_new_tokens=12,
            num_beams=1,
            do_sample=False,
            # 4.57's default cache is sized by the encoder's depth; the fixtures' decoders are
            # deeper (as scripts/make_fixtures.py notes), a growing cache avoids it.
            past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()),
        )
    return {"greedy": seqs.tolist()}


def main():
    jobs = json.load(open(sys.argv[1]))
    out = []
    for job in jobs:
        if "greedy" in job:
            out.append(greedy(job))
        elif "questions" in job:
            out.append(tokens(job))
        else:
            out.append(weights(job))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
